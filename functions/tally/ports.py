"""The ports the services talk through: one document store, one directory, one paging loop, one retry policy.

Each service narrows `DocumentStore` to what it needs (a Protocol that extends it with its
own queries); the I/O ring outside this package implements them (`adapters.firestore`
for Firestore, `tally_dev.memory` for the tests). Nothing here imports Google.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from tally.values import Contention, Document
from tally.writes import CommitResult, Write

T = TypeVar("T")
PAGE_SIZE = 300  # documents a page of a query reads, unless a service says otherwise


class DocumentStore(Protocol):
    """Documents by path, atomic commits of `Write`s, and the platform's shard count."""

    shards: int

    def read(
        self, paths: Sequence[str], *, read_time: datetime | None = None, fields: Sequence[str] | None = None
    ) -> dict[str, Document]: ...

    def commit(self, writes: Sequence[Write]) -> CommitResult: ...

    def commit_each(self, groups: Sequence[Sequence[Write]], *, workers: int = 8) -> list[bool]: ...


class Directory(Protocol):
    """Who the users are (Firebase Auth): their emails, where known."""

    def emails(self, user_ids: Sequence[str]) -> dict[str, str]: ...


def by_path(doc: Document) -> str:
    """Return where a page ordered by path goes on from: the document's path."""
    return doc.path


def pages(
    fetch: Callable[[Any], Sequence[T]],
    *,
    cursor: Callable[[T], Any],
    size: int = PAGE_SIZE,
    start: Any = None,
) -> Iterator[Sequence[T]]:
    """Yield the pages of a query, each fetched after the `cursor` of the last item of the one before.

    The one paging loop: the first page is fetched after `start`; a page shorter than `size`
    is the last.
    """
    after: Any = start
    while page := fetch(after):
        yield page
        if len(page) < size:
            return
        after = cursor(page[-1])


def documents(
    fetch: Callable[[str | None], Sequence[Document]], *, size: int = PAGE_SIZE, start: str | None = None
) -> Iterator[Document]:
    """Yield every document of a query ordered by path (after the path `start`), page by page."""
    for page in pages(fetch, cursor=by_path, size=size, start=start):
        yield from page


def retrying(
    attempt: Callable[[], T],
    *,
    attempts: int,
    exhausted: Callable[[], Exception],
    sleep: Callable[[float], None] = time.sleep,
    backoff: float = 0.01,
) -> T:
    """Run `attempt` (each reads anew) until it commits without losing a race; then raise `exhausted()`.

    The one contention-retry policy: a lost race (`Contention`) waits a jittered, doubling
    delay (capped at half a second) and tries again from a fresh read.
    """
    for tries in range(1, attempts + 1):
        try:
            return attempt()
        except Contention:
            if tries < attempts and backoff > 0:
                sleep(random.uniform(0, min(0.5, backoff * 2**tries)))  # noqa: S311 - jitter, not crypto
    raise exhausted()
