"""What reconcile finds and how it repairs it: differences, the report, repairs grouped per document."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tally import layout
from tally.documents import counters
from tally.documents.months import Flat
from tally.services import alerts
from tally.services.reconcile.reads import ReconcileStore
from tally.usage import Counts
from tally.values import Document
from tally.writes import Increment, Op, Replace, Write


class ShardCountMismatch(ValueError):
    """Platform shards exist beyond the configured count: this is not the deployed configuration."""


@dataclass(frozen=True)
class Difference:
    """One field whose stored value is not what the steps add up to."""

    path: str
    field: str
    stored: Any
    expected: Any

    def line(self) -> str:
        """Return the report line."""
        return f"{self.path} {self.field}: stored {self.stored}, recomputed {self.expected}"


@dataclass
class Report:
    """What a reconcile run found (and repaired)."""

    month: str
    steps: int = 0
    users: int = 0
    differences: list[Difference] = field(default_factory=list)
    fixed: bool = False
    unrepaired: list[str] = field(default_factory=list)  # what a fix could not repair, and why
    due: list[str] = field(default_factory=list)  # (v3) forecast and anomaly alerts due now, not raised
    unmeasured: int = 0  # (v3) users whose limits may come from a plan claim: limit checks skipped

    def summary(self) -> str:
        """Return the summary line."""
        line = f"reconcile: {len(self.differences)} differences"
        if self.differences and self.fixed:
            line += f", {len(self.differences) - len(self.unrepaired)} repaired"
        if self.unrepaired:
            line += f", {len(self.unrepaired)} not repaired"
        if self.due:
            line += f", {len(self.due)} alerts due{' (raised late)' if self.fixed else ''}"
        if self.unmeasured:
            line += f", limits of {self.unmeasured} users not checked (their plan may be claimed)"
        return f"{line} ({self.month}: {self.steps} steps of {self.users} users)"


class Repairs:
    """Differences found, and the changes that repair them (grouped per document).

    `absolute`: a counter is repaired by setting its recomputed value (for writes that are
    conditional on the document being unchanged since read: no field transform, so no
    limit of 500 per commit); otherwise by adding the difference (safe under concurrent
    increments).
    """

    def __init__(self, *, absolute: bool = False) -> None:
        self.absolute = absolute
        self.differences: list[Difference] = []
        self.alerts: list[alerts.Alert] = []  # missing alerts, to create
        self.due: list[str] = []  # missing alerts judged from a projection or a usual level
        self.unmeasured = False  # the user's limits are unknown: nothing that depends on them is checked
        self.data: dict[str, dict[str, Any]] = {}

    def missing_alerts(
        self,
        store: ReconcileStore,
        wanted: Sequence[alerts.Alert],
        read_time: datetime | None,
        *,
        judged: bool = False,
    ) -> None:
        """Note the alerts that should exist and do not.

        `judged` (forecast, anomaly): due by a judgement that moves with the clock and the
        days before, not by a total, so a missing one is reported as due, not as a difference.
        """
        if not wanted:
            return
        docs = store.read([layout.alert_path(a.alert_id) for a in wanted], read_time=read_time)
        for alert in wanted:
            path = layout.alert_path(alert.alert_id)
            if docs[path].exists:
                continue
            self.alerts.append(alert)
            if judged:
                self.due.append(f"{path} {alert.kind.value} {alert.scope} {alert.window}: due, not raised")
            else:
                self.differences.append(
                    Difference(path, "alert", None, f"{alert.kind.value} {alert.threshold}%")
                )

    def _put(self, path: str, keys: Sequence[str], value: Any) -> None:
        node = self.data.setdefault(path, {})
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    def counter(self, path: str, keys: Sequence[str], stored: int, expected: int) -> None:
        """Compare one counter; repair it by adding the difference."""
        if stored != expected:
            self.differences.append(Difference(path, ".".join(keys), stored, expected))
            self._put(path, keys, expected if self.absolute else Increment(expected - stored))

    def value(self, path: str, keys: Sequence[str], stored: Any, expected: Any) -> None:
        """Compare one plain value; repair it by setting it."""
        if stored != expected:
            self.differences.append(Difference(path, ".".join(keys), stored, expected))
            self._put(path, keys, expected)

    def counts(
        self, path: str, keys: Sequence[str], stored: Mapping[str, Any] | None, expected: Counts
    ) -> None:
        """Compare the three counters of one entry."""
        stored = stored or {}
        for name, value in counters.fields(expected).items():
            self.counter(path, [*keys, name], int(stored.get(name, 0)), value)

    def named(
        self, path: str, keys: Sequence[str], stored: Mapping[str, Any] | None, expected: Mapping[str, Counts]
    ) -> None:
        """Compare a map of named counters (a name stored but not expected must come to zero)."""
        stored = stored or {}
        for name in sorted(set(stored) | set(expected)):
            self.counts(path, [*keys, name], stored.get(name), expected.get(name, Counts()))

    def flat(self, path: str, stored: Flat, expected: Flat) -> None:
        """Compare flat counters (a key on either side: the other side counts 0)."""
        for key in sorted(set(stored) | set(expected)):
            self.counter(path, list(key), stored[key], expected[key])

    def writes(self, docs: Mapping[str, Document], context: Mapping[str, Mapping[str, Any]]) -> list[Write]:
        """Return one write per document, conditional on it being unchanged since `docs` was read."""
        writes = []
        for path, data in sorted(self.data.items()):
            doc = docs.get(path)
            if doc is None:
                writes.append(Write(path, Op.MERGE, {**context.get(path, {}), **data}))
            elif doc.exists:
                writes.append(Write(path, Op.UPDATE, data, version=doc.version))
            else:
                writes.append(Write(path, Op.CREATE, {**context.get(path, {}), **data}))
        return writes


def applied(stored: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Return a document's fields after a repair's changes (increments added, values set)."""
    result = dict(stored)
    for key, change in changes.items():
        current = result.get(key)
        if isinstance(change, Mapping) and not isinstance(change, Replace):
            result[key] = applied(current if isinstance(current, Mapping) else {}, change)
        elif isinstance(change, Increment):
            result[key] = (current if isinstance(current, int) else 0) + change.value
        else:
            result[key] = change
    return result
