from datetime import UTC, datetime, timedelta

import pytest

from tally import layout
from tally.documents import months as month_doc
from tally.documents import plans
from tally.documents import sessions as session_doc
from tally.documents import usage as usage_doc
from tally.documents.months import MonthAggregate, Ranking
from tally.names import OTHER, NameKind
from tally.values import SessionState, SessionStatus, Step, UsageType, UserMonthState
from tally.writes import DELETE, Increment, Op, Write, check_commit, transforms_per_document

NOW = datetime(2026, 3, 1, 0, 4, tzinfo=UTC)


def worst_steps() -> tuple[Step, ...]:
    """The largest request the SPEC allows: 100 steps, 20 features, 20 providers, 3 months, 36 days."""
    return tuple(
        Step(
            operation_id=f"op-{i}",
            usage_type=UsageType.AI if i % 2 else UsageType.API,
            feature=f"feature-{i % 20}-" + "x" * 80,
            provider=f"provider-{(i * 7) % 20}-" + "y" * 80,
            cost_nanos=1_000_000 + i,
            is_billable_run=i % 3 == 0,
            timestamp=NOW - timedelta(days=35) * i / 99,
        )
        for i in range(100)
    )


def base_session() -> SessionState:
    return SessionState(
        SessionStatus.ACTIVE, NOW - timedelta(days=40), NOW - timedelta(days=40), NOW, version="v"
    )


@pytest.mark.parametrize("session_base", [None, base_session()])
@pytest.mark.parametrize("month_state", [UserMonthState(False, False), UserMonthState(True, False, "v")])
def test_the_largest_request_stays_under_500_transforms_per_document(
    session_base: SessionState | None, month_state: UserMonthState
) -> None:
    steps = worst_steps()
    months = {layout.user_month_path("u", m) for m in ("2026-01", "2026-02", "2026-03")}
    commit = plans.RecordingCommit(
        user_id="u",
        request_id="r",
        now=NOW,
        steps=steps,
        shard=3,
        session_id="s",
        session_base=session_base,
        complete=True,
        user_months={m.rsplit("_", 1)[1]: month_state for m in months},
        stale_months=("2025-10", "2025-11"),
    )

    writes = plans.recording_writes(commit)

    check_commit(writes)
    counts = transforms_per_document(writes)
    assert max(counts.values()) <= 500
    assert {w.path for w in writes} >= months
    shard_writes = [w for w in writes if w.path.startswith(layout.PLATFORM_SHARDS)]
    assert len(shard_writes) == 3
    assert max(counts[w.path] for w in shard_writes) < 500


def test_a_commit_over_500_transforms_on_one_document_is_refused() -> None:
    data = {f"f{i}": Increment(1) for i in range(501)}

    with pytest.raises(ValueError, match="501 field transforms"):
        check_commit([Write("users/u", Op.MERGE, data)])


def test_ids_of_shared_and_monthly_documents_never_start_with_the_month() -> None:
    paths = [
        layout.shard_path("2026-11", 0),
        layout.shard_path("2026-11", 1),
        layout.rollup_path("2026-11"),
        layout.user_month_path("uid-1", "2026-11"),
        layout.name_path("feature", "2026-11", "gpt-4o"),
        layout.name_count_path("feature", "2026-11"),
        layout.name_quota_path("uid-1", "2026-11"),
    ]

    ids = [path.split("/", 1)[1] for path in paths]

    assert not any(doc_id.startswith("2026") for doc_id in ids)
    assert ids[0][:8] != ids[1][:8]  # neighbouring shards land far apart in the key space


def one_step(feature: str = "maps", when: datetime = NOW) -> Step:
    return Step("op-1", UsageType.API, feature, "google", 2_830_000, True, when)


def commit_for(**kwargs: object) -> plans.RecordingCommit:
    defaults: dict[str, object] = {
        "user_id": "u",
        "request_id": "r",
        "now": NOW,
        "steps": (one_step(),),
        "shard": 1,
    }
    defaults.update(kwargs)
    return plans.RecordingCommit(**defaults)  # type: ignore[arg-type]


def by_path(writes: list[Write]) -> dict[str, Write]:
    return {w.path: w for w in writes}


def test_a_users_first_step_of_a_month_creates_its_month_and_counts_it_active_once() -> None:
    first = by_path(plans.recording_writes(commit_for()))
    later = by_path(
        plans.recording_writes(commit_for(user_months={"2026-03": UserMonthState(True, True, "v")}))
    )

    month_path = layout.user_month_path("u", "2026-03")
    shard = layout.shard_path("2026-03", 1)
    assert first[month_path].op is Op.CREATE
    assert first[shard].data["activeUsers"] == Increment(1)
    assert later[month_path].op is Op.MERGE
    assert "activeUsers" not in later[shard].data


def test_a_month_document_that_exists_but_is_not_active_becomes_active_conditionally() -> None:
    writes = by_path(
        plans.recording_writes(commit_for(user_months={"2026-03": UserMonthState(True, False, "v7")}))
    )

    write = writes[layout.user_month_path("u", "2026-03")]
    assert (write.op, write.version, write.data["active"]) == (Op.UPDATE, "v7", True)


def test_the_user_document_keeps_three_months_and_drops_older_ones() -> None:
    usage: dict[str, dict[str, object]] = {
        "months": {m: {} for m in ("2025-11", "2025-12", "2026-01", "2026-02", "2026-03")}
    }

    stale = usage_doc.stale_months(usage, NOW)
    user = by_path(plans.recording_writes(commit_for(stale_months=stale)))[layout.usage_path("u")]

    assert stale == ("2025-11", "2025-12")
    assert user.data["usage"]["months"]["2025-11"] is DELETE
    assert user.data["usage"]["months"]["2026-03"]["costNanos"] == Increment(2_830_000)


def test_merge_writes_never_carry_an_empty_map() -> None:
    old_step = one_step(when=NOW - timedelta(days=2))  # last month, while the session is created this month
    writes = plans.recording_writes(commit_for(steps=(old_step,), session_id="s"))

    def empty_maps(data: object) -> bool:
        return isinstance(data, dict) and (not data or any(empty_maps(v) for v in data.values()))

    assert not any(empty_maps(w.data) for w in writes if w.op is Op.MERGE)


def test_names_counted_under_other_are_keys_of_the_breakdowns() -> None:
    step = Step("op-1", UsageType.AI, "storm-1", "p", 5, False, NOW, feature_key=OTHER)

    writes = by_path(plans.recording_writes(commit_for(steps=(step,))))

    shard = writes[layout.shard_path("2026-03", 1)].data
    assert list(shard["features"]) == [OTHER]
    step_doc = writes[layout.step_path("u", "op-1")].data
    assert (step_doc["feature"], step_doc["featureKey"]) == ("storm-1", OTHER)


def test_a_session_breakdown_is_capped_and_the_rest_goes_to_other() -> None:
    base = SessionState(
        SessionStatus.ACTIVE, NOW, NOW, NOW, "v", feature_names=frozenset(f"f{i}" for i in range(100))
    )
    steps = (one_step("f5"), Step("op-2", UsageType.API, "new", "google", 1, False, NOW))

    counts = session_doc.session_counts(steps, base)

    assert set(counts.features) == {"f5", OTHER}
    assert counts.capped == (("op-2", NameKind.FEATURE),)


def test_session_counters_of_the_user_move_with_creation_and_completion() -> None:
    created = by_path(plans.recording_writes(commit_for(session_id="s")))[layout.usage_path("u")]
    both = by_path(plans.recording_writes(commit_for(session_id="s", complete=True)))[layout.usage_path("u")]
    completed = by_path(
        plans.recording_writes(
            commit_for(session_id="s", session_base=base_session(), complete=True, steps=())
        )
    )[layout.usage_path("u")]

    assert created.data["usage"]["sessions"] == {"active": Increment(1)}
    assert both.data["usage"]["sessions"] == {"active": Increment(0), "completed": Increment(1)}
    assert completed.data["usage"]["sessions"] == {"active": Increment(-1), "completed": Increment(1)}


def test_shards_are_handed_out_round_robin() -> None:
    picker = plans.ShardPicker(seed=1)

    picks = [picker.next(8) for _ in range(800)]

    assert {picks.count(shard) for shard in range(8)} == {100}


def test_a_rollup_keeps_its_ranking_and_a_refold_without_one_drops_it() -> None:
    as_of = datetime(2026, 11, 14, tzinfo=UTC)
    ranking = Ranking.of([{"userId": "a", "costNanos": 5, "email": "x", "updatedAt": as_of}], [])

    created = month_doc.rollup_write(
        month="2026-11", aggregate=MonthAggregate(), as_of=as_of, shards=8, version=None, ranking=ranking
    )
    refolded = month_doc.rollup_write(
        month="2026-11", aggregate=MonthAggregate(), as_of=as_of, shards=8, version="v1"
    )

    assert created.op is Op.CREATE
    assert created.data["topUsers"] == [{"userId": "a", "costNanos": 5}]
    assert created.data["freeTier"] == []
    assert refolded.op is Op.UPDATE
    assert refolded.data["topUsers"] is DELETE
    assert refolded.data["freeTier"] is DELETE


def test_a_late_finalization_in_a_final_month_reopens_its_rollup() -> None:
    summary = session_doc.SessionSummary(
        1, 5, 0, 0, {}, {}, created_month="2026-03", completed_month="2026-06"
    )
    later = datetime(2026, 6, 1, tzinfo=UTC)  # 2026-03 ended more than 36 days before

    writes = plans.finalization_writes(
        user_id="u", session_id="s", version="v", summary=summary, now=later, shard=1
    )

    reopen = [(w.path, w.op, w.data) for w in writes if w.path.startswith(layout.ROLLUPS)]
    assert reopen == [(layout.rollup_path("2026-03"), Op.MERGE, {"asOf": DELETE})]


def test_only_final_months_are_reopened_unless_asked() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)

    final = month_doc.reopen_writes(["2026-03", "2026-05", "2026-03"], now=now)
    every = month_doc.reopen_writes(["2026-05"], now=now, final_only=False)

    assert [w.path for w in final] == [layout.rollup_path("2026-03")]
    assert [w.path for w in every] == [layout.rollup_path("2026-05")]


def test_recording_commits_never_touch_a_rollup() -> None:
    writes = plans.recording_writes(commit_for(now=datetime(2026, 6, 1, tzinfo=UTC)))

    assert not any(w.path.startswith(layout.ROLLUPS) for w in writes)
