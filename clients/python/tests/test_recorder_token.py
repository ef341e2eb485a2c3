"""recorder_token: a fake of the Admin SDK's auth, and a local server for signInWithCustomToken."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tally_client import Tally, TallyError, recorder_token
from tally_fakes import FakeTally

SIGN_IN = "/identitytoolkit.googleapis.com/v1/accounts:signInWithCustomToken"


class UserNotFoundError(Exception):
    """The Admin SDK's error for an unknown uid (matched by name)."""


@dataclass
class _User:
    custom_claims: dict[str, Any] | None = None


@dataclass
class FakeAuth:
    """The four Admin SDK auth calls recorder_token makes, on an in-memory user list."""

    users: dict[str, _User] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    UserNotFoundError: type[Exception] = UserNotFoundError

    def get_user(self, uid: str, app: Any = None) -> _User:
        self.calls.append(f"get_user {uid}")
        if uid not in self.users:
            raise UserNotFoundError(uid)
        return self.users[uid]

    def create_user(self, *, uid: str, app: Any = None) -> _User:
        self.calls.append(f"create_user {uid}")
        self.users[uid] = _User()
        return self.users[uid]

    def set_custom_user_claims(self, uid: str, custom_claims: dict[str, Any], app: Any = None) -> None:
        self.calls.append(f"set_custom_user_claims {uid} {json.dumps(custom_claims, sort_keys=True)}")
        self.users[uid] = _User(custom_claims)

    def create_custom_token(
        self, uid: str, developer_claims: dict[str, Any] | None = None, app: Any = None
    ) -> bytes:
        self.calls.append(f"create_custom_token {uid} {json.dumps(developer_claims)}")
        return f"custom-{uid}-{len(self.calls)}".encode()


@dataclass
class IdentityToolkit:
    """A local stand-in for Identity Toolkit's accounts:signInWithCustomToken."""

    server: HTTPServer
    expires_in: str = "3600"
    issued: int = 0
    bodies: list[Any] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self) -> None:
        self.server.expect_request(SIGN_IN, method="POST").respond_with_handler(self._sign_in)

    @property
    def host(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    def _sign_in(self, request: Request) -> Response:
        with self.lock:
            self.issued += 1
            body = json.loads(request.get_data())
            self.bodies.append(body)
            self.keys.append(request.args.get("key"))
            answer = {"idToken": f"id-token-{self.issued}-for-{body['token']}", "expiresIn": self.expires_in}
        return Response(json.dumps(answer), content_type="application/json")


@pytest.fixture
def toolkit(httpserver: HTTPServer) -> IdentityToolkit:
    kit = IdentityToolkit(httpserver)
    kit.install()
    return kit


def test_the_account_is_created_with_the_claim_then_signed_in_with_a_custom_token(
    toolkit: IdentityToolkit,
) -> None:
    auth = FakeAuth()

    token = recorder_token(uid="backend-1", auth=auth, emulator_host=toolkit.host)()

    assert token == "id-token-1-for-custom-backend-1-4"
    assert auth.calls == [
        "get_user backend-1",
        "create_user backend-1",
        'set_custom_user_claims backend-1 {"recorder": true}',
        'create_custom_token backend-1 {"recorder": true}',
    ]
    assert toolkit.bodies == [{"token": "custom-backend-1-4", "returnSecureToken": True}]
    assert toolkit.keys == ["fake-api-key"]


def test_an_existing_account_keeps_its_other_claims(toolkit: IdentityToolkit) -> None:
    auth = FakeAuth(users={"backend-2": _User({"plan": "pro"})})

    recorder_token(uid="backend-2", auth=auth, emulator_host=toolkit.host)()

    assert auth.users["backend-2"].custom_claims == {"plan": "pro", "recorder": True}
    assert not any(call.startswith("create_user") for call in auth.calls)


def test_an_account_with_the_claim_is_left_as_it_is(toolkit: IdentityToolkit) -> None:
    auth = FakeAuth(users={"backend-3": _User({"recorder": True})})

    recorder_token(uid="backend-3", auth=auth, emulator_host=toolkit.host)()

    assert not any(call.startswith("set_custom_user_claims") for call in auth.calls)


def test_the_token_is_cached_and_threads_share_one_sign_in(toolkit: IdentityToolkit) -> None:
    id_token = recorder_token(uid="backend-4", auth=FakeAuth(), emulator_host=toolkit.host)
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(id_token())) for _ in range(8)]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(tokens)) == 1
    assert len(tokens) == 8
    assert toolkit.issued == 1


def test_the_token_is_refreshed_the_margin_before_it_expires(toolkit: IdentityToolkit) -> None:
    toolkit.expires_in = "300"  # the 5-minute margin: every call signs in again
    id_token = recorder_token(uid="backend-5", auth=FakeAuth(), emulator_host=toolkit.host)

    first, second = id_token(), id_token()

    assert first != second
    assert toolkit.issued == 2


def test_production_needs_the_web_api_key_and_sends_it(
    toolkit: IdentityToolkit, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIREBASE_API_KEY", raising=False)
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST", raising=False)
    base = httpserver.url_for("/identitytoolkit.googleapis.com/v1")
    without_key = recorder_token(uid="backend-6", auth=FakeAuth(), identity_toolkit_url=base)

    with pytest.raises(TallyError, match="Web API key"):
        without_key()
    recorder_token(uid="backend-6", auth=FakeAuth(), identity_toolkit_url=base, api_key="AIza-test")()

    assert toolkit.keys == ["AIza-test"]


def test_a_refused_sign_in_raises_and_is_tried_again(httpserver: HTTPServer) -> None:
    answers = [
        Response('{"error":{"message":"INVALID_CUSTOM_TOKEN"}}', status=400),
        Response('{"idToken":"ok","expiresIn":"3600"}', content_type="application/json"),
    ]
    httpserver.expect_request(SIGN_IN, method="POST").respond_with_handler(lambda _request: answers.pop(0))
    id_token = recorder_token(
        uid="backend-7", auth=FakeAuth(), emulator_host=f"{httpserver.host}:{httpserver.port}"
    )

    with pytest.raises(TallyError, match="INVALID_CUSTOM_TOKEN"):
        id_token()

    assert id_token() == "ok"


def test_tally_sends_the_recorders_token_and_records_for_another_user(
    toolkit: IdentityToolkit, fake: FakeTally
) -> None:
    id_token = recorder_token(uid="backend-8", auth=FakeAuth(), emulator_host=toolkit.host)
    with Tally(fake.url, id_token=id_token, flush_interval=None) as tally:
        tally.record(feature="chat", provider="openai", cost="0.01", user_id="someone")
        tally.flush()

    assert fake.received[0].headers["Authorization"].startswith("Bearer id-token-1-for-custom-backend-8")
    assert fake.bodies()[0]["userId"] == "someone"


def test_importing_the_client_does_not_import_firebase_admin() -> None:
    code = "import sys, tally_client; assert 'firebase_admin' not in sys.modules"

    completed = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)  # noqa: S603

    assert completed.returncode == 0, completed.stderr


def test_a_401_makes_the_recorder_sign_in_again_instead_of_resending_the_cached_token(
    toolkit: IdentityToolkit, fake: FakeTally
) -> None:
    id_token = recorder_token(uid="backend-9", auth=FakeAuth(), emulator_host=toolkit.host)
    stale = id_token()  # cached: the server has revoked it meanwhile
    fake.valid_tokens = {"id-token-2-for-custom-backend-9-5"}
    with Tally(fake.url, id_token=id_token, flush_interval=None) as tally:
        tally.record(feature="chat", provider="openai", cost="0.01", user_id="someone")
        tally.flush()

    sent = [request.headers["Authorization"] for request in fake.received]
    assert sent == [f"Bearer {stale}", "Bearer id-token-2-for-custom-backend-9-5"]
    assert toolkit.issued == 2


def test_a_late_invalidate_keeps_the_token_another_thread_got_meanwhile(toolkit: IdentityToolkit) -> None:
    id_token = recorder_token(uid="backend-10", auth=FakeAuth(), emulator_host=toolkit.host)
    stale = id_token()  # this thread's request will get a 401 for it, late
    fresh: list[str] = []

    def other_thread() -> None:  # got the same token, its 401 came first: it signs in again
        id_token()
        id_token.invalidate()
        fresh.append(id_token())

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    id_token.invalidate()  # this thread's 401, about `stale`

    assert fresh[0] != stale
    assert id_token() == fresh[0]
    assert toolkit.issued == 2


def test_invalidate_drops_the_token_the_thread_was_handed(toolkit: IdentityToolkit) -> None:
    id_token = recorder_token(uid="backend-11", auth=FakeAuth(), emulator_host=toolkit.host)
    first = id_token()

    id_token.invalidate()

    assert id_token() != first
    assert toolkit.issued == 2
