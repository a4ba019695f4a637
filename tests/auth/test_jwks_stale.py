"""JWKS keys do not outlive a failing JWKS endpoint by more than `jwks_max_stale_seconds`.

Threat: the issuer withdraws a key (rotated out, or revoked after it leaked), but our
refetches fail, by an outage or because whoever holds the leaked key blocks them: the
cached key set, kept "because stale keys are better than none", would honour the
withdrawn key for ever.

The JWKS endpoint is a real HTTP server on 127.0.0.1 whose answers the test sets
(`/_test/keys`: the document to serve, or nothing for an outage, 503). The cache's
monotonic clock is injected; tokens are checked against the harness's fixed wall
clock, so only the key set ages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from bastion.auth import jwt as J
from bastion.auth.jwt import JWKSCache, key_source_from_settings
from bastion.auth.middleware import AuthenticationMiddleware
from bastion.auth.settings import DEFAULT_JWKS_MAX_STALE_SECONDS, JWTSettings
from bastion.events import EventEmitter
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.auth.apps import call, make_protected_app
from tests.auth.harness import (
    EC_KEY,
    RSA_KEY,
    auth_settings,
    claims,
    clock,
    jwt_settings,
    public_jwks,
    sign,
)
from tests.conftest import RecordingSink
from tests.support.servers import RunningServer, serve

pytestmark = pytest.mark.anyio

MAX_STALE = 3600
TTL = 300
MIN_REFRESH = 60


def create_app() -> ASGIApp:
    """For `serve`: `/jwks` answers the document last posted to `/_test/keys`, or 503
    while the last post was empty (the endpoint is down, or blocked)."""
    served: dict[str, bytes] = {"document": b""}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/_test/keys" and scope["method"] == "POST":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            served["document"] = body
            status, payload = 204, b""
        elif scope["path"] == "/jwks" and served["document"]:
            status, payload = 200, served["document"]
        else:
            status, payload = 503, b""
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[RunningServer]:
    with serve("tests.auth.test_jwks_stale:create_app") as server:
        yield server


def publish(server: RunningServer, document: dict[str, Any] | None) -> None:
    """Serve `document` from now on; None: every fetch fails from now on."""
    body = json.dumps(document).encode() if document is not None else b""
    httpx.post(f"{server.url}/_test/keys", content=body, timeout=10).raise_for_status()


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def url_settings(server: RunningServer, **overrides: Any) -> JWTSettings:
    values: dict[str, Any] = {
        "jwks_url": f"{server.url}/jwks",
        "insecure_jwks_over_http": True,  # the test server is plain HTTP on 127.0.0.1
        "jwks_ttl_seconds": TTL,
        "jwks_min_refresh_seconds": MIN_REFRESH,
        "jwks_max_stale_seconds": MAX_STALE,
    }
    merged = values | overrides
    # `jwks` None: the harness's inline key set is replaced by the URL.
    return jwt_settings(jwks=None, **{n: v for n, v in merged.items() if v is not None})


class Stack:
    """The authentication middleware over the real JWKS server, its cache's clock."""

    def __init__(self, server: RunningServer, events: EventEmitter, **overrides: Any) -> None:
        self.settings = url_settings(server, **overrides)
        self.monotonic = Monotonic()
        keys = key_source_from_settings(self.settings, clock=self.monotonic)
        assert isinstance(keys, JWKSCache)
        self.keys = keys
        self.hits: list[str] = []
        self.app = AuthenticationMiddleware(
            make_protected_app("raw", self.hits),
            auth_settings(jwt=self.settings),
            events=events,
            clock=clock,
            key_source=self.keys,
        )

    async def status(self, token: str, *, at: float) -> int:
        self.monotonic.now = at
        status, _, _ = await call(
            self.app, "/admin", [(b"authorization", f"Bearer {token}".encode())]
        )
        return status


RSA_TOKEN = sign(claims())
EC_TOKEN = sign(claims(), key=EC_KEY, alg="ES256")


@pytest.mark.parametrize(
    ("at", "status", "reason"),
    [
        pytest.param(TTL + 1, 200, None, id="jwks-outage-past-ttl-ok"),
        pytest.param(MAX_STALE - 1, 200, None, id="jwks-outage-within-max-stale-ok"),
        pytest.param(MAX_STALE, 401, J.REASON_JWT_KEYS_EXPIRED, id="jwks-outage-past-max-stale"),
        pytest.param(30 * 86400, 401, J.REASON_JWT_KEYS_EXPIRED, id="jwks-outage-a-month-long"),
    ],
)
async def test_keys_expire_while_fetches_fail(
    jwks_server: RunningServer,
    events: EventEmitter,
    sink: RecordingSink,
    caplog: pytest.LogCaptureFixture,
    at: float,
    status: int,
    reason: str | None,
) -> None:
    publish(jwks_server, public_jwks(RSA_KEY, EC_KEY))
    stack = Stack(jwks_server, events)
    assert await stack.status(RSA_TOKEN, at=0) == 200  # fetched and remembered
    publish(jwks_server, None)  # the endpoint goes down (or is blocked)
    with caplog.at_level(logging.WARNING, logger="bastion.auth"):
        assert await stack.status(RSA_TOKEN, at=at) == status
    assert sink.reasons() == ([reason] if reason else [])
    if reason is None:
        assert stack.hits == ["/admin", "/admin"]
        return
    assert stack.hits == ["/admin"]
    assert sink.records[0]["kind"] == "authn_login_fail"
    dropped = [r.getMessage() for r in caplog.records if "JWKS keys dropped" in r.getMessage()]
    assert len(dropped) == 1
    # Fail closed for every key, not only the one the token names.
    assert await stack.status(EC_TOKEN, at=at + 1) == 401


async def test_withdrawn_key_blocked_fetch_then_recovery(
    jwks_server: RunningServer, events: EventEmitter, sink: RecordingSink
) -> None:
    """The attack in full: the RSA key leaks; the issuer withdraws it, but the holder
    of the key blocks our fetches. The window is bounded; once a fetch gets through,
    the withdrawn key is gone and the issuer's current key works."""
    publish(jwks_server, public_jwks(RSA_KEY, EC_KEY))
    stack = Stack(jwks_server, events)
    assert await stack.status(RSA_TOKEN, at=0) == 200
    publish(jwks_server, None)  # withdrawn at the issuer, and our fetch blocked
    assert await stack.status(RSA_TOKEN, at=MAX_STALE - 1) == 200  # the bounded window
    assert await stack.status(RSA_TOKEN, at=MAX_STALE) == 401  # jwks-withdrawn-key-expired
    # Refetches stay rate limited while the keys are dropped: none before the interval.
    fetches = stack.keys.fetches
    assert await stack.status(EC_TOKEN, at=MAX_STALE + MIN_REFRESH / 2) == 401
    assert stack.keys.fetches == fetches
    publish(jwks_server, public_jwks(EC_KEY))  # the fetch gets through again
    later = MAX_STALE - 1 + MIN_REFRESH
    assert await stack.status(EC_TOKEN, at=later) == 200  # jwks-recovered-ok
    assert not stack.keys.expired
    assert await stack.status(RSA_TOKEN, at=later + 1) == 401  # jwks-withdrawn-key-gone
    assert sink.reasons() == [
        J.REASON_JWT_KEYS_EXPIRED,
        J.REASON_JWT_KEYS_EXPIRED,
        J.REASON_JWT_UNKNOWN_KEY,
    ]


# --- the settings ---------------------------------------------------------------------


def test_settings_reach_the_cache(jwks_server: RunningServer) -> None:
    assert jwt_settings().jwks_max_stale_seconds == DEFAULT_JWKS_MAX_STALE_SECONDS
    keys = key_source_from_settings(url_settings(jwks_server, jwks_max_stale_seconds=7200))
    assert isinstance(keys, JWKSCache)
    assert keys.max_stale_seconds == 7200
    default = key_source_from_settings(url_settings(jwks_server, jwks_max_stale_seconds=None))
    assert isinstance(default, JWKSCache)
    assert default.max_stale_seconds == DEFAULT_JWKS_MAX_STALE_SECONDS


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"jwks_max_stale_seconds": TTL - 1}, id="jwks-max-stale-below-ttl"),
        pytest.param(
            {"jwks_max_stale_seconds": 59, "jwks_ttl_seconds": 10}, id="jwks-max-stale-tiny"
        ),
        pytest.param(
            {"jwks_max_stale_seconds": TTL, "jwks_min_refresh_seconds": TTL + 1},
            id="jwks-max-stale-below-min-refresh",
        ),
    ],
)
def test_max_stale_refused(jwks_server: RunningServer, overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="jwks_max_stale_seconds") as refused:
        url_settings(jwks_server, **overrides)
    if "jwks_min_refresh_seconds" in overrides:
        assert "jwks_min_refresh_seconds" in str(refused.value)


async def test_max_stale_at_min_refresh_keeps_keys_while_the_endpoint_answers(
    jwks_server: RunningServer, events: EventEmitter, sink: RecordingSink
) -> None:
    """`jwks-max-stale-at-min-refresh-ok`: keys that may age only as long as a refetch
    waits (`jwks_min_refresh_seconds`, longer than the TTL) are refreshed before they
    would be dropped: with the endpoint answering, no token is ever refused. (Keys
    dropped at the TTL, before a refetch was allowed, refused every token until then:
    what `jwks-max-stale-below-min-refresh` now refuses at start-up.)"""
    publish(jwks_server, public_jwks(RSA_KEY, EC_KEY))
    stack = Stack(
        jwks_server, events, jwks_max_stale_seconds=MAX_STALE, jwks_min_refresh_seconds=MAX_STALE
    )
    for at in (0, TTL, MAX_STALE - 1, MAX_STALE, 2 * MAX_STALE - 1, 2 * MAX_STALE):
        assert await stack.status(RSA_TOKEN, at=at) == 200, at
    assert not stack.keys.expired
    assert stack.keys.fetches == 3
    assert sink.reasons() == []
