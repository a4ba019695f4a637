"""The request without a `Cookie` line (the common case) is decided before any cookie
is parsed: it must end exactly as every other way of arriving without a session of
ours (other applications' cookies only, a garbage value, a `Cookie` name not
lower-cased, which the layer matches as sent), for every use of the new session."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.events import EventEmitter
from bastion.sessions import Session, SessionMiddleware, SessionSettings, new_session_id
from bastion.types import Message, Receive, Scope, Send
from tests.conftest import RecordingSink
from tests.sessions.harness import KEY
from tests.sessions.test_new_session import ACTIONS, COOKIE, WatchedStore
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio

UNKNOWN_ID = new_session_id()
# Header lines, and how many store reads the arrival costs (only an id is looked up).
ARRIVALS = [
    pytest.param([], 0, id="session-arrival-no-cookie-line"),
    pytest.param([(b"cookie", b"theme=dark; lang=en")], 0, id="session-arrival-other-cookies"),
    pytest.param([(b"cookie", b"sessionx=1; xsession=2")], 0, id="session-arrival-name-inside"),
    pytest.param([(b"cookie", f"{COOKIE}=../x".encode())], 0, id="session-arrival-garbage"),
    pytest.param(
        [(b"Cookie", f"{COOKIE}={UNKNOWN_ID}".encode())], 0, id="session-arrival-name-not-lowered"
    ),
    pytest.param(
        [(b"cookie", f"{COOKIE}={UNKNOWN_ID}; {COOKIE}={UNKNOWN_ID}".encode())],
        0,
        id="session-arrival-twice",
    ),
    pytest.param([(b"cookie", f"{COOKIE}={UNKNOWN_ID}".encode())], 1, id="session-arrival-unknown"),
]


async def outcome(action: str, headers: list[tuple[bytes, bytes]]) -> tuple[Any, ...]:
    """What a request leaves: status, response headers (the new id blanked), store
    writes, events, and what the application saw of its session."""
    store = WatchedStore(clock=FakeClock())
    sink = RecordingSink()
    seen: list[tuple[object, ...]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        session = scope["session"]
        seen.append((type(session), dict(session), session.is_new, scope["bastion"].session))
        ACTIONS[action](session)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    layer = SessionMiddleware(
        app,
        SessionSettings(cookie_name=COOKIE, insecure_cookie_over_http=True),
        store=store,
        secret_keys=[KEY],
        events=EventEmitter([sink]),
        clock=FakeClock(),
    )
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await layer(scope, receive, send)
    start = sent[0]
    lines = [
        (name, value.split(b";")[0].split(b"=")[0] if name == b"set-cookie" else value)
        for name, value in start["headers"]
    ]
    kinds = [record["kind"] for record in sink.records]
    assert seen[0][3] is scope["session"]
    return start["status"], lines, len(store.writes), kinds, seen[0][:3], len(store.reads)


@pytest.mark.parametrize(("headers", "reads"), ARRIVALS)
@pytest.mark.parametrize("action", list(ACTIONS))
async def test_every_arrival_without_a_session_ends_alike(
    action: str, headers: list[tuple[bytes, bytes]], reads: int
) -> None:
    *reference, _ = await outcome(action, [])
    *found, found_reads = await outcome(action, headers)
    assert found == reference
    assert found_reads == reads


async def test_a_new_session_is_bound_to_the_layers_store() -> None:
    """`session-new-bound-to-store`: the session of a request without a cookie is the
    manager's (made without `Session.__init__`): it can end a user's sessions."""
    layer = SessionMiddleware(
        lambda *a: None,  # type: ignore[arg-type]  # never called
        SessionSettings(),
        secret_keys=[KEY],
        events=EventEmitter([]),
    )
    session = layer.manager.new_session()
    assert (type(session), dict(session), session.is_new, session.modified) == (
        Session,
        {},
        True,
        False,
    )
    assert await session.revoke_user("alice") == 0
