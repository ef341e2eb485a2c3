from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import genai_prices
import pytest

from entrypoints.callables import list_prices, set_price
from tally import layout, names, pricing
from tally.config import Settings
from tally.documents import plans
from tally.errors import InvalidArgument, PermissionDenied
from tally.requests import parse_record_request
from tally.services.prices import kept_versions
from tally.services.recording import record_steps
from tally.values import Caller, CostSource, Document, Units
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


# Catalog matching (SPEC v3): a price for a model applies to its dated or versioned snapshots.


def version(
    model: str, day: str = "2026-11-01", provider: str = "openai", **prices: str
) -> pricing.CatalogPrice:
    return pricing.CatalogPrice(provider, model, day, {k: Decimal(v) for k, v in prices.items()})


def books(*versions: pricing.CatalogPrice) -> dict[str, Document]:
    """Return the price books holding `versions` as a read returns them (one book per provider and model)."""
    stored: dict[str, dict[str, Any]] = {}
    for v in versions:
        path = pricing.book_path(v.provider, v.model)
        stored.setdefault(path, {"versions": {}})["versions"][v.effective_from] = v.document()
    return {path: Document(path, data) for path, data in stored.items()}


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("o1-2024-12-17", "o1"),
        ("gemini-1.5-pro-002-20240101", "gemini-1.5-pro-002"),  # one suffix is taken off, not two
    ],
)
def test_a_snapshot_name_has_its_base_model(model: str, base: str) -> None:
    assert pricing.base_model(model) == base
    assert pricing.catalog_models(model) == (model, base)


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o-2024-08-06-preview",
        "gpt-4-0613",  # four digits
        "gemini-1.5-pro-02",  # two digits
        "model-1234567",  # seven digits
        "model-123456789",  # nine digits
        "claude-3-5-sonnet@2024-06-20",
        "claude-3-5-sonnet@2024062",
        "gpt-4o-2024-8-06",
        "gpt-4o_2024-08-06",
        "-123",  # no base left
        "@20240620",
        "gpt-4o-2024-08-06\n",  # matched whole
        "gemini-1.5-pro-\u0660\u0660\u0662",  # Arabic-Indic digits are not digits here
    ],
)
def test_other_names_are_no_snapshots(model: str) -> None:
    assert pricing.base_model(model) is None
    assert pricing.catalog_models(model) == (model,)


def test_a_step_needs_its_own_book_then_its_base_models_at_most_two() -> None:
    own, base = pricing.book_path("openai", "gpt-4o-2024-08-06"), pricing.book_path("openai", "gpt-4o")

    assert pricing.book_paths("openai", "gpt-4o-2024-08-06") == [own, base]
    assert pricing.book_paths("openai", "gpt-4o") == [base]
    assert pricing.book_paths("openai", "gpt-4o-mini") == [pricing.book_path("openai", "gpt-4o-mini")]
    assert pricing.book_paths(None, "gpt-4o-2024-08-06") == []
    assert base == f"{layout.PRICE_BOOKS}/{layout.digest('openai', 'gpt-4o')[:32]}"  # book_path is unchanged


@pytest.mark.parametrize(
    ("provider", "base", "snapshot"),
    [
        ("openai", "gpt-4o", "gpt-4o-2024-08-06"),
        ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
        ("vertex_ai", "claude-3-5-sonnet", "claude-3-5-sonnet@20240620"),
        ("google", "gemini-1.5-pro", "gemini-1.5-pro-002"),
    ],
)
def test_a_base_models_price_applies_to_its_snapshots(provider: str, base: str, snapshot: str) -> None:
    read = books(version(base, provider=provider, inputMTok="3.17", outputMTok="12.9"))

    priced = pricing.price(
        provider=provider,
        units=Units(snapshot, input_tokens=1200, output_tokens=350, requests=1),
        at=NOW,
        books=read,
    )

    assert (priced.source, priced.cost_nanos) == (CostSource.CATALOG, 8_319_000)  # 1200*3.17 + 350*12.9 µUSD
    assert priced.price is not None
    assert priced.price["matched"] == base
    assert priced.price["catalog"]["model"] == base


def test_an_exact_price_wins_over_the_base_models() -> None:
    read = books(
        version("gpt-4o", inputMTok="1"),
        version("gpt-4o-2024-08-06", inputMTok="2"),
    )

    snapshot = pricing.price(
        provider="openai", units=Units("gpt-4o-2024-08-06", input_tokens=1000), at=NOW, books=read
    )
    base = pricing.price(provider="openai", units=Units("gpt-4o", input_tokens=1000), at=NOW, books=read)

    assert (snapshot.cost_nanos, base.cost_nanos) == (2_000_000, 1_000_000)
    assert snapshot.price is not None
    assert base.price is not None
    assert (snapshot.price["matched"], base.price["matched"]) == ("gpt-4o-2024-08-06", "gpt-4o")


def test_the_base_models_price_applies_until_the_snapshots_own_takes_effect() -> None:
    read = books(
        version("gpt-4o", "2026-11-01", inputMTok="1"),
        version("gpt-4o-2024-08-06", "2026-11-14", inputMTok="2"),
    )
    units = Units("gpt-4o-2024-08-06", input_tokens=1000)

    before = pricing.price(provider="openai", units=units, at=NOW - timedelta(days=1), books=read)
    after = pricing.price(provider="openai", units=units, at=NOW, books=read)

    assert (before.cost_nanos, after.cost_nanos) == (1_000_000, 2_000_000)


def test_a_price_is_not_for_a_longer_name_nor_for_the_base_of_its_snapshot() -> None:
    read = books(version("gpt-4o", inputMTok="100"), version("gpt-4o-2024-08-06", inputMTok="100"))

    mini = pricing.price(provider="openai", units=Units("gpt-4o-mini", input_tokens=1000), at=NOW, books=read)
    other = pricing.price(
        provider="acme_ai", units=Units("gpt-4o-2024-08-06", input_tokens=1000), at=NOW, books=read
    )
    base_only = {p: d for p, d in read.items() if p == pricing.book_path("openai", "gpt-4o-2024-08-06")}
    base = pricing.price(provider="openai", units=Units("gpt-4o", input_tokens=1000), at=NOW, books=base_only)

    assert mini.source is CostSource.GENAI_PRICES  # gpt-4o-mini is not a snapshot of gpt-4o
    assert other.source is not CostSource.CATALOG  # another provider's price
    assert base.source is CostSource.GENAI_PRICES


def test_an_exact_price_that_does_not_apply_does_not_fall_back_to_the_base_models() -> None:
    read = books(
        version("gpt-4o", inputMTok="1", outputMTok="1"), version("gpt-4o-2024-08-06", inputMTok="1")
    )

    priced = pricing.price(
        provider="openai",
        units=Units("gpt-4o-2024-08-06", input_tokens=1200, output_tokens=350),
        at=NOW,
        books=read,
    )

    assert priced.source is CostSource.GENAI_PRICES


def test_matching_ignores_missing_books_and_books_of_other_models() -> None:
    path = pricing.book_path("openai", "gpt-4o")
    unrelated = books(version("gpt-4", inputMTok="1"))

    assert (
        pricing.matching(provider="openai", model="gpt-4o", at=NOW, books={path: Document(path, None)})
        is None
    )
    assert pricing.matching(provider="openai", model="gpt-4o", at=NOW, books=unrelated) is None
    assert pricing.matching(provider=None, model="gpt-4o", at=NOW, books=books(version("gpt-4o"))) is None


# Counts a catalog price does not name.


def test_requests_without_a_request_price_cost_nothing() -> None:
    read = books(version("house-model-7", provider="acme_ai", inputMTok="3.17", outputMTok="12.9"))
    units = Units("house-model-7", input_tokens=1200, output_tokens=350, requests=1)

    priced = pricing.price(provider="acme_ai", units=units, at=NOW, books=read)
    before_the_price = pricing.price(provider="acme_ai", units=units, at=NOW, books={})

    assert (priced.source, priced.cost_nanos) == (CostSource.CATALOG, 8_319_000)
    assert before_the_price == pricing.UNPRICED


def test_named_requests_are_priced_and_requests_alone_without_a_price_cost_nothing() -> None:
    priced = version("m", inputMTok="1", request="0.002").cost(Units("m", input_tokens=1000, requests=3))
    free = version("m", inputMTok="1").cost(Units("m", requests=3))

    assert (priced, free) == (Decimal("0.007"), Decimal(0))


def test_cache_reads_and_writes_without_their_own_price_cost_the_input_price() -> None:
    read = books(version("gpt-4o", inputMTok="2"))
    units = Units(
        "gpt-4o-2024-08-06",
        input_tokens=10,
        cache_read_tokens=20,
        cache_write_tokens=30,
        cache_write_1h_tokens=40,
        requests=1,
    )

    priced = pricing.price(provider="openai", units=units, at=NOW, books=read)

    assert (priced.source, priced.cost_nanos) == (CostSource.CATALOG, 200_000)  # 100 tokens at $2/MTok


def test_cache_tokens_without_any_input_price_make_the_catalog_price_not_apply() -> None:
    read = books(version("house-model-7", provider="acme_ai", request="0.01", outputMTok="1"))

    priced = pricing.price(
        provider="acme_ai", units=Units("house-model-7", cache_read_tokens=5, requests=1), at=NOW, books=read
    )

    assert priced == pricing.UNPRICED
    assert version("m", request="1").cost(Units("m", cache_write_1h_tokens=5)) is None


def test_tokens_without_their_price_fall_through_never_to_a_catalog_zero() -> None:
    read = books(
        version("gpt-4o", inputMTok="1"),
        version("house-model-7", provider="acme_ai", inputMTok="1"),
        version("house-model-8", provider="acme_ai", outputMTok="1"),
    )

    known = pricing.price(
        provider="openai", units=Units("gpt-4o", input_tokens=1200, output_tokens=350), at=NOW, books=read
    )
    unknown = pricing.price(
        provider="acme_ai", units=Units("house-model-7", input_tokens=1, output_tokens=1), at=NOW, books=read
    )
    no_input = pricing.price(
        provider="acme_ai", units=Units("house-model-8", input_tokens=1), at=NOW, books=read
    )

    assert (known.source, known.cost_nanos) == (CostSource.GENAI_PRICES, 6_500_000)
    assert unknown == no_input == pricing.UNPRICED


# One-hour cache writes.


def test_one_hour_cache_writes_use_their_own_price() -> None:
    price = version("claude-sonnet-4-5", inputMTok="3", cacheWriteMTok="3.75", cacheWrite1hMTok="6")
    units = Units("claude-sonnet-4-5-20250929", cache_write_tokens=1000, cache_write_1h_tokens=1000)

    assert price.cost(units) == Decimal("0.00975")  # 1000 * 3.75 + 1000 * 6 µUSD


def test_one_hour_cache_writes_without_their_own_price_cost_the_5_minute_price_never_less() -> None:
    price = version("claude-sonnet-4-5", inputMTok="3", cacheWriteMTok="3.75")
    units = Units("claude-sonnet-4-5", cache_write_tokens=1000, cache_write_1h_tokens=1000)

    assert price.cost(units) == Decimal("0.0075")  # 1000 * 3.75 + 1000 * 3.75 µUSD


def test_one_hour_cache_writes_with_no_cache_price_cost_the_input_price() -> None:
    price = version("claude-sonnet-4-5", inputMTok="3")
    units = Units("claude-sonnet-4-5", cache_write_1h_tokens=1000)

    assert price.cost(units) == Decimal("0.003")


def test_the_package_prices_one_hour_cache_writes_apart_from_5_minute_ones() -> None:
    units = Units(
        "claude-sonnet-4-5-20250929",
        input_tokens=400,
        output_tokens=200,
        cache_read_tokens=500,
        cache_write_tokens=100,
        cache_write_1h_tokens=1000,
    )

    priced = pricing.price(provider="anthropic", units=units, at=NOW, books={})

    expected = genai_nanos(
        "anthropic",
        "claude-sonnet-4-5-20250929",
        NOW,
        input_tokens=2000,
        output_tokens=200,
        cache_read_tokens=500,
        cache_write_tokens=1100,
        cache_write_1h_tokens=1000,
    )
    assert priced.source is CostSource.GENAI_PRICES
    # 400*3 + 500*0.3 + 100*3.75 + 1000*6 + 200*15 µUSD: one-hour writes at $6/MTok, not $3.75
    assert priced.cost_nanos == expected == 10_725_000


def test_a_catalog_step_keeps_the_version_used_and_the_model_it_matched() -> None:
    read = books(version("gpt-4o", inputMTok="2.5", cacheWrite1hMTok="5"))

    priced = pricing.price(
        provider="openai", units=Units("gpt-4o-2024-08-06", cache_write_1h_tokens=10), at=NOW, books=read
    )

    assert priced.price == {
        "catalog": {
            "provider": "openai",
            "model": "gpt-4o",
            "effectiveFrom": "2026-11-01",
            "prices": {"inputMTok": "2.5", "cacheWrite1hMTok": "5"},
        },
        "matched": "gpt-4o",
    }


# set_price and list_prices take the one-hour cache write price.


def test_set_price_takes_a_one_hour_cache_write_price_and_list_prices_returns_it() -> None:
    store = MemoryStore()
    data = {
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "prices": {"inputMTok": 3, "cacheWriteMTok": "3.75", "cacheWrite1hMTok": 6},
    }

    stored = set_price(store=store, caller=ADMIN, data=data, settings=Settings(), now=NOW)
    listed = list_prices(store=store, caller=ADMIN, data=None, settings=Settings(), now=NOW)["prices"]
    only_1h = set_price(
        store=store,
        caller=ADMIN,
        data={**data, "model": "m", "prices": {"cacheWrite1hMTok": 6}},
        settings=Settings(),
        now=NOW,
    )

    assert stored["prices"] == {"inputMTok": 3.0, "cacheWriteMTok": 3.75, "cacheWrite1hMTok": 6.0}
    assert listed[0]["prices"] == stored["prices"]
    assert only_1h["prices"] == {"cacheWrite1hMTok": 6.0}
    path = pricing.book_path("anthropic", "claude-sonnet-4-5")
    assert store.docs[path]["versions"]["2026-11-14"]["prices"]["cacheWrite1hMTok"] == "6"


@pytest.mark.parametrize(
    ("prices", "problem"),
    [
        ({"cacheWrite1hMTok": -1}, r"prices\.cacheWrite1hMTok: must be >= 0"),
        ({"cacheWrite1hMTok": "six"}, r"prices\.cacheWrite1hMTok: must be a decimal string"),
        ({"cacheWrite1hMTok": True}, r"prices\.cacheWrite1hMTok: must be a number or a decimal string"),
        ({"cacheWrite1hMTok": 1_000_001}, r"prices\.cacheWrite1hMTok: must be <= 1000000"),
        ({"cacheWrite1HMTok": 6}, r"prices\.cacheWrite1HMTok: is not an accepted field"),
        ({}, r"prices: give at least one price: .*cacheWrite1hMTok"),
    ],
)
def test_set_price_refuses_a_bad_one_hour_cache_write_price_by_field(
    prices: dict[str, Any], problem: str
) -> None:
    data = {"provider": "anthropic", "model": "claude-sonnet-4-5", "prices": prices}

    with pytest.raises(InvalidArgument, match=problem):
        set_price(store=MemoryStore(), caller=ADMIN, data=data, settings=Settings(), now=NOW)


def test_a_price_set_for_a_base_model_prices_its_snapshot_from_the_books_read() -> None:
    store = MemoryStore()
    set_price(
        store=store,
        caller=ADMIN,
        data={"provider": "openai", "model": "gpt-4o", "prices": {"inputMTok": "3.17", "outputMTok": "12.9"}},
        settings=Settings(),
        now=NOW - timedelta(hours=1),
    )
    units = Units("gpt-4o-2024-08-06", input_tokens=1200, output_tokens=350, requests=1)

    read = store.read(pricing.book_paths("openai", units.model))
    priced = pricing.price(provider="openai", units=units, at=NOW, books=read)

    assert len(read) == 2
    assert (priced.source, priced.cost_nanos) == (CostSource.CATALOG, 8_319_000)


# Through record_steps (needs recording to read `pricing.book_paths` and pass `books=`).


def test_recording_prices_a_wrappers_snapshot_step_from_the_base_models_price() -> None:
    store = MemoryStore()
    set_price(
        store=store,
        caller=ADMIN,
        data={"provider": "openai", "model": "gpt-4o", "prices": {"inputMTok": "3.17", "outputMTok": "12.9"}},
        settings=Settings(),
        now=NOW - timedelta(hours=1),
    )
    wrapper_units = {"model": "gpt-4o-2024-08-06", "inputTokens": 1200, "outputTokens": 350, "requests": 1}

    record(store, {**llm("a"), "units": wrapper_units})

    doc = store.docs[layout.step_path("u1", "a")]
    assert (doc["costSource"], doc["costNanos"]) == ("catalog", 8_319_000)
    assert doc["price"]["matched"] == "gpt-4o"
    assert doc["units"] == {**wrapper_units, "cacheReadTokens": 0, "cacheWriteTokens": 0}


def test_recording_keeps_one_hour_cache_writes_and_prices_them() -> None:
    store = MemoryStore()
    set_price(
        store=store,
        caller=ADMIN,
        data={"provider": "openai", "model": "gpt-4o", "prices": {"inputMTok": "2", "cacheWrite1hMTok": "4"}},
        settings=Settings(),
        now=NOW - timedelta(hours=1),
    )

    record(store, {**llm("a"), "units": {"model": "gpt-4o", "inputTokens": 1000, "cacheWrite1hTokens": 500}})

    doc = store.docs[layout.step_path("u1", "a")]
    assert (doc["costSource"], doc["costNanos"]) == ("catalog", 4_000_000)  # 1000*2 + 500*4 µUSD
    assert doc["units"]["cacheWrite1hTokens"] == 500
