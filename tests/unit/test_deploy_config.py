"""Deploying into an app: Tally's config names only what is Tally's, or what docs/deploy.md explains."""

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHARED_IDS = {"users", "sessions", "steps", "reservations"}  # collection ids an app may also use


def load(name: str) -> Any:
    return json.loads((ROOT / name).read_text())


def test_functions_deploy_as_their_own_codebase() -> None:
    functions = load("firebase.json")["functions"]

    assert [entry["codebase"] for entry in functions] == ["tally"]


def test_the_dashboard_deploys_to_its_own_hosting_target() -> None:
    hosting = load("firebase.json")["hosting"]
    targets = load(".firebaserc")["targets"]["demo-tally"]["hosting"]

    assert hosting["target"] == "tally"
    assert targets == {"tally": ["demo-tally"]}


def test_composite_indexes_on_shared_collection_ids_only_hold_tally_documents() -> None:
    indexes = load("firestore.indexes.json")["indexes"]

    for index in indexes:
        group, fields = index["collectionGroup"], {f["fieldPath"] for f in index["fields"]}
        assert group.startswith("Tally") or (group in SHARED_IDS and "tallyShard" in fields), index


def test_field_overrides_on_shared_collection_ids_are_documented_for_apps() -> None:
    overrides = load("firestore.indexes.json")["fieldOverrides"]
    guide = (ROOT / "docs" / "deploy.md").read_text()

    shared = [
        f"{o['collectionGroup']}.{o['fieldPath']}" for o in overrides if o["collectionGroup"] in SHARED_IDS
    ]

    assert shared
    assert [name for name in shared if f"`{name}`" not in guide] == []
    assert all(
        o["collectionGroup"] in SHARED_IDS or o["collectionGroup"].startswith("Tally") for o in overrides
    )
