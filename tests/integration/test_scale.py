"""Scale-safe aggregates against the emulators: bounded names, no Firestore limit reachable."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from google.cloud import firestore

from tally import layout
from tally_dev import accounts, emulator
from tally_dev.sizing import document_size

URL = "record_steps"
SHARED = (
    layout.PLATFORM_SHARDS,
    layout.ROLLUPS,
    layout.NAMES,
    layout.NAME_COUNTS,
    layout.NAME_QUOTAS,
)
SHARED_DOCUMENT_BOUND = 64 * 1024  # bytes: far under 1 MiB, whatever callers send


def long_name(prefix: str) -> str:
    return (prefix + uuid.uuid4().hex * 4)[:100]


def step(feature: str, provider: str, cost: str = "0.01") -> dict[str, Any]:
    return {
        "operationId": emulator.unique("op"),
        "usageType": "AI",
        "feature": feature,
        "provider": provider,
        "cost": cost,
    }


def post(http: requests.Session, user: accounts.User, body: dict[str, Any]) -> requests.Response:
    return http.post(emulator.functions_url(URL), json=body, headers=user.headers, timeout=60)


def shared_documents(db: firestore.Client) -> dict[str, int]:
    sizes = {}
    for collection in SHARED:
        for snap in db.collection(collection).stream():
            sizes[snap.reference.path] = document_size(snap.reference.path, snap.to_dict() or {})
    return sizes


def test_a_name_storm_is_absorbed_by_other(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    storm, bystander = accounts.make_user(), accounts.make_user()

    def one_new_name_pair(_: int) -> tuple[int, bool]:
        with requests.Session() as own:
            response = post(own, storm, {"steps": [step(long_name("f-"), long_name("p-"))]})
        return response.status_code, bool(response.json().get("warnings"))

    # The storm: 200 requests of new 100-character names, four at a time.
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(one_new_name_pair, range(200)))
    statuses, warned = [status for status, _ in answers], sum(warning for _, warning in answers)
    calm = post(
        http, bystander, {"steps": [step("chat", "openai", "1.5"), step(long_name("own-"), "openai")]}
    )
    accounts.call("usage_analytics", accounts.make_user(claims={"admin": True}), {"fresh": True})

    assert statuses == [200] * 200
    assert warned == 180  # the first 20 new names of each kind were the user's to introduce
    assert calm.status_code == 200
    assert calm.json()["warnings"] == []
    platform = emulator.platform_month(this_month)
    assert len(platform.features) == 20 + 1 + 2  # the storm's 20, (other), the bystander's 2
    assert platform.features["(other)"].api_calls == 180
    assert platform.total.cost_nanos == 200 * 10_000_000 + 1_510_000_000
    assert emulator.user_month(bystander.uid, this_month)["costNanos"] == 1_510_000_000
    sizes = shared_documents(db)
    assert max(sizes.values()) < SHARED_DOCUMENT_BOUND, max(sizes.items(), key=lambda item: item[1])


def test_a_recorder_naming_too_many_names_gets_a_clear_400(http: requests.Session, this_month: str) -> None:
    recorder = accounts.make_user(claims={"recorder": True})
    target = accounts.make_user()
    steps = [step(f"feature-{i}", "p") for i in range(100)]

    response = post(http, recorder, {"userId": target.uid, "steps": steps})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["details"][0]["field"] == "steps[20].feature"
    assert "at most 20 distinct features" in error["message"]
    assert emulator.user_month(target.uid, this_month) == {}


def test_reserved_and_untrimmed_names_are_refused(
    http: requests.Session, db: firestore.Client, this_month: str
) -> None:
    user = accounts.make_user()
    cases = {
        "steps[0].feature": step("__x__", "p"),
        "steps[0].provider": step("f", "openai\n"),
        "steps[0].operationId": step("f", "p") | {"operationId": "op-1\n"},
    }

    responses = {field: post(http, user, {"steps": [body]}) for field, body in cases.items()}
    month = accounts.call("my_usage", user, {"month": f"{this_month}\n"})

    for field, response in responses.items():
        assert response.status_code == 400, response.text
        assert response.json()["error"]["details"][0]["field"] == field
    assert month[0] == 400
    assert list(db.collection(f"SessionUsage/{user.uid}/steps").stream()) == []
