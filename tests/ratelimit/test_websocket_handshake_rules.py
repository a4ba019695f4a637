"""Rate limits on WebSocket handshakes: a handshake is an HTTP GET (RFC 6455 section
4.1), so the limit a user writes for `GET /ws` holds for the sockets opened at `/ws`.

Gap: the layer looked a handshake up under `WEBSOCKET` alone, so a `GET` rule never
applied to it, and a client opened sockets at `/ws` as fast as the broader rules (or
none) allowed. Now a handshake spends the rates of its `GET` rule, in the buckets
the route's GETs spend, as well as those of its `WEBSOCKET` or method-less rule (the
one it met before, which still holds); a `WEBSOCKET` pattern at least as specific
as the `GET` one governs sockets alone. Each refusal is named
`ratelimit-ws-handshake-...`, beside the legitimate handshakes that must still open
(under the limit, another client, a path no `GET` rule names) and the HTTP requests
on the same paths, whose limits are unchanged.

Real ASGI calls: hand-built `websocket` scopes, offering the denial-response
extension as uvicorn and hypercorn do (refused: 429 with `Retry-After`) or not
(refused: close 1013), through the layer to a raw, Starlette or FastAPI app that
serves the paths both as sockets and as pages (`make_socket_app`), and through
`Shield`; HTTP requests through httpx. Each runs over the memory store (the layer's
synchronous path), a memory store it must await (its awaited path) and a real Redis.
Rates are per hour, so that Redis's own clock cannot refill a bucket mid-test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bastion.events import EventEmitter
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings
from bastion.ratelimit.reasons import REASON_RATE_LIMITED
from bastion.responses import WS_TRY_AGAIN_LATER
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.stores import MemoryStore, Store
from bastion.types import ASGIApp
from tests.auth.test_policy_websocket import make_socket_app
from tests.conftest import RecordingSink
from tests.ratelimit.harness import ATTACKER, USER
from tests.ratelimit.harness import request as http_request
from tests.ratelimit.test_sync_path import OverriddenStore
from tests.shield.test_fused import SECRET_KEYS
from tests.support.clock import FakeClock
from tests.support.websocket import ACCEPTED, answer_status, first_message, handshake_scope

pytestmark = pytest.mark.anyio

OPEN = ACCEPTED
REFUSED = 429
THIRD = ("192.0.2.77", 45000)  # a client that only sends HTTP requests
STORES = ("memory", "memory-awaited", "redis")
FRAMEWORKS = ("raw", "starlette", "fastapi")


@asynccontextmanager
async def open_store(kind: str, fixtures: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """`memory`: the layer decides synchronously; `memory-awaited`: a memory store it
    must await (`OverriddenStore`); `redis`: a real Redis, under a fresh prefix."""
    if kind == "memory":
        yield MemoryStore(clock=FakeClock())
        return
    if kind == "memory-awaited":
        yield OverriddenStore(clock=FakeClock())
        return
    from bastion.stores.redis import RedisStore

    server = fixtures.getfixturevalue("redis_standalone")
    store = RedisStore(server.url, key_prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        yield store
    finally:
        await store.close()


def build(
    framework: str, store: Store, limits: dict[str, list[str]], sink: RecordingSink
) -> RateLimitMiddleware:
    return RateLimitMiddleware(
        make_socket_app(framework, []),
        RateLimitSettings.model_validate({"limits": limits, "response_headers": "refused"}),
        store=store,
        events=EventEmitter([sink]),
    )


async def handshake(
    app: ASGIApp,
    path: str,
    client: tuple[str, int] = ATTACKER,
    *,
    denial_response: bool = True,
) -> tuple[int, dict[bytes, bytes]]:
    """Open a socket with a hand-built `websocket` scope: `OPEN` when the app accepted
    it, else the refusal's HTTP status and headers (the close code when the server
    offers no denial response)."""
    scope = handshake_scope(path, client=client, denial_response=denial_response)
    return answer_status(await first_message(app, scope))


async def http_get_statuses(app: ASGIApp, path: str, count: int) -> list[int]:
    return [(await http_request(app, "GET", path, THIRD)).status_code for _ in range(count)]


# (limits, path, the attacker's handshakes, a fresh client's HTTP GETs on that path):
# the attacker's handshakes beyond the handshake's limit are refused (each case id
# names the refusal), the first ones open, and the GETs get exactly the GET rule.
CASES = [
    # The GET rule holds for the socket at its path: a handshake is a GET.
    pytest.param(
        {"GET /ws": ["2/hour"], "*": ["600/hour"]},
        "/ws",
        [OPEN, OPEN, REFUSED, REFUSED],
        [200, 200, 429],
        id="ratelimit-ws-handshake-under-get-rule",
    ),
    pytest.param(
        {"get /ws": ["2/hour"]},
        "/ws",
        [OPEN, OPEN, REFUSED],
        [200, 200, 429],
        id="ratelimit-ws-handshake-under-lowercase-get-rule",
    ),
    pytest.param(
        {"GET,HEAD /ws": ["2/hour"]},
        "/ws",
        [OPEN, OPEN, REFUSED],
        [200, 200, 429],
        id="ratelimit-ws-handshake-under-get-head-rule",
    ),
    pytest.param(
        {"GET /ws/*": ["2/hour"], "*": ["600/hour"]},
        "/ws/lobby",
        [OPEN, OPEN, REFUSED],
        [200, 200, 429],
        id="ratelimit-ws-handshake-under-get-prefix-rule",
    ),
    pytest.param(
        {"GET /ws/{room}": ["2/hour"]},
        "/ws/lobby",
        [OPEN, OPEN, REFUSED],
        [200, 200, 429],
        id="ratelimit-ws-handshake-under-get-param-rule",
    ),
    pytest.param(
        {"GET *": ["2/hour"]},
        "/ws",
        [OPEN, OPEN, REFUSED],
        [200, 200, 429],
        id="ratelimit-ws-handshake-under-get-wildcard-rule",
    ),
    # The GET rule is the more specific: it holds beside the broader socket rule ...
    pytest.param(
        {"GET /ws": ["2/hour"], "WEBSOCKET /*": ["5/hour"]},
        "/ws",
        [OPEN, OPEN, REFUSED],
        [200, 200, 429],
        id="ratelimit-ws-handshake-under-get-rule-beside-socket-rule",
    ),
    pytest.param(
        {"GET /ws": ["2/hour"], "/ws": ["5/hour"]},
        "/ws",
        [OPEN, OPEN, REFUSED],
        [200, 200, 429],
        id="ratelimit-ws-handshake-under-get-rule-beside-methodless-rule",
    ),
    # ... and the socket rule still holds beside it: never looser than either (the
    # HTTP GETs meet the GET rule alone, as before).
    pytest.param(
        {"GET /ws": ["5/hour"], "WEBSOCKET /*": ["2/hour"]},
        "/ws",
        [OPEN, OPEN, REFUSED],
        [200, 200, 200],
        id="ratelimit-ws-handshake-socket-rule-still-holds",
    ),
    pytest.param(
        {"GET /ws/{room}": ["5/hour"], "/ws/*": ["2/hour"]},
        "/ws/lobby",
        [OPEN, OPEN, REFUSED],
        [200, 200, 200],
        id="ratelimit-ws-handshake-methodless-socket-rule-still-holds",
    ),
    # A WEBSOCKET pattern at least as specific as the GET one gives sockets their
    # own limit (legitimate: the user wrote it for them).
    pytest.param(
        {"GET /ws": ["2/hour"], "WEBSOCKET /ws": ["3/hour"]},
        "/ws",
        [OPEN, OPEN, OPEN, REFUSED],
        [200, 200, 429],
        id="ratelimit-ws-own-websocket-rule-governs",
    ),
    # Legitimate: a GET rule for another path, and rules for other methods, never
    # meet the handshake (nothing limits it).
    pytest.param(
        {"GET /ws": ["1/hour"]},
        "/ws/lobby",
        [OPEN, OPEN, OPEN],
        [200, 200, 200],
        id="ratelimit-ws-handshake-other-path-ok",
    ),
    pytest.param(
        {"POST /ws": ["1/hour"], "HEAD /ws": ["1/hour"]},
        "/ws",
        [OPEN, OPEN, OPEN],
        [200, 200, 200],
        id="ratelimit-ws-handshake-other-methods-ok",
    ),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize(("limits", "path", "handshakes", "gets"), CASES)
async def test_handshakes_meet_the_get_rule(
    limits: dict[str, list[str]],
    path: str,
    handshakes: list[int],
    gets: list[int],
    kind: str,
    framework: str,
    request: pytest.FixtureRequest,
) -> None:
    sink = RecordingSink()
    async with open_store(kind, request) as store:
        layer = build(framework, store, limits, sink)
        seen = [await handshake(layer, path) for _ in handshakes]
        assert [status for status, _ in seen] == handshakes
        assert (await handshake(layer, path, USER))[0] == OPEN  # another client
        assert await http_get_statuses(layer, path, len(gets)) == gets
    refusals = [status_headers for status_headers in seen if status_headers[0] == REFUSED]
    for _, headers in refusals:
        assert int(headers[b"retry-after"]) >= 1
        assert b"ratelimit-policy" in headers
    blocked = [
        (r["path"], r["client"])
        for r in sink.records
        if r["reason"] == REASON_RATE_LIMITED and r["method"] == "WEBSOCKET"
    ]
    assert blocked == [(path, ATTACKER[0])] * len(refusals)


@pytest.mark.parametrize("kind", STORES)
async def test_handshake_refused_with_a_close_without_the_denial_extension(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """`ratelimit-ws-handshake-under-get-rule-closed`: a server without the
    denial-response extension gets the refusal as a close (1013, try again later)."""
    async with open_store(kind, request) as store:
        layer = build("raw", store, {"GET /ws": ["1/hour"]}, RecordingSink())
        assert await handshake(layer, "/ws", denial_response=False) == (OPEN, {})
        assert await handshake(layer, "/ws", denial_response=False) == (WS_TRY_AGAIN_LATER, {})
        assert await handshake(layer, "/ws", USER, denial_response=False) == (OPEN, {})


# (what the attacker sends first, then second): a handshake is one more GET of its
# route, so the two spend one bucket, whichever comes first.
SHARED = [
    pytest.param("get", "handshake", id="ratelimit-ws-handshake-after-gets-spent"),
    pytest.param("handshake", "get", id="ratelimit-ws-gets-after-handshakes-spent"),
]


@pytest.mark.parametrize(("first", "then"), SHARED)
@pytest.mark.parametrize("kind", STORES)
async def test_handshakes_and_gets_share_the_get_rules_bucket(
    first: str, then: str, kind: str, request: pytest.FixtureRequest
) -> None:
    async def attempt(layer: ASGIApp, what: str, client: tuple[str, int]) -> int:
        if what == "handshake":
            return (await handshake(layer, "/ws", client))[0]
        status = (await http_request(layer, "GET", "/ws", client)).status_code
        return OPEN if status == 200 else status  # an allowed GET, written as an open

    async with open_store(kind, request) as store:
        layer = build("starlette", store, {"GET /ws": ["2/hour"]}, RecordingSink())
        assert [await attempt(layer, first, ATTACKER) for _ in range(2)] == [OPEN, OPEN]
        assert await attempt(layer, then, ATTACKER) == REFUSED
        assert await attempt(layer, then, USER) == OPEN  # another client


async def test_a_pair_of_rules_is_combined_once() -> None:
    """The rule of a handshake meeting a GET rule and another socket rule is built once
    per pair of rules, whatever the paths and clients (a spray of rooms adds nothing);
    both rules' buckets count per client across the rooms, as for HTTP."""
    layer = build(
        "raw", MemoryStore(), {"GET /ws/{room}": ["2/hour"], "/ws/*": ["5/hour"]}, RecordingSink()
    )
    for room in range(50):
        client = (f"198.18.0.{room}", 40000)
        assert (await handshake(layer, f"/ws/room{room}", client))[0] == OPEN
    assert len(layer._handshake_pairs) == 1
    statuses = [(await handshake(layer, f"/ws/room{room}"))[0] for room in range(100, 103)]
    assert statuses == [OPEN, OPEN, REFUSED]
    assert len(layer._handshake_pairs) == 1


async def test_through_shield() -> None:
    """`ratelimit-ws-handshake-under-get-rule-shield`: the fused WebSocket path of
    `Shield` runs the same layer, so its handshakes meet the GET rule too."""
    settings = Settings.model_validate(
        {
            "mode": "development",
            "secret_keys": SECRET_KEYS,
            "transport": {"allowed_hosts": ["testserver"], "insecure_allow_http": True},
            "ratelimit": {"limits": {"GET /ws": ["2/hour"], "*": ["600/hour"]}},
            "websocket": {"enabled": False},
        }
    )
    shield = Shield(make_socket_app("starlette", []), settings)
    statuses = [(await handshake(shield, "/ws"))[0] for _ in range(3)]
    assert statuses == [OPEN, OPEN, REFUSED]
    assert (await handshake(shield, "/ws", USER))[0] == OPEN
