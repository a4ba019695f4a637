"""Sockets and tickets end with their session's expiry, not minutes after it.

Gap (3411677, low): the handshake's ticket check and the watcher asked only whether
the session's store key existed, while the session store keeps an expired record
`EXPIRED_GRACE_SECONDS` past its idle or absolute timeout (to report a late use). A
ticket fetched just before the session expired still opened a socket, and a live
socket, ticket or cookie, outlived the session by up to that grace. Now both read
the record where the session layer keeps it and apply its timeouts
(`bastion.sessions.session_alive`).

Also: a guard built by hand with a store other than the session layer's refused
every bound ticket (`session-revoked`) and closed every cookie socket at its first
watcher tick, since it looked the session up in its own store. It now reads the
session from the session layer's store.

The stack is real: `SessionMiddleware` around the guard around the app of
`test_ticket_session`, on the memory store (fake clock) and on a real Redis server,
whose own clock keeps the TTLs, so the expired record is still there when the fake
clock says the session has expired. Logins and tickets are HTTP requests (httpx over
ASGI); sockets are real ASGI websocket calls.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from bastion.events import KIND_AUTHN_FAIL, EventEmitter
from bastion.sessions import EXPIRED_GRACE_SECONDS, SessionMiddleware, SessionSettings
from bastion.stores.base import Store
from bastion.stores.memory import MemoryStore
from bastion.types import Scope
from bastion.websocket import WebSocketGuardMiddleware, WebSocketSettings
from bastion.websocket import reasons as r
from tests.conftest import RecordingSink, asgi_client
from tests.support.clock import FakeClock
from tests.support.redis import RedisServer, redis_server
from tests.websocket.test_middleware import OK, connected, refused, ws_scope
from tests.websocket.test_ticket_session import KEY, PAGE, app

pytestmark = pytest.mark.anyio

TICK = 0.01
_TICKS_WAITED = 10
# The session's timeouts: an hour each, unless a case shortens the idle one (the
# smallest the settings allow), so an idle expiry falls within a ticket's lifetime.
HOUR = 3600
SHORT_IDLE = 60
LONGEST_TICKET = 300  # `ticket_max_age_seconds`' ceiling


@dataclass
class Stack:
    """`SessionMiddleware` -> guard -> `app`; the guard's store is the session layer's
    unless `apart`."""

    store: Store
    clock: FakeClock
    sink: RecordingSink
    idle: int = HOUR
    apart: bool = False
    asgi: SessionMiddleware = field(init=False)
    cookie: str = field(init=False, default="")  # the last session cookie a response set

    def __post_init__(self) -> None:
        events = EventEmitter([self.sink])
        guard = WebSocketGuardMiddleware(
            app,
            WebSocketSettings(
                allowed_origins=("https://app.example",),
                revocation_check_seconds=TICK,
                ticket_max_age_seconds=LONGEST_TICKET,
            ),
            store=MemoryStore(clock=self.clock) if self.apart else self.store,
            secret_keys=[KEY],
            events=events,
            clock=self.clock,
        )
        self.asgi = SessionMiddleware(
            guard,
            SessionSettings(
                insecure_cookie_over_http=True,
                idle_timeout_seconds=self.idle,
                absolute_timeout_seconds=HOUR,
            ),
            store=self.store,
            secret_keys=[KEY],
            events=events,
            clock=self.clock,
        )

    async def http(self, method: str, path: str, cookie: str | None = None) -> tuple[int, str]:
        async with asgi_client(self.asgi) as client:
            if cookie:
                client.cookies.set("session", cookie)
            answer = await client.request(method, path)
            if answer.cookies.get("session"):
                self.cookie = answer.cookies["session"]
        return answer.status_code, answer.text

    async def login(self, user: str) -> str:
        assert (await self.http("POST", f"/login?user={user}"))[0] == 200
        return self.cookie

    async def ticket(self, cookie: str) -> str:
        status, text = await self.http("GET", "/ticket", cookie)
        assert status == 200, text
        return text

    def ticket_socket(self, ticket: str) -> Scope:
        return ws_scope(path="/ws", origin=PAGE, query=b"ticket=" + ticket.encode())

    def cookie_socket(self, cookie: str) -> Scope:
        scope = ws_scope(path="/ws")  # the page's own origin, with its cookie
        scope["headers"].append((b"cookie", b"session=" + cookie.encode()))
        return scope

    def revoked(self) -> list[str]:
        return [str(rec["reason"]) for rec in self.sink.records if rec["action"] == "blocked"]

    async def watcher_ticks(self) -> None:
        # Real time on purpose: the watcher's tick is an asyncio sleep of `TICK`.
        await asyncio.sleep(TICK * _TICKS_WAITED)


@pytest.fixture(scope="module")
def redis_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("ws-session-expiry-redis")) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Store, FakeClock]]:
    clock = FakeClock()
    if request.param == "memory":
        yield MemoryStore(clock=clock), clock
        return
    from bastion.stores.redis import RedisStore

    server: RedisServer = request.getfixturevalue("redis_standalone")
    redis_store = RedisStore(server.url, key_prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        yield redis_store, clock
    finally:
        await redis_store.close()


# --- the handshake ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("idle", "before_ticket", "after_ticket", "refused_as"),
    [
        pytest.param(HOUR, HOUR - 10, 5, "", id="ws-ticket-before-session-expiry-ok"),
        # The session's absolute timeout falls 15 s before the socket opens.
        pytest.param(
            HOUR, HOUR - 10, 25, r.REASON_SESSION_REVOKED, id="ws-ticket-after-session-expiry"
        ),
        # Fetched right after the login; the session is idle past its timeout by then.
        pytest.param(
            SHORT_IDLE,
            0,
            SHORT_IDLE + 10,
            r.REASON_SESSION_REVOKED,
            id="ws-ticket-after-session-idle-expiry",
        ),
        pytest.param(SHORT_IDLE, 0, SHORT_IDLE - 10, "", id="ws-ticket-before-idle-expiry-ok"),
    ],
)
async def test_a_ticket_of_an_expired_session_is_refused(
    store: tuple[Store, FakeClock],
    sink: RecordingSink,
    idle: int,
    before_ticket: float,
    after_ticket: float,
    refused_as: str,
) -> None:
    stack = Stack(*store, sink, idle=idle)
    cookie = await stack.login("alice")
    stack.clock.advance(before_ticket)
    ticket = await stack.ticket(cookie)
    stack.clock.advance(after_ticket)
    assert after_ticket < EXPIRED_GRACE_SECONDS  # the record is still in the store
    if not refused_as:
        async with connected(stack.asgi, stack.ticket_socket(ticket)) as client:
            await client.say(OK)
            assert (await client.next())["text"] == OK
        assert stack.revoked() == []
        return
    assert await refused(stack.asgi, stack.ticket_socket(ticket)) == 1008
    assert stack.revoked() == [refused_as]
    record = next(rec for rec in sink.records if rec["reason"] == refused_as)
    assert (record["kind"], record["status"]) == (KIND_AUTHN_FAIL, 403)


# --- the live socket ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "idle", "advance", "closed"),
    [
        pytest.param("ticket", HOUR, HOUR - 30, False, id="ws-ticket-socket-session-alive-ok"),
        pytest.param("ticket", HOUR, HOUR + 1, True, id="ws-ticket-socket-after-session-expiry"),
        pytest.param("cookie", SHORT_IDLE, SHORT_IDLE - 5, False, id="ws-socket-session-alive-ok"),
        pytest.param(
            "cookie", SHORT_IDLE, SHORT_IDLE + 1, True, id="ws-socket-after-session-idle-expiry"
        ),
        pytest.param("cookie", HOUR, HOUR + 1, True, id="ws-socket-after-session-absolute-expiry"),
    ],
)
async def test_a_live_socket_ends_with_its_session_expiry(
    store: tuple[Store, FakeClock],
    sink: RecordingSink,
    kind: str,
    idle: int,
    advance: float,
    closed: bool,
) -> None:
    """Closed (1008, `session-revoked`) within a watcher tick of the session's expiry,
    though its record stays in the store for the grace period."""
    stack = Stack(*store, sink, idle=idle)
    cookie = await stack.login("alice")
    scope = (
        stack.ticket_socket(await stack.ticket(cookie))
        if kind == "ticket"
        else stack.cookie_socket(cookie)
    )
    async with connected(stack.asgi, scope) as client:
        await client.say(OK)
        assert (await client.next())["text"] == OK
        stack.clock.advance(advance)
        if not closed:
            await stack.watcher_ticks()
            await client.say(OK)
            assert (await client.next())["text"] == OK
        else:
            assert await client.next() == {"type": "websocket.close", "code": 1008}
            await client.finish()
    if not closed:
        assert stack.revoked() == []
        return
    assert stack.revoked() == [r.REASON_SESSION_REVOKED]
    record = next(rec for rec in sink.records if rec["reason"] == r.REASON_SESSION_REVOKED)
    assert (record["kind"], record["details"]) == (KIND_AUTHN_FAIL, {"close_code": 1008})


# --- a guard built with a store of its own --------------------------------------------


@pytest.mark.parametrize(
    ("kind", "logout", "refused_as"),
    [
        pytest.param("ticket", False, "", id="ws-ticket-guard-store-apart-ok"),
        pytest.param("cookie", False, "", id="ws-socket-guard-store-apart-ok"),
        pytest.param(
            "ticket", True, r.REASON_SESSION_REVOKED, id="ws-ticket-guard-store-apart-after-logout"
        ),
    ],
)
async def test_the_session_is_read_where_the_session_layer_keeps_it(
    store: tuple[Store, FakeClock],
    sink: RecordingSink,
    kind: str,
    logout: bool,
    refused_as: str,
) -> None:
    """The guard's store (tickets' single use, connection counters) is not the
    session layer's: the session of a ticket or a socket is still found, and still
    ends it."""
    stack = Stack(*store, sink, apart=True)
    cookie = await stack.login("alice")
    ticket = await stack.ticket(cookie)
    if logout:
        assert (await stack.http("POST", "/logout", cookie))[0] == 200
    scope = stack.ticket_socket(ticket) if kind == "ticket" else stack.cookie_socket(cookie)
    if refused_as:
        assert await refused(stack.asgi, scope) == 1008
        assert stack.revoked() == [refused_as]
        return
    async with connected(stack.asgi, scope) as client:
        await stack.watcher_ticks()
        await client.say(OK)
        assert (await client.next())["text"] == OK
    assert stack.revoked() == []
