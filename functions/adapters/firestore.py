"""The Firestore store: Tally's documents by path and commits (`adapters.documents`), and its queries.

Nothing here decides what to write: `plans` builds the commits as data, the services
decide. The store only turns them into Firestore calls and reports what happened.
"""

from __future__ import annotations

from adapters.documents import READ_CHUNK, FirestoreDocuments
from adapters.queries import AlertQueries, HoldQueries, MonthQueries, SessionQueries

__all__ = ["READ_CHUNK", "FirestoreStore"]


class FirestoreStore(FirestoreDocuments, MonthQueries, SessionQueries, HoldQueries, AlertQueries):
    """Tally's documents in one Firestore database: reads, atomic commits and every query the services run."""
