"""`Flow.send`: a plain function handing back the server's own awaitable.

The flow's `send` makes no coroutine per message: what it returns for a message it
passes on is exactly what the server's `send` returned, and a message it drops or
holds back gets an awaitable already done. These tests hold it to that, and to the
order of what reaches the server when a hook needs I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator

import anyio
import pytest

from bastion.errors import ErrorsMiddleware
from bastion.shield import Shield
from bastion.stages import EXTEND, Flow
from bastion.types import Message, Receive, Scope, Send
from tests.shield.test_fused import call, settings

pytestmark = pytest.mark.anyio

START: Message = {"type": "http.response.start", "status": 200, "headers": []}
BODY: Message = {"type": "http.response.body", "body": b"ok"}


class Delivery:
    """The server's awaitable for one message: records the message when awaited."""

    def __init__(self, server: Server, message: Message) -> None:
        self.server, self.message = server, message

    def __await__(self) -> Generator[None, None, None]:
        self.server.delivered.append(self.message)
        return
        yield


class Server:
    """A server `send` that returns its own awaitable per message."""

    def __init__(self) -> None:
        self.delivered: list[Message] = []
        self.returned: list[Delivery] = []

    def send(self, message: Message) -> Awaitable[None]:
        delivery = Delivery(self, message)
        self.returned.append(delivery)
        return delivery


def scope() -> Scope:
    return {"type": "http", "headers": [(b"host", b"example.com")]}


async def nothing() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def guarded_flow(server: Server) -> Flow:
    guard = ErrorsMiddleware(lambda s, r, se: None)._guard_type()  # type: ignore[arg-type, return-value]
    return Flow(scope(), nothing, server.send, guard)


@pytest.mark.parametrize("guarded", [False, True], ids=["no-guard", "errors-guard"])
async def test_a_passed_message_is_the_servers_own_awaitable(guarded: bool) -> None:
    server = Server()
    flow = guarded_flow(server) if guarded else Flow(scope(), nothing, server.send)
    flow.hooks.append((EXTEND, [(b"x-added", b"1")]))
    for message in (START, BODY):
        returned = flow.send(message)
        assert returned is server.returned[-1]  # no coroutine of the flow's in between
        await returned
    assert [m["type"] for m in server.delivered] == ["http.response.start", "http.response.body"]
    assert server.delivered[0]["headers"] == [(b"x-added", b"1")]
    assert flow.started


async def test_a_dropped_message_reaches_nothing() -> None:
    server = Server()
    flow = Flow(scope(), nothing, server.send)
    flow.dropped = True
    await flow.send(START)
    assert server.returned == []
    assert server.delivered == []


@pytest.mark.parametrize("status", [500, 503, 422], ids=["held-500", "held-503", "held-422"])
async def test_a_held_start_reaches_nothing_until_released(status: int) -> None:
    server = Server()
    flow = guarded_flow(server)
    await flow.send({**START, "status": status})
    assert server.delivered == []
    assert flow.guard is not None
    assert flow.guard.held_start is not None


async def test_an_io_hook_sends_after_its_wait() -> None:
    server = Server()
    flow = Flow(scope(), nothing, server.send)
    waited = asyncio.Event()

    async def after_io(message: Message) -> Message:
        await asyncio.sleep(0)
        waited.set()
        return {**message, "headers": [(b"x-after-io", b"1")]}

    flow.hooks.append((None, after_io))
    pending = flow.send(START)
    assert server.delivered == []  # nothing before the wait
    assert not flow.started
    await pending
    assert waited.is_set()
    assert flow.started
    assert server.delivered[0]["headers"] == [(b"x-after-io", b"1")]


async def test_an_io_hook_that_answers_sends_nothing_more() -> None:
    server = Server()
    flow = Flow(scope(), nothing, server.send)

    async def answered(message: Message) -> None:
        return None

    flow.hooks.append((None, answered))
    await flow.send(START)
    assert server.delivered == []
    assert not flow.started


@pytest.mark.parametrize(
    "case", ["dropped", "held-503", "passed"], ids=["send-dropped", "send-held", "send-passed"]
)
async def test_what_send_returns_is_a_coroutine_when_the_servers_is(case: str) -> None:
    """An application may hand `send(...)` to `asyncio.create_task`, which takes only
    a coroutine: every message gets one (the server's own, or the flow's)."""
    delivered: list[Message] = []

    async def server_send(message: Message) -> None:
        delivered.append(message)

    guard = ErrorsMiddleware(lambda s, r, se: None)._guard_type()  # type: ignore[arg-type, return-value]
    flow = Flow(scope(), nothing, server_send, guard)
    flow.dropped = case == "dropped"
    status = 503 if case == "held-503" else 200
    await asyncio.create_task(flow.send({**START, "status": status}))  # type: ignore[arg-type]
    assert [m["status"] for m in delivered] == ([200] if case == "passed" else [])


async def test_an_app_may_send_from_tasks_under_shield() -> None:
    """`asyncio.create_task(send(...))` and anyio's `start_soon(send, ...)`, with a 503
    the errors layer holds back until its body: the app's answer goes out as sent."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": 503, "headers": []}
        await asyncio.create_task(send(start))  # type: ignore[arg-type]
        async with anyio.create_task_group() as group:
            group.start_soon(send, {"type": "http.response.body", "body": b"busy"})  # type: ignore[arg-type]

    exchange = await call(Shield(app, settings()), "GET", "/", [])
    assert [m.get("status", m.get("body")) for m in exchange.messages] == [503, b"busy"]
