"""Tickets bound to the session they were issued from.

Gap: a socket opened with `?ticket=` outlived the session that issued the ticket: the
watcher only checked the session of session-authenticated sockets, so a user who
logged out (or whose sessions an administrator revoked) kept a live ticket socket
open for as long as it stayed busy; and a ticket fetched right before a logout still
opened one within its lifetime.

The stack is real: `SessionMiddleware` around the guard around a small app, on the
memory store (fake clock) and on a real Redis server. Logins, tickets, logouts and
revocations are real HTTP requests (httpx over ASGI); the sockets are real ASGI
websocket calls (the `Client` of `test_middleware`), from a page on another origin
that sends no cookie, the case tickets exist for. The watcher ticks every 10 ms.

Each refusal is named `ws-ticket-...` beside the legitimate socket that must still
work: a ticket socket whose session lives stays open, and so does one minted from a
request with no session (a token-authenticated one), which keeps the behaviour it
had (bound to nothing).
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from bastion.events import KIND_AUTHN_FAIL, KIND_SYS_AVAILABILITY, EventEmitter
from bastion.sessions import Session, SessionMiddleware, SessionSettings, store_key
from bastion.signing import Signer
from bastion.stores.base import Store
from bastion.stores.memory import MemoryStore
from bastion.types import Receive, Scope, Send
from bastion.websocket import (
    WebSocketGuardMiddleware,
    WebSocketSettings,
    WebSocketTickets,
    issue_ticket,
)
from bastion.websocket import reasons as r
from bastion.websocket.tickets import MAX_SESSION_KEY_CHARS, MAX_TICKET_CHARS, TICKET_PURPOSE
from tests.conftest import RecordingSink, asgi_client
from tests.support.clock import FakeClock
from tests.support.redis import RedisServer, redis_server
from tests.support.stores import SwitchableStore
from tests.websocket.test_middleware import (
    OK,
    connected,
    echo_app,
    refused,
    ws_scope,
)

pytestmark = pytest.mark.anyio

KEY = "ws-ticket-session-key-" + "abcdefghijklmnopqrstuvwxyz0123456789"
PAGE = b"https://app.example"  # a page on another origin: no cookie reaches the socket
TICK = 0.01
# Watcher ticks a live socket is given to prove it stays open (each reads the store).
_TICKS_WAITED = 10
# A token the app's own authentication accepts (stands in for a JWT-authenticated
# request, which has no session): its user gets a ticket bound to nothing.
TOKENS = {"token-for-carol": "carol"}


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo sockets; HTTP: `POST /login?user=`, `GET /ticket` (session, or a token in
    `x-token`), `POST /logout`, `POST /rotate`, `POST /revoke?user=` (an
    administrator ending every session of a user), `POST /login-and-ticket?user=`."""
    if scope["type"] == "websocket":
        await echo_app(scope, receive, send)
        return
    if scope["type"] != "http":
        return
    session = scope["session"]
    assert isinstance(session, Session)
    path, query = scope["path"], scope["query_string"].decode()
    user = query.removeprefix("user=")
    tokens = [value.decode() for name, value in scope["headers"] if name == b"x-token"]
    if path == "/login":
        session.login(user)
        await _answer(send, 200, b"ok")
    elif path == "/ticket" and tokens:
        token_user = TOKENS.get(tokens[0]) if len(tokens) == 1 else None
        if token_user is None:
            await _answer(send, 401, b"no")
            return
        await _answer(send, 200, issue_ticket(scope, token_user).encode())
    elif path == "/ticket" and session.user_id is not None:
        await _answer(send, 200, issue_ticket(scope, session.user_id).encode())
    elif path == "/logout":
        session.logout()
        await _answer(send, 200, b"bye")
    elif path == "/rotate":
        session.rotate()
        await _answer(send, 200, b"rotated")
    elif path == "/revoke":
        await _answer(send, 200, str(await session.revoke_user(user)).encode())
    elif path == "/login-and-ticket":
        session.login(user)
        try:
            ticket = issue_ticket(scope, user)
        except ValueError:
            await _answer(send, 409, b"issue the ticket in a later request")
            return
        await _answer(send, 200, ticket.encode())
    else:
        await _answer(send, 404, b"no")


@dataclass
class Stack:
    """`SessionMiddleware` -> guard -> `app`, on one store."""

    store: Store
    clock: FakeClock
    sink: RecordingSink

    def __post_init__(self) -> None:
        events = EventEmitter([self.sink])
        self.guard = WebSocketGuardMiddleware(
            app,
            WebSocketSettings(
                allowed_origins=("https://app.example",), revocation_check_seconds=TICK
            ),
            store=self.store,
            secret_keys=[KEY],
            events=events,
            clock=self.clock,
        )
        self.asgi = SessionMiddleware(
            self.guard,
            SessionSettings(insecure_cookie_over_http=True),
            store=self.store,
            secret_keys=[KEY],
            events=events,
            clock=self.clock,
        )

    async def http(
        self, method: str, path: str, cookie: str | None = None, token: str | None = None
    ) -> tuple[int, str, str | None]:
        """Status, body text, and the session cookie the response set (if any)."""
        headers = {"x-token": token} if token else None
        async with asgi_client(self.asgi) as client:
            if cookie:
                client.cookies.set("session", cookie)
            answer = await client.request(method, path, headers=headers)
        return answer.status_code, answer.text, answer.cookies.get("session")

    async def login(self, user: str) -> str:
        status, _, cookie = await self.http("POST", f"/login?user={user}")
        assert status == 200
        assert cookie is not None
        return cookie

    async def ticket(self, cookie: str | None = None, token: str | None = None) -> str:
        status, text, _ = await self.http("GET", "/ticket", cookie, token)
        assert status == 200, text
        return text

    def socket(self, ticket: str) -> Scope:
        return ws_scope(path="/ws", origin=PAGE, query=b"ticket=" + ticket.encode())

    async def watcher_ticks(self) -> None:
        # Real time on purpose: the watcher's tick is an asyncio sleep of `TICK`.
        await asyncio.sleep(TICK * _TICKS_WAITED)


@pytest.fixture(scope="module")
def redis_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("ws-ticket-redis")) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def stack(request: pytest.FixtureRequest, sink: RecordingSink) -> AsyncIterator[Stack]:
    """The stack on the memory store (fake clock) and on a real Redis (its own clock
    keeps the TTLs; the fake clock only decides session expiry and ticket age)."""
    clock = FakeClock()
    if request.param == "memory":
        yield Stack(MemoryStore(clock=clock), clock, sink)
        return
    from bastion.stores.redis import RedisStore

    server: RedisServer = request.getfixturevalue("redis_standalone")
    store = RedisStore(server.url, key_prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        yield Stack(store, clock, sink)
    finally:
        await store.close()


def only(sink: RecordingSink, reason: str) -> dict[str, object]:
    found = [record for record in sink.records if record["reason"] == reason]
    assert len(found) == 1, sink.reasons()
    return found[0]


# --- the handshake ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        pytest.param(None, "", id="ws-ticket-session-lives-ok"),
        pytest.param("logout", r.REASON_SESSION_REVOKED, id="ws-ticket-after-logout"),
        pytest.param("revoke", r.REASON_SESSION_REVOKED, id="ws-ticket-after-revoke-user"),
        pytest.param("rotate", r.REASON_SESSION_REVOKED, id="ws-ticket-after-session-rotated"),
    ],
)
async def test_a_ticket_of_an_ended_session_is_refused(
    stack: Stack, ending: str | None, reason: str
) -> None:
    """The ticket was fetched while the session lived, then the session ended before
    the socket opened (within the ticket's lifetime): no socket for a signed-out user."""
    cookie = await stack.login("alice")
    ticket = await stack.ticket(cookie)
    if ending == "logout":
        assert (await stack.http("POST", "/logout", cookie))[0] == 200
    elif ending == "revoke":
        admin = await stack.login("admin")
        assert (await stack.http("POST", "/revoke?user=alice", admin))[1] == "1"
    elif ending == "rotate":
        assert (await stack.http("POST", "/rotate", cookie))[0] == 200
    if not reason:
        async with connected(stack.asgi, stack.socket(ticket)) as client:
            await client.say(OK)
            assert (await client.next())["text"] == OK
        assert r.REASON_SESSION_REVOKED not in stack.sink.reasons()
        return
    assert await refused(stack.asgi, stack.socket(ticket)) == 1008
    record = only(stack.sink, reason)
    assert (record["kind"], record["action"], record["status"]) == (KIND_AUTHN_FAIL, "blocked", 403)


# --- the live socket ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "closed"),
    [
        pytest.param(None, False, id="ws-ticket-socket-session-lives-ok"),
        pytest.param("other-logout", False, id="ws-ticket-socket-other-session-logout-ok"),
        pytest.param("logout", True, id="ws-ticket-socket-after-logout"),
        pytest.param("revoke", True, id="ws-ticket-socket-after-revoke-user"),
        pytest.param("rotate", True, id="ws-ticket-socket-after-session-rotated"),
    ],
)
async def test_a_live_ticket_socket_ends_with_its_session(
    stack: Stack, ending: str | None, closed: bool
) -> None:
    """Closed (1008, `session-revoked`) within a watcher tick of its session's end, as a
    session-authenticated socket is; the end of another session of the same user (a
    second browser logging out) leaves it open."""
    cookie = await stack.login("alice")
    other = await stack.login("alice")  # the same user in a second browser
    ticket = await stack.ticket(cookie)
    async with connected(stack.asgi, stack.socket(ticket)) as client:
        await client.say(OK)
        assert (await client.next())["text"] == OK
        if ending == "logout":
            assert (await stack.http("POST", "/logout", cookie))[0] == 200
        elif ending == "other-logout":
            assert (await stack.http("POST", "/logout", other))[0] == 200
        elif ending == "revoke":
            admin = await stack.login("admin")
            assert (await stack.http("POST", "/revoke?user=alice", admin))[1] == "2"
        elif ending == "rotate":
            assert (await stack.http("POST", "/rotate", cookie))[0] == 200
        if not closed:
            await stack.watcher_ticks()
            await client.say(OK)
            assert (await client.next())["text"] == OK
        else:
            assert await client.next() == {"type": "websocket.close", "code": 1008}
            await client.finish()
    if not closed:
        assert r.REASON_SESSION_REVOKED not in stack.sink.reasons()
        return
    record = only(stack.sink, r.REASON_SESSION_REVOKED)
    assert (record["kind"], record["details"]) == (KIND_AUTHN_FAIL, {"close_code": 1008})


async def test_a_ticket_minted_without_a_session_is_bound_to_none(stack: Stack) -> None:
    """ws-ticket-without-session-ok: a ticket from a request the app authenticated by
    a token, with no session, keeps the behaviour tickets had: the end of that user's
    browser sessions does not reach it (bans, the idle timeout and the ticket's own
    lifetime still do)."""
    ticket = await stack.ticket(token="token-for-carol")
    browser = await stack.login("carol")
    async with connected(stack.asgi, stack.socket(ticket)) as client:
        await client.say(OK)
        assert (await client.next())["text"] == OK
        assert (await stack.http("POST", "/logout", browser))[0] == 200
        admin = await stack.login("admin")
        assert (await stack.http("POST", "/revoke?user=carol", admin))[0] == 200
        await stack.watcher_ticks()
        await client.say(OK)
        assert (await client.next())["text"] == OK
    assert r.REASON_SESSION_REVOKED not in stack.sink.reasons()


# --- tickets that cannot be bound, or that name no session ---------------------------


def legacy_ticket(clock: FakeClock, user: str) -> str:
    """A ticket of the earlier form, `[user_id, nonce]`, signed with the server's key."""
    payload = base64.urlsafe_b64encode(json.dumps([user, "n" * 22]).encode()).rstrip(b"=")
    return Signer([KEY], purpose=TICKET_PURPOSE, clock=clock).sign(payload).decode()


@pytest.mark.parametrize(
    "form",
    [
        pytest.param("current", id="ws-ticket-current-form-ok"),
        pytest.param("legacy", id="ws-ticket-legacy-unbound-form"),
    ],
)
async def test_a_ticket_of_the_earlier_form_is_refused(stack: Stack, form: str) -> None:
    """A ticket minted before the binding names no session, so it could outlive one:
    refused. Tickets live `ticket_max_age_seconds` (at most five minutes), so a client
    holding one fetches another."""
    cookie = await stack.login("alice")
    ticket = (
        await stack.ticket(cookie) if form == "current" else legacy_ticket(stack.clock, "alice")
    )
    if form == "current":
        async with connected(stack.asgi, stack.socket(ticket)) as client:
            await client.say(OK)
            assert (await client.next())["text"] == OK
        return
    assert await refused(stack.asgi, stack.socket(ticket)) == 1008
    assert only(stack.sink, r.REASON_TICKET_INVALID)["status"] == 403


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/ticket", 200, id="ws-ticket-after-login-request-ok"),
        pytest.param(
            "/login-and-ticket?user=alice", 409, id="ws-ticket-issued-while-session-rotates"
        ),
    ],
)
async def test_no_ticket_from_a_session_whose_id_is_changing(
    stack: Stack, path: str, status: int
) -> None:
    """A login (or `rotate`, `logout`) replaces the session's id as the response
    starts: a ticket issued in that request could be bound to no live session (and one
    bound to none would outlive it), so `issue_ticket` raises; the next request gets
    one."""
    cookie = await stack.login("alice") if path == "/ticket" else None
    answer_status, text, _ = await stack.http("POST" if cookie is None else "GET", path, cookie)
    assert answer_status == status
    if status == 200:
        async with connected(stack.asgi, stack.socket(text)) as client:
            await client.say(OK)
            assert (await client.next())["text"] == OK


async def test_the_handshake_fails_closed_when_the_session_cannot_be_read(
    sink: RecordingSink,
) -> None:
    """ws-ticket-session-check-store-down: a bound ticket whose session the store
    cannot confirm opens no socket (authentication fails closed), answered as an
    outage (close 1013, `sys_availability`), as a bearer whose revocation list cannot
    be read is, not as the caller's fault."""
    clock = FakeClock()
    store = SwitchableStore(clock=clock)
    stack = Stack(store, clock, sink)
    cookie = await stack.login("alice")
    ticket = await stack.ticket(cookie)
    store.down = True
    assert await refused(stack.asgi, stack.socket(ticket)) == 1013
    assert only(sink, r.REASON_STORE_DOWN)["kind"] == KIND_SYS_AVAILABILITY


async def test_a_ticket_never_carries_the_session_id(stack: Stack) -> None:
    """ws-ticket-carries-no-session-id: a ticket travels in the query string (access
    logs, history), so it names its session by the store key, a SHA-256 of the id,
    never by the id, the cookie's bearer secret."""
    cookie = await stack.login("alice")
    ticket = await stack.ticket(cookie)
    value = ticket.split(".")[0]
    payload = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    assert cookie not in ticket
    assert cookie not in json.dumps(payload)
    assert payload[2] == store_key(cookie)


# --- the ticket's payload (the core) --------------------------------------------------

NONCE = "n" * 22
BOUND = "session:" + "a" * 64


def signed_payload(clock: FakeClock, payload: object) -> str:
    """A payload signed with the server's ticket key: what only we (or a key holder)
    could mint; the checks below are defence in depth behind the signature."""
    value = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
    return Signer([KEY], purpose=TICKET_PURPOSE, clock=clock).sign(value).decode()


@pytest.mark.parametrize(
    ("payload", "user", "session_key", "reason"),
    [
        pytest.param(["alice", NONCE, None], "alice", None, "", id="ws-ticket-bound-to-none-ok"),
        pytest.param(["alice", NONCE, BOUND], "alice", BOUND, "", id="ws-ticket-bound-ok"),
        pytest.param(
            ["alice", NONCE], None, None, r.REASON_TICKET_INVALID, id="ws-ticket-two-elements"
        ),
        pytest.param(
            ["alice", NONCE, 5],
            None,
            None,
            r.REASON_TICKET_INVALID,
            id="ws-ticket-session-key-not-text",
        ),
        pytest.param(
            ["alice", NONCE, ""],
            None,
            None,
            r.REASON_TICKET_INVALID,
            id="ws-ticket-session-key-empty",
        ),
        pytest.param(
            ["alice", NONCE, "s" * (MAX_SESSION_KEY_CHARS + 1)],
            None,
            None,
            r.REASON_TICKET_INVALID,
            id="ws-ticket-session-key-too-long",
        ),
        pytest.param(
            ["alice", NONCE, None, "x"],
            None,
            None,
            r.REASON_TICKET_INVALID,
            id="ws-ticket-extra-element",
        ),
        pytest.param(
            {"u": "alice"}, None, None, r.REASON_TICKET_INVALID, id="ws-ticket-payload-not-a-list"
        ),
    ],
)
def test_ticket_payload(
    payload: object, user: str | None, session_key: str | None, reason: str
) -> None:
    clock = FakeClock()
    tickets = WebSocketTickets([KEY], max_age_seconds=30, clock=clock)
    checked = tickets.check(signed_payload(clock, payload))
    assert (checked.user_id, checked.session_key, checked.reason) == (user, session_key, reason)


def test_issue_binds_and_refuses_what_it_could_not_check() -> None:
    tickets = WebSocketTickets([KEY], max_age_seconds=30, clock=FakeClock())
    assert tickets.check(tickets.issue("alice", session_key=BOUND)).session_key == BOUND
    assert tickets.check(tickets.issue("alice")).session_key is None
    with pytest.raises(ValueError, match="session_key"):
        tickets.issue("alice", session_key="")
    with pytest.raises(ValueError, match="too long"):
        tickets.issue("a" * MAX_TICKET_CHARS)  # `check` would refuse it at the handshake
    longest = "a" * 600  # a user id of a few hundred characters still fits
    assert tickets.check(tickets.issue(longest, session_key=BOUND)).user_id == longest
