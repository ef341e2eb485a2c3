"""A commit as plain data: documents, operations, transforms and preconditions (pure).

The builders in `plans` return lists of `Write`; the store turns them into one atomic
Firestore commit. Keeping the commit as data lets unit tests check the rules that the
emulator does not enforce (at most 500 field transforms per document and commit, no
empty map in a merge, ids), and lets the benchmark count writes per document.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tally.values import Version

MAX_TRANSFORMS_PER_DOCUMENT = 500


@dataclass(frozen=True)
class Increment:
    """Add `value` on the server (a fetch-and-add: the commit returns the new value)."""

    value: int


@dataclass(frozen=True)
class Maximum:
    """Keep the larger of the stored value and `value`."""

    value: int | float


@dataclass(frozen=True)
class Replace:
    """In an update, write this map whole instead of merging its leaves."""

    value: Mapping[str, Any]


class _Delete:
    """Remove the field."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()
TRANSFORMS = (Increment, Maximum)


class Op(StrEnum):
    """How a write applies its data."""

    CREATE = "create"  # precondition: the document does not exist
    MERGE = "merge"  # set(merge=True): only the given leaves change
    UPDATE = "update"  # the document exists (and, with a version, is unchanged since read)
    DELETE = "delete"  # remove the document (data empty)


@dataclass(frozen=True)
class Write:
    """One document's part of a commit; `data` is nested maps (keys are names, never paths)."""

    path: str
    op: Op
    data: Mapping[str, Any]
    version: Version = None  # UPDATE only: the update time it was read at

    def transforms(self) -> int:
        """Return how many field transforms this write carries."""
        return sum(1 for _, value in leaves(self.data) if isinstance(value, TRANSFORMS))


def leaves(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Yield every leaf of nested maps with its field path (a tuple of names)."""
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, Mapping):
            yield from leaves(value, path)
        else:
            yield path, value


def merge_payload(data: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty maps: in `set(merge=True)` an empty map would replace the stored one."""
    payload: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            value = merge_payload(value)
            if not value:
                continue
        payload[key] = value
    return payload


def transforms_per_document(writes: Sequence[Write]) -> Counter[str]:
    """Count the field transforms each document receives in one commit."""
    counts: Counter[str] = Counter()
    for write in writes:
        counts[write.path] += write.transforms()
    return counts


def check_commit(writes: Sequence[Write]) -> None:
    """Refuse a commit that production Firestore would reject for its transforms."""
    for path, count in transforms_per_document(writes).items():
        if count > MAX_TRANSFORMS_PER_DOCUMENT:
            raise ValueError(f"{path}: {count} field transforms in one commit (limit 500)")


@dataclass(frozen=True)
class CommitResult:
    """What a commit returned: the value after each transform, per document and field path, and versions."""

    values: Mapping[str, Mapping[tuple[str, ...], int | float]]
    versions: Mapping[str, Version] = field(default_factory=dict)  # each written document's update time

    def value(self, path: str, *field: str) -> int:
        """Return the integer a transform left in a field (0 if the commit had none there)."""
        return int(self.values.get(path, {}).get(tuple(field), 0))


def _nest(pairs: Sequence[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for path, value in pairs:
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return data


def batches(writes: Sequence[Write], *, max_transforms: int = 400) -> list[list[Write]]:
    """Split merge writes into commits of at most `max_transforms` transforms per document.

    For repairs whose size depends on the data (a month with many names to correct).
    Each commit names a document at most once.
    """
    commits: list[list[Write]] = []
    current: list[Write] = []
    paths: set[str] = set()
    budget = max_transforms
    for write in writes:
        pairs = list(leaves(write.data))
        chunks = [pairs[i : i + max_transforms] for i in range(0, len(pairs), max_transforms)] or [[]]
        for chunk in chunks:
            part = Write(write.path, write.op, _nest(chunk), write.version)
            cost = part.transforms()
            if current and (write.path in paths or cost > budget):
                commits.append(current)
                current, paths, budget = [], set(), max_transforms
            current.append(part)
            paths.add(write.path)
            budget -= cost
    if current:
        commits.append(current)
    return commits


def merged(writes: Sequence[Write]) -> list[Write]:
    """Combine merge writes to the same document into one (increments add up), keeping first-seen order.

    A commit then names each document once. Other operations must not share a document.
    """
    combined: dict[str, Write] = {}

    def add(into: dict[str, Any], data: Mapping[str, Any]) -> None:
        for key, value in data.items():
            current = into.get(key)
            if isinstance(value, Mapping) and isinstance(current, dict):
                add(current, value)
            elif isinstance(value, Increment) and isinstance(current, Increment):
                into[key] = Increment(current.value + value.value)
            else:
                into[key] = _copy(value)

    for write in writes:
        known = combined.get(write.path)
        if known is None:
            combined[write.path] = Write(write.path, write.op, _copy(write.data), write.version)
        elif known.op is Op.MERGE and write.op is Op.MERGE:
            add(known.data, write.data)  # type: ignore[arg-type]  # a copy this function owns
        else:
            raise ValueError(f"{write.path}: only merge writes can be combined")
    return list(combined.values())


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, Replace):
        return {key: _copy(item) for key, item in value.items()}
    return value
