"""Pricing steps that give `units`: an admin's catalog price, else the genai-prices package, else unpriced.

Prices are Decimal USD; a step's cost is rounded to nano-USD, half-even, once. The
`genai-prices` package is imported on the first step it prices, so functions that never
price a step do not pay its import time. It is used offline: its bundled data, never its
auto-update.

Counts: `inputTokens` are the input tokens not read from or written to a cache;
`cacheReadTokens` and `cacheWriteTokens` are the cached ones (genai-prices counts them
inside its input tokens, so they are added back for it); `requests` are priced by a
catalog's per-request price (the package charges its per-request price once per call).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tally import layout
from tally.money import MoneyError, usd_to_nanos
from tally.values import CostSource, Units

GENAI_PRICES_VERSION = "0.2.3"
MILLION = Decimal(1_000_000)
PRICE_KEYS = {  # set_price's names -> Units' counts they price
    "inputMTok": "input_tokens",
    "outputMTok": "output_tokens",
    "cacheReadMTok": "cache_read_tokens",
    "cacheWriteMTok": "cache_write_tokens",
    "request": "requests",
}
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
        """Return what `units` cost at this price, or None if a count it uses has no price here.

        Cache reads and writes without a price of their own are charged at the input price.
        """
        total = Decimal(0)
        for key, attribute in PRICE_KEYS.items():
            count = getattr(units, attribute)
            if not count:
                continue
            price = self.prices.get(key)
            if price is None and key in ("cacheReadMTok", "cacheWriteMTok"):
                price = self.prices.get("inputMTok")
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
    usage = genai.Usage(
        input_tokens=units.input_tokens + units.cache_read_tokens + units.cache_write_tokens,
        output_tokens=units.output_tokens,
        cache_read_tokens=units.cache_read_tokens,
        cache_write_tokens=units.cache_write_tokens,
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


def price(*, provider: str | None, units: Units, at: datetime, book: Mapping[str, Any] | None) -> Priced:
    """Price a step: the catalog version in force, else genai-prices, else unpriced (cost 0)."""
    version = in_force(book or {}, at)
    if version is not None and (cost := version.cost(units)) is not None:
        return Priced(_nanos(cost), CostSource.CATALOG, {"catalog": version.document()})
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
