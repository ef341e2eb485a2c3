"""What an import did: imported, skipped and refused records, and the legacy monthly totals checked."""

from __future__ import annotations

from dataclasses import dataclass, field

from tally.money import nanos_to_usd
from tally.values import UsageType

ALREADY_RECORDED = "already recorded by Tally (the same operationId)"


@dataclass(frozen=True)
class Refused:
    """Something not imported, and why."""

    source: str
    reason: str


@dataclass
class MonthlyCheck:
    """A legacy monthly total beside what the imported steps add up to."""

    path: str
    user_id: str
    month: str
    usage_type: UsageType
    legacy_nanos: int
    imported_nanos: int = 0
    operations: set[str] = field(default_factory=set)

    @property
    def differs(self) -> bool:
        """Return whether the legacy total is not what its steps add up to."""
        return self.legacy_nanos != self.imported_nanos

    def line(self) -> str:
        """Return the report line."""
        legacy, imported = nanos_to_usd(self.legacy_nanos), nanos_to_usd(self.imported_nanos)
        if not self.differs:
            return f"{self.path}: ${legacy:.9g}, the imported steps add up to the same"
        gap = nanos_to_usd(abs(self.legacy_nanos - self.imported_nanos))
        more = "more" if self.legacy_nanos > self.imported_nanos else "less"
        return (
            f"{self.path}: DIFFERS: legacy says ${legacy:.9g}, the imported steps add up to ${imported:.9g} "
            f"(the old system counted ${gap:.9g} {more})"
        )


@dataclass(frozen=True)
class Skipped:
    """Something not imported because Tally already counts it, and why (each is also in the counts)."""

    source: str
    reason: str


@dataclass
class Counted:
    """Counts of one kind of thing imported."""

    imported: int = 0
    skipped: int = 0  # already imported
    refused: int = 0
    recorded: int = 0  # skipped: Tally itself already recorded it (the same operationId)


@dataclass
class ImportReport:
    """What an import did (or, with `dry_run`, would do)."""

    dry_run: bool
    sessions: Counted = field(default_factory=Counted)
    steps: Counted = field(default_factory=Counted)
    refused: list[Refused] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # what Tally already recorded, by source
    monthly: list[MonthlyCheck] = field(default_factory=list)

    def summary(self) -> str:
        """Return the summary line."""
        verb = "would import" if self.dry_run else "imported"
        flagged = sum(1 for check in self.monthly if check.differs)
        recorded = (
            f"skipped {self.sessions.recorded} sessions and {self.steps.recorded} steps {ALREADY_RECORDED}; "
            if self.sessions.recorded or self.steps.recorded
            else ""
        )
        return (
            f"import-legacy: {verb} {self.sessions.imported} sessions and {self.steps.imported} steps; "
            f"skipped {self.sessions.skipped} sessions and {self.steps.skipped} steps already imported; "
            f"{recorded}"
            f"refused {self.sessions.refused} sessions and {self.steps.refused} steps; "
            f"{flagged} of {len(self.monthly)} legacy monthly totals differ"
        )

    def skip_recorded(self, source: str, *, session: bool = False) -> None:
        """Report something skipped because Tally itself already recorded it."""
        (self.sessions if session else self.steps).recorded += 1
        self.skipped.append(Skipped(source, ALREADY_RECORDED))
