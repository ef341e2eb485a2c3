"""Fixtures: a fake of Tally's functions and Tally clients pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.serving import WSGIRequestHandler

from tally_client import Tally
from tally_fakes import FakeTally


@pytest.fixture
def fake(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> FakeTally:
    """Return a fake of Tally's functions on the test HTTP server (its `Date` header is the fake's clock)."""
    fake_tally = FakeTally(httpserver)
    fake_tally.install()
    monkeypatch.setattr(WSGIRequestHandler, "date_time_string", lambda *_: fake_tally.http_date())
    return fake_tally


@pytest.fixture
def make_tally(fake: FakeTally) -> Iterator[Callable[..., Tally]]:
    """Return a factory of Tally clients pointed at the fake (closed after the test)."""
    made: list[Tally] = []

    def factory(**options: Any) -> Tally:
        settings: dict[str, Any] = {
            "id_token": lambda: "token",
            "flush_interval": None,
            "backoff_base": 0.001,
            "backoff_max": 0.01,
            "max_retries": 3,
            "timeout": 5.0,
        }
        settings.update(options)
        tally = Tally(fake.url, **settings)
        made.append(tally)
        return tally

    yield factory
    for tally in made:
        tally.close()


@pytest.fixture
def tally(make_tally: Callable[..., Tally]) -> Tally:
    """Return a Tally client with no timer (tests flush explicitly)."""
    return make_tally()
