"""The gate's commits (pure): every window it checks in one write to the user, holds taken back where made."""

from datetime import UTC, datetime, timedelta

from tally import layout
from tally.documents import holds as hold_doc
from tally.documents import plans
from tally.documents import windows as window_doc
from tally.values import CostSource, HoldState, HoldStatus, Step, UsageType
from tally.writes import DELETE, Increment, check_commit, transforms_per_document

NOW = datetime(2026, 3, 1, 0, 4, tzinfo=UTC)


def hold(feature: str | None, *, limited: bool) -> dict[str, object]:
    return hold_doc.document(
        user_id="u",
        reservation_id="r1",
        cost_nanos=500,
        runs=1,
        source=CostSource.CLIENT,
        month="2026-03",
        now=NOW,
        expires_at=NOW + timedelta(minutes=5),
        feature=feature,
        feature_held=limited,
    )


def test_a_hold_is_one_write_to_the_user_returning_every_window_it_checks() -> None:
    writes = plans.hold_writes(hold("img.gen", limited=True), now=NOW, stale={"days": {"2026-02-27": DELETE}})

    user = [w for w in writes if w.path == layout.usage_path("u")]
    assert len(user) == 1
    data = user[0].data
    assert data["usage"]["held"] == {"costNanos": Increment(500), "runs": Increment(1)}
    days = data["windows"]["days"]
    assert days["2026-03-01"]["costNanos"] == Increment(0)
    assert days["2026-03-01"]["features"]["img.gen"]["apiCalls"] == Increment(0)
    assert days["2026-02-27"] is DELETE
    month = data["windows"]["months"]["2026-03"]
    assert month["features"]["img.gen"]["costNanos"] == Increment(0)
    assert month["held"]["img.gen"] == {"costNanos": Increment(500), "runs": Increment(1)}


def test_a_hold_on_a_feature_without_a_limit_counts_no_feature_hold() -> None:
    writes = plans.hold_writes(hold("chat", limited=False), now=NOW)

    (user,) = [w for w in writes if w.path == layout.usage_path("u")]
    assert "months" not in user.data["windows"]  # no feature hold, and no key named by the caller
    assert "features" not in user.data["windows"]["days"]["2026-03-01"]


def stored(feature: str, *, limited: bool, month: str = "2026-02") -> HoldState:
    return HoldState(
        "u", "r1", HoldStatus.ACTIVE, 500, 1, "v", feature=feature, month=month, feature_held=limited
    )


def test_ending_a_feature_hold_takes_it_back_in_the_month_it_was_made() -> None:
    writes = plans.end_hold_writes(stored("img", limited=True), status=HoldStatus.EXPIRED, now=NOW)

    (user,) = [w for w in writes if w.path == layout.usage_path("u")]
    assert user.data["usage"]["held"] == {"costNanos": Increment(-500), "runs": Increment(-1)}
    assert user.data["windows"]["months"]["2026-02"]["held"]["img"] == {
        "costNanos": Increment(-500),
        "runs": Increment(-1),
    }


def test_ending_a_hold_that_never_counted_in_its_feature_leaves_the_feature_alone() -> None:
    writes = plans.decision_writes(stored("img", limited=False), reason="FEATURE_RUNS", now=NOW)

    (user,) = [w for w in writes if w.path == layout.usage_path("u")]
    assert "windows" not in user.data


def test_the_largest_request_settling_100_feature_holds_stays_under_500_transforms() -> None:
    steps = tuple(
        Step(
            operation_id=f"op-{i}",
            usage_type=UsageType.AI,
            feature=f"feature-{i % 20}",
            provider=f"provider-{i % 20}",
            cost_nanos=1_000 + i,
            is_billable_run=i % 2 == 0,
            timestamp=NOW - timedelta(hours=i),
            reservation_id=f"r{i}",
        )
        for i in range(100)
    )
    holds = tuple(
        (
            HoldState(
                "u",
                f"r{i}",
                HoldStatus.ACTIVE,
                9,
                1,
                "v",
                feature=f"limited-{i}",
                month="2026-03",
                feature_held=True,
            ),
            f"op-{i}",
        )
        for i in range(100)
    )
    commit = plans.RecordingCommit(
        user_id="u",
        request_id="q",
        now=NOW,
        steps=steps,
        shard=0,
        settlements=holds,
        stale_windows={"days": {"2026-02-01": DELETE}, "months": {"2025-12": DELETE}},
    )

    writes = plans.recording_writes(commit)

    check_commit(writes)
    assert transforms_per_document(writes)[layout.usage_path("u")] < 500
    (user,) = [w for w in writes if w.path == layout.usage_path("u")]
    windows = user.data["windows"]
    assert set(windows["days"]) == {"2026-03-01", "2026-02-28", "2026-02-01"}  # today, yesterday, one dropped
    assert windows["months"]["2025-12"] is DELETE
    assert windows["months"]["2026-03"]["held"]["limited-7"] == {
        "costNanos": Increment(-9),
        "runs": Increment(-1),
    }


def test_recorded_steps_count_in_their_own_day_and_month_under_their_counted_name() -> None:
    step = Step(
        operation_id="op",
        usage_type=UsageType.AI,
        feature="secret-name",
        provider="p",
        cost_nanos=7,
        is_billable_run=True,
        timestamp=NOW - timedelta(hours=1),
        feature_key="(other)",
    )

    change = window_doc.recording_change([step], NOW, released={})

    yesterday = change["days"]["2026-02-28"]
    assert (yesterday["costNanos"], yesterday["billableRuns"]) == (Increment(7), Increment(1))
    assert yesterday["features"] == {
        "(other)": {"costNanos": Increment(7), "apiCalls": Increment(1), "billableRuns": Increment(1)}
    }
    assert change["months"]["2026-02"]["features"]["(other)"]["apiCalls"] == Increment(1)
