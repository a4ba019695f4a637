"""The authentication adapter: sources, order, challenges, events, fail-closed."""

from __future__ import annotations

import pytest

from bastion.auth import AuthenticationMiddleware, AuthorizationMiddleware, PolicySettings
from bastion.auth.apikeys import APIKeyStore
from bastion.auth.jwt import REASON_JWT_EXPIRED
from bastion.auth.middleware import REASON_AUTHORIZATION_MALFORMED
from bastion.auth.settings import APIKeySettings
from bastion.events import EventEmitter
from bastion.exceptions import StoreError
from bastion.sessions import SessionMiddleware
from bastion.stores.memory import MemoryStore
from bastion.types import ASGIApp
from tests.auth.apps import FRAMEWORKS, call, make_protected_app
from tests.auth.harness import NOW, PEPPER, auth_settings, claims, clock, sign
from tests.conftest import RecordingSink, asgi_client

pytestmark = pytest.mark.anyio


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def stack(framework: str, events: EventEmitter, store: MemoryStore | None = None) -> ASGIApp:
    app = make_protected_app(framework, [])
    return AuthenticationMiddleware(
        app,
        auth_settings(),
        store=store if store is not None else MemoryStore(clock=clock),
        events=events,
        clock=clock,
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_valid_bearer_sets_principal(framework: str, events: EventEmitter) -> None:
    async with asgi_client(stack(framework, events)) as client:
        response = await client.get(
            "/public", headers={"authorization": f"Bearer {sign(claims())}"}
        )
    assert (response.status_code, response.text) == (200, "jwt:alice")


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_invalid_bearer_is_401_with_rfc6750_challenge(
    framework: str, events: EventEmitter, sink: RecordingSink
) -> None:
    token = sign(claims(exp=int(NOW) - 3600))
    async with asgi_client(stack(framework, events)) as client:
        response = await client.get("/public", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="bastion", error="invalid_token"'
    assert "expired" not in response.text  # the reason stays inside
    assert sink.reasons() == [REASON_JWT_EXPIRED]
    assert sink.records[0]["kind"] == "authn_login_fail"


async def test_no_credentials_is_anonymous(events: EventEmitter) -> None:
    status, _, body = await call(stack("raw", events), "/public")
    assert (status, body) == (200, b"anonymous")


async def test_bad_bearer_is_not_rescued_by_session(events: EventEmitter) -> None:
    async def login(scope, receive, send):  # type: ignore[no-untyped-def]
        scope["session"].login("bob")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    store = MemoryStore(clock=clock)
    inner = stack("raw", events, store)
    app = SessionMiddleware(inner, store=store, secret_keys=["k" * 40], events=events, clock=clock)
    login_app = SessionMiddleware(login, store=store, secret_keys=["k" * 40], clock=clock)
    _, headers, _ = await call(login_app, "/login")
    cookie = headers[b"set-cookie"].split(b";")[0]
    status, _, body = await call(app, "/public", [(b"cookie", cookie)])
    assert (status, body) == (200, b"session:bob")
    status, _, _ = await call(app, "/public", [(b"cookie", cookie), *bearer("garbage.x.y")])
    assert status == 401


async def test_two_authorization_headers_refused(events: EventEmitter, sink: RecordingSink) -> None:
    token = sign(claims())
    status, headers, _ = await call(
        stack("raw", events), "/public", [*bearer(token), *bearer(token)]
    )
    assert status == 401
    assert b'error="invalid_request"' in headers[b"www-authenticate"]
    assert sink.reasons() == [REASON_AUTHORIZATION_MALFORMED]


async def test_api_key_sets_principal(events: EventEmitter) -> None:
    store = MemoryStore(clock=clock)
    key = await APIKeyStore(store, APIKeySettings(peppers=(PEPPER,)), clock=clock).create(
        "svc-report", scopes=["read:x"]
    )
    status, _, body = await call(
        stack("raw", events, store), "/public", [(b"x-api-key", key.encode())]
    )
    assert (status, body) == (200, b"apikey:svc-report")


async def test_store_down_fails_closed(events: EventEmitter, sink: RecordingSink) -> None:
    class DownStore(MemoryStore):
        async def get(self, key: str) -> bytes | None:
            raise StoreError("down")

    status, _, _ = await call(
        stack("raw", events, DownStore(clock=clock)), "/public", bearer(sign(claims()))
    )
    assert status == 503
    assert sink.records[0]["kind"] == "sys_availability"


async def test_monitor_only_lets_request_through_anonymous(
    events: EventEmitter, sink: RecordingSink
) -> None:
    settings = auth_settings(monitor_only=True)
    app = AuthenticationMiddleware(
        make_protected_app("raw", []), settings, events=events, clock=clock
    )
    status, _, body = await call(app, "/public", bearer("bad.bad.bad"))
    assert (status, body) == (200, b"anonymous")
    assert sink.records[0]["action"] == "monitored"


async def test_scope_user_and_auth_are_starlette_shaped(events: EventEmitter) -> None:
    seen = {}

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        seen["user"], seen["auth"] = scope["user"], scope["auth"]
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = AuthenticationMiddleware(app, auth_settings(), events=events, clock=clock)
    await call(wrapped, "/", bearer(sign(claims())))
    assert seen["user"].is_authenticated
    assert seen["user"].display_name == "alice"
    assert seen["auth"].scopes == ["read:x", "write:x"]
    await call(wrapped, "/")
    assert not seen["user"].is_authenticated
    assert seen["auth"].scopes == []


async def test_authorization_after_authentication(events: EventEmitter) -> None:
    policy = PolicySettings(routes={"/admin": "roles:admin"})
    app = AuthenticationMiddleware(
        AuthorizationMiddleware(make_protected_app("raw", []), policy, events=events),
        auth_settings(),
        events=events,
        clock=clock,
    )
    assert (await call(app, "/admin", bearer(sign(claims()))))[0] == 200
    status, headers, _ = await call(app, "/admin", bearer(sign(claims(roles=["user"]))))
    assert status == 403
    assert b'error="insufficient_scope"' in headers[b"www-authenticate"]
