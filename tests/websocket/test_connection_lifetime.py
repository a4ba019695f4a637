"""What one guarded connection leaves behind and what it schedules.

* A connection is freed by reference counting when it ends: it is in no reference
  cycle (the per-connection closures it replaced were), so the cyclic garbage
  collector never has to find it;
* a short connection arms one timer: the idle timer fires first at the watcher's
  tick and starts it, when the tick comes no later than the idle timeout; a tick
  longer than the idle timeout gets a timer of its own;
* either way, both deadlines still hold: the idle timeout closes a socket whose
  watcher the idle timer started, and the watcher on its own timer closes a busy
  socket the idle timeout never reaches.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import pytest

from bastion.events import KIND_AUTHZ_FAIL, EventEmitter
from bastion.websocket import reasons as r
from bastion.websocket.middleware import _Connection
from tests.conftest import RecordingSink
from tests.websocket.test_middleware import (
    FAST,
    OK,
    Client,
    FakeSession,
    connected,
    guard,
    only,
    ws_scope,
)

pytestmark = pytest.mark.anyio


async def test_a_connection_leaves_no_reference_cycle(events: EventEmitter) -> None:
    app = guard(events, **FAST)
    async with connected(app, ws_scope(session=FakeSession("bob"))) as client:  # warm up
        await client.say(OK)
        assert (await client.next())["text"] == OK
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in `gc.garbage`
    try:
        for _ in range(3):
            async with connected(app, ws_scope(session=FakeSession("bob"))) as client:
                await client.say(OK)
                assert (await client.next())["text"] == OK
        gc.collect()
        cyclic = [type(found).__name__ for found in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert "_Connection" not in cyclic
    assert "RequestContext" not in cyclic


def count_connection_timers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the connections' callbacks that the running loop's `call_later`
    arms from now on."""
    armed: list[str] = []
    loop = asyncio.get_running_loop()
    call_later = loop.call_later

    def counting(delay: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        if isinstance(getattr(callback, "__self__", None), _Connection):
            armed.append(callback.__name__)
        return call_later(delay, callback, *args)

    monkeypatch.setattr(loop, "call_later", counting)
    return armed


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({}, ["on_idle"], id="ws-one-timer-tick-before-idle"),
        pytest.param(
            {"idle_timeout_seconds": 1.0, "revocation_check_seconds": 2.0},
            ["start_watcher", "on_idle"],
            id="ws-two-timers-idle-before-tick",
        ),
    ],
)
async def test_a_short_connection_arms_its_timers_once(
    settings: dict[str, Any], expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = guard(EventEmitter([]), **settings)
    connection_timers = count_connection_timers(monkeypatch)
    async with connected(app, ws_scope(session=FakeSession("bob"))) as client:
        await client.say(OK)
        assert (await client.next())["text"] == OK
    assert connection_timers == expected


async def test_the_idle_timeout_holds_once_its_timer_started_the_watcher(
    sink: RecordingSink, events: EventEmitter
) -> None:
    """ws-idle-after-watcher: the idle timer's first firing is the watcher's tick
    (0.01 s); it then moves itself to the idle deadline, which still closes."""
    checks: list[str | None] = []

    async def never_banned(client: str | None, principal: str | None) -> bool:
        checks.append(principal)
        return False

    app = guard(events, ban_checks=[never_banned], idle_timeout_seconds=0.1, **FAST)
    client = Client(app, ws_scope(session=FakeSession("bob")))
    client.start()
    assert (await client.next())["type"] == "websocket.accept"
    assert await client.next() == {"type": "websocket.close", "code": 1001}
    await client.finish()
    assert len(checks) >= 2  # the handshake's, then the watcher's
    record = only(sink, r.REASON_IDLE)
    assert (record["action"], record["details"]) == ("allowed", {"close_code": 1001})


async def test_a_tick_longer_than_the_idle_timeout_still_starts_the_watcher(
    sink: RecordingSink, events: EventEmitter
) -> None:
    """ws-banned-tick-after-idle: the watcher has its own timer, and a busy socket
    (a message every 50 ms, inside the idle timeout) is closed by the ban."""
    bans: set[str] = set()

    async def banned(client: str | None, principal: str | None) -> bool:
        return principal in bans

    app = guard(events, ban_checks=[banned], idle_timeout_seconds=0.3, revocation_check_seconds=0.4)
    async with connected(app, ws_scope(session=FakeSession("alice"))) as client:
        bans.add("alice")
        while True:
            await client.say(OK)
            answer = await client.next()
            if answer["type"] == "websocket.close":
                break
            assert answer["text"] == OK
            await asyncio.sleep(0.05)
        assert answer == {"type": "websocket.close", "code": 1008}
        await client.finish()
    record = only(sink, r.REASON_BANNED)
    assert (record["kind"], record["details"]) == (KIND_AUTHZ_FAIL, {"close_code": 1008})
