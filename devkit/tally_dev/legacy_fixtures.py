"""Documents and a CSV in the exact shapes of the earlier systems (seeds 000 and 003), with their totals.

Seed 000's user and session ids, its `0.00283` autocomplete with ISO-string dates and
`"ApiUsage"`, a session dated with Timestamps, an active one, one with a bad step,
`operations` logs (one repeating a session's step, as the dual-write system did), a
monthly document that counted a session twice and one that is right, and a CSV export
of seed 003's `api_usage_log` with one bad row. Also a session too large for one commit, and
the calls of an app that wrote both systems during its migration (the same operationIds).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

ADA = "rfGX8GX9Y3gv3SKbkiERPFym72r1"  # seed 000's user
BOB = "legacy-bob"
MAPS_SESSION = "session_1760436245953_ab12"
CHAT_SESSION = "session_1759300000000_cd34"
OPEN_SESSION = "session_1760950000000_ef56"
BAD_SESSION = "session_1760960000000_gh78"


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def documents() -> dict[str, dict[str, Any]]:
    """Return every legacy document by path."""
    return {
        # Seed 000's example session: ISO strings everywhere, "ApiUsage", float costs.
        f"SessionUsage/{ADA}/sessions/{MAPS_SESSION}": {
            "feature": "google_maps",
            "status": "completed",
            "totalCost": 0.02266,
            "totalRuns": 0,
            "steps": [
                {
                    "operationId": "usage_1760436249794_a460",
                    "usageType": "ApiUsage",
                    "feature": "google_maps_autocomplete",
                    "provider": "google_maps",
                    "cost": 0.00283,
                    "isBillableRun": False,
                    "timestamp": "2025-10-14T10:04:09.794Z",
                    "metadata": {"input": "55 cours", "resultCount": 5},
                },
                {
                    "operationId": "usage_1760436251120_b511",
                    "usageType": "ApiUsage",
                    "feature": "google_maps_autocomplete",
                    "provider": "google_maps",
                    "cost": 0.00283,
                    "isBillableRun": False,
                    "timestamp": "2025-10-14T10:04:11.120Z",
                    "metadata": {"input": "55 cours L", "resultCount": 5},
                },
                {
                    "operationId": "usage_1760436260000_c2d2",
                    "usageType": "APIUsage",
                    "feature": "google_maps_place_details",
                    "provider": "google_maps",
                    "cost": 0.017,
                    "isBillableRun": False,
                    "timestamp": "2025-10-14T10:04:20.000Z",
                },
            ],
            "createdAt": "2025-10-14T10:04:05.953Z",
            "lastUpdatedAt": "2025-10-14T10:04:20.000Z",
            "completedAt": "2025-10-14T10:04:21.000Z",
        },
        # Dated with Timestamps; usageType spelled two more ways; spans September and October.
        f"SessionUsage/{ADA}/sessions/{CHAT_SESSION}": {
            "feature": "llm_chat",
            "status": "completed",
            "steps": [
                {
                    "operationId": "usage_1759300001000_ai01",
                    "usageType": "AIUsage",
                    "feature": "claude-3.5-sonnet",
                    "provider": "anthropic",
                    "cost": 0.0123,
                    "isBillableRun": True,
                    "timestamp": _ts("2025-09-30T23:59:00+00:00"),
                },
                {
                    "operationId": "usage_1759300090000_ai02",
                    "usageType": "ai",
                    "feature": "claude-3.5-sonnet",
                    "provider": "anthropic",
                    "cost": 0.004,
                    "isBillableRun": False,
                    "timestamp": _ts("2025-10-01T00:01:30+00:00"),
                },
            ],
            "createdAt": _ts("2025-09-30T23:58:50+00:00"),
            "lastUpdatedAt": _ts("2025-10-01T00:01:30+00:00"),
            "completedAt": _ts("2025-10-01T00:02:00+00:00"),
        },
        # Still active in the old system.
        f"SessionUsage/{ADA}/sessions/{OPEN_SESSION}": {
            "feature": "property",
            "status": "active",
            "steps": [
                {
                    "operationId": "usage_1760950001000_pr01",
                    "usageType": "api",
                    "feature": "property_lookup",
                    "provider": "rentcast",
                    "cost": 0.05,
                    "isBillableRun": True,
                    "timestamp": "2025-10-20T08:00:01Z",
                }
            ],
            "createdAt": "2025-10-20T08:00:00Z",
            "lastUpdatedAt": "2025-10-20T08:00:01Z",
        },
        # One unreadable step: the whole session is refused.
        f"SessionUsage/{BOB}/sessions/{BAD_SESSION}": {
            "feature": "google_maps",
            "status": "completed",
            "steps": [
                {
                    "operationId": "usage_1760960001000_ok01",
                    "usageType": "ApiUsage",
                    "feature": "google_maps_autocomplete",
                    "provider": "google_maps",
                    "cost": 0.00283,
                    "timestamp": "2025-10-21T09:00:01Z",
                },
                {
                    "operationId": "usage_1760960002000_bad2",
                    "usageType": "ApiUsage",
                    "feature": "google_maps_place_details",
                    "provider": "google_maps",
                    "cost": -0.017,
                    "timestamp": "2025-10-21T09:00:02Z",
                },
            ],
            "createdAt": "2025-10-21T09:00:00Z",
        },
        # Operations logs: one repeats the seed session's first step (counted once), one is new.
        f"ApiUsage/{ADA}/operations/usage_1760436249794_a460": {
            "operationId": "usage_1760436249794_a460",
            "usageType": "ApiUsage",
            "feature": "google_maps_autocomplete",
            "provider": "google_maps",
            "cost": 0.00283,
            "timestamp": "2025-10-14T10:04:09.794Z",
        },
        f"ApiUsage/{ADA}/operations/usage_1760522400000_nb01": {
            "feature": "google_maps_nearby_search",
            "provider": "google_maps",
            "cost": 0.032,
            "isBillableRun": True,
            "timestamp": _ts("2025-10-15T10:00:00+00:00"),
        },
        f"AIUsage/{BOB}/operations/usage_1760608800000_gp01": {
            "feature": "gpt-4o",
            "provider": "openai",
            "cost": 0.0065,
            "timestamp": "2025-10-16T10:00:00Z",
            "metadata": {"inputTokens": 1200, "outputTokens": 350},
        },
        f"AIUsage/{BOB}/operations/usage_bad_time": {
            "feature": "gpt-4o",
            "provider": "openai",
            "cost": 0.0065,
            "timestamp": "yesterday",
        },
        # Monthly totals of the dual-write system: Ada's API month counted the maps session twice.
        f"ApiUsage/{ADA}/monthly/2025-10": {
            "totalCost": 0.12732,
            "totalApiCalls": 8,
            "totalRuns": 2,
            "featureBreakdown": {
                "google_maps_autocomplete": {"cost": 0.01132, "apiCalls": 4, "billableRuns": 0}
            },
        },
        f"AIUsage/{BOB}/monthly/2025-10": {"totalCost": 0.0107, "totalApiCalls": 2, "totalRuns": 0},
    }


CSV = """id,user_id,timestamp,service,cost,endpoint,input_tokens,output_tokens,usage_type,billable
1,legacy-bob,2025-10-14 10:00:00+00,claude,0.0042,chat,1200,300,,false
2,legacy-bob,2025-10-15 11:30:00,rentcast,0.05,,,,,true
3,legacy-bob,2025-10-16 12:00:00+00,rentcast,abc,,,,,
"""

# What the import must add up to, per user and month, in nano-USD: (cost, calls, billable runs).
EXPECTED: dict[tuple[str, str], tuple[int, int, int]] = {
    (ADA, "2025-09"): (12_300_000, 1, 1),
    # maps session 0.02266 + nearby 0.032 + open session 0.05 + chat 0.004
    (ADA, "2025-10"): (108_660_000, 6, 2),
    # gpt-4o 0.0065 + CSV claude 0.0042 + CSV rentcast 0.05
    (BOB, "2025-10"): (60_700_000, 3, 1),
}
IMPORTED_SESSIONS = 3  # the bad one is refused
IMPORTED_STEPS = 10  # 3 + 2 + 1 session steps, 2 operations (one more was a repeat), 2 CSV rows
REFUSED = {
    f"SessionUsage/{BOB}/sessions/{BAD_SESSION}": "steps[1].cost: must be >= 0",
    f"AIUsage/{BOB}/operations/usage_bad_time": "operation.timestamp",
    "legacy.csv:4": "line 4.cost",
}


# A legacy session too large for one commit (more than 450 documents, or with so many feature
# names that a shard would take more than 500 transforms): imported in parts.
LARGE_SESSION = "session_1761120000000_big0"
LARGE_START = datetime(2025, 10, 22, 8, tzinfo=UTC)


def large_session(
    user: str, steps: int, *, features: int = 3, session_id: str = LARGE_SESSION
) -> tuple[str, dict[str, Any]]:
    """Return the path and document of a completed legacy session of `steps` AI steps of $0.001 each.

    The steps use `features` feature names in turn; every tenth is a billable run.
    """
    return f"SessionUsage/{user}/sessions/{session_id}", {
        "feature": "llm",
        "status": "completed",
        "totalCost": round(0.001 * steps, 9),
        "steps": [
            {
                "operationId": f"usage_big_{index:05d}",
                "usageType": "AIUsage",
                "feature": f"llm_tool_{index % features:03d}",
                "provider": "openai",
                "cost": 0.001,
                "isBillableRun": index % 10 == 0,
                "timestamp": (LARGE_START + timedelta(seconds=index)).isoformat().replace("+00:00", "Z"),
            }
            for index in range(steps)
        ],
        "createdAt": LARGE_START.isoformat().replace("+00:00", "Z"),
        "completedAt": (LARGE_START + timedelta(seconds=steps)).isoformat().replace("+00:00", "Z"),
    }


def large_session_totals(steps: int) -> tuple[int, int, int]:
    """Return what a large session adds to its user's month: (cost in nano-USD, calls, billable runs)."""
    return steps * 1_000_000, steps, (steps + 9) // 10


# An app that wrote both systems during its migration: some calls are in Tally already, under
# the same operationId, and must be skipped by the import (never counted twice).
DUAL_SESSION = "session_dual_0001"  # one call in Tally already, one only here
DUAL_RECORDED_SESSION = "session_dual_0002"  # its only call is in Tally already
DUAL_RECORDED = ("dual_op_1", "dual_op_3", "dual_op_5")


def dual_written(user: str, when: datetime) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Return a user's legacy documents of calls at `when`, and the `record_steps` steps Tally has of them."""
    at = when.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def call(op: str, feature: str, cost: float, *, billable: bool = False) -> dict[str, Any]:
        return {
            "operationId": op,
            "usageType": "ApiUsage",
            "feature": feature,
            "provider": "google_maps",
            "cost": cost,
            "isBillableRun": billable,
            "timestamp": at,
        }

    calls = {
        "dual_op_1": call("dual_op_1", "geocode", 0.25),
        "dual_op_2": call("dual_op_2", "route", 0.5),
        "dual_op_3": call("dual_op_3", "nearby", 1.25, billable=True),
        "dual_op_4": call("dual_op_4", "details", 1.0),
        "dual_op_5": call("dual_op_5", "geocode", 0.1),
    }
    session = {"feature": "maps", "status": "completed", "createdAt": at, "completedAt": at}
    logged = {
        op: {k: v for k, v in calls[op].items() if k != "operationId"} for op in ("dual_op_3", "dual_op_4")
    }
    legacy = {
        f"SessionUsage/{user}/sessions/{DUAL_SESSION}": {
            **session,
            "steps": [calls["dual_op_1"], calls["dual_op_2"]],
        },
        f"SessionUsage/{user}/sessions/{DUAL_RECORDED_SESSION}": {**session, "steps": [calls["dual_op_5"]]},
        **{f"ApiUsage/{user}/operations/{op}": fields for op, fields in logged.items()},
    }
    recorded = [{**calls[op], "usageType": "API", "cost": str(calls[op]["cost"])} for op in DUAL_RECORDED]
    return legacy, recorded


# What the user's month of `when` adds up to, counting each call once: (nano-USD, calls, billable runs).
DUAL_EXPECTED = (3_100_000_000, 5, 1)  # 0.25 + 1.25 + 0.1 in Tally already, 0.5 + 1.0 imported
