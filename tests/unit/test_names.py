from datetime import UTC, datetime

from tally.names import (
    OTHER,
    AdmittedNames,
    NameKey,
    NameKind,
    NameLimits,
    NameReads,
    Refusal,
    candidates,
    count_under,
    keys_of,
    within,
)
from tally.values import Step, UsageType

NOW = datetime(2026, 11, 14, tzinfo=UTC)
LIMITS = NameLimits(max_names=500, max_new_per_user=20)


def feature(name: str, month: str = "2026-11") -> NameKey:
    return NameKey(NameKind.FEATURE, month, name)


def reads(*, admitted: tuple[NameKey, ...] = (), count: int = 0, quota: int = 0) -> NameReads:
    group = (NameKind.FEATURE, "2026-11")
    return NameReads(frozenset(admitted), {group: count}, {group: quota})


def test_known_names_are_not_tried_again() -> None:
    found = candidates(
        {feature("a"), feature("b")}, reads(admitted=(feature("a"),)), trusted=False, limits=LIMITS
    )

    assert found.to_try == {(NameKind.FEATURE, "2026-11"): (feature("b"),)}
    assert found.refused == {}


def test_a_full_month_refuses_without_touching_a_counter() -> None:
    found = candidates({feature("a")}, reads(count=500), trusted=True, limits=LIMITS)

    assert found.to_try == {}
    assert found.refused == {feature("a"): Refusal.MONTH_FULL}


def test_a_users_quota_binds_users_but_not_trusted_callers() -> None:
    user = candidates({feature("a")}, reads(quota=20), trusted=False, limits=LIMITS)
    backend = candidates({feature("a")}, reads(quota=20), trusted=True, limits=LIMITS)

    assert user.refused == {feature("a"): Refusal.CALLER_QUOTA}
    assert backend.to_try == {(NameKind.FEATURE, "2026-11"): (feature("a"),)}


def test_fetch_and_add_slots_past_the_bound_are_never_used() -> None:
    batch = tuple(feature(n) for n in "abcde")

    assert within(batch, after=5, bound=500) == 5  # slots 1..5
    assert within(batch, after=502, bound=500) == 3  # slots 498..502: three fit
    assert within(batch, after=600, bound=500) == 0  # another request took the last slots


def test_steps_are_counted_under_admitted_names_or_other() -> None:
    steps = (
        Step("1", UsageType.AI, "kept", "p", 1, False, NOW),
        Step("2", UsageType.AI, "storm", "p", 1, False, NOW),
    )
    admitted = {feature("kept"), NameKey(NameKind.PROVIDER, "2026-11", "p")}

    counted = count_under(steps, admitted)

    assert [(s.feature, s.feature_bucket, s.provider_bucket) for s in counted] == [
        ("kept", "kept", "p"),
        ("storm", OTHER, "p"),
    ]
    assert keys_of(steps) >= {feature("kept"), feature("storm")}


def test_names_are_bucketed_by_the_month_of_each_step() -> None:
    old = Step("1", UsageType.AI, "a", "p", 1, False, datetime(2026, 10, 30, tzinfo=UTC))

    assert feature("a", "2026-10") in keys_of([old])


def test_the_admitted_cache_is_bounded() -> None:
    cache = AdmittedNames(capacity=2)

    cache.add([feature("a"), feature("b"), feature("c")])

    assert cache.known([feature("a"), feature("b"), feature("c")]) == {feature("b"), feature("c")}
