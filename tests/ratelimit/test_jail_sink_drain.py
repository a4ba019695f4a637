"""`JailSink.drain` returns once the refusals in flight are counted, on every Python.

`jail-drain-finished-increment`: an increment that had already finished when
`drain` was called, its done callback (which takes it out of the in-flight set) not
yet run. Since Python 3.12 a `gather` of finished tasks returns without yielding to
the loop, so the callback never ran and `drain` spun forever: a graceful shutdown,
or a test waiting for a ban (a banned client's live WebSocket), hung.
"""

from __future__ import annotations

import asyncio

import pytest

from bastion.events import EventEmitter, SecurityEvent
from bastion.ratelimit.jail import BanPolicy, Jail, JailSink
from bastion.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

CLIENT = "203.0.113.9"


def _refusal() -> SecurityEvent:
    return SecurityEvent(
        kind="excess_rate_limit_exceeded",
        reason="rate-limited",
        layer="ratelimit",
        status=429,
        client=CLIENT,
    )


@pytest.mark.timeout(10)  # the old `drain` never returned, nor let a timeout fire
@pytest.mark.parametrize(
    "turns_before_drain",
    [
        pytest.param(0, id="jail-drain-increment-in-flight-ok"),
        pytest.param(1, id="jail-drain-finished-increment"),
    ],
)
async def test_drain_returns_once_every_refusal_is_counted(turns_before_drain: int) -> None:
    jail = Jail(MemoryStore(), BanPolicy(threshold=2))
    sink = JailSink(jail)
    events = EventEmitter([sink])
    events.emit(_refusal())
    events.emit(_refusal())
    assert sink.in_flight == 2
    for _ in range(turns_before_drain):
        # The memory store never suspends: one turn runs each increment to its end,
        # and their done callbacks wait for the next turn.
        await asyncio.sleep(0)
    await sink.drain()
    assert (sink.in_flight, sink.dropped, sink.failed) == (0, 0, 0)
    assert await jail.is_banned(CLIENT)  # both refusals were counted
