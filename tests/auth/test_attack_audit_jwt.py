"""JWT attacks found in the audit: parser recursion, non-finite times, scope splitting,
and a JWKS endpoint that never finishes its answer."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.auth import jwt as J
from bastion.auth import oidc as O
from bastion.auth.jwt import JWTVerifier, inspect_token
from bastion.auth.middleware import AuthenticationMiddleware
from bastion.events import EventEmitter
from bastion.stores.memory import MemoryStore
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.auth.apps import call, make_protected_app
from tests.auth.harness import NOW, RSA_KEY, auth_settings, claims, clock, jwt_settings, sign
from tests.conftest import RecordingSink
from tests.support.servers import RunningServer, serve

pytestmark = pytest.mark.anyio


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _nested_header_token(depth: int) -> str:
    head = b'{"alg":"RS256","kid":"rsa-1","typ":"at+jwt","x":'
    header = head + b"[" * depth + b"]" * depth + b"}"
    return f"{_b64(header)}.{_b64(b'{}')}.{_b64(b's' * 256)}"


# --- a header nested deeper than the JSON parser's recursion limit ---------------------
# The bound is Bastion's own (`MAX_HEADER_DEPTH`), not the parser's: 2,500 levels raise
# RecursionError in `json` on CPython 3.11 and 3.12 but parse on 3.13, and one level
# past the bound parses everywhere. Each is refused as malformed on every version.
# (`_nested_header_token(depth)` nests `depth` arrays inside the header object.)

NESTING = [
    pytest.param(10, J.REASON_JWT_BAD_SIGNATURE, id="jwt-nested-header-shallow-ok"),
    pytest.param(
        J.MAX_HEADER_DEPTH - 1, J.REASON_JWT_BAD_SIGNATURE, id="jwt-nested-header-at-bound-ok"
    ),
    pytest.param(J.MAX_HEADER_DEPTH, J.REASON_JWT_MALFORMED, id="jwt-nested-header-past-bound"),
    pytest.param(2500, J.REASON_JWT_MALFORMED, id="jwt-nested-header-recursion"),
]


@pytest.mark.parametrize(("depth", "reason"), NESTING)
async def test_nested_header_is_malformed(depth: int, reason: str) -> None:
    token = _nested_header_token(depth)
    assert len(token) <= jwt_settings().max_token_bytes
    verifier = JWTVerifier(jwt_settings(), store=MemoryStore(clock=clock), clock=clock)
    assert (await verifier.verify(token)).reason == reason


async def test_nested_header_through_the_middleware(
    events: EventEmitter, sink: RecordingSink
) -> None:
    hits: list[str] = []
    app = AuthenticationMiddleware(
        make_protected_app("raw", hits), auth_settings(), events=events, clock=clock
    )
    nested = _nested_header_token(2500)
    status, headers, _ = await call(
        app, "/admin", [(b"authorization", f"Bearer {nested}".encode())]
    )
    assert status == 401
    assert headers[b"www-authenticate"] == b'Bearer realm="bastion", error="invalid_token"'
    assert sink.reasons() == [J.REASON_JWT_MALFORMED]
    assert not hits
    good = sign(claims())
    status, _, body = await call(app, "/admin", [(b"authorization", f"Bearer {good}".encode())])
    assert (status, body) == (200, b"jwt:alice")


@pytest.mark.parametrize(
    ("encoding", "reason"),
    [
        pytest.param("utf-8", "", id="jwt-header-utf8-ok"),
        # `json.loads` would read these bytes as UTF-16 (or UTF-32) and the depth scan
        # reads UTF-8: the header must be UTF-8 (RFC 7515 section 4), as it is parsed.
        pytest.param("utf-16", J.REASON_JWT_MALFORMED, id="jwt-header-utf16"),
        pytest.param("utf-32", J.REASON_JWT_MALFORMED, id="jwt-header-utf32"),
        pytest.param("utf-8-sig", J.REASON_JWT_MALFORMED, id="jwt-header-utf8-bom"),
    ],
)
def test_header_is_utf8_only(encoding: str, reason: str) -> None:
    header = '{"alg":"RS256","kid":"rsa-1","typ":"at+jwt"}'.encode(encoding)
    token = f"{_b64(header)}.{_b64(b'{}')}.{_b64(b's' * 256)}"
    assert inspect_token(token, jwt_settings().max_token_bytes).reason == reason


def test_oidc_id_token_with_nested_header_is_refused() -> None:
    # The relying party inspects the provider's ID token with the same function.
    assert inspect_token(_nested_header_token(2500), O.MAX_ID_TOKEN_BYTES).header is None


# --- NaN and Infinity: signed, but times that compare false with everything ------------

NON_FINITE = [
    pytest.param({"iat": NOW - 10.5}, "", id="jwt-fractional-iat-ok"),
    pytest.param({"iat": float("nan")}, J.REASON_JWT_BAD_CLAIM, id="jwt-nan-iat"),
    pytest.param({"iat": float("-inf")}, J.REASON_JWT_BAD_CLAIM, id="jwt-minus-infinity-iat"),
    pytest.param({"exp": float("inf")}, J.REASON_JWT_BAD_CLAIM, id="jwt-infinite-exp"),
    pytest.param({"nbf": float("nan")}, J.REASON_JWT_BAD_CLAIM, id="jwt-nan-nbf"),
]


@pytest.mark.parametrize(("overrides", "reason"), NON_FINITE)
async def test_non_finite_times(overrides: dict[str, Any], reason: str) -> None:
    token = sign(claims(**overrides))
    if reason:  # the premise: the signed payload really carries the non-finite number
        assert any(word in _payload_text(token) for word in ("NaN", "Infinity"))
    verifier = JWTVerifier(jwt_settings(), store=MemoryStore(clock=clock), clock=clock)
    verdict = await verifier.verify(token)
    assert verdict.reason == reason
    assert (verdict.principal is not None) == (reason == "")


def _payload_text(token: str) -> str:
    payload = token.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()


def _oidc_settings() -> O.OIDCSettings:
    return O.OIDCSettings(
        issuer="https://op.example",
        client_id="rp",
        redirect_uri="https://rp.example/auth/callback",
    )


def _id_claims(**overrides: Any) -> dict[str, Any]:
    return {
        "iss": "https://op.example",
        "aud": "rp",
        "sub": "alice",
        "iat": NOW - 5,
        "exp": NOW + 300,
        "nonce": "n-1",
        **overrides,
    }


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        pytest.param({}, "", id="oidc-finite-times-ok"),
        pytest.param({"iat": float("nan")}, O.REASON_ID_TOKEN_INVALID, id="oidc-nan-iat"),
        pytest.param({"exp": float("inf")}, O.REASON_ID_TOKEN_INVALID, id="oidc-infinite-exp"),
    ],
)
def test_oidc_non_finite_times(overrides: dict[str, Any], reason: str) -> None:
    # A NaN `iat` used to pass both "issued in the future" and "too old".
    found = O.check_id_token_claims(_id_claims(**overrides), _oidc_settings(), "n-1", NOW)
    assert found == reason


# --- `scope` is split on the space only (RFC 6749 section 3.3) -------------------------

SCOPES = [
    pytest.param("read:x write:x", {"read:x", "write:x"}, id="jwt-scope-spaces-ok"),
    pytest.param("read:x  write:x ", {"read:x", "write:x"}, id="jwt-scope-double-space-ok"),
    pytest.param("files:read:x\u00a0admin", {"files:read:x\u00a0admin"}, id="jwt-scope-nbsp"),
    pytest.param("files:read:x\tadmin", {"files:read:x\tadmin"}, id="jwt-scope-tab"),
    pytest.param("files:read:x\u2003admin", {"files:read:x\u2003admin"}, id="jwt-scope-em-space"),
    pytest.param("files:read:x\x1fadmin", {"files:read:x\x1fadmin"}, id="jwt-scope-unit-sep"),
]


@pytest.mark.parametrize(("scope", "granted"), SCOPES)
async def test_scope_split_on_space_only(scope: str, granted: set[str]) -> None:
    verifier = JWTVerifier(jwt_settings(), store=MemoryStore(clock=clock), clock=clock)
    principal = (await verifier.verify(sign(claims(scope=scope)))).principal
    assert principal is not None
    assert principal.scopes == granted
    assert "admin" not in principal.scopes


# --- a JWKS endpoint that never finishes: bounded in bytes and in time ------------------


def create_jwks_server() -> ASGIApp:
    """For `serve`: `/jwks` answers the keys; `/endless` streams for ever (slowly
    enough not to fill memory before the test gives up); `/drip` sends one byte at a
    time, each well within the per-read timeout."""
    document = json.dumps({"keys": [RSA_KEY.as_dict(private=False)]}).encode()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        start = {"type": "http.response.start", "status": 200}
        headers = [(b"content-type", b"application/json")]
        if scope["path"] == "/jwks":
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": document})
            return
        await send({**start, "headers": headers})
        chunk, pause = (b" " * 65536, 0.01) if scope["path"] == "/endless" else (b" ", 0.2)
        while True:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(pause)

    return app


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[RunningServer]:
    with serve("tests.auth.test_attack_audit_jwt:create_jwks_server") as server:
        yield server


def _cache(url: str) -> J.JWKSCache:
    return J.JWKSCache(url, allowed_algorithms=("RS256",), ttl_seconds=300, min_refresh_seconds=60)


async def test_jwks_fetch_ok(jwks_server: RunningServer) -> None:
    assert await _cache(f"{jwks_server.url}/jwks").find("rsa-1") is not None


@pytest.mark.parametrize("path", ["/endless", "/drip"], ids=["jwks-endless-body", "jwks-drip"])
async def test_jwks_fetch_is_bounded(
    path: str, jwks_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(J, "JWKS_FETCH_TIMEOUT_SECONDS", 1.0)
    cache = _cache(f"{jwks_server.url}{path}")
    # Without the bounds, neither fetch ever returns (the drip never trips httpx's
    # per-read timeout), and every bearer request waits on the refresh lock.
    assert await asyncio.wait_for(cache.find("rsa-1"), timeout=10) is None
    with pytest.raises((ValueError, TimeoutError)):
        await asyncio.wait_for(J._httpx_fetch(f"{jwks_server.url}{path}"), timeout=10)
