"""The body's pace under the lazy deadline: one timer per request, re-armed late.

A wait for a body message gets a deadline only when the server's `receive` has to
wait; the timer armed for the first wait is kept, and re-arms itself when it fires
before the deadline of the wait then in progress, or stands down between waits.
Each attack here is a path of that timer (fired early, fired between waits, fired
for good), beside the legitimate pace that must pass on the same path; then the
cases where a timeout or a cancellation is not ours and must go on as it came.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from bastion.events import EventEmitter
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.limits.reasons import REASON_BODY_TIMEOUT
from bastion.types import Message, Receive, Scope, Send
from tests.conftest import RecordingSink
from tests.limits.harness import http_scope

pytestmark = pytest.mark.anyio

# Generous against a loaded machine: every legitimate gap is a quarter of the limit
# it must stay under, and every stall is endless, so only the limit can end it.
IDLE = 0.2
GAP = 0.05
WAIT_FOR_TEST = 10.0


@dataclass
class PacedPeer:
    """Plays the server: each step waits `delay` seconds (0: the message is there at
    once, as when the server holds it), then hands out the chunk. With `stall`, the
    last chunk announces more body that never comes."""

    steps: Sequence[tuple[float, bytes]]
    stall: bool = False
    sent: list[Message] = field(default_factory=list)
    cancelled: int = 0  # waits of ours that ended in a cancellation
    _index: int = 0

    async def receive(self) -> Message:
        index = self._index
        self._index += 1
        try:
            if index >= len(self.steps):
                await asyncio.Event().wait()  # a stall, or waiting for a disconnect
            delay, chunk = self.steps[index]
            if delay:
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        more = self.stall or index + 1 < len(self.steps)
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m["status"] for m in self.sent if m["type"] == "http.response.start"]
        return starts[0] if starts else None


def reading_app(work_after_first: float = 0.0) -> Any:
    """Reads the body (working `work_after_first` seconds after the first message,
    time the layer must not count), then answers with the bytes it got."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        first = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if first and work_after_first:
                await asyncio.sleep(work_after_first)
            first = False
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


@dataclass(frozen=True)
class Pace:
    steps: tuple[tuple[float, bytes], ...]
    stall: bool = False
    reason: str = ""  # "" for a legitimate request
    settings: dict[str, float] = field(default_factory=dict)
    work_after_first: float = 0.0


PACES = [
    # Every gap well inside the idle timeout, their sum well past it: the timer armed
    # for the first wait fires during a later one and must re-arm, not cut it off.
    pytest.param(Pace(((GAP, b"x"),) * 8), id="body-gaps-within-idle-ok"),
    pytest.param(
        Pace(((GAP, b"x"),) * 4, stall=True, reason=REASON_BODY_TIMEOUT),
        id="body-stall-after-prompt-chunks",
    ),
    # The application works longer than the idle timeout between two reads: the
    # timer fires with nobody waiting and stands down; that time is not the client's.
    pytest.param(
        Pace(((0.01, b"a"), (0.01, b"b")), work_after_first=IDLE * 1.5),
        id="body-app-work-between-reads-ok",
    ),
    # ... and the next wait must still have its deadline: a timer that stood down is
    # armed again.
    pytest.param(
        Pace(((0.01, b"a"),), stall=True, reason=REASON_BODY_TIMEOUT, work_after_first=IDLE * 1.5),
        id="body-stall-after-app-work",
    ),
    # Messages the server already holds never wait, so they never arm the timer; the
    # waits between them are still summed against the whole-body timeout.
    pytest.param(
        Pace(((0.0, b"r"),) * 20 + ((GAP, b"w"), (0.0, b"r")) * 3),
        id="body-ready-messages-ok",
    ),
    pytest.param(
        Pace(
            ((GAP, b"w"), (0.0, b"r")) * 40,
            reason=REASON_BODY_TIMEOUT,
            settings={"body_idle_timeout_seconds": 5.0, "body_timeout_seconds": 0.2},
        ),
        id="body-trickle-with-ready-messages-total-timeout",
    ),
]


@pytest.mark.parametrize("pace", PACES)
async def test_pace(pace: Pace, events: EventEmitter, sink: RecordingSink) -> None:
    settings = LimitsSettings(**{"body_idle_timeout_seconds": IDLE, **pace.settings})
    middleware = LimitsMiddleware(reading_app(pace.work_after_first), settings, events=events)
    peer = PacedPeer(pace.steps, stall=pace.stall)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(middleware(http_scope(), peer.receive, peer.send), WAIT_FOR_TEST)
    elapsed = loop.time() - started
    if pace.reason:
        assert peer.status == 408
        assert sink.reasons() == [pace.reason]
        assert peer.cancelled == 1  # the server's wait was cancelled, as asyncio.timeout does
        assert elapsed < WAIT_FOR_TEST / 2
    else:
        assert peer.status == 200
        assert peer.sent[-1]["body"] == b"".join(chunk for _, chunk in pace.steps)
        assert sink.records == []
        assert peer.cancelled == 0
    assert middleware.in_flight == 0


async def test_a_stall_is_cut_off_at_the_idle_timeout_not_later(
    events: EventEmitter, sink: RecordingSink
) -> None:
    """The re-armed timer fires at the deadline of the wait in progress: a stall after
    prompt chunks ends one idle timeout after it began, not at some later multiple."""
    middleware = LimitsMiddleware(
        reading_app(), LimitsSettings(body_idle_timeout_seconds=IDLE), events=events
    )
    peer = PacedPeer(((GAP, b"x"),) * 3, stall=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(middleware(http_scope(), peer.receive, peer.send), WAIT_FOR_TEST)
    stalled_for = loop.time() - started - 3 * GAP
    assert peer.status == 408
    assert IDLE * 0.9 <= stalled_for < IDLE + 1.0


@pytest.mark.parametrize("after_waiting", [False, True], ids=["at-once", "after-waiting"])
async def test_a_timeout_error_from_the_server_is_not_ours(
    after_waiting: bool, events: EventEmitter, sink: RecordingSink
) -> None:
    """A `TimeoutError` raised by the server's `receive` goes on to the application,
    as it came: it is no slow body, so no 408 and no event."""

    async def receive() -> Message:
        if after_waiting:
            await asyncio.sleep(0.01)
        raise TimeoutError("the server's own")

    middleware = LimitsMiddleware(
        reading_app(), LimitsSettings(body_idle_timeout_seconds=IDLE), events=events
    )
    peer = PacedPeer(())
    with pytest.raises(TimeoutError, match="the server's own"):
        await middleware(http_scope(), receive, peer.send)
    assert peer.sent == []
    assert sink.records == []
    assert middleware.in_flight == 0


async def test_a_cancellation_from_outside_goes_on(
    events: EventEmitter, sink: RecordingSink
) -> None:
    """The request's task cancelled while it waits for the body (the server closing
    it): the cancellation propagates, and the layer's timer does not fire later."""
    middleware = LimitsMiddleware(
        reading_app(), LimitsSettings(body_idle_timeout_seconds=IDLE), events=events
    )
    peer = PacedPeer(((0.01, b"x"),), stall=True)
    task = asyncio.create_task(middleware(http_scope(), peer.receive, peer.send))
    await asyncio.sleep(IDLE / 4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(IDLE * 1.5)  # past the deadline the timer was armed for
    assert peer.sent == []
    assert sink.records == []
    assert middleware.in_flight == 0


async def test_a_second_cancellation_at_our_deadline_goes_on(
    events: EventEmitter, sink: RecordingSink
) -> None:
    """When the task is cancelled from elsewhere as well as by the deadline, the
    other cancellation wins, as with `asyncio.timeout`: no 408 is sent for it."""

    async def receive() -> Message:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # a second cancellation, arriving with ours
            raise
        raise AssertionError("unreachable")

    middleware = LimitsMiddleware(
        reading_app(), LimitsSettings(body_idle_timeout_seconds=0.05), events=events
    )
    peer = PacedPeer(())
    task = asyncio.create_task(middleware(http_scope(), receive, peer.send))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_FOR_TEST)
    assert peer.sent == []
    assert sink.records == []


@pytest.mark.parametrize(
    ("resolve", "status"),
    [
        pytest.param(True, 200, id="future-receive-ok"),
        pytest.param(False, 408, id="future-receive-stalls"),
    ],
)
async def test_a_receive_that_is_no_coroutine_is_timed_too(
    resolve: bool, status: int, events: EventEmitter, sink: RecordingSink
) -> None:
    """A server whose `receive` returns a future (or any awaitable of its own type) is
    awaited whole, under the same deadline."""
    loop = asyncio.get_running_loop()

    def receive() -> asyncio.Future[Message]:
        future: asyncio.Future[Message] = loop.create_future()
        if resolve:
            message = {"type": "http.request", "body": b"body", "more_body": False}
            loop.call_later(0.01, future.set_result, message)
        return future

    middleware = LimitsMiddleware(
        reading_app(), LimitsSettings(body_idle_timeout_seconds=0.05), events=events
    )
    peer = PacedPeer(())
    await asyncio.wait_for(middleware(http_scope(), receive, peer.send), WAIT_FOR_TEST)
    assert peer.status == status
    assert sink.reasons() == ([] if resolve else [REASON_BODY_TIMEOUT])


async def test_two_tasks_waiting_for_the_body_at_once_each_get_a_deadline(
    events: EventEmitter, sink: RecordingSink
) -> None:
    """No framework reads the body from two tasks at once, but the layer must not
    mix their deadlines up if one does: both waits end normally here."""
    peer = PacedPeer(((GAP, b"a"), (GAP, b"b")))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        first, second = await asyncio.gather(receive(), receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": first["body"] + second["body"]})

    middleware = LimitsMiddleware(
        app, LimitsSettings(body_idle_timeout_seconds=IDLE), events=events
    )
    await asyncio.wait_for(middleware(http_scope(), peer.receive, peer.send), WAIT_FOR_TEST)
    assert peer.status == 200
    assert sorted(peer.sent[-1]["body"]) == sorted(b"ab")
    assert sink.records == []


async def test_a_server_that_swallows_our_cancellation_is_served(
    events: EventEmitter, sink: RecordingSink
) -> None:
    """A server's `receive` that answers the deadline's cancellation with a message
    anyway: the message goes to the application, as with `asyncio.timeout`, and the
    cancellation is withdrawn, so the application's next await is not cancelled."""
    after: list[int] = []

    async def receive() -> Message:
        # A server that will not be interrupted: the body came after all.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return {"type": "http.request", "body": b"late", "more_body": False}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        await asyncio.sleep(0)  # would raise if a cancellation were left pending
        task = asyncio.current_task()
        assert task is not None
        after.append(task.cancelling())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"]})

    middleware = LimitsMiddleware(
        app, LimitsSettings(body_idle_timeout_seconds=0.05), events=events
    )
    peer = PacedPeer(())
    await asyncio.wait_for(middleware(http_scope(), receive, peer.send), WAIT_FOR_TEST)
    assert (peer.status, peer.sent[-1]["body"], after) == (200, b"late", [0])
    assert sink.records == []
