"""Name admission: which of a request's feature, provider and model names count under their own name.

Each month admits at most `max_names` names of a kind, and a caller at most
`max_new_per_user` new ones; a name past either bound counts under `(other)`. Admission is a
fetch-and-add on counters (see `admit_names`), so no interleaving admits past the bounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from tally import names, ports
from tally.config import Settings
from tally.documents import names as name_doc
from tally.names import NameKey, NameKind, NameReads, Refusal
from tally.values import Caller, Document, Step

ADMITTED = names.AdmittedNames()  # this instance's cache of names known to be admitted


@dataclass(frozen=True)
class Admission:
    """Which of a request's names are admitted, and why the others are not."""

    admitted: frozenset[NameKey]
    refused: Mapping[NameKey, Refusal]


def admit_names(
    *,
    store: ports.DocumentStore,
    caller: Caller,
    reads: NameReads,
    wanted: set[NameKey],
    limits: names.NameLimits,
    now: datetime,
) -> Admission:
    """Admit what names still fit, with fetch-and-add: first the caller's quota, then the month's slots.

    Each counter is incremented by the number of names tried and returns its new value,
    so concurrent requests get disjoint slots and no interleaving admits more than the
    bounds. A crash between steps only leaves slots unused.
    """
    found = names.candidates(wanted, reads, trusted=caller.trusted, limits=limits)
    refused = dict(found.refused)
    trying = dict(found.to_try)
    if trying and not caller.trusted:
        result = store.commit(name_doc.quota_writes(caller.uid, {g: len(keys) for g, keys in trying.items()}))
        passed: dict[tuple[NameKind, str], tuple[NameKey, ...]] = {}
        for (kind, month), batch in trying.items():
            after = name_doc.quota_after(result, caller.uid, kind, month)
            fit = names.within(batch, after, limits.max_new_per_user)
            if fit:
                passed[(kind, month)] = batch[:fit]
            refused.update(dict.fromkeys(batch[fit:], Refusal.CALLER_QUOTA))
        trying = passed
    admitted = set(reads.admitted)
    if trying:
        result = store.commit(name_doc.count_writes({group: len(keys) for group, keys in trying.items()}))
        new: list[NameKey] = []
        for (kind, month), batch in trying.items():
            fit = names.within(batch, name_doc.count_after(result, kind, month), limits.max_names)
            new += batch[:fit]
            refused.update(dict.fromkeys(batch[fit:], Refusal.MONTH_FULL))
        if new:
            store.commit(name_doc.registry_writes(new, by=caller.uid, now=now))
            admitted.update(new)
    return Admission(frozenset(admitted & wanted), refused)


def unknown_names(steps: Sequence[Step], admitted_cache: names.AdmittedNames) -> set[NameKey]:
    """Return the names of `steps` not known to be admitted in their months."""
    wanted = names.keys_of(steps)
    return wanted - admitted_cache.known(wanted)


def counted(
    *,
    store: ports.DocumentStore,
    caller: Caller,
    steps: Sequence[Step],
    settings: Settings,
    now: datetime,
    admitted_cache: names.AdmittedNames = ADMITTED,
    docs: Mapping[str, Document] | None = None,
    admit: Sequence[Step] | None = None,
) -> tuple[tuple[Step, ...], Mapping[NameKey, Refusal]]:
    """Return the steps with the names they count under (admitting what still fits), and why others are not.

    `docs` may already hold the registry entries and counters of the unknown names. With
    `admit`, only those steps' names may be admitted (the others are already recorded).
    """
    wanted = names.keys_of(steps)
    admitted = set(admitted_cache.known(wanted))
    unknown = wanted - admitted
    trying = unknown & names.keys_of(admit) if admit is not None else unknown
    refused: dict[NameKey, Refusal] = {}
    if unknown:
        paths = name_doc.paths(caller, unknown)
        if docs is None or any(path not in docs for path in paths):
            docs = store.read(paths)
        reads = name_doc.reads(docs, caller, unknown)
        admitted |= reads.admitted
        # Names only already-recorded steps carry are not admitted; say why they would not be (no write).
        found = names.candidates(unknown - trying, reads, trusted=caller.trusted, limits=settings.name_limits)
        refused.update(found.refused)
        if trying:
            admission = admit_names(
                store=store,
                caller=caller,
                reads=reads,
                wanted=trying,
                limits=settings.name_limits,
                now=now,
            )
            admitted_cache.add(admission.admitted)
            admitted |= admission.admitted
            refused.update(admission.refused)
    return names.count_under(steps, admitted), refused
