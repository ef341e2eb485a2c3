"""Reconcile a month: recompute every aggregate from the step documents, report and repair differences.

Production Firestore serves a `read_time` for one hour only, and reading a month of 100,000
users can take longer, so no snapshot is held across the run:

1. **Users, a page of steps at a time.** The month's steps are read in pages ordered by path
   (a user's steps arrive together), each page at its own snapshot time `T`; the last user
   of a full page is read to its end at the same `T`. Each user's documents (the truth
   `TallyUsers/{uid}` and its mirror in `users/{uid}`, the user's month document, Tally's copy
   of their limits) are read at that `T` and compared with what the steps add up to. With
   `fix`, the user's repair is committed at once, conditional on every repaired document
   being unchanged since `T`: a concurrent request or `set_limits` makes it fail, and the
   user is checked again from a new read. So a repair never rolls back a concurrent write,
   and an interrupted run keeps what it repaired.
2. **The platform, at one new snapshot `T2`.** Every commit that counts a step in a user's
   month document counts it in one platform shard too, so the shards must add up to the
   users' month documents, breakdown by breakdown. Both are read at `T2` (one document per
   active user), plus the corrections found in step 1 that are not in the month documents
   yet; the session counters are compared with the session documents at `T2`. A platform
   repair adds the difference to shard 0 (`Increment`), which later commits do not change.

Memory stays bounded: a user's steps are forgotten once checked; the platform's month is
bounded by the name bounds, and the set of users seen by the number of users.
"""

from tally.services.reconcile.reads import ReconcileStore
from tally.services.reconcile.report import Difference, Report, ShardCountMismatch
from tally.services.reconcile.run import reconcile

__all__ = ["Difference", "ReconcileStore", "Report", "ShardCountMismatch", "reconcile"]
