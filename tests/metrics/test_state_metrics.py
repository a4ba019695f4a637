"""The state metrics: open WebSocket connections, rate-limit decisions, store errors.

The WebSocket guard is driven through its ASGI interface in process, by the client
of `tests/websocket/test_middleware.py` (the guard, the observer and the registry
are the real ones; what is left out is only a network server, which plays no part
in the counting).
"""

from __future__ import annotations

import asyncio

import pytest

from bastion.events import EventEmitter
from bastion.metrics import MAX_ROUTE_LABELS, OTHER, MetricsSink
from bastion.ratelimit.jail import BanPolicy, Jail, JailSink
from bastion.stores.memory import MemoryStore
from bastion.types import Receive, Scope, Send
from bastion.websocket import WebSocketGuardMiddleware, WebSocketSettings
from bastion.websocket.middleware import DEFAULT_ROUTE_LABEL
from tests.support.clock import FakeClock
from tests.websocket.test_middleware import Client, connected, echo_app, refused, ws_scope

pytestmark = pytest.mark.anyio

ROUTES = {"/ws/public": "public", "/ws/crash": "public", "/ws/rooms/*": "public"}


async def crash_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accepts, then fails on the first message."""
    await receive()
    await send({"type": "websocket.accept"})
    await receive()
    raise RuntimeError("the app crashed")


async def routed_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] == "/ws/crash":
        await crash_app(scope, receive, send)
    else:
        await echo_app(scope, receive, send)


def open_sockets(sink: MetricsSink, route: str) -> float | None:
    return sink.registry.get_sample_value("bastion_websocket_connections", {"route": route})


def guarded(sink: MetricsSink) -> WebSocketGuardMiddleware:
    clock = FakeClock()
    return WebSocketGuardMiddleware(
        routed_app,
        WebSocketSettings(routes=ROUTES),
        store=MemoryStore(clock=clock),
        events=EventEmitter([sink]),
        clock=clock,
    )


async def test_accepted_sockets_are_counted_by_route_pattern_until_they_end() -> None:
    sink = MetricsSink()
    app = guarded(sink)
    async with connected(app, ws_scope(path="/ws/public")):
        async with connected(app, ws_scope(path="/ws/rooms/42")):
            assert open_sockets(sink, "/ws/public") == 1
            # The pattern, never the raw path: one series whatever room is joined.
            assert open_sockets(sink, "/ws/rooms/*") == 1
            assert "/ws/rooms/42" not in str(list(sink.registry.collect()))
        assert open_sockets(sink, "/ws/rooms/*") == 0
    assert open_sockets(sink, "/ws/public") == 0


async def test_an_unlisted_route_counts_as_default() -> None:
    sink = MetricsSink()
    clock = FakeClock()
    app = WebSocketGuardMiddleware(
        echo_app,
        WebSocketSettings(routes=ROUTES, default_access="public"),
        store=MemoryStore(clock=clock),
        events=EventEmitter([sink]),
        clock=clock,
    )
    async with connected(app, ws_scope(path="/ws/elsewhere/7")):
        assert open_sockets(sink, DEFAULT_ROUTE_LABEL) == 1
    assert open_sockets(sink, DEFAULT_ROUTE_LABEL) == 0


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(b"https://evil.example", id="metrics-ws-foreign-origin-not-counted"),
        pytest.param(b"null", id="metrics-ws-null-origin-not-counted"),
    ],
)
async def test_refused_handshakes_are_never_counted(origin: bytes) -> None:
    sink = MetricsSink()
    app = guarded(sink)
    assert await refused(app, ws_scope(path="/ws/public", origin=origin)) == 1008
    assert open_sockets(sink, "/ws/public") in (None, 0)


async def test_a_crashed_app_gives_its_socket_back() -> None:
    sink = MetricsSink()
    client = Client(guarded(sink), ws_scope(path="/ws/crash"))
    client.start()
    assert (await client.next())["type"] == "websocket.accept"
    assert open_sockets(sink, "/ws/crash") == 1
    await client.say("boom")
    assert client.task is not None
    with pytest.raises(RuntimeError, match="crashed"):
        async with asyncio.timeout(5):
            await client.task
    assert open_sockets(sink, "/ws/crash") == 0


async def test_a_cancelled_socket_gives_its_slot_back() -> None:
    sink = MetricsSink()
    client = Client(guarded(sink), ws_scope(path="/ws/public"))
    client.start()
    assert (await client.next())["type"] == "websocket.accept"
    assert client.task is not None
    client.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await client.task
    assert open_sockets(sink, "/ws/public") == 0


def test_route_labels_are_bounded() -> None:
    sink = MetricsSink()
    for index in range(MAX_ROUTE_LABELS + 5):
        sink.websocket_opened(f"/ws/{index}")
    sink.websocket_opened("/ws/with\nnewline")
    assert open_sockets(sink, OTHER) == 6


@pytest.mark.parametrize(
    ("reason", "action", "outcome"),
    [
        pytest.param("rate-limited", "blocked", "limited", id="metrics-rl-limited"),
        pytest.param("concurrency-limited", "blocked", "limited", id="metrics-rl-concurrency"),
        pytest.param("login-throttled", "blocked", "login_throttled", id="metrics-rl-login"),
        pytest.param("banned", "blocked", "banned", id="metrics-rl-banned"),
        pytest.param("rate-limited", "monitored", "limited", id="metrics-rl-monitor-only"),
        pytest.param("store-unavailable", "allowed", "store_unavailable", id="metrics-rl-outage"),
    ],
)
def test_ratelimit_decisions_by_outcome(reason: str, action: str, outcome: str) -> None:
    sink = MetricsSink()
    sink.handle({"layer": "ratelimit", "kind": "k", "reason": reason, "action": action})
    assert (
        sink.registry.get_sample_value(
            "bastion_ratelimit_decisions_total", {"outcome": outcome, "action": action}
        )
        == 1
    )


def test_other_layers_banned_is_not_a_ratelimit_decision() -> None:
    sink = MetricsSink()
    sink.handle({"layer": "websocket", "kind": "k", "reason": "banned", "action": "blocked"})
    assert (
        sink.registry.get_sample_value(
            "bastion_ratelimit_decisions_total", {"outcome": "banned", "action": "blocked"}
        )
        is None
    )


async def test_a_ban_starting_is_told_apart_from_refusals_of_the_banned() -> None:
    sink = MetricsSink()
    events = EventEmitter([sink])
    jail = Jail(MemoryStore(clock=FakeClock()), BanPolicy(threshold=2), events=events)
    jail_sink = JailSink(jail)
    for _ in range(2):
        jail_sink.handle(
            {"layer": "csrf", "kind": "k", "reason": "r", "action": "blocked", "client": "10.0.0.1"}
        )
    await jail_sink.drain()
    assert await jail.is_banned("10.0.0.1")
    started = {"outcome": "ban_started", "action": "blocked"}
    assert sink.registry.get_sample_value("bastion_ratelimit_decisions_total", started) == 1


@pytest.mark.parametrize(
    ("failures", "counted"),
    [
        pytest.param(None, 1, id="metrics-store-error-one"),
        pytest.param(37, 37, id="metrics-store-error-throttled-report"),
        pytest.param(-5, 1, id="metrics-store-error-negative-counts-one"),
        pytest.param(True, 1, id="metrics-store-error-bool-counts-one"),
        pytest.param(10**12, 1, id="metrics-store-error-huge-counts-one"),
        pytest.param("9", 1, id="metrics-store-error-text-counts-one"),
    ],
)
def test_store_errors_count_what_a_throttled_report_stands_for(
    failures: object, counted: int
) -> None:
    sink = MetricsSink()
    record: dict[str, object] = {
        "layer": "ratelimit",
        "kind": "sys_availability",
        "reason": "store-unavailable",
        "action": "allowed",
    }
    if failures is not None:
        record["details"] = {"fail_open": True, "failures": failures}
    sink.handle(record)
    value = sink.registry.get_sample_value("bastion_store_errors_total", {"layer": "ratelimit"})
    assert value == counted
