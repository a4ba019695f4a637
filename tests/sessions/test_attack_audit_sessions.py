"""Session attacks found in the attack audit, each beside the legitimate use that must
keep working: revocation of long-active sessions, sessions ended while a request of
theirs is in flight, and rotation against the absolute timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.events import EventEmitter
from bastion.sessions import (
    EXPIRED_GRACE_SECONDS,
    Session,
    SessionMiddleware,
    SessionSettings,
    owner_key,
    store_key,
)
from bastion.stores import MemoryStore, Store
from bastion.stores.redis import RedisStore
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from tests.conftest import asgi_client
from tests.sessions.harness import KEY, Harness, build, session_app
from tests.sessions.test_attacks import cookie_of
from tests.support.clock import FakeClock
from tests.support.redis import redis_server

pytestmark = pytest.mark.anyio

MINUTE = 60.0
HOUR = 3600.0


class Gate:
    """An app wrapper whose `/slow*` requests wait, after the session loaded, until
    the test opens the gate; then they act on the session and answer."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if not path.startswith("/slow"):
            await session_app(scope, receive, send)
            return
        session: Session = scope["session"]
        self.entered.set()
        await self.release.wait()
        if path == "/slow-write":
            session["cart"] = "full"
        elif path == "/slow-roles":
            session.change_roles(["admin"])
        elif path == "/slow-login":
            session.login("alice")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _raw(app: ASGIApp, method: str, path: str, session_id: str) -> list[Message]:
    """One request with the session cookie, driven by hand (so a test can start it,
    act while it waits in the app, then let it answer)."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"cookie", f"session={session_id}".encode())],
        "client": ("127.0.0.1", 5000),
    }
    await app(scope, receive, send)
    return sent


async def call(
    h: Harness | _Stack, method: str, url: str, session_id: str | None = None
) -> httpx.Response:
    """`tests.sessions.test_attacks.call`, for either stack."""
    headers = {"cookie": f"session={session_id}"} if session_id else {}
    async with asgi_client(h.app) as client:
        return await client.request(method, url, headers=headers)


class _Stack:
    """`SessionMiddleware(Gate())` on the given store, with a fake clock for the layer."""

    def __init__(self, store: Store, clock: FakeClock) -> None:
        self.clock = clock
        self.store = store
        self.gate = Gate()
        self.settings = SessionSettings(insecure_cookie_over_http=True)
        self.app = SessionMiddleware(
            self.gate,
            self.settings,
            store=self.store,
            secret_keys=[KEY],
            events=EventEmitter([]),
            clock=self.clock,
        )


@pytest.fixture(params=["memory", "redis"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[_Stack]:
    """The in-flight cases on the memory store and on a real Redis (whose own clock
    keeps the TTLs; the layer's fake clock only decides when the idle clock moves)."""
    clock = FakeClock()
    if request.param == "memory":
        yield _Stack(MemoryStore(clock=clock), clock)
        return
    with redis_server(tmp_path / "redis") as server:
        store = RedisStore(server.url)
        try:
            yield _Stack(store, clock)
        finally:
            await store.close()


# --- revoke_user reaches every live session ------------------------------------------


@pytest.mark.parametrize(
    "active_minutes",
    [
        pytest.param(0, id="session-revoke-fresh-login-ok"),
        pytest.param(50, id="session-revoke-after-idle-touches"),
        pytest.param(11 * 60, id="session-revoke-near-absolute-timeout"),
    ],
)
async def test_revoke_reaches_a_session_kept_alive_by_use(active_minutes: int) -> None:
    """A session used every 25 minutes outlives the TTL it had at login; "log out
    everywhere" (after a password reset, say) must still end it."""
    h = build()
    alice = cookie_of(await call(h, "POST", "/login?u=alice"))
    bob = cookie_of(await call(h, "POST", "/login?u=bob"))
    assert alice is not None
    assert bob is not None
    for _ in range(active_minutes // 25):
        h.clock.now += 25 * MINUTE
        assert (await call(h, "GET", "/", alice)).json()["user"] == "alice"
        assert (await call(h, "GET", "/", bob)).json()["user"] == "bob"
    revoked = await call(h, "POST", "/revoke?u=alice", bob)
    assert revoked.json()["result"] == 1
    assert (await call(h, "GET", "/", alice)).json()["new"] is True
    assert (await call(h, "GET", "/", bob)).json()["user"] == "bob"


async def test_on_redis_the_owner_index_outlives_the_session(tmp_path: Path) -> None:
    """The Redis form of the case above, whose TTLs run on the server's clock: the
    index entry written at login lasts as long as the session can (its absolute
    timeout), not only its first idle window, after which `revoke_user` would find
    nothing while the session, kept in use, lives on."""
    settings = SessionSettings(insecure_cookie_over_http=True)
    with redis_server(tmp_path / "redis") as server:
        store = RedisStore(server.url)
        try:
            s = _Stack(store, FakeClock())
            alice = cookie_of(await call(s, "POST", "/login?u=alice"))
            assert alice is not None
            with server.client() as client:
                index_ttl_ms = client.pttl(store.owner_key(owner_key("alice")))
                session_ttl_ms = client.pttl(store.redis_key(store_key(alice)))
        finally:
            await store.close()
    assert session_ttl_ms <= (settings.idle_timeout_seconds + EXPIRED_GRACE_SECONDS) * 1000
    assert index_ttl_ms > (settings.absolute_timeout_seconds - MINUTE) * 1000


# --- a session ended while one of its requests is in flight stays ended ------------


@pytest.mark.parametrize(
    ("slow_path", "ending"),
    [
        pytest.param("/slow-touch", "/logout", id="session-resurrect-logout-touch"),
        pytest.param("/slow-write", "/logout", id="session-resurrect-logout-write"),
        pytest.param("/slow-roles", "/logout", id="session-resurrect-logout-rotate"),
        pytest.param("/slow-touch", "/revoke?u=alice", id="session-resurrect-revoke-touch"),
        pytest.param("/slow-write", "/revoke?u=alice", id="session-resurrect-revoke-write"),
    ],
)
async def test_a_request_in_flight_cannot_resurrect_an_ended_session(
    stack: _Stack, slow_path: str, ending: str
) -> None:
    """A request (the thief's slow upload, or the victim's own long poll) loads the
    session, the session is ended (logout, or "log out everywhere"), then the request
    answers: its save must not bring the session back, under its id or a new one."""
    s = stack
    alice = cookie_of(await call(s, "POST", "/login?u=alice"))
    assert alice is not None
    s.clock.now += 2 * MINUTE  # the idle clock is due to move at the next save
    in_flight = asyncio.ensure_future(_raw(s.app, "POST", slow_path, alice))
    await s.gate.entered.wait()
    ended = await call(s, "POST", ending, alice)
    assert ended.status_code == 200
    s.gate.release.set()
    sent = await in_flight
    assert sent[0]["status"] == 200
    for name, value in sent[0]["headers"]:  # no new id handed to the late request
        assert not (name == b"set-cookie" and b"Max-Age=0" not in value)
    assert (await call(s, "GET", "/", alice)).json()["new"] is True


@pytest.mark.parametrize(
    "slow_path",
    [
        pytest.param("/slow-touch", id="session-in-flight-touch-ok"),
        pytest.param("/slow-write", id="session-in-flight-write-ok"),
        pytest.param("/slow-roles", id="session-in-flight-rotate-ok"),
    ],
)
async def test_a_slow_request_of_a_live_session_still_saves(stack: _Stack, slow_path: str) -> None:
    s = stack
    alice = cookie_of(await call(s, "POST", "/login?u=alice"))
    assert alice is not None
    s.clock.now += 2 * MINUTE
    in_flight = asyncio.ensure_future(_raw(s.app, "POST", slow_path, alice))
    await s.gate.entered.wait()
    s.gate.release.set()
    sent = await in_flight
    renewed = [v for n, v in sent[0]["headers"] if n == b"set-cookie"]
    current = alice
    if slow_path == "/slow-roles":
        assert len(renewed) == 1
        current = renewed[0].split(b";")[0].partition(b"=")[2].decode()
        assert current != alice
    shown = (await call(s, "GET", "/", current)).json()
    assert shown["user"] == "alice"
    if slow_path == "/slow-write":
        assert shown["data"] == {"cart": "full"}
    if slow_path == "/slow-roles":
        assert shown["data"] == {"roles": ["admin"]}


class _Tap:
    """Taps the store's steps a session save uses: once armed, records the steps of
    the next save, and holds the save after its first step until the test lets it
    go (a store round trip, stretched as far as the test likes). The test's own
    requests meanwhile pass untapped."""

    STEPS = ("get", "set", "delete", "touch", "replace", "set_if_absent", "add_to_owner")

    def __init__(self, store: Store) -> None:
        self.calls: list[str] = []
        self.armed = False
        self.held = asyncio.Event()
        self.resume = asyncio.Event()
        for name in self.STEPS:
            setattr(store, name, self._tapped(name, getattr(store, name)))

    def _tapped(self, name: str, step: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def tapped(*args: Any, **kwargs: Any) -> Any:
            result = await step(*args, **kwargs)
            if self.armed:
                self.calls.append(name)
                if len(self.calls) == 1:
                    self.armed = False
                    self.held.set()
                    await self.resume.wait()
                    self.armed = True
            return result

        return tapped


@pytest.mark.parametrize(
    ("slow_path", "ending"),
    [
        pytest.param("/slow-touch", "/logout", id="session-resurrect-between-store-steps-touch"),
        pytest.param(
            "/slow-write", "/revoke?u=alice", id="session-resurrect-between-store-steps-write"
        ),
        pytest.param("/slow-touch", None, id="session-write-back-one-store-step-touch-ok"),
        pytest.param("/slow-write", None, id="session-write-back-one-store-step-write-ok"),
    ],
)
async def test_no_store_step_of_a_write_back_can_be_followed_by_a_resurrection(
    stack: _Stack, slow_path: str, ending: str | None
) -> None:
    """The write-back of an existing session is one atomic store step (`replace`):
    a session ended just after any step of it stays ended. A check then a write
    (`touch`, `set`) left one round trip between them, in which a logout or "log
    out everywhere" was undone by the write. A live session's write-back still
    lands, in that one step."""
    s = stack
    alice = cookie_of(await call(s, "POST", "/login?u=alice"))
    assert alice is not None
    s.clock.now += 2 * MINUTE  # the idle clock is due to move at the next save
    tap = _Tap(s.store)
    in_flight = asyncio.ensure_future(_raw(s.app, "POST", slow_path, alice))
    await s.gate.entered.wait()
    tap.armed = True
    s.gate.release.set()
    await tap.held.wait()
    if ending is not None:
        assert (await call(s, "POST", ending, alice)).status_code == 200
    tap.resume.set()
    sent = await in_flight
    tap.armed = False
    assert sent[0]["status"] == 200
    shown = (await call(s, "GET", "/", alice)).json()
    if ending is not None:
        assert shown["new"] is True
    else:
        assert shown["user"] == "alice"
        assert shown["data"] == ({"cart": "full"} if slow_path == "/slow-write" else {})
    assert tap.calls == ["replace"]


async def test_a_login_in_flight_still_signs_in_after_a_logout(stack: _Stack) -> None:
    """A login is a new authentication: it goes on even if the session it started
    from was ended meanwhile (the legitimate side of the rotation case above)."""
    s = stack
    anonymous = cookie_of(await call(s, "POST", "/set?k=v"))
    assert anonymous is not None
    in_flight = asyncio.ensure_future(_raw(s.app, "POST", "/slow-login", anonymous))
    await s.gate.entered.wait()
    await call(s, "POST", "/logout", anonymous)
    s.gate.release.set()
    sent = await in_flight
    issued = [v for n, v in sent[0]["headers"] if n == b"set-cookie"]
    assert len(issued) == 1
    signed_in = issued[0].split(b";")[0].partition(b"=")[2].decode()
    assert (await call(s, "GET", "/", signed_in)).json()["user"] == "alice"
    assert (await call(s, "GET", "/", anonymous)).json()["new"] is True


# --- rotation does not restart the absolute timeout ---------------------------------


@pytest.mark.parametrize(
    ("renewal", "alive_after_twelve_hours"),
    [
        pytest.param("/rotate", False, id="session-rotate-keeps-absolute-timeout"),
        pytest.param("/roles?r=ops", False, id="session-roles-keep-absolute-timeout"),
        pytest.param("/login?u=alice", True, id="session-relogin-restarts-absolute-ok"),
    ],
)
async def test_rotation_does_not_extend_the_absolute_timeout(
    renewal: str, alive_after_twelve_hours: bool
) -> None:
    """The absolute timeout bounds how long a stolen id is any use; a holder who can
    make the app rotate the id (a periodic renewal, a role switch) must not reset it.
    Only a new login (a new authentication) starts a new absolute window."""
    h = build()
    current = cookie_of(await call(h, "POST", "/login?u=alice"))
    assert current is not None
    elapsed = 0.0
    renewed = False
    while elapsed < 12 * HOUR + 10 * MINUTE:
        h.clock.now += 20 * MINUTE
        elapsed += 20 * MINUTE
        if not renewed and elapsed >= 11 * HOUR:
            response = await call(h, "POST", renewal, current)
            renewed = True
        else:
            response = await call(h, "GET", "/", current)
        if response.json()["new"]:
            break
        current = cookie_of(response) or current
    assert renewed
    assert (response.json()["user"] == "alice") is alive_after_twelve_hours


# --- a login over another user's session --------------------------------------------


@pytest.mark.parametrize(
    ("second_user", "roles_after"),
    [
        pytest.param("bob", None, id="session-login-over-other-users-roles"),
        pytest.param("alice", ["admin"], id="session-login-same-user-again-ok"),
    ],
)
async def test_a_login_over_another_users_session_keeps_none_of_its_data(
    second_user: str, roles_after: list[str] | None
) -> None:
    """Alice's session (her roles, her data) is left in a shared browser, and Bob signs
    in over it: he must get none of it. Alice signing in again keeps her own."""
    h = build()
    first = await call(h, "GET", "/login?u=alice")
    session_id = cookie_of(first)
    assert session_id is not None
    granted = await call(h, "GET", "/roles?r=admin", session_id)
    session_id = cookie_of(granted) or session_id
    assert granted.json()["data"]["roles"] == ["admin"]
    again = await call(h, "GET", f"/login?u={second_user}", session_id)
    assert again.json()["user"] == second_user
    assert again.json()["data"].get("roles") == roles_after
    renewed = cookie_of(again)
    assert renewed is not None
    assert renewed != session_id  # a new id either way
    after = await call(h, "GET", "/", renewed)
    assert after.json()["user"] == second_user
    assert after.json()["data"].get("roles") == roles_after


async def test_an_anonymous_sessions_data_survives_the_login() -> None:
    """The legitimate carry-over: what an anonymous visitor put in the session (a
    cart) is still there once they sign in."""
    h = build()
    filled = await call(h, "GET", "/set?cart=full")
    session_id = cookie_of(filled)
    assert session_id is not None
    signed_in = await call(h, "GET", "/login?u=alice", session_id)
    assert signed_in.json()["data"] == {"cart": "full"}
