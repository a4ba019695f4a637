"""The layer's synchronous path against its awaited path, and the bounds of its memos.

Over a `MemoryStore`, `RateLimitMiddleware.enter` decides the usual request without a
coroutine; over any other store (Redis, or a memory store whose `gcra` is overridden,
as fault injection does) every step is awaited. Each scenario below runs the same
requests, on the same fake clock, through both, under each value of
`response_headers`, and the two must agree request by request: status,
`RateLimit-Policy`, `RateLimit`, `Retry-After`, the `RateLimitState` the app reads,
and the events. The scenarios also pin the expected statuses, so that agreement is
never agreement on nothing.

The memos (client address to key parts, the store's key digests, the `RateLimit`
lines) are sprayed with attacker-chosen addresses past their bounds, beside a
legitimate client whose limit must still hold.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.events import EventEmitter
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings, RateLimitState
from bastion.ratelimit.headers import (
    ratelimit_prefix,
    ratelimit_value,
    ratelimit_value_prefixed,
    sf_string,
)
from bastion.ratelimit.middleware import (
    _MEMO_MAX_HOST,
    CLIENT_MEMO_ENTRIES,
    LINES_MEMO_ENTRIES,
    _lines,
)
from bastion.ratelimit.rates import parse_rate
from bastion.ratelimit.reasons import REASON_BANNED
from bastion.stages import Flow
from bastion.stores import MemoryStore, Store
from bastion.stores.gcra import GCRAResult
from bastion.stores.memory import _DIGEST_MEMO_ENTRIES
from bastion.types import Message, Scope
from tests.conftest import RecordingSink
from tests.ratelimit.harness import ATTACKER, USER
from tests.support.clock import FakeClock
from tests.support.redis import RedisServer

pytestmark = pytest.mark.anyio


class OverriddenStore(MemoryStore):
    """A memory store with `gcra` overridden (as a fault-injecting double does): the
    layer cannot step it synchronously, so it takes the awaited path."""

    async def gcra(
        self,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult:
        return await super().gcra(
            key,
            emission_interval_seconds=emission_interval_seconds,
            burst_tolerance_seconds=burst_tolerance_seconds,
            cost=cost,
        )


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """Answers 200 "hello" (accepts a WebSocket); `/login` answers 401 but to "right"."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status = 401 if scope["path"] == "/login" and b"password=right" not in body else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@dataclass
class Request:
    path: str = "/"
    client: tuple[str, int] = ATTACKER
    method: str = "GET"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    websocket: bool = False
    advance: float = 0.0  # seconds the clock moves before the request
    then: Callable[[RateLimitMiddleware, Store], Awaitable[None]] | None = None
    """Done to the layer or store before the request (a ban, closing the store)."""


@dataclass
class Seen:
    """What one request got, as compared between the two paths."""

    status: int | str
    headers: dict[str, str] = field(default_factory=dict)
    state: RateLimitState | None = None


_COMPARED = ("ratelimit-policy", "ratelimit", "retry-after")


async def call(layer: RateLimitMiddleware, request: Request) -> Seen:
    """One request through the layer, as a server would make it."""
    sent: list[Message] = []
    scope: Scope = {
        "type": "websocket" if request.websocket else "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": b"",
        "headers": list(request.headers),
        "client": request.client,
        "server": ("testserver", 80),
        "scheme": "ws" if request.websocket else "http",
        "root_path": "",
        "asgi": {"version": "3.0"},
    }
    if not request.websocket:
        scope["method"] = request.method
        scope["http_version"] = "1.1"
    pending = [{"type": "http.request", "body": request.body, "more_body": False}]

    async def receive() -> Message:
        if request.websocket:
            return {"type": "websocket.connect"}
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await layer(scope, receive, send)
    state = scope["bastion"].rate_limit
    first = sent[0]
    if first["type"] == "http.response.start":
        headers = {
            name.decode(): value.decode()
            for name, value in first.get("headers", [])
            if name.decode() in _COMPARED
        }
        return Seen(first["status"], headers, state)
    return Seen(first["type"], {}, state)  # a WebSocket accepted, or closed


async def run(
    store: Store,
    clock: FakeClock,
    settings: dict[str, Any],
    requests: Sequence[Request],
) -> tuple[list[Seen], list[object], RateLimitMiddleware]:
    sink = RecordingSink()
    layer = RateLimitMiddleware(
        app,
        RateLimitSettings.model_validate(settings),
        store=store,
        events=EventEmitter([sink]),
        clock=clock,
    )
    seen = []
    for request in requests:
        clock.advance(request.advance)
        if request.then is not None:
            await request.then(layer, store)
        seen.append(await call(layer, request))
    return seen, [record["reason"] for record in sink.records], layer


async def ban_attacker(layer: RateLimitMiddleware, store: Store) -> None:
    assert layer.jail is not None
    await layer.jail.ban(ATTACKER[0], 60.0)


async def close_store(layer: RateLimitMiddleware, store: Store) -> None:
    await store.close()


def key(value: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"x-api-key", value.encode()),)


LOGIN = (b"content-type", b"application/x-www-form-urlencoded")
WRONG = b"username=alice&password=wrong"
RIGHT = b"username=alice&password=right"

SCENARIOS = [
    pytest.param(
        {"limits": {"*": ["3/minute"]}},
        [Request() for _ in range(5)]
        + [Request(client=USER), Request(advance=20), Request(advance=1)],
        [200, 200, 200, 429, 429, 200, 200, 429],
        id="sync-parity-one-rate",
    ),
    pytest.param(
        {"limits": {"/json": ["2/minute; name=burst", "3/hour; name=hourly"], "/": []}},
        [
            *(Request("/json") for _ in range(3)),
            Request("/"),
            Request("/json", advance=30),
            Request("/json", advance=30),
            Request("/json"),
        ],
        [200, 200, 429, 200, 200, 429, 429],
        id="sync-parity-several-rates",
    ),
    pytest.param(
        {"limits": {"*": ["2/minute; key=api_key", "3/minute"]}},
        [*(Request(headers=key("a")) for _ in range(3)), *(Request(headers=key(k)) for k in "bc")],
        [200, 200, 429, 200, 429],
        id="sync-parity-api-key-first",
    ),
    pytest.param(
        {"limits": {"*": ["2/minute; key=route"]}},
        [Request(), Request(client=USER), Request(client=USER)],
        [200, 200, 429],
        id="sync-parity-route-key",
    ),
    pytest.param(
        {"limits": {"*": ["5/minute"]}},
        [
            Request(),
            Request(client=USER),
            Request(then=ban_attacker),
            Request(client=USER),
            Request(advance=61),
            Request(),
        ],
        [200, 200, 403, 200, 200, 200],
        id=f"sync-parity-{REASON_BANNED}",
    ),
    pytest.param(
        {"limits": {"/json": ["5/minute"]}},
        [Request(), Request(then=ban_attacker), Request("/json"), Request(client=USER)],
        [200, 403, 403, 200],
        id=f"sync-parity-{REASON_BANNED}-unlimited-route",
    ),
    pytest.param(
        {"limits": {"*": ["5/minute; key=api_key"]}},
        [
            Request(headers=key("a")),
            Request(headers=key("a"), then=ban_attacker),
            Request(client=USER, headers=key("a")),
        ],
        [200, 403, 200],
        id=f"sync-parity-{REASON_BANNED}-first-rate-not-by-client",
    ),
    pytest.param(
        {"limits": {"*": ["1/minute"]}, "monitor_only": True},
        [Request(), Request(), Request(then=ban_attacker)],
        [200, 200, 200],
        id="sync-parity-monitor-only",
    ),
    pytest.param(
        {"limits": {"*": ["2/minute"]}, "ban_enabled": False},
        [Request(), Request(), Request(), Request(client=USER)],
        [200, 200, 429, 200],
        id="sync-parity-no-bans",
    ),
    pytest.param(
        {"limits": {"*": ["2/minute"]}},
        [Request(), Request(then=close_store), Request()],
        [200, 200, 200],
        id="sync-parity-store-down-fail-open",
    ),
    pytest.param(
        {"limits": {"*": ["2/minute"]}, "fail_open": False},
        [Request(), Request(then=close_store), Request(client=USER)],
        [200, 503, 503],
        id="sync-parity-store-down-fail-closed",
    ),
    pytest.param(
        {"limits": {"*": ["2/minute"]}},
        [
            *(Request(websocket=True) for _ in range(3)),
            Request(websocket=True, then=ban_attacker),
            Request(client=USER, websocket=True),
        ],
        [*(["websocket.accept"] * 2), "websocket.close", "websocket.close", "websocket.accept"],
        id="sync-parity-websocket",
    ),
    pytest.param(
        {"limits": {"*": ["3/minute"]}, "concurrency": {"/slow": 1}},
        [Request("/slow"), Request("/slow"), Request("/"), Request("/slow")],
        [200, 200, 200, 429],
        id="sync-parity-concurrency-route",
    ),
    pytest.param(
        {"limits": {"*": ["10/minute"]}, "login_routes": ["POST /login"]},
        [
            Request("/login", method="POST", headers=(LOGIN,), body=WRONG),
            Request("/login", method="POST", headers=(LOGIN,), body=WRONG),
            Request("/login", method="POST", headers=(LOGIN,), body=RIGHT, advance=1),
            Request("/"),
        ],
        [401, 429, 200, 200],
        id="sync-parity-login-route",
    ),
]


RESPONSE_HEADERS = ["always", "near_limit", "refused"]


@pytest.mark.parametrize("response_headers", RESPONSE_HEADERS)
@pytest.mark.parametrize(("settings", "requests", "statuses"), SCENARIOS)
async def test_the_sync_path_decides_as_the_awaited_path(
    settings: dict[str, Any],
    requests: list[Request],
    statuses: list[int | str],
    response_headers: str,
) -> None:
    settings = {**settings, "response_headers": response_headers}
    sync_clock, awaited_clock = FakeClock(), FakeClock()
    sync_store = MemoryStore(clock=sync_clock)
    awaited_store = OverriddenStore(clock=awaited_clock)
    seen, events, layer = await run(sync_store, sync_clock, settings, requests)
    awaited, awaited_events, awaited_layer = await run(
        awaited_store, awaited_clock, settings, requests
    )
    assert layer._steps is sync_store  # the synchronous path ...
    assert awaited_layer._steps is None  # ... and the awaited one
    assert [s.status for s in seen] == statuses
    assert seen == awaited
    assert events == awaited_events
    expected = [should_have_lines(s, response_headers) for s in seen]
    assert [has_lines(s) for s in seen] == expected


def has_lines(seen: Seen) -> bool:
    present = {"ratelimit-policy", "ratelimit"} & seen.headers.keys()
    assert len(present) != 1  # both lines or neither
    return bool(present)


def should_have_lines(seen: Seen, response_headers: str) -> bool:
    """The setting's rule, written out from the state the app reads: an HTTP response
    of a limited route carries the lines when a rate refused it, or `always`, or,
    `near_limit`, when one stepped rate has less than half its burst left (the login
    guard's refusal too: its rates allowed it)."""
    state = seen.state
    assert state is not None
    if not isinstance(seen.status, int) or not state.results:
        return False
    if not state.results[-1].allowed or response_headers == "always":
        return True
    stepped = zip(state.rates, state.results, strict=True)
    near = any(2 * result.remaining < rate.burst for rate, result in stepped)
    return response_headers == "near_limit" and near


@pytest.mark.parametrize("response_headers", RESPONSE_HEADERS)
async def test_the_sync_path_decides_as_the_awaited_path_on_redis(
    redis_standalone: RedisServer, response_headers: str
) -> None:
    """The same requests over a real Redis (whose clock is its own: rates of an hour,
    so that the few milliseconds the test takes round away)."""
    from bastion.stores.redis import RedisStore

    settings = {
        "limits": {"*": ["3/hour; name=hourly"], "/json": ["2/hour", "5/day"]},
        "response_headers": response_headers,
    }
    requests = [Request() for _ in range(4)] + [Request("/json") for _ in range(3)]
    requests += [Request(client=USER), Request(then=ban_attacker), Request(client=USER)]
    statuses = [200, 200, 200, 429, 200, 200, 429, 200, 403, 200]
    clock = FakeClock()
    seen, events, _ = await run(MemoryStore(clock=clock), clock, settings, requests)
    redis = RedisStore(redis_standalone.url, key_prefix=f"t{uuid.uuid4().hex[:10]}:")
    try:
        on_redis, redis_events, layer = await run(redis, FakeClock(), settings, requests)
    finally:
        await redis.close()
    assert layer._steps is None
    assert [s.status for s in seen] == statuses
    # Redis's clock moved a little between the steps: `reset_after_seconds` differs
    # by those microseconds, nothing else (the headers round them away).
    assert [_rounded(s) for s in seen] == [_rounded(s) for s in on_redis]
    assert events == redis_events
    expected = [should_have_lines(s, response_headers) for s in on_redis]
    assert [has_lines(s) for s in on_redis] == expected


def _rounded(seen: Seen) -> tuple[object, ...]:
    state = seen.state
    assert state is not None
    results = [(r.allowed, r.limit, r.remaining) for r in state.results]
    return seen.status, seen.headers, state.rates, results, state.store_unavailable


def _flow(path: str = "/", client: tuple[str, int] = USER) -> Flow:
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [],
        "query_string": b"",
        "client": client,
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    return Flow(scope, receive, send)


@pytest.mark.parametrize("case", ["sync-path-no-coroutine"])
async def test_the_usual_request_creates_no_coroutine(case: str) -> None:
    clock = FakeClock()
    layer = RateLimitMiddleware(
        app, RateLimitSettings(limits={"/": ["1/minute"]}), store=MemoryStore(clock=clock)
    )
    for path in ("/", "/free"):
        flow = _flow(path)
        assert layer.enter(flow) is None  # decided: no coroutine, nothing to await
        state = flow.scope["bastion"].rate_limit
        assert isinstance(state, RateLimitState)
    assert state == RateLimitState()  # the unlimited route's, as `RateLimitState()` makes it
    refused = layer.enter(_flow())  # the refusal is awaited (it sends a response)
    assert refused is not None
    assert await refused is True
    awaited = RateLimitMiddleware(app, RateLimitSettings(), store=OverriddenStore(clock=clock))
    pending = awaited.enter(_flow())
    assert pending is not None
    assert await pending is False


@pytest.mark.parametrize("case", ["ratelimit-memo-bounded-spray"])
async def test_a_spray_of_addresses_keeps_every_memo_at_its_bound(case: str) -> None:
    """Three times as many distinct addresses as any memo holds: each is counted on
    its own (allowed), the memos stay at their bounds, and the legitimate client,
    interleaved, is limited exactly as ever."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    layer = RateLimitMiddleware(app, RateLimitSettings(limits={"*": ["3/minute"]}), store=store)
    user_statuses = []
    spray = 3 * max(CLIENT_MEMO_ENTRIES, _DIGEST_MEMO_ENTRIES)
    for i in range(spray):
        attacker = (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 1)
        assert (await call(layer, Request(client=attacker))).status == 200
        if i % (spray // 6) == 0:
            user_statuses.append((await call(layer, Request(client=USER))).status)
        assert len(layer._clients) <= CLIENT_MEMO_ENTRIES
        assert len(store._digests) <= _DIGEST_MEMO_ENTRIES
    assert user_statuses == [200, 200, 200, 429, 429, 429]
    rule = layer._catch_all
    assert rule is not None
    assert len(rule.lines) <= LINES_MEMO_ENTRIES


@pytest.mark.parametrize("case", ["ratelimit-memo-long-host"])
async def test_a_long_host_is_never_remembered(case: str) -> None:
    """A client "address" longer than any IP address (a Unix socket path, a name) is
    keyed afresh on every request, and counted all the same."""
    layer = RateLimitMiddleware(
        app, RateLimitSettings(limits={"*": ["2/minute"]}), store=MemoryStore(clock=FakeClock())
    )
    host = "/run/" + "a" * (_MEMO_MAX_HOST + 1)
    statuses = [(await call(layer, Request(client=(host, 0)))).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert host not in layer._clients
    assert (await call(layer, Request(client=USER))).status == 200
    assert USER[0] in layer._clients


@pytest.mark.parametrize("case", ["ratelimit-lines-memo-bounded"])
def test_the_ratelimit_lines_memo_is_bounded_and_exact(case: str) -> None:
    """Every (remaining, reset) pair a bucket can show, many times the bound: the memo
    stays at its bound and every line is `ratelimit_value`'s."""
    layer = RateLimitMiddleware(app, RateLimitSettings(limits={"*": ["1000/hour; name=q"]}))
    rule = layer._catch_all
    assert rule is not None
    rate = parse_rate("1000/hour; name=q")
    for remaining in range(0, 1000, 3):
        for reset in (0, 1, 7, 3600):
            lines = rule.lines.get((remaining, reset)) or _lines(rule, remaining, reset)
            result = GCRAResult(True, 1000, remaining, 0.0, float(reset))
            assert lines == (rule.policy_header, (b"ratelimit", ratelimit_value([rate], [result])))
            assert len(rule.lines) <= LINES_MEMO_ENTRIES


async def test_a_store_that_overrides_a_step_is_awaited_even_on_the_instance() -> None:
    """A double that replaces `gcra` on the instance (not the class) is still served
    through it: the layer asks the store once, when it is built."""
    store = MemoryStore(clock=FakeClock())
    calls: list[str] = []
    original = store.gcra

    async def counting(key: str, **kwargs: Any) -> GCRAResult:
        calls.append(key)
        return await original(key, **kwargs)

    store.gcra = counting  # type: ignore[method-assign]
    layer = RateLimitMiddleware(
        app, RateLimitSettings(limits={"*": ["2/minute"]}, ban_enabled=False), store=store
    )
    assert layer._steps is None
    assert [(await call(layer, Request())).status for _ in range(3)] == [200, 200, 429]
    assert len(calls) == 3


async def test_redis_store_is_never_stepped_synchronously() -> None:
    from bastion.stores.redis import RedisStore

    store = RedisStore("redis://127.0.0.1:1/0")
    try:
        assert RateLimitMiddleware(app, RateLimitSettings(), store=store)._steps is None
    finally:
        await store.close()


@given(
    figures=st.lists(
        st.tuples(st.integers(-2, 10**6), st.floats(0, 1e6, allow_nan=False)),
        min_size=1,
        max_size=3,
    )
)
def test_the_prefixed_ratelimit_value_is_ratelimit_value(figures: list[tuple[int, float]]) -> None:
    rates = [parse_rate(f"{i + 1}/minute; name=p{i}") for i in range(len(figures))]
    results = [GCRAResult(True, 1, remaining, 0.0, reset) for remaining, reset in figures]
    prefixes = [ratelimit_prefix(sf_string(rate.policy_name)) for rate in rates]
    assert ratelimit_value_prefixed(prefixes, results) == ratelimit_value(rates, results)
