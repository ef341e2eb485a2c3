"""The shape of Tally's writes and documents, measured on the in-memory store (no emulator)."""

from datetime import UTC, datetime

import pytest

from tally import layout
from tally_dev.census import Census, Workload, kind_of, run
from tally_dev.memory import MemoryStore
from tally_dev.projection import largest_by_kind, simulate
from tally_dev.sizing import MAX_DOCUMENT_BYTES

NOW = datetime(2026, 11, 14, 10, tzinfo=UTC)


def census_of(workload: Workload, shards: int, threads: int = 4) -> Census:
    census = Census()
    store = MemoryStore(shards=shards)
    store.before_commit = None
    store_commit = store.commit

    def counted(writes):  # type: ignore[no-untyped-def]
        result = store_commit(writes)
        census.record(writes)
        return result

    store.commit = counted  # type: ignore[method-assign]
    run(store, census, workload, now=lambda: NOW, prefix="t", threads=threads)
    return census


def test_every_request_writes_one_shard_and_each_session_one_more() -> None:
    census = census_of(Workload(users=12, sessions_per_user=3, per_session=4), shards=8)

    assert census.total_requests == 144
    assert census.shard_writes_per_request() == pytest.approx(1 + 1 / 4)
    path, per_second = census.hottest_shared(rate=1000)
    assert path.startswith(layout.PLATFORM_SHARDS)
    assert per_second == pytest.approx(1000 * 1.25 / 8, rel=0.05)


def test_a_user_at_one_request_a_second_writes_each_of_their_documents_once_a_second() -> None:
    census = census_of(Workload(users=4, sessions_per_user=5, per_session=4), shards=8)

    per_user: dict[str, float] = {}
    for path, count in census.writes.items():
        if path.startswith((layout.USERS + "/", layout.USER_MONTHS + "/")):
            owner = path.split("/")[1].split("_")[0]
            per_user[kind_of(path)] = max(per_user.get(kind_of(path), 0), count / census.requests[owner])
    sessions = [n for path, n in census.writes.items() if "/sessions/" in path]

    assert per_user == {"users/{id}": 1.0, "TallyMonthlyUsage/{id}": 1.0}
    assert census.hottest_per_user()[1] == 1.0
    assert set(sessions) == {4 + 1}  # a session: one write per request of it, and the finalizer's


def test_enough_shards_keep_every_shared_document_under_one_write_a_second() -> None:
    # One thread: a commit lost to a race takes another shard, which would make the count uneven.
    census = census_of(Workload(users=25, sessions_per_user=2, per_session=4), shards=125, threads=1)

    _, per_second = census.hottest_shared(rate=100)

    assert per_second == 1.0  # 200 requests + 50 finalizations over 125 shards: 2 writes each


def test_racing_first_requests_admit_each_name_once_per_racer() -> None:
    census = census_of(Workload(users=25, sessions_per_user=2, per_session=4), shards=8)

    # each name counter: once per racing first request, so at most once per thread (16), not per request (200)
    assert max(census.admissions().values()) <= 16


def test_no_document_kind_approaches_one_mebibyte_and_none_grows_with_users() -> None:
    few = largest_by_kind(simulate(months=3, light_users=1, max_names=100).docs)
    many = largest_by_kind(simulate(months=3, light_users=12, max_names=100).docs)

    assert max(k.largest for k in many.values()) < MAX_DOCUMENT_BYTES / 4
    for kind in (layout.ROLLUPS, layout.USERS, layout.USER_MONTHS, layout.SESSION_USAGE):
        matching = [k for k in few if k.startswith(kind)]
        assert matching
        assert all(few[k].largest == many[k].largest for k in matching), kind
    shard, rollup = (f"{c}/{{id}}" for c in (layout.PLATFORM_SHARDS, layout.ROLLUPS))
    assert many[shard].largest <= many[rollup].largest  # a shard holds a part of its month


def test_the_user_document_keeps_three_months_however_many_pass() -> None:
    store = simulate(months=6, light_users=0, max_names=20)

    assert len(store.docs["users/user-heavy"]["usage"]["months"]) <= 3
