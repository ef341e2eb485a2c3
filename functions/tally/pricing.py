"""Pricing steps that give `units`: an admin's catalog price, else the genai-prices package, else unpriced.

Prices are Decimal USD; a step's cost is rounded to nano-USD, half-even, once. The
`genai-prices` package is imported on the first step it prices, so functions that never
price a step do not pay its import time. It is used offline: its bundled data, never its
auto-update.

Counts: `inputTokens` are the input tokens not read from or written to a cache;
`cacheReadTokens`, `cacheWriteTokens` (5-minute writes) and `cacheWrite1hTokens` (1-hour
writes) are the cached ones, disjoint (genai-prices counts them inside its input tokens, and
the 1-hour writes inside its cache writes, so they are added back for it); `requests` are
priced by a catalog's per-request price (the package charges its per-request price once per
call).

Catalog matching: a price set for model `M` applies to `M` and to its dated or versioned
snapshots, `M` followed by `-YYYY-MM-DD`, `-YYYYMMDD`, `@YYYYMMDD` or `-NNN` at its end. A
step reads its own model's book and, if its name is a snapshot's, its base model's book (at
most two documents, no query); the version in force in its own book wins, else the one in
the base model's.

Catalog counts: a count the price does not name costs 0 if it is `requests`; cache reads,
5-minute and 1-hour cache writes cost the input price (a 1-hour write without
`cacheWrite1hMTok` costs `cacheWriteMTok` when that is named: it is a cache write, and
Anthropic's 1-hour writes cost more than 5-minute ones, never less); any
other token count makes the catalog price not apply, and the step falls through to the
package, then to unpriced. The matched price is the only catalog price tried: an exact
price that does not apply does not fall back to the base model's.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tally import layout
from tally.money import MoneyError, usd_to_nanos
from tally.values import CostSource, Document, Units

GENAI_PRICES_VERSION = "0.2.3"
MILLION = Decimal(1_000_000)
PRICE_KEYS = {  # set_price's names -> Units' counts they price
    "inputMTok": "input_tokens",
    "outputMTok": "output_tokens",
    "cacheReadMTok": "cache_read_tokens",
    "cacheWriteMTok": "cache_write_tokens",
    "cacheWrite1hMTok": "cache_write_1h_tokens",
    "request": "requests",
}
# A count whose price is not named costs the input price (cache reads and writes) or 0 (requests).
AT_INPUT_PRICE = frozenset({"cacheReadMTok", "cacheWriteMTok", "cacheWrite1hMTok"})
FREE_UNNAMED = frozenset({"request"})
# A dated or versioned snapshot of a model: the base name, then one suffix at the end (matched whole).
_SNAPSHOT_RE = re.compile(r"(?P<base>.+)(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-\d{3})", re.ASCII)
KEPT_DAYS = 36  # a price book keeps every version a step could still need (steps are at most 35 days old)

# Tally's provider names -> genai-prices' provider ids where they differ (or to pin an alias).
PROVIDER_IDS = {
    "google": "google",
    "gemini": "google",
    "google_ai": "google",
    "vertex": "google",
    "vertex_ai": "google",
    "xai": "x-ai",
    "grok": "x-ai",
    "bedrock": "aws",
    "aws_bedrock": "aws",
    "amazon_bedrock": "aws",
    "mistralai": "mistral",
    "together_ai": "together",
    "togetherai": "together",
    "fireworks_ai": "fireworks",
    "azure_openai": "azure",
}


@dataclass(frozen=True)
class CatalogPrice:
    """One version of an admin's price for a provider and model (USD per million tokens, or per request)."""

    provider: str
    model: str
    effective_from: str  # YYYY-MM-DD, from 00:00 UTC
    prices: Mapping[str, Decimal]

    @property
    def starts(self) -> datetime:
        """Return the first instant the price applies to."""
        return datetime.fromisoformat(self.effective_from).replace(tzinfo=UTC)

    def cost(self, units: Units) -> Decimal | None:
        """Return what `units` cost at this price, or None if a token count they use has no price here.

        Requests without a price cost 0; cache reads and writes (5-minute and 1-hour) without a
        price of their own cost the input price, except 1-hour writes, which cost the 5-minute
        writes' price when only that one is named (a cache write's price names them too).
        """
        total = Decimal(0)
        for key, attribute in PRICE_KEYS.items():
            count: int = getattr(units, attribute)
            if not count:
                continue
            price = self.prices.get(key)
            if (
                price is None and key == "cacheWrite1hMTok"
            ):  # a 1-hour write is a cache write: never below one
                price = self.prices.get("cacheWriteMTok")
            if price is None and key in AT_INPUT_PRICE:
                price = self.prices.get("inputMTok")
            if price is None and key in FREE_UNNAMED:
                continue
            if price is None:
                return None
            total += price * count if key == "request" else price * count / MILLION
        return total

    def document(self) -> dict[str, Any]:
        """Return the stored form (prices as decimal strings: exact)."""
        return {
            "provider": self.provider,
            "model": self.model,
            "effectiveFrom": self.effective_from,
            "prices": {key: str(value) for key, value in self.prices.items()},
        }

    @classmethod
    def from_document(cls, data: Mapping[str, Any]) -> CatalogPrice:
        """Read a stored version."""
        return cls(
            provider=str(data["provider"]),
            model=str(data["model"]),
            effective_from=str(data["effectiveFrom"]),
            prices={key: Decimal(str(value)) for key, value in (data.get("prices") or {}).items()},
        )


def book_path(provider: str, model: str) -> str:
    """Return the price book of a provider and model: every catalog version still needed."""
    return f"{layout.PRICE_BOOKS}/{layout.digest(provider, model)[:32]}"


def base_model(model: str) -> str | None:
    """Return the model a dated or versioned snapshot's name is of (None if `model` is no snapshot's)."""
    found = _SNAPSHOT_RE.fullmatch(model)
    return found["base"] if found else None


def catalog_models(model: str) -> tuple[str, ...]:
    """Return the models whose catalog price may apply to `model`, the exact one first."""
    base = base_model(model)
    return (model,) if base is None else (model, base)


def book_paths(provider: str | None, model: str) -> list[str]:
    """Return the price books a step of `provider` and `model` needs: its own, then its base model's."""
    if provider is None:
        return []
    return [book_path(provider, name) for name in catalog_models(model)]


def versions(book: Mapping[str, Any]) -> list[CatalogPrice]:
    """Return a book's versions, oldest first."""
    return sorted(
        (CatalogPrice.from_document(v) for v in (book.get("versions") or {}).values()),
        key=lambda p: p.effective_from,
    )


def in_force(book: Mapping[str, Any], at: datetime) -> CatalogPrice | None:
    """Return the catalog version in force at `at` (the latest that started at or before it)."""
    found = None
    for version in versions(book):
        if version.starts <= at:
            found = version
    return found


def matching(
    *, provider: str | None, model: str, at: datetime, books: Mapping[str, Document]
) -> CatalogPrice | None:
    """Return the catalog price for `model` in force at `at`: its own, else its base model's.

    `books` holds the documents read at `book_paths(provider, model)` (others are ignored).
    """
    for path in book_paths(provider, model):
        doc = books.get(path)
        version = in_force(doc.fields, at) if doc is not None else None
        if version is not None:
            return version
    return None


@dataclass(frozen=True)
class Priced:
    """A step's cost and where it came from."""

    cost_nanos: int
    source: CostSource
    price: Mapping[str, Any] | None  # which price was used (stored with the step)


UNPRICED = Priced(0, CostSource.UNPRICED, None)
_import_lock = threading.Lock()


def _genai() -> Any:
    """Import genai-prices on first use (about 0.3 s; most functions never need it)."""
    with _import_lock:
        import genai_prices

        return genai_prices


CACHE_BOUND = 10_000


def _bound_caches(genai: Any) -> None:
    """Keep genai-prices' lookup caches bounded: they grow with every model name callers send."""
    snapshot = genai.data_snapshot.get_snapshot()
    names = ("_lookup_cache", "_provider_cache", "_provider_misses")
    caches = [getattr(snapshot, name, None) for name in names]
    if sum(len(cache) for cache in caches if cache is not None) > CACHE_BOUND:
        for cache in caches:
            if cache is not None:
                cache.clear()


def package_cost(
    provider: str | None, units: Units, at: datetime
) -> tuple[Decimal, Mapping[str, Any]] | None:
    """Return the genai-prices price of `units` at `at`, or None for a model or provider it does not know."""
    genai = _genai()
    writes = units.cache_write_tokens + units.cache_write_1h_tokens
    usage = genai.Usage(
        input_tokens=units.input_tokens + units.cache_read_tokens + writes,
        output_tokens=units.output_tokens,
        cache_read_tokens=units.cache_read_tokens,
        cache_write_tokens=writes,
        cache_write_1h_tokens=units.cache_write_1h_tokens,  # priced apart where the package has a 1h price
    )
    provider_id = PROVIDER_IDS.get(provider.lower(), provider.lower()) if provider else None
    try:
        result = genai.calc_price(usage, units.model, provider_id=provider_id, genai_request_timestamp=at)
    except (LookupError, ValueError):
        return None
    finally:
        _bound_caches(genai)
    return Decimal(result.total_price), {
        "package": "genai-prices",
        "version": GENAI_PRICES_VERSION,
        "provider": result.provider.id,
        "model": result.model.id,
        "modelPrice": str(result.model_price),
    }


def price(
    *,
    provider: str | None,
    units: Units,
    at: datetime,
    books: Mapping[str, Document] | None = None,
    book: Mapping[str, Any] | None = None,
) -> Priced:
    """Price a step: the catalog price that matches, else genai-prices, else unpriced (cost 0).

    `books` holds the documents read at `book_paths(provider, units.model)`; `book` (older
    callers) is the fields of the model's own book only, so it never matches a snapshot.
    """
    if books is not None:
        version = matching(provider=provider, model=units.model, at=at, books=books)
    else:
        version = in_force(book or {}, at)
    if version is not None and (cost := version.cost(units)) is not None:
        return Priced(
            _nanos(cost), CostSource.CATALOG, {"catalog": version.document(), "matched": version.model}
        )
    found = package_cost(provider, units, at)
    if found is not None:
        return Priced(_nanos(found[0]), CostSource.GENAI_PRICES, found[1])
    return UNPRICED


def _nanos(usd: Decimal) -> int:
    try:
        return usd_to_nanos(usd, maximum=Decimal(1000))
    except MoneyError as exc:
        raise PriceTooHigh(f"the units cost ${usd:.2f}; a step may cost at most $1000") from exc


class PriceTooHigh(ValueError):
    """Units that price over the most a step may cost."""
