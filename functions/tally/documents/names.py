"""The registry of admitted names: an entry per name (`TallyNames`), slot counters per kind and month
(`TallyNameCounts`), and each caller's count of new names per month (`TallyNameQuotas`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from tally import layout
from tally.names import NameKey, NameKind, NameReads
from tally.values import Caller, Document
from tally.writes import CommitResult, Increment, Op, Write

COUNT = "count"


def paths(caller: Caller, unknown: set[NameKey]) -> list[str]:
    """Return the documents that say whether unknown names are admitted, and how many slots are used."""
    found = [layout.name_path(key.kind.value, key.month, key.name) for key in sorted(unknown)]
    groups = sorted({(key.kind, key.month) for key in unknown})
    found += [layout.name_count_path(kind.value, month) for kind, month in groups]
    if not caller.trusted:
        found += [layout.name_quota_path(caller.uid, month) for month in sorted({m for _, m in groups})]
    return found


def reads(docs: Mapping[str, Document], caller: Caller, unknown: set[NameKey]) -> NameReads:
    """Interpret the registry entries and counters read for a request's unknown names."""
    admitted = frozenset(
        key for key in unknown if docs[layout.name_path(key.kind.value, key.month, key.name)].exists
    )
    groups = {(key.kind, key.month) for key in unknown}
    counts = {
        (kind, month): int(docs[layout.name_count_path(kind.value, month)].fields.get(COUNT, 0))
        for kind, month in groups
    }
    quota = (
        {}
        if caller.trusted
        else {
            (kind, month): int(docs[layout.name_quota_path(caller.uid, month)].fields.get(kind.value, 0))
            for kind, month in groups
        }
    )
    return NameReads(admitted, counts, quota)


def quota_writes(caller: str, batches: Mapping[tuple[NameKind, str], int]) -> list[Write]:
    """Return the fetch-and-add of the new names a caller introduces, per kind and month."""
    per_month: dict[str, dict[str, Any]] = {}
    for (kind, month), count in sorted(batches.items()):
        per_month.setdefault(month, {"userId": caller, "month": month})[kind.value] = Increment(count)
    return [Write(layout.name_quota_path(caller, month), Op.MERGE, data) for month, data in per_month.items()]


def quota_after(result: CommitResult, caller: str, kind: NameKind, month: str) -> int:
    """Return a caller's new names of a kind and month, as the commit's increment left them."""
    return result.value(layout.name_quota_path(caller, month), kind.value)


def count_writes(batches: Mapping[tuple[NameKind, str], int]) -> list[Write]:
    """Return the fetch-and-add of a month's admitted-name slots, per kind."""
    return [
        Write(
            layout.name_count_path(kind.value, month),
            Op.MERGE,
            {"kind": kind.value, "month": month, COUNT: Increment(count)},
        )
        for (kind, month), count in sorted(batches.items())
    ]


def count_after(result: CommitResult, kind: NameKind, month: str) -> int:
    """Return a month's used slots of a kind, as the commit's increment left them."""
    return result.value(layout.name_count_path(kind.value, month), COUNT)


def registry_writes(keys: Iterable[NameKey], *, by: str, now: datetime) -> list[Write]:
    """Return the registry entries of newly admitted names (idempotent)."""
    return [
        Write(
            layout.name_path(key.kind.value, key.month, key.name),
            Op.MERGE,
            {"kind": key.kind.value, "month": key.month, "name": key.name, "admittedAt": now, "by": by},
        )
        for key in sorted(keys)
    ]
