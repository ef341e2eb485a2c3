from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import genai_prices
import pytest

from tally import layout, names, plans, pricing
from tally.config import Settings
from tally.errors import InvalidArgument, PermissionDenied
from tally.models import parse_record_request
from tally.prices import kept_versions, list_prices, set_price
from tally.recording import record_steps
from tally.values import Caller, CostSource, Units
from tally_dev.memory import MemoryStore

NOW = datetime(2026, 11, 14, 10, tzinfo=UTC)
ADMIN = Caller("boss", admin=True)


def genai_nanos(provider: str, model: str, at: datetime, **counts: int) -> int:
    usage = genai_prices.Usage(**counts)
    total = genai_prices.calc_price(
        usage, model, provider_id=provider, genai_request_timestamp=at
    ).total_price
    return int(Decimal(total).quantize(Decimal("1e-9")) * 10**9)


def test_gpt_4o_is_priced_by_the_package_to_the_nano() -> None:
    priced = pricing.price(
        provider="openai", units=Units("gpt-4o", input_tokens=1200, output_tokens=350), at=NOW, book=None
    )

    assert priced.source is CostSource.GENAI_PRICES
    assert priced.cost_nanos == genai_nanos("openai", "gpt-4o", NOW, input_tokens=1200, output_tokens=350)
    assert priced.cost_nanos == 6_500_000
    assert priced.price is not None
    assert (priced.price["package"], priced.price["version"], priced.price["model"]) == (
        "genai-prices",
        "0.2.3",
        "gpt-4o",
    )


def test_cache_tokens_are_added_back_to_the_packages_input_count() -> None:
    units = Units(
        "claude-3-5-sonnet",
        input_tokens=400,
        output_tokens=200,
        cache_read_tokens=500,
        cache_write_tokens=100,
    )

    priced = pricing.price(provider="anthropic", units=units, at=NOW, book=None)

    expected = genai_nanos(
        "anthropic",
        "claude-3-5-sonnet",
        NOW,
        input_tokens=1000,
        output_tokens=200,
        cache_read_tokens=500,
        cache_write_tokens=100,
    )
    assert priced.cost_nanos == expected == 4_725_000  # (400*3 + 500*0.3 + 100*3.75 + 200*15) / 1e6 USD


def test_provider_names_map_to_the_packages_ids() -> None:
    priced = pricing.price(provider="xai", units=Units("grok-3", input_tokens=10_000), at=NOW, book=None)

    assert priced.source is CostSource.GENAI_PRICES
    assert priced.price is not None
    assert priced.price["provider"] == "x-ai"


def test_an_unknown_model_or_provider_is_unpriced_not_refused() -> None:
    for provider, model in (("openai", "no-such-model"), ("no-such-provider", "gpt-4o")):
        priced = pricing.price(provider=provider, units=Units(model, input_tokens=5), at=NOW, book=None)
        assert (priced.cost_nanos, priced.source, priced.price) == (0, CostSource.UNPRICED, None)


def book(*versions: pricing.CatalogPrice) -> dict[str, Any]:
    return {"versions": {v.effective_from: v.document() for v in versions}}


def catalog(day: str, **prices: str) -> pricing.CatalogPrice:
    return pricing.CatalogPrice("openai", "gpt-4o", day, {k: Decimal(v) for k, v in prices.items()})


def test_the_catalog_wins_from_its_effective_date_and_the_package_before_it() -> None:
    prices = book(catalog("2026-11-10", inputMTok="5", outputMTok="20"))
    units = Units("gpt-4o", input_tokens=1200, output_tokens=350)

    after = pricing.price(provider="openai", units=units, at=NOW, book=prices)
    before = pricing.price(
        provider="openai", units=units, at=datetime(2026, 11, 9, 23, 59, tzinfo=UTC), book=prices
    )

    assert (after.source, after.cost_nanos) == (CostSource.CATALOG, 13_000_000)  # 1200*5/1e6 + 350*20/1e6
    assert after.price is not None
    assert after.price["catalog"]["effectiveFrom"] == "2026-11-10"
    assert (before.source, before.cost_nanos) == (CostSource.GENAI_PRICES, 6_500_000)


def test_a_step_uses_the_version_in_force_at_its_own_time() -> None:
    prices = book(catalog("2026-11-01", request="0.01"), catalog("2026-11-12", request="0.02"))
    units = Units("gpt-4o", requests=3)

    early = pricing.price(provider="openai", units=units, at=datetime(2026, 11, 5, tzinfo=UTC), book=prices)
    late = pricing.price(provider="openai", units=units, at=NOW, book=prices)

    assert (early.cost_nanos, late.cost_nanos) == (30_000_000, 60_000_000)


def test_a_catalog_price_that_lacks_a_count_falls_through_and_cache_reads_use_the_input_price() -> None:
    requests_only = book(catalog("2026-11-01", request="0.01"))
    input_only = book(catalog("2026-11-01", inputMTok="2"))

    tokens = pricing.price(
        provider="openai",
        units=Units("gpt-4o", input_tokens=1200, output_tokens=350),
        at=NOW,
        book=requests_only,
    )
    cached = pricing.price(
        provider="openai",
        units=Units("gpt-4o", input_tokens=10, cache_read_tokens=90),
        at=NOW,
        book=input_only,
    )

    assert tokens.source is CostSource.GENAI_PRICES
    assert (cached.source, cached.cost_nanos) == (CostSource.CATALOG, 200_000)


def test_rounding_is_half_even_once_per_step() -> None:
    prices = book(catalog("2026-11-01", inputMTok="0.0000025"))  # 2.5e-12 USD a token

    one = pricing.price(provider="openai", units=Units("gpt-4o", input_tokens=1), at=NOW, book=prices)
    five_hundred = pricing.price(
        provider="openai", units=Units("gpt-4o", input_tokens=500), at=NOW, book=prices
    )
    three_hundred = pricing.price(
        provider="openai", units=Units("gpt-4o", input_tokens=300), at=NOW, book=prices
    )

    assert (one.cost_nanos, five_hundred.cost_nanos, three_hundred.cost_nanos) == (
        0,
        1,
        1,
    )  # 0.0025, 1.25, 0.75


def test_units_that_price_over_the_step_limit_are_refused() -> None:
    prices = book(catalog("2026-11-01", request="1"))

    with pytest.raises(pricing.PriceTooHigh):
        pricing.price(provider="openai", units=Units("gpt-4o", requests=1001), at=NOW, book=prices)


def record(store: MemoryStore, *steps: dict[str, Any]) -> dict[str, Any]:
    request = parse_record_request({"steps": list(steps)}, now=NOW)
    outcome = record_steps(
        store=store,
        caller=Caller("u1"),
        request=request,
        settings=Settings(),
        now=NOW,
        admitted_cache=names.AdmittedNames(),
        shards=plans.ShardPicker(seed=1),
    )
    return outcome.body


def llm(op: str, model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    return {
        "operationId": op,
        "usageType": "AI",
        "feature": "chat",
        "provider": "openai",
        "units": {"model": model, "inputTokens": 1200, "outputTokens": 350},
        **extra,
    }


def test_recording_prices_units_and_keeps_which_price_was_used() -> None:
    store = MemoryStore()

    body = record(store, llm("a"), llm("b", cost="0.5"), llm("c", model="mystery-1"))

    steps = {op: store.docs[layout.step_path("u1", op)] for op in "abc"}
    assert [steps[op]["costSource"] for op in "abc"] == ["genai-prices", "client", "unpriced"]
    assert [steps[op]["costNanos"] for op in "abc"] == [6_500_000, 500_000_000, 0]
    assert steps["a"]["units"]["inputTokens"] == 1200
    assert steps["a"]["price"]["model"] == "gpt-4o"
    assert steps["c"]["modelKey"] == "mystery-1"
    assert body["usage"]["totalCost"] == 0.5065
    month = store.docs[layout.user_month_path("u1", "2026-11")]
    assert (month["unpricedSteps"], month["apiCalls"]) == (1, 3)
    shard = next(doc for path, doc in store.docs.items() if path.startswith(layout.PLATFORM_SHARDS))
    assert shard["unpricedModels"] == {"openai": {"mystery-1": 1}}


def test_a_thousand_priced_steps_add_up_with_no_drift() -> None:
    store = MemoryStore()

    for batch in range(10):
        record(store, *[llm(f"op{batch}-{n}") for n in range(100)])

    assert store.docs[layout.user_month_path("u1", "2026-11")]["costNanos"] == 1000 * 6_500_000


def test_set_price_is_for_admins_and_validated_by_field() -> None:
    store = MemoryStore()
    good = {"provider": "google_maps", "model": "places_autocomplete", "prices": {"request": 0.00283}}

    with pytest.raises(PermissionDenied):
        set_price(store=store, caller=Caller("u1"), data=good, settings=Settings(), now=NOW)
    with pytest.raises(InvalidArgument, match="prices: give at least one price"):
        set_price(store=store, caller=ADMIN, data={**good, "prices": {}}, settings=Settings(), now=NOW)
    with pytest.raises(InvalidArgument, match="effectiveFrom: must be a date"):
        set_price(
            store=store,
            caller=ADMIN,
            data={**good, "effectiveFrom": "2026-13-01"},
            settings=Settings(),
            now=NOW,
        )
    with pytest.raises(InvalidArgument, match=r"prices\.request: must be >= 0"):
        set_price(
            store=store, caller=ADMIN, data={**good, "prices": {"request": -1}}, settings=Settings(), now=NOW
        )
    stored = set_price(store=store, caller=ADMIN, data=good, settings=Settings(), now=NOW)

    assert stored == {
        "provider": "google_maps",
        "model": "places_autocomplete",
        "effectiveFrom": "2026-11-14",
        "prices": {"request": 0.00283},
        "setAt": "2026-11-14T10:00:00Z",
    }


def test_list_prices_newest_first_and_a_set_price_prices_new_steps() -> None:
    store = MemoryStore()
    data = {
        "provider": "openai",
        "model": "gpt-4o",
        "effectiveFrom": "2026-11-01",
        "prices": {"inputMTok": 5, "outputMTok": 20},
    }
    set_price(store=store, caller=ADMIN, data=data, settings=Settings(), now=NOW - timedelta(hours=1))
    set_price(
        store=store,
        caller=ADMIN,
        data={**data, "prices": {"inputMTok": 1, "outputMTok": 1}},
        settings=Settings(),
        now=NOW,
    )

    listed = list_prices(store=store, caller=ADMIN, data=None, settings=Settings(), now=NOW)["prices"]
    record(store, llm("a"))

    assert [p["prices"] for p in listed] == [
        {"inputMTok": 1.0, "outputMTok": 1.0},
        {"inputMTok": 5.0, "outputMTok": 20.0},
    ]
    assert store.docs[layout.step_path("u1", "a")]["costNanos"] == 1_550_000  # the newer price, same day


def test_a_book_keeps_only_the_versions_a_step_could_still_need() -> None:
    book_doc: dict[str, Any] = {}
    for days_ago in (400, 200, 60, 20, 1):
        day = (NOW - timedelta(days=days_ago)).date().isoformat()
        book_doc = {"versions": pricing_versions(book_doc, day)}

    assert sorted(book_doc["versions"]) == [(NOW - timedelta(days=d)).date().isoformat() for d in (60, 20, 1)]


def pricing_versions(book_doc: dict[str, Any], day: str) -> dict[str, Any]:
    return kept_versions(book_doc, catalog(day, request="1"), NOW)
