"""The fused WebSocket path of `Shield` against the chain of layer middlewares it replaces.

Two identical `Shield` stacks (same settings, fresh stores) get the same socket:
one through `Shield.__call__` (the handshake's stages, then the application on the
server's own `send` behind the errors layer's one wrapper), one through
`Shield._stack` (the middleware chain). Every ASGI message sent, every event
emitted and the request context must match, once the random values (request id,
session id) are replaced by placeholders. Then: once the handshake is decided, no
code of any layer but the errors layer's `send` wrapper runs per message.

The store that fails with a bug (not a `StoreError`) is a stand-in: a real
`MemoryStore` that raises on demand, since no real store fails that way on cue.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import pytest

from bastion.context import SCOPE_KEY
from bastion.events import EventEmitter
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.stages import Flow, enter_websocket
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from bastion.websocket import WebSocketGuardMiddleware
from tests.conftest import RecordingSink
from tests.shield.test_fused import SECRET_KEYS, BrokenStore, events, normalised

pytestmark = pytest.mark.anyio

ECHOES = 3


def settings(*, guard: bool = False) -> Settings:
    return Settings.model_validate(
        {
            "mode": "development",
            "secret_keys": SECRET_KEYS,
            "transport": {"allowed_hosts": ["testserver"]},
            "limits": {"max_header_count": 20},
            "ratelimit": {"limits": {"WEBSOCKET /limited": ["1/minute"]}},
            "policy": {"routes": {"WEBSOCKET /admin": "authenticated"}},
            "websocket": {"enabled": guard, "routes": {"/": "public"}},
        }
    )


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accepts and echoes; `/boom-before` raises before accepting, `/boom-after`
    after accepting, `/boom-closed` after closing."""
    path = scope["path"]
    message = await receive()
    assert message["type"] == "websocket.connect"
    if path == "/boom-before":
        raise RuntimeError("bug in the app before accept")
    await send({"type": "websocket.accept"})
    if path == "/boom-after":
        raise RuntimeError("bug in the app after accept")
    if path == "/boom-closed":
        await send({"type": "websocket.close", "code": 1000})
        raise RuntimeError("bug in the app after close")
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        await send({"type": "websocket.send", "text": message["text"]})


@dataclass
class Exchange:
    """What one socket produced: the messages sent and the context left behind."""

    messages: list[Message] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)


def ws_scope(path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "wss",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers
        if any(k == b"host" for k, _ in headers)
        else [(b"host", b"testserver"), (b"origin", b"https://testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 443),
        "subprotocols": [],
    }


async def call(target: ASGIApp, path: str, headers: list[tuple[bytes, bytes]]) -> Exchange:
    scope = ws_scope(path, headers)
    inbox: list[Message] = [{"type": "websocket.disconnect", "code": 1000}]
    inbox += [{"type": "websocket.receive", "text": f"m{i}"} for i in reversed(range(ECHOES))]
    inbox.append({"type": "websocket.connect"})
    result = Exchange()

    async def receive() -> Message:
        return inbox.pop() if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        result.messages.append(message)

    await target(scope, receive, send)
    context = scope[SCOPE_KEY]
    result.context = {name: getattr(context, name) for name in ("client", "scheme", "host", "port")}
    result.context["principal"] = repr(context.principal)
    result.context["session"] = type(scope.get("session")).__name__
    return result


def build(fused: bool) -> tuple[RecordingSink, BrokenStore, ASGIApp]:
    sink = RecordingSink()
    store = BrokenStore()
    shield = Shield(app, settings(), events=EventEmitter([sink]), store=store)
    return sink, store, shield if fused else shield._stack


TOO_MANY_HEADERS = [(b"x-filler-%d" % i, b"v") for i in range(30)]
CASES = [
    pytest.param("/", [], "accept-echo", id="ws-legitimate-echo"),
    pytest.param(
        "/", [(b"host", b"evil.example")], "close-before-accept", id="ws-refused-foreign-host"
    ),
    pytest.param("/", TOO_MANY_HEADERS, "close-before-accept", id="ws-too-many-headers"),
    pytest.param("/limited", "twice", "close-before-accept", id="ws-rate-limited-client"),
    pytest.param("/admin", [], "close-before-accept", id="ws-policy-refusal"),
    pytest.param("/boom-before", [], "close-1011-before-accept", id="ws-crash-before-accept"),
    pytest.param("/boom-after", [], "close-1011-after-accept", id="ws-crash-after-accept"),
    pytest.param("/boom-closed", [], "one-close-only", id="ws-crash-after-close"),
    pytest.param("/limited", "broken", "close-1011-before-accept", id="ws-crash-in-stage"),
]


async def scenario(fused: bool, path: str, headers: Any) -> tuple[list[Exchange], list[str]]:
    sink, store, target = build(fused)
    sent = list(headers) if isinstance(headers, list) else []
    exchanges: list[Exchange] = []
    if headers == "twice":
        exchanges.append(await call(target, path, sent))
    if headers == "broken":
        store.broken = True
    exchanges.append(await call(target, path, sent))
    return exchanges, events(sink)


@pytest.mark.parametrize(("path", "headers", "outcome"), CASES)
async def test_fused_and_chained_websockets_answer_alike(
    path: str, headers: Any, outcome: str
) -> None:
    chained, chained_events = await scenario(False, path, headers)
    fused, fused_events = await scenario(True, path, headers)
    assert [normalised(e.messages) for e in fused] == [normalised(e.messages) for e in chained]
    assert [e.context for e in fused] == [e.context for e in chained]
    assert fused_events == chained_events


@pytest.mark.parametrize(("path", "headers", "outcome"), CASES)
async def test_each_websocket_case_is_the_answer_it_names(
    path: str, headers: Any, outcome: str
) -> None:
    """The table is not vacuous: each case ends as its outcome says."""
    exchanges, recorded = await scenario(True, path, headers)
    types = [m["type"] for m in exchanges[-1].messages]
    last = exchanges[-1].messages[-1]
    if outcome == "accept-echo":
        assert types == ["websocket.accept", *["websocket.send"] * ECHOES]
        assert [m["text"] for m in exchanges[-1].messages[1:]] == [f"m{i}" for i in range(ECHOES)]
        assert exchanges[-1].context["session"] == "Session"
        return
    if outcome == "close-before-accept":
        # A close before accept: the server refuses the handshake (403).
        assert "websocket.accept" not in types
        assert types[-1] in ("websocket.close", "websocket.http.response.body")
        return
    crash = [r for r in recorded if "sys_crash" in r]
    assert len(crash) == 1
    if outcome == "one-close-only":
        assert types == ["websocket.accept", "websocket.close"]
        assert last["code"] == 1000
        return
    assert last == {"type": "websocket.close", "code": 1011}
    assert ("websocket.accept" in types) == (outcome == "close-1011-after-accept")


async def test_websocket_takes_the_fused_path_ending_at_the_guard() -> None:
    shield = Shield(app, settings(guard=True), events=EventEmitter([]))
    assert shield._websocket is not shield._stack
    inner = shield._websocket.args[1]  # type: ignore[attr-defined]  # a functools.partial
    assert isinstance(inner, WebSocketGuardMiddleware)
    exchange = await call(shield, "/", [])
    assert [m["type"] for m in exchange.messages][:2] == ["websocket.accept", "websocket.send"]


async def test_no_layer_code_runs_per_message_after_the_handshake() -> None:
    """Counted, not timed: the Python frames entered or resumed while messages flow.
    Only the errors layer's `send` wrapper, and the two frames (Shield's and the
    errors guard's) that the application's coroutine is awaited from, belong to
    Bastion; no stage, runner or other layer's wrapper does."""
    shield = Shield(app, settings(), events=EventEmitter([]))
    seen: set[tuple[str, str]] = set()
    receiving = False
    inbox: list[Message] = [{"type": "websocket.connect"}]
    remaining = ECHOES

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        filename = frame.f_code.co_filename
        if receiving and event == "call" and "/bastion/" in filename:
            seen.add((filename.rsplit("/bastion/", 1)[1], frame.f_code.co_name))

    async def receive() -> Message:
        nonlocal receiving, remaining
        if inbox:
            return inbox.pop()
        if remaining == 0:
            return {"type": "websocket.disconnect", "code": 1000}
        remaining -= 1
        receiving = True
        return {"type": "websocket.receive", "text": "hi"}

    async def send(message: Message) -> None:
        pass

    sys.setprofile(profile)
    try:
        await shield(ws_scope("/", []), receive, send)
    finally:
        sys.setprofile(None)
    assert seen == {("errors.py", "send_wrapper")}


class _ExitingStage:
    """A stage that (wrongly) registers an exit on a websocket scope."""

    def enter(self, flow: Flow) -> None:
        async def leave(error: BaseException | None) -> BaseException | None:
            return error

        flow.exits.append(leave)


async def test_an_exit_on_a_websocket_scope_is_a_loud_bug() -> None:
    """Only `run_stages` unwinds exits: the websocket runner refuses to drop one."""

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        pass

    with pytest.raises(RuntimeError, match="exit on a websocket scope"):
        await enter_websocket((_ExitingStage(),), ws_scope("/", []), receive, send)
