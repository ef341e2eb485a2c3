"""Limits objects: precedence per field, the gate's refusal order, scopes, and their stored form."""

from datetime import UTC, datetime

import pytest

from tally.config import Settings
from tally.documents import limits as limits_doc
from tally.documents import windows as window_doc
from tally.documents.plan_catalog import PlanCatalog
from tally.limits import FeatureLimits, LimitSet, Windows, refusal, resolve, scopes
from tally.usage import Counts, Held
from tally.writes import DELETE

USD = 10**9
NOW = datetime(2026, 11, 14, 23, 59, tzinfo=UTC)


def test_precedence_is_per_field_override_then_plan_then_default() -> None:
    default = LimitSet(monthly_cost_nanos=5 * USD, monthly_free_runs=100, daily_free_runs=20)
    plan = LimitSet(monthly_cost_nanos=50 * USD, daily_cost_nanos=2 * USD)
    override = LimitSet(daily_cost_nanos=3 * USD)

    resolved = resolve(override=override, plan=plan, default=default)

    assert resolved.monthly_cost_nanos == 50 * USD  # the plan's
    assert resolved.monthly_free_runs == 100  # the default's
    assert resolved.daily_cost_nanos == 3 * USD  # the override's
    assert resolved.daily_free_runs == 20  # the default's


def test_a_feature_resolves_field_by_field_across_the_three() -> None:
    default = LimitSet(features={"img": FeatureLimits(daily_runs=1, monthly_runs=30)})
    plan = LimitSet(
        features={"img": FeatureLimits(daily_runs=10), "tts": FeatureLimits(monthly_cost_nanos=USD)}
    )
    override = LimitSet(features={"img": FeatureLimits(monthly_cost_nanos=2 * USD)})

    resolved = resolve(override=override, plan=plan, default=default)

    assert resolved.features["img"] == FeatureLimits(
        monthly_cost_nanos=2 * USD, daily_runs=10, monthly_runs=30
    )
    assert resolved.features["tts"] == FeatureLimits(monthly_cost_nanos=USD)


def test_the_claimed_plan_applies_only_without_an_assigned_one() -> None:
    catalog = PlanCatalog(
        {"pro": LimitSet(monthly_cost_nanos=50 * USD), "team": LimitSet(monthly_cost_nanos=9 * USD)}
    )
    settings = Settings()

    claimed = catalog.limits_of({}, settings, claimed="pro")
    assigned = catalog.limits_of({limits_doc.PLAN: "team"}, settings, claimed="pro")
    unknown = catalog.limits_of({}, settings, claimed="gold")

    assert claimed.monthly_cost_nanos == 50 * USD
    assert assigned.monthly_cost_nanos == 9 * USD
    assert unknown.month == settings_month(settings)


def settings_month(settings: Settings) -> object:
    return PlanCatalog().default(settings).month


def test_the_default_plan_keeps_the_settings_monthly_fields_an_admin_left_out() -> None:
    catalog = PlanCatalog({"default": LimitSet(daily_cost_nanos=USD)})

    default = catalog.default(Settings())

    assert (default.monthly_cost_nanos, default.monthly_free_runs, default.daily_cost_nanos) == (
        5 * USD,
        100,
        USD,
    )


def test_a_v2_user_limit_is_an_override_of_the_monthly_fields() -> None:
    stored = {"monthlyCostLimitNanos": 7 * USD, "monthlyFreeRuns": 3}

    resolved = PlanCatalog({"pro": LimitSet(monthly_cost_nanos=50 * USD)}).limits_of(stored, Settings())

    assert (resolved.monthly_cost_nanos, resolved.monthly_free_runs) == (7 * USD, 3)


def test_the_stored_form_round_trips() -> None:
    limits = LimitSet(
        monthly_cost_nanos=USD,
        daily_free_runs=4,
        features={"claude-3.5-sonnet": FeatureLimits(daily_runs=10, monthly_cost_nanos=2 * USD)},
    )

    assert limits_doc.limit_set(limits_doc.set_fields(limits)) == limits


EVERYTHING = LimitSet(
    monthly_cost_nanos=10,
    monthly_free_runs=1,
    daily_cost_nanos=10,
    daily_free_runs=1,
    features={"img": FeatureLimits(monthly_cost_nanos=10, daily_cost_nanos=10, monthly_runs=1, daily_runs=1)},
)


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        (Windows(month=Counts(11, 0, 0)), "MONTHLY_COST_LIMIT"),
        (Windows(day=Counts(11, 0, 0)), "DAILY_COST_LIMIT"),
        (Windows(month=Counts(0, 0, 2)), "FREE_RUNS"),
        (Windows(day=Counts(0, 0, 2)), "DAILY_RUNS"),
        (Windows(feature_day={"img": Counts(11, 0, 0)}), "FEATURE_COST_LIMIT"),
        (Windows(feature_month={"img": Counts(0, 2, 0)}), "FEATURE_RUNS"),
        (Windows(month=Counts(11, 0, 2), day=Counts(11, 0, 2)), "MONTHLY_COST_LIMIT"),
        (Windows(day=Counts(11, 0, 2), feature_day={"img": Counts(11, 2, 0)}), "DAILY_COST_LIMIT"),
        (Windows(day=Counts(0, 0, 2), feature_day={"img": Counts(11, 2, 0)}), "DAILY_RUNS"),
        (Windows(feature_held={"img": Held(11, 2)}), "FEATURE_COST_LIMIT"),
        (Windows(), None),
    ],
)
def test_a_refusal_names_the_first_scope_in_the_specs_order(windows: Windows, expected: str | None) -> None:
    assert refusal(EVERYTHING, windows, billable=True, feature="img") == expected


def test_user_run_limits_bind_only_billable_reservations_but_a_features_runs_bind_every_one() -> None:
    over_runs = Windows(month=Counts(0, 0, 2), day=Counts(0, 0, 2))
    feature_over = Windows(feature_day={"img": Counts(0, 2, 0)})

    assert refusal(EVERYTHING, over_runs, billable=False, feature=None) is None
    assert refusal(EVERYTHING, feature_over, billable=False, feature="img") == "FEATURE_RUNS"
    assert refusal(EVERYTHING, feature_over, billable=False, feature=None) is None  # no feature named


def test_holds_count_in_every_scope_they_touch() -> None:
    windows = Windows(held=Held(11, 0))

    assert refusal(EVERYTHING, windows, billable=False, feature=None) == "MONTHLY_COST_LIMIT"
    assert refusal(LimitSet(daily_cost_nanos=10), windows, billable=False, feature=None) == "DAILY_COST_LIMIT"


def test_scopes_name_owner_window_and_measure_in_usd_and_counts() -> None:
    windows = Windows(month=Counts(4 * USD, 3, 1), held=Held(USD, 1), feature_day={"img": Counts(0, 2, 0)})

    shown = [
        scope.view() for scope in scopes(EVERYTHING.overlay(LimitSet(monthly_cost_nanos=5 * USD)), windows)
    ]

    assert [s["scope"] for s in shown] == [
        "user.month.cost",
        "user.day.cost",
        "user.month.runs",
        "user.day.runs",
        "feature:img.month.cost",
        "feature:img.day.cost",
        "feature:img.month.runs",
        "feature:img.day.runs",
    ]
    assert shown[0] == {
        "scope": "user.month.cost",
        "used": 4.0,
        "held": 1.0,
        "limit": 10e-9,
        "remaining": 0.0,
    }
    assert shown[7] == {"scope": "feature:img.day.runs", "used": 2, "held": 0, "limit": 1, "remaining": 0}


def test_windows_roll_over_at_midnight_utc_with_no_job() -> None:
    truth = {
        "windows": {
            "days": {"2026-11-14": {"costNanos": 9, "apiCalls": 1, "billableRuns": 1}},
            "months": {"2026-11": {"features": {"img": {"costNanos": 9, "apiCalls": 1}}}},
        }
    }
    midnight = datetime(2026, 11, 15, 0, 0, tzinfo=UTC)

    before = window_doc.windows_of(truth, NOW, month=Counts(), held=Held())
    after = window_doc.windows_of(truth, midnight, month=Counts(), held=Held())
    next_month = window_doc.windows_of(truth, datetime(2026, 12, 1, tzinfo=UTC), month=Counts(), held=Held())

    assert (before.day.cost_nanos, after.day.cost_nanos) == (9, 0)
    assert after.feature_month["img"].api_calls == 1
    assert next_month.feature_month == {}
    assert window_doc.stale_keys(truth, datetime(2026, 11, 16, tzinfo=UTC)) == {
        "days": {"2026-11-14": DELETE}
    }


def test_a_window_newer_than_now_is_never_dropped() -> None:
    truth = {"windows": {"days": {"2026-11-15": {"costNanos": 1}}, "months": {"2026-12": {}}}}

    assert window_doc.stale_keys(truth, NOW) == {}
