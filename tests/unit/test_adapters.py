import json
from collections.abc import Iterator

import pytest
from firebase_functions import https_fn
from flask import Flask, Request

from adapters import auth, webhooks
from entrypoints import edge
from tally.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TallyError,
    Unauthenticated,
    Unavailable,
)
from tally.values import Contention
from tally_dev.ports import free_port
from tally_dev.webhook import Receiver

app = Flask(__name__)


def call(handler: object, method: str = "POST") -> tuple[int, dict[str, object]]:
    with app.test_request_context("/", method=method):
        from flask import request

        response = edge.http_endpoint("test", handler)(request)  # type: ignore[arg-type]
    return response.status_code, json.loads(response.get_data())


def test_success_is_json_200() -> None:
    status, body = call(lambda req: {"ok": True})

    assert (status, body) == (200, {"ok": True})


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidArgument.field("steps[0].cost", "must be >= 0"), 400),
        (Unauthenticated("no token"), 401),
        (PermissionDenied("no"), 403),
        (NotFound("no session"), 404),
        (FailedPrecondition("completed"), 409),
        (Unavailable("busy"), 503),
    ],
)
def test_tally_errors_map_to_their_status_and_body(error: TallyError, status: int) -> None:
    def handler(req: Request) -> dict[str, object]:
        raise error

    got_status, body = call(handler)

    assert got_status == status
    assert body == error.body()


def test_unexpected_errors_are_internal_with_nothing_leaked() -> None:
    def handler(req: Request) -> dict[str, object]:
        raise RuntimeError("secret path /var/lib/db at 10.0.0.7")

    status, body = call(handler)

    assert status == 500
    assert body == {"error": {"status": "INTERNAL", "message": "internal error"}}


def test_contention_past_a_services_retries_is_unavailable_never_internal() -> None:
    def handler(req: Request) -> dict[str, object]:
        raise Contention("Aborted")

    status, body = call(handler)

    assert status == 503
    assert body == {"error": {"status": "UNAVAILABLE", "message": edge.CONTENDED}}


def test_method_check_gives_405() -> None:
    def handler(req: Request) -> dict[str, object]:
        edge.require_post(req)
        return {}

    status, body = call(handler, method="PUT")

    assert status == 405
    assert body["error"] == {"status": "METHOD_NOT_ALLOWED", "message": "method PUT is not allowed; use POST"}


def test_callable_error_codes() -> None:
    error = edge.to_https_error(InvalidArgument.field("month", "must be a month like 2026-11"))

    assert error.code is https_fn.FunctionsErrorCode.INVALID_ARGUMENT
    assert error.message == "month: must be a month like 2026-11"
    assert error.details == [{"field": "month", "problem": "must be a month like 2026-11"}]
    assert edge.to_https_error(PermissionDenied("x")).code is https_fn.FunctionsErrorCode.PERMISSION_DENIED


def test_claims_count_only_when_exactly_true() -> None:
    caller = auth.caller_from_claims({"uid": "u1", "admin": "true", "recorder": True, "exp": 200}, now=100)

    assert (caller.uid, caller.admin, caller.recorder) == ("u1", False, True)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": 100}, "the ID token has expired"),
        ({}, "the ID token has expired"),
        ({"exp": 1000, "iat": 401}, "the ID token is not valid yet"),
    ],
)
def test_token_times_are_checked(claims: dict[str, int], message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        auth.caller_from_claims({"uid": "u1", **claims}, now=100)


def test_missing_bearer_is_unauthenticated() -> None:
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(Unauthenticated):
            auth.verify_bearer(header)


def test_app_check_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TALLY_ENFORCE_APP_CHECK", raising=False)

    auth.verify_app_check(None)
    auth.require_callable_app_check(None)


def test_app_check_when_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_ENFORCE_APP_CHECK", "true")

    with pytest.raises(Unauthenticated, match="X-Firebase-AppCheck"):
        auth.verify_app_check(None)
    with pytest.raises(Unauthenticated, match="App Check token is not valid"):
        auth.verify_app_check("not-a-token")
    with pytest.raises(Unauthenticated, match="App Check token is required"):
        auth.require_callable_app_check(None)


def test_record_steps_refuses_a_request_without_app_check_when_enforced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import main

    monkeypatch.setenv("TALLY_ENFORCE_APP_CHECK", "true")
    with app.test_request_context("/", method="POST", json={"steps": []}):
        from flask import request

        response = main.record_steps(request)

    assert response.status_code == 401
    assert json.loads(response.get_data())["error"]["message"].startswith("an App Check token")


# Webhook deliveries (real local HTTP servers)

ALERT_HEADERS = {"Content-Type": "application/json", "X-Tally-Alert-Id": "a-1"}


@pytest.fixture(scope="module")
def _receivers() -> Iterator[tuple[Receiver, Receiver]]:
    webhook, elsewhere = Receiver(port=0, secret="s"), Receiver(port=0, secret="s")
    yield webhook, elsewhere
    webhook.close()
    elsewhere.close()


@pytest.fixture
def receivers(_receivers: tuple[Receiver, Receiver]) -> tuple[Receiver, Receiver]:
    """Two receivers, with nothing received yet: the webhook, and where it may redirect to."""
    for receiver in _receivers:
        receiver.clear()
    return _receivers


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_answered_as_is_and_never_followed(
    status: int, receivers: tuple[Receiver, Receiver]
) -> None:
    webhook, elsewhere = receivers
    webhook.redirect_next(1, elsewhere.url, status=status)

    answered = webhooks.post_json(webhook.url, b'{"alertId":"a-1"}', ALERT_HEADERS)

    assert answered == status
    assert [d.answered for d in webhook.deliveries] == [status]
    assert (elsewhere.deliveries, elsewhere.visits) == ([], [])


def test_a_2xx_is_returned(receivers: tuple[Receiver, Receiver]) -> None:
    webhook, _ = receivers

    answered = webhooks.post_json(webhook.url, b'{"alertId":"a-1"}', ALERT_HEADERS)

    assert answered == 204
    assert webhook.deliveries[0].body == {"alertId": "a-1"}


@pytest.mark.parametrize(
    "path", ["/services/T0/B0/SECRET-in-path?token=SECRET-in-query", "/hooks/SECRET in path?token=SECRET"]
)
def test_logs_of_an_unreachable_webhook_name_its_host_only(
    path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port("127.0.0.1")  # nothing listens there
    url = f"http://user:SECRET-password@127.0.0.1:{port}{path}"

    answered = webhooks.post_json(url, b"{}", ALERT_HEADERS)

    logged = capsys.readouterr()
    lines = logged.out + logged.err
    assert answered == 0
    assert f"http://127.0.0.1:{port}" in lines
    assert "SECRET" not in lines
    assert "webhook unreachable" in lines
