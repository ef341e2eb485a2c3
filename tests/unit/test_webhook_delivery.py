"""Alert delivery to a real local webhook: a redirect is a failed attempt, and logs name its host only."""

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from adapters import webhooks
from tally import layout
from tally.config import Settings
from tally.services import alerts
from tally_dev.memory import MemoryStore
from tally_dev.webhook import Receiver

NOW = datetime(2026, 11, 14, 10, tzinfo=UTC)
SECRET_PATH = "/T0000/B0000/SECRET-in-path?token=SECRET-in-query"


@pytest.fixture(scope="module")
def _receivers() -> Iterator[tuple[Receiver, Receiver]]:
    webhook, elsewhere = Receiver(port=0, secret="s3cret"), Receiver(port=0, secret="s3cret")
    yield webhook, elsewhere
    webhook.close()
    elsewhere.close()


@pytest.fixture
def receivers(_receivers: tuple[Receiver, Receiver]) -> tuple[Receiver, Receiver]:
    """Two receivers, with nothing received yet: the webhook, and where it redirects to."""
    for receiver in _receivers:
        receiver.clear()
    return _receivers


def raised(store: MemoryStore, user_id: str) -> str:
    """Raise one cost alert of a user; return its id."""
    alert = alerts.Alert(user_id, "2026-11", alerts.AlertKind.COST, 80, 4_000_000_000, 5_000_000_000, "test")
    alerts.create(store, [alert], NOW)
    return alert.alert_id


def settings_for(url: str) -> Settings:
    return Settings(webhook_url=url, webhook_secret="s3cret", webhook_backoff_seconds=0, webhook_attempts=3)


def test_a_redirect_is_a_failed_attempt_and_is_never_followed(
    receivers: tuple[Receiver, Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    webhook, elsewhere = receivers
    store = MemoryStore()
    alert_id = raised(store, "u-redirected")
    webhook.redirect_next(10, elsewhere.url)
    caplog.set_level(logging.WARNING, logger="tally.alerts")

    result = alerts.deliver(
        store=store,
        alert_id=alert_id,
        settings=settings_for(webhook.url + SECRET_PATH),
        post=webhooks.post_json,
        sleep=lambda _: None,
        now=lambda: NOW,
    )

    assert result == alerts.Delivery(False, 3)
    stored = store.docs[layout.alert_path(alert_id)]
    assert (stored["attempts"], stored["deliveredAt"], stored["lastStatus"]) == (3, None, 302)
    assert [d.answered for d in webhook.received(alert_id)] == [302, 302, 302]
    assert (elsewhere.deliveries, elsewhere.visits) == ([], [])
    messages = [record.getMessage() for record in caplog.records]
    assert (
        f"alert {alert_id}: the webhook at http://127.0.0.1:{webhook.port} answered 302 (attempt 1) "
        "(a redirect is not followed)"
    ) in messages
    assert not [message for message in messages if "SECRET" in message]


def test_a_webhook_that_is_not_http_is_named_by_its_host_only(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    alert_id = raised(store, "u-ftp")
    caplog.set_level(logging.ERROR, logger="tally.alerts")

    result = alerts.deliver(
        store=store,
        alert_id=alert_id,
        settings=settings_for("ftp://hooks.example.com" + SECRET_PATH),
        post=webhooks.post_json,
        sleep=lambda _: None,
        now=lambda: NOW,
    )

    assert result.skipped == "TALLY_ALERT_WEBHOOK_URL must be an http(s) URL, not ftp://hooks.example.com"
    assert caplog.records
    assert not [record for record in caplog.records if "SECRET" in record.getMessage()]


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("https://hooks.slack.com/services/T0/B0/SECRET", "https://hooks.slack.com"),
        ("http://user:SECRET@127.0.0.1:8080/hook?token=SECRET", "http://127.0.0.1:8080"),
        ("https://[::1]:9443/SECRET", "https://[::1]:9443"),
        ("hooks.slack.com/services/SECRET", "(not a URL with a scheme and a host)"),
        ("http://hooks.example.com:SECRET/x", "(not a readable URL)"),
    ],
)
def test_webhook_origin_keeps_scheme_host_and_port_only(url: str, named: str) -> None:
    assert alerts.webhook_origin(url) == named
