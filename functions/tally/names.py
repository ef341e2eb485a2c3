"""Bounded name cardinality: which feature and provider names a month's breakdowns admit (pure).

Names become keys of shared aggregates, so each UTC month admits at most
`max_names` feature names and as many provider names; a caller without the
`recorder` or `admin` claim may introduce at most `max_new_per_user` new names of
each kind a month.
A step whose name is not admitted is recorded in full but counted under `(other)`
in every breakdown. Admission is decided with fetch-and-add counters (see
`admission.admit_names`): no interleaving admits more than the bounds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from tally.timeutil import month_key
from tally.values import Step

OTHER = "(other)"


class NameKind(StrEnum):
    """The kinds of name the breakdowns are keyed by (models: only in the unpriced breakdown)."""

    FEATURE = "feature"
    PROVIDER = "provider"
    MODEL = "model"


@dataclass(frozen=True, order=True)
class NameKey:
    """A name in one month's breakdowns of one kind."""

    kind: NameKind
    month: str
    name: str


class Refusal(StrEnum):
    """Why a name went to `(other)`."""

    MONTH_FULL = "month-full"
    CALLER_QUOTA = "caller-quota"
    SESSION_FULL = "session-full"


PROBLEMS = {
    Refusal.MONTH_FULL: "counted under (other): this month already has the maximum number of {kind} names",
    Refusal.CALLER_QUOTA: "counted under (other): you introduced the maximum number of new {kind} names "
    "this month",
    Refusal.SESSION_FULL: "counted under (other) in this session: the session has the maximum number of "
    "{kind} names",
}


@dataclass(frozen=True)
class NameLimits:
    """The bounds on names."""

    max_names: int = 500
    max_new_per_user: int = 20


PAIR = "|"  # joins a provider and a model into one name: no valid name contains it


def name_of(step: Step, kind: NameKind) -> str | None:
    """Return the real name of one kind a step carries (a model only for an unpriced step).

    A model is admitted together with its provider, as the pair `provider|model`: the unpriced
    breakdown is keyed by both, so bounding models and providers apart would still let their
    product (250,000 pairs) into one document; bounding the pairs keeps it to 500 and `(other)`.
    """
    if kind is NameKind.FEATURE:
        return step.feature
    if kind is NameKind.PROVIDER:
        return step.provider
    return f"{step.provider}{PAIR}{step.units.model}" if step.unpriced and step.units is not None else None


def keys_of(steps: Iterable[Step]) -> set[NameKey]:
    """Return the distinct (kind, month, name) a set of steps would count under."""
    return {
        NameKey(kind, month_key(step.timestamp), name)
        for step in steps
        for kind in NameKind
        if (name := name_of(step, kind)) is not None
    }


@dataclass(frozen=True)
class NameReads:
    """What was read of the names a request needs: registry entries and counters."""

    admitted: frozenset[NameKey]
    month_counts: Mapping[tuple[NameKind, str], int]  # slots taken per kind and month
    quota_used: Mapping[tuple[NameKind, str], int]  # new names the caller introduced, per kind and month


@dataclass(frozen=True)
class Candidates:
    """Names to try to admit, per (kind, month), and names already refused."""

    to_try: Mapping[tuple[NameKind, str], tuple[NameKey, ...]]
    refused: Mapping[NameKey, Refusal]


def candidates(
    wanted: Iterable[NameKey], reads: NameReads, *, trusted: bool, limits: NameLimits
) -> Candidates:
    """Decide which unknown names may still be admitted, from counters read without locks.

    A full month or an exhausted quota refuses at once (no counter is touched, so a
    name storm costs no shared write); otherwise the name is tried with fetch-and-add.
    """
    to_try: dict[tuple[NameKind, str], list[NameKey]] = {}
    refused: dict[NameKey, Refusal] = {}
    for key in sorted(wanted):
        if key in reads.admitted:
            continue
        if reads.month_counts.get((key.kind, key.month), 0) >= limits.max_names:
            refused[key] = Refusal.MONTH_FULL
        elif not trusted and reads.quota_used.get((key.kind, key.month), 0) >= limits.max_new_per_user:
            refused[key] = Refusal.CALLER_QUOTA
        else:
            to_try.setdefault((key.kind, key.month), []).append(key)
    return Candidates({group: tuple(keys) for group, keys in to_try.items()}, refused)


def within(batch: tuple[NameKey, ...], after: int, bound: int) -> int:
    """Return how many of a batch fit under `bound`, given the counter's value after adding them all.

    Fetch-and-add hands out the slots `after - len(batch) + 1 ... after`; those up to
    `bound` are this batch's. Slots past the bound are simply never used.
    """
    before = after - len(batch)
    return max(0, min(len(batch), bound - before))


def count_under(steps: Iterable[Step], admitted: frozenset[NameKey] | set[NameKey]) -> tuple[Step, ...]:
    """Set each step's counted names: the real name if admitted in its month, else `(other)`."""
    result: list[Step] = []
    for step in steps:
        month = month_key(step.timestamp)
        keys = {
            kind: (name.rpartition(PAIR)[2] if kind is NameKind.MODEL else name)
            if NameKey(kind, month, name) in admitted
            else OTHER
            for kind in NameKind
            if (name := name_of(step, kind)) is not None
        }
        result.append(
            replace(
                step,
                feature_key=keys[NameKind.FEATURE],
                provider_key=keys[NameKind.PROVIDER],
                model_key=keys.get(NameKind.MODEL),
            )
        )
    return tuple(result)


@dataclass(frozen=True)
class Warning:
    """One step counted under `(other)`, and why."""

    field: str
    problem: str

    def body(self) -> dict[str, str]:
        """Return the response form."""
        return {"field": self.field, "problem": self.problem}


def warning(index: int, kind: NameKind, reason: Refusal) -> Warning:
    """Return the warning for one step's name counted under `(other)`."""
    field = "units.model" if kind is NameKind.MODEL else kind.value
    return Warning(f"steps[{index}].{field}", PROBLEMS[reason].format(kind=kind.value))


class AdmittedNames:
    """A bounded in-process cache of admitted names (admission is final for the month)."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[NameKey, None] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, keys: Iterable[NameKey]) -> set[NameKey]:
        """Return which of `keys` are known to be admitted."""
        with self._lock:
            found = {key for key in keys if key in self._keys}
            for key in found:
                self._keys.move_to_end(key)
            return found

    def add(self, keys: Iterable[NameKey]) -> None:
        """Remember admitted names."""
        with self._lock:
            for key in keys:
                self._keys[key] = None
                self._keys.move_to_end(key)
            while len(self._keys) > self._capacity:
                self._keys.popitem(last=False)
