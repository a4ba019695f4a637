"""The WebSocket guard's adapter, in process: hand-built scopes, queues for the
client's side, a memory store on a fake clock, and the events each outcome emits.

Each refusal is named `ws-<reason>` and sits beside the legitimate case that must
still work. Waits are bounded (`WAIT_SECONDS`); store time is moved, never slept.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from bastion.events import (
    KIND_AUTHN_FAIL,
    KIND_AUTHZ_FAIL,
    KIND_EXCESS_RATE,
    KIND_MALICIOUS_CSRF,
    KIND_SYS_AVAILABILITY,
    EventEmitter,
)
from bastion.exceptions import StoreError
from bastion.ratelimit import JailSink
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.stores.memory import MemoryStore
from bastion.types import Message, Receive, Scope, Send
from bastion.websocket import WebSocketGuardMiddleware, WebSocketSettings, WebSocketTickets
from bastion.websocket import reasons as r
from bastion.websocket.core import hashed_key
from bastion.websocket.middleware import CLIENT_COUNT_PREFIX, PRINCIPAL_COUNT_PREFIX
from tests.conftest import RecordingSink
from tests.support.clock import FakeClock
from tests.support.stores import SwitchableStore

pytestmark = pytest.mark.anyio

WAIT_SECONDS = 2.0
ORIGIN = b"http://testserver"
FAST: dict[str, Any] = {"revocation_check_seconds": 0.01}


FlakyStore = SwitchableStore


@dataclass
class FakeSession:
    """What the guard reads of a session: its user and its store key."""

    user_id: str | None
    store_key: str | None = None


class Chat(BaseModel):
    text: str


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accepts, then echoes each text message until the socket ends."""
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text")})


class Client:
    """The client's end of one in-process socket."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope):
        self.app = app
        self.scope = scope
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()  # to the app
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()  # from the app
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> Message:
        return await self.inbox.get()

    async def _send(self, message: Message) -> None:
        await self.outbox.put(dict(message))

    def start(self) -> None:
        self.inbox.put_nowait({"type": "websocket.connect"})

        async def run() -> None:
            await self.app(self.scope, self._receive, self._send)

        self.task = asyncio.create_task(run())

    async def next(self) -> Message:
        async with asyncio.timeout(WAIT_SECONDS):
            return await self.outbox.get()

    async def say(self, text: str) -> None:
        await self.inbox.put({"type": "websocket.receive", "text": text})

    async def finish(self, code: int = 1000) -> None:
        """The client leaves (or answers the guard's close); the app must wind down."""
        await self.inbox.put({"type": "websocket.disconnect", "code": code})
        assert self.task is not None
        async with asyncio.timeout(WAIT_SECONDS):
            await self.task


def ws_scope(
    *,
    path: str = "/ws",
    client: str = "127.0.0.1",
    session: FakeSession | None = None,
    origin: bytes | None = ORIGIN,
    query: bytes = b"",
) -> Scope:
    headers = [(b"host", b"testserver")]
    if origin is not None:
        headers.append((b"origin", origin))
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers,
        "client": (client, 5000),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
    }
    if session is not None:
        scope["session"] = session
    return scope


@asynccontextmanager
async def connected(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope
) -> AsyncIterator[Client]:
    """An accepted socket; the client leaves at the end (if still open)."""
    client = Client(app, scope)
    client.start()
    assert (await client.next())["type"] == "websocket.accept"
    try:
        yield client
    finally:
        if client.task is not None and not client.task.done():
            await client.finish()


async def refused(app: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope) -> int:
    """Open a socket expecting the handshake refused; the close code."""
    client = Client(app, scope)
    client.start()
    first = await client.next()
    assert first["type"] == "websocket.close", first
    assert client.task is not None
    async with asyncio.timeout(WAIT_SECONDS):
        await client.task
    return int(first["code"])


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        # Polling on purpose: the conditions are plain counters, with no event to await.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def guard(
    events: EventEmitter,
    *,
    store: MemoryStore | None = None,
    clock: FakeClock | None = None,
    ban_checks: Iterable[Callable[[str | None, str | None], Awaitable[bool]]] = (),
    **settings: Any,
) -> WebSocketGuardMiddleware:
    clock = clock or FakeClock()
    settings.setdefault("routes", {"/ws/public": "public"})
    return WebSocketGuardMiddleware(
        echo_app,
        WebSocketSettings(**settings),
        store=store if store is not None else MemoryStore(clock=clock),
        events=events,
        clock=clock,
        schemas={"/ws/chat": Chat},
        ban_checks=list(ban_checks),
    )


def only(sink: RecordingSink, reason: str) -> dict[str, object]:
    found = [record for record in sink.records if record["reason"] == reason]
    assert len(found) == 1, sink.reasons()
    return found[0]


ALICE = FakeSession("alice")


async def banned_alice(client: str | None, principal: str | None) -> bool:
    return principal == "alice"


# --- handshake refusals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "code", "reason", "kind"),
    [
        pytest.param(ws_scope(session=FakeSession("bob")), None, "", "", id="ws-session-ok"),
        pytest.param(ws_scope(path="/ws/public"), None, "", "", id="ws-public-ok"),
        pytest.param(
            ws_scope(session=FakeSession("bob"), origin=b"https://evil.example"),
            1008,
            r.REASON_FOREIGN_ORIGIN,
            KIND_MALICIOUS_CSRF,
            id="ws-foreign-origin",
        ),
        pytest.param(
            ws_scope(session=FakeSession("bob"), origin=None),
            1008,
            r.REASON_NO_ORIGIN_WITH_SESSION,
            KIND_MALICIOUS_CSRF,
            id="ws-no-origin-with-session-cookie",
        ),
        pytest.param(
            ws_scope(), 1008, r.REASON_UNAUTHENTICATED, KIND_AUTHN_FAIL, id="ws-unauthenticated"
        ),
        pytest.param(
            ws_scope(query=b"ticket=forged"),
            1008,
            r.REASON_TICKET_INVALID,
            KIND_AUTHN_FAIL,
            id="ws-ticket-invalid",
        ),
        pytest.param(
            ws_scope(session=ALICE), 1008, r.REASON_BANNED, KIND_AUTHZ_FAIL, id="ws-banned"
        ),
    ],
)
async def test_handshake(
    scope: Scope,
    code: int | None,
    reason: str,
    kind: str,
    sink: RecordingSink,
    events: EventEmitter,
) -> None:
    app = guard(events, ban_checks=[banned_alice])
    if code is None:
        async with connected(app, scope) as client:
            await client.say("hi")
            assert (await client.next())["text"] == "hi"
        assert sink.reasons() == [r.REASON_CLOSED]
        return
    assert await refused(app, scope) == code
    record = only(sink, reason)
    assert (record["kind"], record["action"], record["status"]) == (kind, "blocked", 403)


# --- connection caps --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "reason", "counter"),
    [
        pytest.param(
            ws_scope(client="10.0.0.2", session=FakeSession("bob")), "", "", id="ws-caps-ok"
        ),
        pytest.param(
            ws_scope(client="10.0.0.1", session=FakeSession("bob")),
            r.REASON_CLIENT_CONNECTIONS,
            hashed_key(CLIENT_COUNT_PREFIX, "10.0.0.1"),
            id="ws-client-connection-cap",
        ),
        pytest.param(
            ws_scope(client="10.0.0.2", session=ALICE),
            r.REASON_PRINCIPAL_CONNECTIONS,
            hashed_key(PRINCIPAL_COUNT_PREFIX, "alice"),
            id="ws-principal-connection-cap",
        ),
    ],
)
async def test_connection_caps(
    second: Scope, reason: str, counter: str, sink: RecordingSink, events: EventEmitter
) -> None:
    store = MemoryStore(clock=FakeClock())
    app = guard(events, store=store, max_connections_per_client=1, max_connections_per_principal=1)
    async with connected(app, ws_scope(client="10.0.0.1", session=ALICE)):
        if not reason:
            async with connected(app, second):
                pass
            return
        assert await refused(app, second) == 1013
        record = only(sink, reason)
        assert (record["kind"], record["status"]) == (KIND_EXCESS_RATE, 429)
        assert await store.get(counter) == b"1"  # the refused socket gave its slot back
    assert await store.get(counter) == b"0"


async def test_counters_outlive_their_ttl_while_the_socket_lives(
    sink: RecordingSink, events: EventEmitter
) -> None:
    """Gap: `incr` keeps the creation TTL, so a long socket's slot used to lapse."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    ttl = 60
    app = guard(
        events,
        store=store,
        clock=clock,
        max_connections_per_client=1,
        connection_count_ttl_seconds=ttl,
        **FAST,
    )
    key = hashed_key(CLIENT_COUNT_PREFIX, "127.0.0.1")
    async with connected(app, ws_scope(path="/ws/public")):
        await asyncio.sleep(0.05)  # the watcher notes its start time first
        clock.advance(ttl / 3)
        await wait_until(lambda: store.touches >= 1)
        clock.advance(ttl * 3 / 4)  # past the counter's creation-time expiry
        assert await store.get(key) == b"1"
        assert await refused(app, ws_scope(path="/ws/public")) == 1013
        # A counter lost under a live socket (eviction, restart) is taken again.
        await store.delete(key)
        clock.advance(ttl / 3)
        await wait_until(lambda: store.touches >= 2)
        await asyncio.sleep(0.05)  # the refresh re-takes the slot right after its touch
        assert await store.get(key) == b"1"
    assert await store.get(key) == b"0"
    assert r.REASON_CLIENT_CONNECTIONS in sink.reasons()


# --- messages -----------------------------------------------------------------------------

OK = '{"text": "hi"}'


@pytest.mark.parametrize(
    ("settings", "path", "messages", "outcome"),
    [
        pytest.param({}, "/ws/chat", [OK, OK], ["echo", "echo"], id="ws-message-ok"),
        pytest.param(
            {"max_message_bytes": 8},
            "/ws",
            ["x" * 9],
            [(1009, r.REASON_MESSAGE_TOO_BIG)],
            id="ws-message-too-big",
        ),
        pytest.param(
            {},
            "/ws/chat",
            ['{"text": 1}'],
            [(1007, r.REASON_INVALID_MESSAGE)],
            id="ws-invalid-message",
        ),
        pytest.param(
            {"on_invalid_message": "error-frame"},
            "/ws/chat",
            ['{"text": 1}', OK],
            ["invalid-message", "echo"],
            id="ws-invalid-message-error-frame",
        ),
        pytest.param(
            {"messages_per_second": 0.001, "message_burst": 1},
            "/ws",
            [OK, OK],
            ["echo", (1008, r.REASON_CONNECTION_RATE)],
            id="ws-connection-message-rate",
        ),
        pytest.param(
            {"messages_per_second": 0.001, "message_burst": 1, "on_rate_limit": "drop"},
            "/ws",
            [OK, OK],
            ["echo", "rate-limited"],
            id="ws-connection-message-rate-drop",
        ),
        pytest.param(
            {"principal_messages_per_second": 1, "principal_message_burst": 1},
            "/ws",
            [OK, OK],
            ["echo", (1008, r.REASON_PRINCIPAL_RATE)],
            id="ws-principal-message-rate",
        ),
        pytest.param(
            {
                "principal_messages_per_second": 1,
                "principal_message_burst": 1,
                "on_rate_limit": "drop",
            },
            "/ws",
            [OK, OK],
            ["echo", "rate-limited"],
            id="ws-principal-message-rate-drop",
        ),
    ],
)
async def test_messages(
    settings: dict[str, Any],
    path: str,
    messages: list[str],
    outcome: list[str | tuple[int, str]],
    sink: RecordingSink,
    events: EventEmitter,
) -> None:
    app = guard(events, **settings)
    async with connected(app, ws_scope(path=path, session=FakeSession("bob"))) as client:
        for text, expected in zip(messages, outcome, strict=True):
            await client.say(text)
            answer = await client.next()
            if expected == "echo":
                assert answer == {"type": "websocket.send", "text": text}
            elif isinstance(expected, str):  # an error frame; the socket stays open
                assert json.loads(answer["text"]) == {"error": expected}
                assert sink.records[-1]["details"] == {"dropped": True}
            else:
                code, reason = expected
                assert answer == {"type": "websocket.close", "code": code}
                record = only(sink, reason)
                assert (record["action"], record["details"]) == ("blocked", {"close_code": code})
                await client.finish()
                assert sink.reasons()[-1] == reason  # no second event for our own close
                return
        await client.say(OK)  # still open: answered (echoed, or an error frame again)
        assert (await client.next())["type"] == "websocket.send"


async def test_principal_rate_recovers_on_the_store_clock(events: EventEmitter) -> None:
    clock = FakeClock()
    app = guard(
        events,
        clock=clock,
        principal_messages_per_second=1,
        principal_message_burst=1,
        on_rate_limit="drop",
    )
    async with connected(app, ws_scope(session=FakeSession("bob"))) as client:
        await client.say(OK)
        assert (await client.next())["text"] == OK
        clock.advance(1.0)
        await client.say(OK)
        assert (await client.next())["text"] == OK


async def test_idle_timeout_closes_1001(sink: RecordingSink, events: EventEmitter) -> None:
    app = guard(events, idle_timeout_seconds=0.05)
    client = Client(app, ws_scope(session=FakeSession("bob")))
    client.start()
    assert (await client.next())["type"] == "websocket.accept"
    assert await client.next() == {"type": "websocket.close", "code": 1001}
    await client.finish()
    record = only(sink, r.REASON_IDLE)
    assert (record["action"], record["details"]) == ("allowed", {"close_code": 1001})


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        pytest.param("\u00e9" * 4, True, id="ws-multibyte-at-the-limit-ok"),
        pytest.param("\u00e9" * 5, False, id="ws-multibyte-message-too-big"),
        pytest.param("\U0001f600" * 2 + "x", False, id="ws-astral-message-too-big"),
        pytest.param("\ud800" * 3, False, id="ws-lone-surrogates-too-big"),
    ],
)
async def test_text_size_counts_utf8_bytes(
    text: str, accepted: bool, sink: RecordingSink, events: EventEmitter
) -> None:
    """The limit is on encoded bytes, though short text is not encoded to check it."""
    app = guard(events, max_message_bytes=8)
    async with connected(app, ws_scope(session=FakeSession("bob"))) as client:
        await client.say(text)
        answer = await client.next()
        if accepted:
            assert answer == {"type": "websocket.send", "text": text}
            return
        assert answer == {"type": "websocket.close", "code": 1009}
        await client.finish()
    assert only(sink, r.REASON_MESSAGE_TOO_BIG)["action"] == "blocked"


def recording_guard(events: EventEmitter, seen: list[Message], **settings: Any) -> Any:
    """A guard around an app that accepts and records what `receive` gives it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "websocket.disconnect":
                return

    settings.setdefault("routes", {"/ws/public": "public"})
    return WebSocketGuardMiddleware(
        app, WebSocketSettings(**settings), store=MemoryStore(clock=FakeClock()), events=events
    )


async def test_a_guard_close_wakes_the_waiting_app(events: EventEmitter) -> None:
    """The app waiting in `receive` gets `websocket.disconnect` at once, before the
    client answers the close (the guard then drains the client's reply)."""
    seen: list[Message] = []
    app = recording_guard(events, seen, idle_timeout_seconds=0.05)
    client = Client(app, ws_scope(session=FakeSession("bob")))
    client.start()
    assert (await client.next())["type"] == "websocket.accept"
    assert await client.next() == {"type": "websocket.close", "code": 1001}
    await wait_until(lambda: bool(seen))
    assert seen == [{"type": "websocket.disconnect", "code": 1001}]
    await client.finish()


async def test_an_outer_cancellation_still_cancels(events: EventEmitter) -> None:
    """The guard's wake-up never swallows a cancellation that is not its own."""
    seen: list[Message] = []
    app = recording_guard(events, seen)
    client = Client(app, ws_scope(session=FakeSession("bob")))
    client.start()
    assert (await client.next())["type"] == "websocket.accept"
    assert client.task is not None
    client.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(WAIT_SECONDS):
            await client.task
    assert seen == []


# --- monitor-only ---------------------------------------------------------------------


async def test_monitor_only_reports_and_lets_the_connection_proceed(
    sink: RecordingSink, events: EventEmitter
) -> None:
    app = guard(events, monitor_only=True, max_message_bytes=8, ban_checks=[banned_alice])
    scope = ws_scope(origin=b"https://evil.example", session=ALICE)
    async with connected(app, scope) as client:
        await client.say("x" * 9)
        assert (await client.next())["text"] == "x" * 9
    monitored = {str(rec["reason"]) for rec in sink.records if rec["action"] == "monitored"}
    assert monitored == {r.REASON_FOREIGN_ORIGIN, r.REASON_BANNED, r.REASON_MESSAGE_TOO_BIG}
    assert not [rec for rec in sink.records if rec["action"] == "blocked"]


# --- live revocation: bans, sessions --------------------------------------------------


async def test_a_ban_closes_a_live_socket(sink: RecordingSink, events: EventEmitter) -> None:
    bans: set[str] = set()

    async def banned(client: str | None, principal: str | None) -> bool:
        return principal in bans

    app = guard(events, ban_checks=[banned], **FAST)
    async with connected(app, ws_scope(session=ALICE)) as client:
        await client.say(OK)
        assert (await client.next())["text"] == OK  # ws-banned-ok: not banned yet
        bans.add("alice")
        assert await client.next() == {"type": "websocket.close", "code": 1008}
        await client.finish()
    record = only(sink, r.REASON_BANNED)
    assert (record["kind"], record["details"]) == (KIND_AUTHZ_FAIL, {"close_code": 1008})


async def test_a_revoked_session_closes_a_live_socket(
    sink: RecordingSink, events: EventEmitter
) -> None:
    store = MemoryStore(clock=FakeClock())
    await store.set("session:abc", b"{}", 3600)
    app = guard(events, store=store, **FAST)
    async with connected(app, ws_scope(session=FakeSession("bob", "session:abc"))) as client:
        await store.delete("session:abc")
        assert await client.next() == {"type": "websocket.close", "code": 1008}
        await client.finish()
    assert only(sink, r.REASON_SESSION_REVOKED)["kind"] == KIND_AUTHN_FAIL


# --- store failures -----------------------------------------------------------------------


async def test_counters_fail_open_with_an_event(sink: RecordingSink, events: EventEmitter) -> None:
    store = FlakyStore(clock=FakeClock())
    store.down = True
    app = guard(events, store=store, principal_messages_per_second=1, principal_message_burst=1)
    async with connected(app, ws_scope(session=FakeSession("bob"))) as client:
        for _ in range(3):  # the principal rate fails open too
            await client.say(OK)
            assert (await client.next())["text"] == OK
    down = [rec for rec in sink.records if rec["reason"] == r.REASON_STORE_DOWN]
    assert down
    assert {(rec["kind"], rec["action"]) for rec in down} == {(KIND_SYS_AVAILABILITY, "allowed")}


async def test_revocation_fails_closed_1011(sink: RecordingSink, events: EventEmitter) -> None:
    store = FlakyStore(clock=FakeClock())
    await store.set("session:abc", b"{}", 3600)
    app = guard(events, store=store, **FAST)
    async with connected(app, ws_scope(session=FakeSession("bob", "session:abc"))) as client:
        store.down = True
        assert await client.next() == {"type": "websocket.close", "code": 1011}
        await client.finish()
    closes = [rec for rec in sink.records if rec.get("details") == {"close_code": 1011}]
    assert [(rec["reason"], rec["action"]) for rec in closes] == [(r.REASON_STORE_DOWN, "blocked")]


async def test_a_ban_check_that_fails_refuses_the_handshake(
    sink: RecordingSink, events: EventEmitter
) -> None:
    async def broken(client: str | None, principal: str | None) -> bool:
        raise StoreError("store down (test)")

    app = guard(events, ban_checks=[broken])
    assert await refused(app, ws_scope(session=FakeSession("bob"))) == 1013
    assert only(sink, r.REASON_STORE_DOWN)["status"] == 503


# --- under Shield ---------------------------------------------------------------------------


def shield_settings(**websocket: Any) -> Settings:
    return Settings(
        mode="development",
        websocket={"routes": {"/ws/public": "public"}, **websocket},
        ratelimit={"ban_threshold": 3},
    )


def local_scope(path: str, query: bytes = b"") -> Scope:
    scope = ws_scope(path=path, query=query, origin=b"http://localhost")
    scope["headers"] = [(b"host", b"localhost"), (b"origin", b"http://localhost")]
    return scope


@pytest.mark.parametrize(
    ("path", "with_ticket", "accepted"),
    [
        pytest.param("/ws/public", False, True, id="ws-shield-public-ok"),
        pytest.param("/ws/private", True, True, id="ws-shield-ticket-ok"),
        pytest.param("/ws/private", False, False, id="ws-shield-unauthenticated"),
    ],
)
async def test_shield_default_access_is_authenticated(
    path: str, with_ticket: bool, accepted: bool, sink: RecordingSink, events: EventEmitter
) -> None:
    settings = shield_settings()
    app = Shield(echo_app, settings, events=events)
    query = b""
    if with_ticket:
        tickets = WebSocketTickets(settings.secret_keys, max_age_seconds=30)
        query = b"ticket=" + tickets.issue("alice").encode()
    if accepted:
        async with connected(app, local_scope(path, query)):
            pass
        return
    assert await refused(app, local_scope(path)) == 1008
    assert only(sink, r.REASON_UNAUTHENTICATED)["layer"] == "websocket"


async def test_shield_closes_a_live_socket_when_the_jail_bans_its_client(
    sink: RecordingSink, events: EventEmitter
) -> None:
    app = Shield(echo_app, shield_settings(**FAST), events=events)
    jail_sinks = [each for each in events.sinks if isinstance(each, JailSink)]
    assert len(jail_sinks) == 1
    async with connected(app, local_scope("/ws/public")) as live:
        # Three refused handshakes from the same address earn a ban (threshold 3).
        for _ in range(3):
            assert await refused(app, local_scope("/ws/private")) == 1008
        await jail_sinks[0].drain()
        assert await live.next() == {"type": "websocket.close", "code": 1008}
        await live.finish()
    banned = [rec for rec in sink.records if rec["reason"] == r.REASON_BANNED]
    assert [rec["layer"] for rec in banned] == ["ratelimit", "websocket"]
    assert banned[-1]["details"] == {"close_code": 1008}


@pytest.mark.parametrize(
    ("known", "kept"),
    [
        pytest.param("alice", True, id="ws-session-keeps-authenticated-principal"),
        # The authentication layer resolved another caller (an `Authorization` bearer
        # beside the cookie): one socket, one caller, so neither is trusted (it was
        # replaced by the session user, whom the route policy never checked).
        pytest.param("mallory", False, id="ws-session-other-principal-refused"),
    ],
)
async def test_the_authentication_layers_principal_is_kept(
    known: str, kept: bool, sink: RecordingSink, events: EventEmitter
) -> None:
    """The guard keeps the principal the authentication layer resolved for the session
    user (roles and all), so `requires_bastion` and the app see it on the socket too;
    a session of another user is refused (`credential-mismatch`)."""
    from bastion.auth.principal import Principal
    from bastion.context import get_context

    seen: list[object] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(get_context(scope).principal)
        await echo_app(scope, receive, send)

    layer = guard(events)
    layer.app = app
    scope = ws_scope(session=FakeSession("alice"))
    principal = Principal(known, "session", roles=frozenset({"admin"}))
    get_context(scope).principal = principal
    if not kept:
        assert await refused(layer, scope) == 1008
        assert seen == []
        assert only(sink, r.REASON_CREDENTIAL_MISMATCH)["kind"] == KIND_AUTHN_FAIL
        return
    async with connected(layer, scope):
        pass
    assert seen == [principal]
