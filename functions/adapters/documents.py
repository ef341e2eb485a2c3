"""Firestore I/O: documents read by path, and `Write` lists committed atomically.

Nothing here decides what to write: `plans` builds the commits as data, the services
decide. This module only turns them into Firestore calls and reports what happened:
a commit whose precondition failed (or that hit a transient fault) was not applied
and raises `Contention`; a successful commit returns the value every transform left
(Firestore's fetch-and-add, `WriteResult.transform_results`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.field_path import FieldPath

from tally.values import Contention, Document, Rejected
from tally.writes import DELETE, CommitResult, Increment, Maximum, Op, Replace, Write, check_commit

_RETRYABLE = (
    gexc.AlreadyExists,
    gexc.Conflict,
    gexc.FailedPrecondition,
    gexc.NotFound,
    gexc.Aborted,
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
)
_DOCUMENTS = "/documents/"
READ_CHUNK = 300  # documents per get_all round trip


def _firestore_value(value: Any) -> Any:
    """Turn Tally's transform markers into the client's sentinels, recursively."""
    if isinstance(value, Increment):
        return firestore.Increment(value.value)
    if isinstance(value, Maximum):
        return firestore.Maximum(value.value)
    if value is DELETE:
        return firestore.DELETE_FIELD
    if isinstance(value, Replace):
        return _firestore_value(dict(value.value))
    if isinstance(value, Mapping):
        return {key: _firestore_value(item) for key, item in value.items()}
    return value


def _flat_update(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return an update's leaves as quoted field paths (a dot in a name is part of the name)."""
    flat: dict[str, Any] = {}
    for path, value in _update_leaves(data, ()):
        flat[FieldPath(*path).to_api_repr()] = _firestore_value(value)
    return flat


def _update_leaves(data: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and not isinstance(value, Replace):
            yield from _update_leaves(value, path)
        else:
            yield path, value


def _merge_fields(data: Mapping[str, Any]) -> bool | list[FieldPath]:
    """Return what a merge sets: every leaf (`True`), or the leaf paths when a `Replace` must land whole.

    `set(merge=True)` merges nested maps leaf by leaf, so a replaced map would keep the stored
    keys it no longer has; naming the field paths makes each `Replace` overwrite its field.
    """
    leaves = list(_update_leaves(data, ()))
    if not any(isinstance(value, Replace) for _, value in leaves):
        return True
    return [FieldPath(*path) for path, _ in leaves]


def instant(value: Any) -> datetime | None:
    """Return a snapshot's read time as an aware datetime (queries give a protobuf Timestamp)."""
    if value is None or isinstance(value, datetime):
        return value
    converted: datetime = value.ToDatetime(tzinfo=UTC)
    return converted


def documents(query: Any, read_time: datetime | None) -> list[Document]:
    """Run a query (at a snapshot `read_time`; None: now) and return its documents."""
    return [
        Document(snap.reference.path, snap.to_dict() or {}, snap.update_time, instant(snap.read_time))
        for snap in query.stream(read_time=read_time)
    ]


def _relative(name: str) -> str:
    return name.split(_DOCUMENTS, 1)[1]


class FirestoreDocuments:
    """Documents by path in one Firestore database: reads, and `Write` lists committed atomically."""

    def __init__(
        self,
        client: firestore.Client,
        *,
        shards: int,
        on_commit: Callable[[Sequence[Write]], None] | None = None,
    ) -> None:
        self._db = client
        self.shards = shards
        self._on_commit = on_commit

    @property
    def client(self) -> firestore.Client:
        """Return the Firestore client (for tools that need raw access)."""
        return self._db

    # Documents

    def read(
        self, paths: Sequence[str], *, read_time: datetime | None = None, fields: Sequence[str] | None = None
    ) -> dict[str, Document]:
        """Read documents by path in as few round trips as possible (missing ones have data None).

        With `fields`, only those top-level fields are read (the app's `users/{uid}` may weigh 1 MiB).
        """
        unique = list(dict.fromkeys(paths))
        found: dict[str, Document] = {}
        for start in range(0, len(unique), READ_CHUNK):
            refs = [self._db.document(path) for path in unique[start : start + READ_CHUNK]]
            mask = list(fields) if fields is not None else None
            for snap in self._db.get_all(refs, field_paths=mask, read_time=read_time):
                path = snap.reference.path
                data = (snap.to_dict() or {}) if snap.exists else None
                found[path] = Document(
                    path, data, snap.update_time if snap.exists else None, instant(snap.read_time)
                )
        return {path: found.get(path, Document(path, None)) for path in unique}

    def read_as_of(self, paths: Sequence[str], version: Any) -> dict[str, Document]:
        """Read documents as they were at a commit's update time: every commit up to it, none after.

        Firestore reads at microsecond precision: a time with nanoseconds is rounded up, which
        can only add commits of the same microsecond (a conservative reader's choice).
        """
        if not isinstance(version, datetime):
            return self.read(paths)  # no commit time: now, which sees more (conservative)
        at = datetime(*version.timetuple()[:6], version.microsecond, tzinfo=version.tzinfo or UTC)
        if getattr(version, "nanosecond", 0) % 1000:
            at += timedelta(microseconds=1)
        return self.read(paths, read_time=at)

    def commit(self, writes: Sequence[Write]) -> CommitResult:
        """Apply writes in one atomic commit; raise Contention if it was not applied."""
        check_commit(writes)
        batch = self._db.batch()
        for write in writes:
            ref = self._db.document(write.path)
            if write.op is Op.CREATE:
                batch.create(ref, _firestore_value(write.data))
            elif write.op is Op.MERGE:
                batch.set(ref, _firestore_value(write.data), merge=_merge_fields(write.data))
            elif write.op is Op.DELETE:
                batch.delete(ref)
            else:
                option = self._db.write_option(last_update_time=write.version) if write.version else None
                batch.update(ref, _flat_update(write.data), option=option)
        pbs = list(batch._write_pbs)  # the protobufs name each transform's field, in result order
        try:
            results = batch.commit()
        except _RETRYABLE as exc:
            raise Contention(type(exc).__name__) from exc
        except gexc.InvalidArgument as exc:  # e.g. a document over 1 MiB: nothing was applied
            raise Rejected(str(exc.message)) from exc
        if self._on_commit is not None:
            self._on_commit(writes)  # a commit that was applied (the write census counts these)
        values: dict[str, dict[tuple[str, ...], int | float]] = {}
        versions: dict[str, Any] = {}
        for pb, result in zip(pbs, results, strict=True):
            name = pb.update.name or pb.delete
            if name and result.update_time is not None:
                versions[_relative(name)] = result.update_time
            transforms = list(pb.update_transforms)
            if not transforms:
                continue
            doc = values.setdefault(_relative(pb.update.name), {})
            for transform, value in zip(transforms, result.transform_results, strict=True):
                decoded = _helpers.decode_value(value, self._db)
                assert isinstance(decoded, int | float)
                doc[tuple(FieldPath.from_api_repr(transform.field_path).parts)] = decoded
        return CommitResult(values, versions)

    def commit_each(self, groups: Sequence[Sequence[Write]], *, workers: int = 8) -> list[bool]:
        """Commit each group on its own (a few at a time); return which were applied (not: lost, rejected)."""

        def one(group: Sequence[Write]) -> bool:
            try:
                self.commit(group)
            except (Contention, Rejected):
                return False
            return True

        if not groups:
            return []
        with ThreadPoolExecutor(max_workers=min(workers, len(groups))) as pool:
            return list(pool.map(one, groups))

    def _documents(self, query: Any, read_time: datetime | None) -> list[Document]:
        return documents(query, read_time)
