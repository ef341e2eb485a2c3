"""Security rules: every actor x document kind x operation, over Firestore's REST API with real ID tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tally import layout, pricing
from tally_dev import accounts, emulator

OPS = ("get", "list", "create", "update", "delete")


@dataclass(frozen=True)
class World:
    alice: accounts.User
    bob: accounts.User
    admin: accounts.User

    def actor(self, name: str) -> accounts.User | None:
        return None if name == "anonymous" else getattr(self, name)


@pytest.fixture
def world() -> World:
    return World(
        alice=accounts.make_user(uid=emulator.unique("alice")),
        bob=accounts.make_user(uid=emulator.unique("bob")),
        admin=accounts.make_user(uid=emulator.unique("admin"), claims={"admin": True}),
    )


def base() -> str:
    return f"http://{emulator.env('FIRESTORE_EMULATOR_HOST')}/v1/projects/{emulator.project()}/databases/(default)/documents"


def fields(data: dict[str, Any]) -> dict[str, Any]:
    def value(v: Any) -> dict[str, Any]:
        if isinstance(v, dict):
            return {"mapValue": {"fields": fields(v)}}
        if isinstance(v, int):
            return {"integerValue": str(v)}
        return {"stringValue": str(v)}

    return {key: value(v) for key, v in data.items()}


def seed(path: str, data: dict[str, Any]) -> None:
    response = requests.patch(
        f"{base()}/{path}",
        json={"fields": fields(data)},
        headers={"Authorization": "Bearer owner"},
        timeout=30,
    )
    response.raise_for_status()


def attempt(user: accounts.User | None, op: str, path: str, data: dict[str, Any] | None = None) -> int:
    """Perform one client operation on `path`; return the HTTP status."""
    headers = user.headers if user else {}
    collection, _, doc_id = path.rpartition("/")
    body = {"fields": fields(data or {"note": "client write"})}
    mask = "&".join(f"updateMask.fieldPaths={name}" for name in (data or {"note": ""}))
    if op == "get":
        response = requests.get(f"{base()}/{path}", headers=headers, timeout=30)
    elif op == "list":
        response = requests.get(f"{base()}/{collection}", headers=headers, timeout=30)
    elif op == "create":
        response = requests.post(
            f"{base()}/{collection}?documentId={doc_id}", json=body, headers=headers, timeout=30
        )
    elif op == "update":
        response = requests.patch(
            f"{base()}/{path}?{mask}&currentDocument.exists=true", json=body, headers=headers, timeout=30
        )
    else:
        response = requests.delete(f"{base()}/{path}", headers=headers, timeout=30)
    assert response.status_code in {200, 403}, (op, path, response.status_code, response.text)
    return response.status_code


def kinds(world: World) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Document kinds: name -> (path of an existing document, path for a create, seed data)."""
    a, b = world.alice.uid, world.bob.uid
    usage = {"months": {"m": {"costNanos": 5}}}
    return {
        "own user doc": (f"users/{a}", f"users/{a}", {"name": "Alice", "usage": usage}),
        "other user doc": (f"users/{b}", f"users/{b}", {"name": "Bob", "usage": usage}),
        "own usage truth": (layout.usage_path(a), f"{layout.USAGE}/{a}", {"usage": usage}),
        "other usage truth": (layout.usage_path(b), f"{layout.USAGE}/{b}", {"usage": usage}),
        "own session": (
            f"SessionUsage/{a}/sessions/s1",
            f"SessionUsage/{a}/sessions/new",
            {"status": "active"},
        ),
        "other session": (
            f"SessionUsage/{b}/sessions/s1",
            f"SessionUsage/{b}/sessions/new",
            {"status": "active"},
        ),
        "own step": (f"SessionUsage/{a}/steps/op1", f"SessionUsage/{a}/steps/new", {"costNanos": 1}),
        "other step": (f"SessionUsage/{b}/steps/op1", f"SessionUsage/{b}/steps/new", {"costNanos": 1}),
        "own month aggregate": (
            layout.user_month_path(a, "2026-11"),
            f"{layout.USER_MONTHS}/new",
            {"userId": a, "costNanos": 1},
        ),
        "platform aggregate": (
            layout.shard_path("2026-11", 0),
            f"{layout.PLATFORM_SHARDS}/new",
            {"costNanos": 1},
        ),
        "price": (pricing.book_path("openai", "gpt-4o"), f"{layout.PRICE_BOOKS}/new", {"versions": {}}),
        "team": (layout.team_path("acme"), f"{layout.TEAMS}/new", {"teamId": "acme", "slices": 4}),
        "platform holds": (
            layout.platform_hold_path("2026-11", 0),
            f"{layout.PLATFORM_HOLDS}/new",
            {"costNanos": 1},
        ),
        "team slice": (layout.team_slice_path("acme", 0), f"{layout.TEAM_SLICES}/new", {"teamId": "acme"}),
        "plan catalog": (
            layout.plan_catalog_path(),
            f"{layout.PLANS}/new",
            {"plans": {"pro": {"monthlyFreeRuns": 1}}},
        ),
        "own alert": (layout.alert_path("a-cost-80"), f"{layout.ALERTS}/new", {"userId": a, "kind": "cost"}),
        "other alert": (
            layout.alert_path("b-cost-80"),
            f"{layout.ALERTS}/new2",
            {"userId": b, "kind": "cost"},
        ),
    }


# Who may do what, from the SPEC. Alice is the signed-in user; "own" means hers.
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("anonymous", kind): set() for kind in ("own user doc", "other user doc")
}
ALLOWED.update(
    {
        ("alice", "own user doc"): {"get", "create", "update"},  # update/create without touching usage
        ("alice", "own usage truth"): {"get"},  # read-only: only the functions write Tally's count
        ("alice", "own session"): {"get", "list"},
        ("alice", "own step"): {"get", "list"},
        ("alice", "own month aggregate"): {"get"},  # her own month; a list of all months is not hers
        ("alice", "own alert"): {"get"},
        ("admin", "own alert"): {"get", "list"},
        ("admin", "other alert"): {"get", "list"},
        ("admin", "own user doc"): {"get", "list"},
        ("admin", "other user doc"): {"get", "list"},
        ("admin", "own usage truth"): {"get", "list"},
        ("admin", "other usage truth"): {"get", "list"},
        ("admin", "own session"): {"get", "list"},
        ("admin", "other session"): {"get", "list"},
        ("admin", "own step"): {"get", "list"},
        ("admin", "other step"): {"get", "list"},
        ("admin", "own month aggregate"): {"get", "list"},
        ("admin", "platform aggregate"): {"get", "list"},
        ("admin", "price"): {"get", "list"},
        ("admin", "plan catalog"): {"get", "list"},  # (v3) plans: only the functions write them
        ("admin", "team"): {"get", "list"},  # (v3) teams: admins read, members see theirs via my_usage
        ("admin", "team slice"): {"get", "list"},
        ("admin", "platform holds"): {"get", "list"},
    }
)


def test_the_full_access_matrix(world: World) -> None:
    table = kinds(world)
    mismatches: list[str] = []
    cells = 0

    def reseed() -> None:
        emulator.wipe_documents()
        for existing, _, seed_data in table.values():
            seed(existing, seed_data)

    reseed()
    for actor_name in ("anonymous", "alice", "bob", "admin"):
        actor = world.actor(actor_name)
        for kind, (path, create_path, _) in table.items():
            for op in OPS:
                target = create_path if op == "create" else path
                create_user = op == "create" and target.startswith("users/")
                if create_user:
                    requests.delete(
                        f"{base()}/{target}", headers={"Authorization": "Bearer owner"}, timeout=30
                    )
                # bob's own documents are alice's "other" ones: his view mirrors hers.
                role, effective = actor_name, kind
                if actor_name == "bob":
                    role = "alice"
                    effective = kind.replace("own", "@").replace("other", "own").replace("@", "other")
                allowed = op in ALLOWED.get((role, effective), set())
                status = attempt(actor, op, target)
                cells += 1
                if (status == 200 and op in {"create", "update", "delete"}) or create_user:
                    reseed()  # a write went through, or a user document was removed to try creating it
                if (status == 200) != allowed:
                    mismatches.append(f"{actor_name} {op} {kind}: got {status}, expected {allowed}")

    assert mismatches == []
    assert cells == 4 * len(table) * 5


def test_nobody_writes_usage_from_a_client(world: World) -> None:
    path = f"users/{world.alice.uid}"
    seed(path, {"name": "Alice", "usage": {"months": {"m": {"costNanos": 5}}}})
    forged = {"usage": {"months": {"m": {"costNanos": 0}}}}

    statuses = {
        "alice update usage": attempt(world.alice, "update", path, forged),
        "alice update usage and name": attempt(world.alice, "update", path, forged | {"name": "A"}),
        "alice delete doc with usage": attempt(world.alice, "delete", path),
        "admin update usage": attempt(world.admin, "update", path, forged),
        "bob update usage": attempt(world.bob, "update", path, forged),
    }
    requests.delete(f"{base()}/{path}", headers={"Authorization": "Bearer owner"}, timeout=30)
    statuses["alice create with usage"] = attempt(world.alice, "create", path, forged | {"name": "A"})
    seed(path, {"name": "no usage yet"})
    statuses["alice delete doc without usage"] = attempt(world.alice, "delete", path)

    assert statuses == {
        "alice update usage": 403,
        "alice update usage and name": 403,
        "alice delete doc with usage": 403,
        "admin update usage": 403,
        "bob update usage": 403,
        "alice create with usage": 403,
        "alice delete doc without usage": 200,
    }


def test_a_user_cannot_list_other_users(world: World) -> None:
    seed(f"users/{world.alice.uid}", {"name": "Alice"})
    seed(f"users/{world.bob.uid}", {"name": "Bob"})

    assert attempt(world.alice, "list", f"users/{world.alice.uid}") == 403
    assert attempt(world.admin, "list", f"users/{world.alice.uid}") == 200
