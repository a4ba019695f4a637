"""A new session (no cookie, or one that names no session of ours) as the response starts.

Most requests bring no session and leave the new one untouched: the layer then
skips the save (`SessionManager.commit` would write nothing and add no header). Every
use that does need the save must still get it, with the same headers and writes,
whichever way the request arrived at a new session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bastion.events import EventEmitter
from bastion.exceptions import StoreError
from bastion.sessions import Session, SessionMiddleware, SessionSettings, new_session_id
from bastion.stores import MemoryStore
from bastion.types import Receive, Scope, Send
from tests.conftest import RecordingSink, asgi_client
from tests.sessions.harness import KEY, CountingStore
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio

COOKIE = "session"


ACTIONS: dict[str, Callable[[Session], Any]] = {
    "untouched": lambda session: None,
    "read-only": lambda session: (session.get("k"), "k" in session, session.peek_csrf_secret()),
    "written": lambda session: session.__setitem__("k", "v"),
    "marked-modified": lambda session: setattr(session, "modified", True),
    "csrf-secret-drawn": lambda session: session.csrf_secret(),
    "rotated": lambda session: session.rotate(),
    "logged-in": lambda session: session.login("alice"),
    "logged-out": lambda session: session.logout(),
}
# What the response carries for each: (sets a session cookie, expires the cookie).
SAVES = {"written", "marked-modified", "csrf-secret-drawn", "rotated", "logged-in"}

ARRIVALS = {
    "no-cookie": None,
    "garbage-cookie": "../../etc/passwd",
    "unknown-id": new_session_id(),  # well-formed: looked up, found nowhere
}


class WatchedStore(CountingStore):
    """A real memory store that also records the keys written and deleted."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writes: list[str] = []

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        self.writes.append(key)
        await super().set(key, value, ttl_seconds)

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        self.writes.append(key)
        return await super().set_if_absent(key, value, ttl_seconds)

    async def replace(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        self.writes.append(key)
        return await super().replace(key, value, ttl_seconds)

    async def delete(self, key: str) -> bool:
        self.writes.append(key)
        return await super().delete(key)


class Built:
    def __init__(self, store: MemoryStore, action: str, sink: RecordingSink) -> None:
        self.store = store
        self.sink = sink

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            ACTIONS[action](scope["session"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        self.app = SessionMiddleware(
            app,
            SessionSettings(insecure_cookie_over_http=True),
            store=store,
            secret_keys=[KEY],
            events=EventEmitter([sink]),
            clock=FakeClock(),
        )

    async def call(self, cookie: str | None) -> httpx.Response:
        headers = {"cookie": f"{COOKIE}={cookie}"} if cookie else {}
        async with asgi_client(self.app) as client:
            return await client.get("/", headers=headers)


@pytest.mark.parametrize("arrival", list(ARRIVALS))
@pytest.mark.parametrize("action", list(ACTIONS))
async def test_a_new_session_is_saved_exactly_when_used(arrival: str, action: str) -> None:
    store = WatchedStore(clock=FakeClock())
    built = Built(store, action, RecordingSink())
    response = await built.call(ARRIVALS[arrival])
    assert response.status_code == 200
    cookies = response.headers.get_list("set-cookie")
    kinds = [record["kind"] for record in built.sink.records]
    saved = store.writes
    if action in SAVES:
        assert len(cookies) == 1
        assert cookies[0].startswith(f"{COOKIE}=")
        assert "Max-Age" not in cookies[0]
        assert response.headers["cache-control"] == "no-store"
        assert len(saved) == 1
        assert kinds[0] == "session_created"
    elif action == "logged-out":
        assert cookies == [f"{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"]
        assert response.headers["clear-site-data"] == '"cache", "cookies", "storage"'
        assert response.headers["cache-control"] == "no-store"
        assert saved == []
        assert kinds == []
    else:
        assert cookies == []
        assert "cache-control" not in response.headers
        assert "clear-site-data" not in response.headers
        assert saved == []
        assert kinds == []
    # Only a well-formed id is ever looked up.
    assert len(store.reads) == (1 if arrival == "unknown-id" else 0)


class DownStore(MemoryStore):
    """A store that is down: every call fails as a real backend's would."""

    async def get(self, key: str) -> bytes | None:
        raise StoreError("store down")

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        raise StoreError("store down")

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        raise StoreError("store down")

    async def replace(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        raise StoreError("store down")


@pytest.mark.parametrize(
    ("action", "status"),
    [
        pytest.param("untouched", 200, id="session-store-down-untouched-ok"),
        pytest.param("written", 503, id="session-store-down-write-refused"),
        pytest.param("logged-out", 200, id="session-store-down-new-logout-ok"),
    ],
)
async def test_a_store_that_is_down(action: str, status: int) -> None:
    """A request without a session never needs the store: it is served while the
    store is down, unless its new session must be saved (503, never a change lost)."""
    built = Built(DownStore(clock=FakeClock()), action, RecordingSink())
    response = await built.call(None)
    assert response.status_code == status
    if status == 503:
        assert "set-cookie" not in response.headers
        assert [r["reason"] for r in built.sink.records] == ["store-unavailable"]


async def test_a_cookie_naming_a_session_while_the_store_is_down_is_503() -> None:
    """`session-store-down-lookup-refused`: the lookup of a well-formed id fails closed."""
    built = Built(DownStore(clock=FakeClock()), "untouched", RecordingSink())
    response = await built.call(new_session_id())
    assert response.status_code == 503


def test_a_new_session_has_the_attributes_it_always_had() -> None:
    """The untouched attributes of a new session read as before (they start as
    class-level defaults now); a loaded one's come from its record."""
    session = Session()
    assert (session.is_new, session.store_key, session.id_hash, dict(session)) == (
        True,
        None,
        None,
        {},
    )
    assert not session.modified
    assert not session.rotate_requested
    assert not session.logout_requested
    assert not session.login_requested
    assert (session.roles_changed, session.user_id, session.peek_csrf_secret()) == (
        None,
        None,
        None,
    )
    other = Session({"a": 1})
    other["b"] = 2
    assert (other.modified, Session().modified, dict(other)) == (True, False, {"a": 1, "b": 2})
