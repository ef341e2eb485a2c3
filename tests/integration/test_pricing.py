"""Pricing by Tally against the emulators: units, the package, the admins' catalog, unpriced steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import genai_prices
import requests

from tally import layout, pricing
from tally_dev import accounts, emulator
from tally_dev.steps import step


def llm(
    model: str = "gpt-4o", *, provider: str = "openai", when: datetime | None = None, **extra: Any
) -> dict[str, Any]:
    fields: dict[str, Any] = {"cost": None, **extra}
    units = {"model": model, "inputTokens": 1200, "outputTokens": 350}
    return step(feature="chat", provider=provider, usage_type="AI", when=when, units=units, **fields)


def stored(user: accounts.User, body: dict[str, Any]) -> dict[str, Any]:
    return emulator.document(layout.step_path(user.uid, body["operationId"]))


def test_a_gpt_4o_step_costs_what_genai_prices_says_to_the_nano() -> None:
    user = accounts.make_user()
    body = llm()

    response = accounts.record(user, {"steps": [body]})

    assert response.status_code == 200, response.text
    doc = stored(user, body)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1200, output_tokens=350),
        "gpt-4o",
        provider_id="openai",
        genai_request_timestamp=doc["timestamp"],
    ).total_price
    assert doc["costNanos"] == int(Decimal(expected) * 10**9) == 6_500_000
    assert (doc["costSource"], doc["price"]["version"]) == ("genai-prices", pricing.GENAI_PRICES_VERSION)
    assert response.json()["usage"]["totalCost"] == 0.0065


def test_an_admins_price_wins_from_its_date_and_earlier_steps_keep_the_previous_price() -> None:
    admin, user = accounts.make_user(claims={"admin": True}), accounts.make_user()
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    price = {
        "provider": "openai",
        "model": "gpt-4o",
        "effectiveFrom": today.date().isoformat(),
        "prices": {"inputMTok": 5, "outputMTok": 20},
    }

    stored_price = accounts.result_of("set_price", admin, price)
    now_step, yesterday_step = llm(), llm(when=today - timedelta(hours=1))
    response = accounts.record(user, {"steps": [now_step, yesterday_step]})
    listed = accounts.result_of("list_prices", admin)["prices"]

    assert response.status_code == 200, response.text
    assert stored_price["prices"] == {"inputMTok": 5.0, "outputMTok": 20.0}
    assert (stored(user, now_step)["costSource"], stored(user, now_step)["costNanos"]) == (
        "catalog",
        13_000_000,
    )
    assert stored(user, now_step)["price"]["catalog"]["effectiveFrom"] == today.date().isoformat()
    assert (stored(user, yesterday_step)["costSource"], stored(user, yesterday_step)["costNanos"]) == (
        "genai-prices",
        6_500_000,
    )
    assert listed[0]["model"] == "gpt-4o"


def test_an_unknown_model_is_recorded_unpriced_and_counted() -> None:
    admin, user = accounts.make_user(claims={"admin": True}), accounts.make_user()
    body = llm("house-model-7", provider="acme_ai")

    response = accounts.record(user, {"steps": [body, llm()]})
    report = accounts.result_of("usage_analytics", admin, {"fresh": True})
    mine = accounts.result_of("my_usage", user)

    assert response.status_code == 200, response.text
    assert (stored(user, body)["costSource"], stored(user, body)["costNanos"]) == ("unpriced", 0)
    assert (report["totals"]["unpricedSteps"], report["totals"]["apiCalls"]) == (1, 2)
    assert report["unpriced"] == [{"provider": "acme_ai", "model": "house-model-7", "steps": 1}]
    assert mine["unpricedSteps"] == 1


def test_a_step_with_cost_and_units_records_the_cost() -> None:
    user = accounts.make_user()
    body = llm(cost="0.25")

    accounts.record(user, {"steps": [body]})

    doc = stored(user, body)
    assert (doc["costNanos"], doc["costSource"], doc["units"]["outputTokens"]) == (250_000_000, "client", 350)


def test_a_thousand_priced_steps_have_no_drift(http: requests.Session, this_month: str) -> None:
    user = accounts.make_user()

    for _ in range(10):
        response = accounts.record(user, {"steps": [llm() for _ in range(100)]}, http=http)
        assert response.status_code == 200, response.text

    assert emulator.user_month(user.uid, this_month)["costNanos"] == 1000 * 6_500_000


def test_prices_are_for_admins_only() -> None:
    user = accounts.make_user()
    data = {"provider": "openai", "model": "gpt-4o", "prices": {"inputMTok": 0}}

    by_user = accounts.call("set_price", user, data)
    listing = accounts.call("list_prices", user, {})
    anonymous = accounts.call("set_price", None, data)

    assert (by_user[0], by_user[1]["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert (listing[0], anonymous[0]) == (403, 401)
    assert emulator.db().collection(layout.PRICE_BOOKS).get() == []


def test_an_admins_price_for_a_model_prices_a_wrappers_step_of_its_dated_snapshot_exactly() -> None:
    admin, user = accounts.make_user(claims={"admin": True}), accounts.make_user()
    price = {"provider": "openai", "model": "gpt-4o", "prices": {"inputMTok": 3.17, "outputMTok": 12.9}}
    units = {"model": "gpt-4o-2024-08-06", "inputTokens": 1200, "outputTokens": 350, "requests": 1}
    body = step(feature="chat", provider="openai", usage_type="AI", cost=None, units=units)

    accounts.result_of("set_price", admin, price)
    response = accounts.record(user, {"steps": [body]})

    assert response.status_code == 200, response.text
    doc = stored(user, body)
    usd = (Decimal("3.17") * 1200 + Decimal("12.9") * 350) / 1_000_000  # the request itself costs nothing
    expected = usd * 10**9
    assert expected == int(expected) == 8_319_000
    assert (doc["costSource"], doc["costNanos"]) == ("catalog", int(expected))
    assert (doc["price"]["matched"], doc["price"]["catalog"]["model"]) == ("gpt-4o", "gpt-4o")
    assert doc["units"] == {**units, "cacheReadTokens": 0, "cacheWriteTokens": 0}
    assert response.json()["usage"]["totalCost"] == float(usd)


def test_one_hour_cache_writes_are_kept_and_priced_at_their_own_catalog_price() -> None:
    admin, user = accounts.make_user(claims={"admin": True}), accounts.make_user()
    prices = {
        "inputMTok": 3.1,
        "outputMTok": 15.5,
        "cacheReadMTok": 0.31,
        "cacheWriteMTok": 3.875,
        "cacheWrite1hMTok": 6.2,
    }
    units: dict[str, Any] = {
        "model": "claude-sonnet-4-5-20250929",
        "inputTokens": 400,
        "outputTokens": 200,
        "cacheReadTokens": 500,
        "cacheWriteTokens": 100,
        "cacheWrite1hTokens": 1000,
        "requests": 1,
    }
    body = step(feature="chat", provider="anthropic", usage_type="AI", cost=None, units=units)

    accounts.result_of(
        "set_price", admin, {"provider": "anthropic", "model": "claude-sonnet-4-5", "prices": prices}
    )
    response = accounts.record(user, {"steps": [body]})
    listed = accounts.result_of("list_prices", admin)["prices"]

    assert response.status_code == 200, response.text
    doc = stored(user, body)
    counts = {
        "inputMTok": "inputTokens",
        "outputMTok": "outputTokens",
        "cacheReadMTok": "cacheReadTokens",
        "cacheWriteMTok": "cacheWriteTokens",
        "cacheWrite1hMTok": "cacheWrite1hTokens",
    }
    expected = sum(Decimal(str(prices[key])) * units[count] for key, count in counts.items()) * 1000
    assert expected == int(expected) == 11_082_500  # 1000 one-hour writes at $6.2/MTok, not $3.875
    assert (doc["costSource"], doc["costNanos"]) == ("catalog", int(expected))
    assert doc["units"] == units
    assert doc["price"]["matched"] == "claude-sonnet-4-5"
    assert listed[0]["prices"]["cacheWrite1hMTok"] == 6.2


def test_one_hour_cache_writes_cost_what_genai_prices_says_for_them() -> None:
    user = accounts.make_user()
    units = {
        "model": "claude-sonnet-4-5-20250929",
        "inputTokens": 400,
        "outputTokens": 200,
        "cacheReadTokens": 500,
        "cacheWriteTokens": 100,
        "cacheWrite1hTokens": 1000,
        "requests": 1,
    }
    body = step(feature="chat", provider="anthropic", usage_type="AI", cost=None, units=units)

    response = accounts.record(user, {"steps": [body]})

    assert response.status_code == 200, response.text
    doc = stored(user, body)
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=2000,
            output_tokens=200,
            cache_read_tokens=500,
            cache_write_tokens=1100,
            cache_write_1h_tokens=1000,
        ),
        "claude-sonnet-4-5-20250929",
        provider_id="anthropic",
        genai_request_timestamp=doc["timestamp"],
    ).total_price
    assert doc["costSource"] == "genai-prices"
    assert doc["costNanos"] == int(Decimal(expected) * 10**9) == 10_725_000  # one-hour writes at $6/MTok
