"""Firestore's storage size of a document, by its published rules (names, values, maps)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

DOCUMENT_OVERHEAD = 32
MAX_DOCUMENT_BYTES = 1_048_576


def value_size(value: Any) -> int:
    """Return the size of one stored value."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float | datetime):
        return 8
    if isinstance(value, str):
        return len(value.encode("utf-8")) + 1
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, Mapping):
        return sum(len(str(k).encode("utf-8")) + 1 + value_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(value_size(item) for item in value)
    raise TypeError(f"no size rule for {type(value).__name__}")


def name_size(path: str) -> int:
    """Return the size of a document name: each id's bytes + 1, plus 16."""
    return sum(len(part.encode("utf-8")) + 1 for part in path.split("/")) + 16


def document_size(path: str, data: Mapping[str, Any]) -> int:
    """Return the size of a document: its name, its fields and 32 bytes."""
    return name_size(path) + value_size(data) + DOCUMENT_OVERHEAD
