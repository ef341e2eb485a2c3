"""Hostile input for the tests: Hypothesis strategies of bodies and data that Tally must reject cleanly.

Shared by the parsing-layer unit tests (many examples) and the HTTP tests (a few).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from hypothesis import strategies as st

NASTY_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "a.b", "a/b", "__x__", "../..", "\u0000", "\u202e", "💸", "x" * 300, "\ud800"]),
)
NASTY_NUMBER = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -0.0, 1000.0000000001, 10**400, "1e999", "NaN", "-Infinity", "0x10", "1_000"]),
)
NASTY_TIME = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(["0000-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00", "2026-02-30T00:00:00Z", "now", ""]),
    st.datetimes().map(lambda d: d.isoformat()),
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), NASTY_NUMBER, NASTY_TEXT)
ANY_JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NASTY_TEXT, inner, max_size=4),
    max_leaves=20,
)


def deep(levels: int) -> dict[str, Any]:
    """Return a map nested `levels` deep."""
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def valid_step() -> dict[str, Any]:
    """Return one valid step with a fresh operation id."""
    return {
        "operationId": f"op_{uuid.uuid4().hex[:16]}",
        "usageType": "API",
        "feature": "f",
        "provider": "p",
        "cost": "0.01",
    }


def is_invalid_cost(value: object) -> bool:
    """Return whether a JSON value is not an acceptable cost."""
    if isinstance(value, str | bool) or not isinstance(value, int | float):
        return True
    if isinstance(value, float) and not math.isfinite(value):
        return True
    return not 0 <= value <= 1000


NOT_STR = ANY_JSON.filter(lambda v: not isinstance(v, str))
BAD_FIELD = {
    "operationId": NOT_STR
    | st.sampled_from(["", "a b", "a/b", "x" * 129, "é", "\u0000", ".", "..", "__x__"]),
    "usageType": NOT_STR | st.sampled_from(["", "Gpu", "AIUsages", "a i", "\u0000", "API "]),
    "feature": NOT_STR | st.sampled_from(["", "a b", "x" * 101, "é", "a\nb", "💸", "a\\b"]),
    "provider": NOT_STR | st.sampled_from(["", "a b", "x" * 101, "\u202e", "a,b"]),
    "cost": NASTY_NUMBER.filter(is_invalid_cost) | st.sampled_from([True, None, [], {}]),
    "isBillableRun": ANY_JSON.filter(lambda v: not isinstance(v, bool)),
    "timestamp": NASTY_TIME,
}


@st.composite
def hostile_body(draw: st.DrawFn) -> Any:
    """A record_steps body that must be rejected: one part of a valid request made hostile."""
    body: dict[str, Any] = {"steps": [valid_step()], "session": {"id": "s1"}}
    where = draw(st.sampled_from(["step", "step", "step", "session", "top", "whole", "metadata", "steps"]))
    if where == "step":
        field = draw(st.sampled_from(sorted(BAD_FIELD)))
        body["steps"][0][field] = draw(BAD_FIELD[field])
    elif where == "session":
        body["session"] = draw(
            ANY_JSON.filter(lambda v: v is not None and (not isinstance(v, dict) or "id" not in v))
            | st.sampled_from(
                [{"id": "bad id"}, {"id": ""}, {"id": "s", "complete": "yes"}, {"id": "s", "x": 1}]
            )
        )
    elif where == "top":
        body[draw(NASTY_TEXT.filter(lambda k: k not in {"steps", "session", "userId"}))] = draw(ANY_JSON)
    elif where == "whole":
        return draw(ANY_JSON.filter(lambda v: not isinstance(v, dict) or "steps" not in v))
    elif where == "metadata":
        body["steps"][0]["metadata"] = draw(
            st.sampled_from(
                [
                    deep(30),
                    {"big": "x" * 5000},
                    {"": 1},
                    {"__name__": 1},
                    {"n": 2**70},
                    {"l": [[1]]},
                    [1],
                    "m",
                ]
            )
        )
    else:
        body["steps"] = draw(
            st.sampled_from([[], [valid_step()] * 2, [valid_step() for _ in range(101)], {}, "x", None])
        )
    return body
