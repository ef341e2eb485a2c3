"""The admins' price catalog: `set_price` and `list_prices` (callables, admin only).

Each provider and model has one price book, `TallyPriceBooks/{hash}`, holding the
versions a step could still need: every version that took effect in the last 36 days
(steps are at most 35 days old) and the one in force before them. A version applies to
steps timestamped on or after its `effectiveFrom` (00:00 UTC) and recorded after it is
set; recorded steps are never repriced. A price for model `M` also applies to `M`'s dated
or versioned snapshots (see `pricing`), unless the snapshot has a price of its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from tally import layout, ports, pricing
from tally.config import Settings
from tally.pricing import CatalogPrice
from tally.requests import SetPriceIn
from tally.values import Caller, Document
from tally.writes import Op, Replace, Write

SET_AT = "setAt"  # queried: the latest prices set

LIST_LIMIT = 1000


class PriceStore(ports.DocumentStore, Protocol):
    """The store operations the catalog needs."""

    def price_log(self, *, limit: int) -> list[Document]: ...


def view(version: CatalogPrice, *, set_at: Any = None) -> dict[str, Any]:
    """Return a price as the callables answer it (prices as numbers)."""
    result: dict[str, Any] = {
        "provider": version.provider,
        "model": version.model,
        "effectiveFrom": version.effective_from,
        "prices": {key: float(value) for key, value in version.prices.items()},
    }
    if set_at is not None:
        result[SET_AT] = set_at.isoformat().replace("+00:00", "Z") if isinstance(set_at, datetime) else set_at
    return result


def kept_versions(book: dict[str, Any], new: CatalogPrice, now: datetime) -> dict[str, Any]:
    """Return the versions a book keeps with `new` added: those a step could still need."""
    versions = dict(book.get("versions") or {})
    versions[new.effective_from] = {**new.document(), SET_AT: now}
    horizon = (now - timedelta(days=pricing.KEPT_DAYS)).date().isoformat()
    ordered = sorted(versions)
    older = [day for day in ordered if day <= horizon]
    keep = set(ordered) - set(older[:-1])  # every recent version, and the last one before the horizon
    return {day: versions[day] for day in ordered if day in keep}


def set_price(
    *, store: PriceStore, admin: Caller, request: SetPriceIn, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Store an admin's price for a provider and model, from `effectiveFrom` (default today)."""
    version = CatalogPrice(
        provider=request.provider,
        model=request.model,
        effective_from=request.effective_from or now.date().isoformat(),
        prices=request.prices.given(),
    )
    path = pricing.book_path(request.provider, request.model)
    book = store.read([path])[path]
    versions = kept_versions(dict(book.fields), version, now)
    fields = {"provider": request.provider, "model": request.model, "updatedAt": now, "updatedBy": admin.uid}
    if book.exists:
        write = Write(path, Op.UPDATE, {**fields, "versions": Replace(versions)}, version=book.version)
    else:
        write = Write(path, Op.CREATE, {**fields, "versions": versions})
    entry_id = layout.digest(version.provider, version.model, version.effective_from, now.isoformat())[:32]
    entry = Write(
        f"{layout.PRICE_LOG}/{entry_id}",
        Op.CREATE,
        {**version.document(), SET_AT: now, "setBy": admin.uid},
    )
    store.commit([write, entry])
    return view(version, set_at=now)


def list_prices(*, store: PriceStore, settings: Settings, now: datetime) -> dict[str, Any]:
    """Return every price set, newest first (the latest 1,000)."""
    entries = store.price_log(limit=LIST_LIMIT)
    return {
        "prices": [
            view(CatalogPrice.from_document(doc.fields), set_at=doc.fields.get(SET_AT)) for doc in entries
        ]
    }
