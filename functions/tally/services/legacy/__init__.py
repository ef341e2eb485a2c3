"""Import the usage kept by the earlier hand-rolled systems that Tally replaces (seeds 000 and 003).

Sources, all in the same Firestore project except the CSV:
- `SessionUsage/{uid}/sessions/{id}` documents with an embedded `steps` array (ISO-string or
  Timestamp dates, `usageType` in any spelling, float costs, `status` completed or not);
- `ApiUsage|AIUsage/{uid}/operations/{id}` logs, one step each;
- rows of a Postgres `api_usage_log` export (CSV; columns in the README).

Every legacy step becomes a Tally step whose `operationId` is derived from its legacy id
(`legacy-<id>`), so a step found in two sources, or imported twice, is counted once. A
legacy step whose own id (the embedded step's `operationId`, or the operations log's
document id) is the `operationId` of a step Tally already recorded for that user, as when
an app wrote both systems during its migration, is skipped as already recorded: both
paths are read in the same round trip. The legacy monthly documents are not imported
(that would count twice); they are compared with what the legacy steps add up to.

Nothing is ever half-counted: every commit holds step documents together with the
increments they make, atomically. A legacy session becomes a Tally session at the same
path, converted (only if unchanged since read, completed ones finalized once) in the same
commit as its steps when they fit one; a larger one is imported in commits of
`STEPS_PER_COMMIT` steps, each with its own counts, and converted last. A run interrupted
between those commits leaves the session a legacy one, with each step it imported counted
once; a run again skips those steps by id, imports the rest and converts it. A commit that
loses a race or meets a transient error is planned again from a new read. A session with
an unreadable step is refused whole.
"""

from tally.services.legacy.report import ALREADY_RECORDED, ImportReport, Skipped
from tally.services.legacy.run import import_legacy
from tally.services.legacy.sources import check_csv_header, legacy_operation_id
from tally.services.legacy.steps import ImportStalled

__all__ = [
    "ALREADY_RECORDED",
    "ImportReport",
    "ImportStalled",
    "Skipped",
    "check_csv_header",
    "import_legacy",
    "legacy_operation_id",
]
