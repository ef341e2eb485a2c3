"""A write census: every document each commit writes, projected to a platform request rate."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tally import layout
from tally.writes import Write

PER_USER = (layout.USERS, layout.SESSION_USAGE, layout.USER_MONTHS, layout.NAME_QUOTAS)


def kind_of(path: str) -> str:
    """Return a document's kind: its collection path with ids replaced by placeholders."""
    parts = path.split("/")
    return "/".join(part if i % 2 == 0 else "{id}" for i, part in enumerate(parts))


@dataclass
class Census:
    """Counts commits per document (install `record` as the store's `on_commit`)."""

    writes: Counter[str] = field(default_factory=Counter)
    transforms: Counter[str] = field(default_factory=Counter)
    commits: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, writes: Sequence[Write]) -> None:
        """Count one commit."""
        with self._lock:
            self.commits += 1
            for write in writes:
                self.writes[write.path] += 1
                self.transforms[write.path] = max(self.transforms[write.path], write.transforms())

    def shared(self) -> dict[str, int]:
        """Return the writes of documents shared by many users."""
        return {path: n for path, n in self.writes.items() if not path.startswith(PER_USER)}

    def per_user(self) -> dict[str, int]:
        """Return the writes of documents that belong to one user."""
        return {path: n for path, n in self.writes.items() if path.startswith(PER_USER)}

    @staticmethod
    def hottest(counts: dict[str, int]) -> tuple[str, int]:
        """Return the most written document and its count."""
        return max(counts.items(), key=lambda item: item[1], default=("-", 0))
