"""A new session's save hook, registered by its first change instead of up front.

The session layer keeps the hook's place among the flow's hooks (`_SAVE_LATER`) and
the session fills it on the first change `_commit` looks for (`Session._save_later`).
The reference is the layer as it was: the hook registered as the new session is
made (`EagerSessions`, below). Both get the same applications, which change the
session in every way there is, at every moment of the exchange (before the response
starts, between start and body, after the body, after the application returned),
alone and under `Shield` (where other stages' hooks sit outside and inside the
session's); the messages sent, the store's writes and the events must be the same.
"""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from bastion.events import EventEmitter
from bastion.sessions import (
    _SAVE_LATER,
    Session,
    SessionMiddleware,
    SessionSettings,
    _commit,
)
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.stages import Flow
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from tests.conftest import RecordingSink
from tests.sessions.harness import KEY
from tests.sessions.test_new_session import WatchedStore
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio


_LAZY_ENTER = SessionMiddleware.enter


def eager_enter(self: SessionMiddleware, flow: Flow) -> Any:
    """The reference `enter`: a new session's save hook registered as the session is
    made, at the place the layer keeps for it (the layer as it was)."""
    pending = _LAZY_ENTER(self, flow)
    session = flow.scope.get("session")
    if pending is None and isinstance(session, Session) and session._unsaved is not None:
        _, level, _ = session._unsaved
        session._unsaved = None
        assert flow.hooks[level] is _SAVE_LATER
        flow.hooks[level] = (None, partial(_commit, session, self, flow, level, flow.scope))
    return pending


def _set_item(session: Session) -> None:
    session["k"] = "v"


def _delete_item(session: Session) -> None:
    dict.__setitem__(session, "k", "v")  # present, yet no change seen
    del session["k"]


def _copy_changed_first(session: Session) -> None:
    copy.copy(session)["draft"] = 1  # a copy changed first takes nothing of the save
    session["user"] = "alice"


def _deepcopy_changed_first(session: Session) -> None:
    copy.deepcopy(session)["draft"] = 1
    session["user"] = "alice"


def _only_a_copy_changed(session: Session) -> None:
    copy.copy(session)["draft"] = 1


def _pickled(session: Session) -> None:
    assert dict(pickle.loads(pickle.dumps(session))) == dict(session)  # noqa: S301 - its own bytes


CHANGES: dict[str, Callable[[Session], Any]] = {
    "untouched": lambda session: None,
    "read-only": lambda session: (session.get("k"), "k" in session, dict(session)),
    "set-item": _set_item,
    "delete-item": _delete_item,
    "update": lambda session: session.update(k="v"),
    "setdefault-new": lambda session: session.setdefault("k", "v"),
    "pop-missing": lambda session: session.pop("k", None),
    "clear": lambda session: session.clear(),
    "in-place-or": lambda session: session.__ior__({"k": "v"}),
    "marked-modified": lambda session: setattr(session, "modified", True),
    "marked-unmodified": lambda session: setattr(session, "modified", False),
    "rotated": lambda session: session.rotate(),
    "logged-in": lambda session: session.login("alice"),
    "logged-out": lambda session: session.logout(),
    "csrf-secret-drawn": lambda session: session.csrf_secret(),
    "roles-changed": lambda session: session.change_roles(["admin"]),
    "copy-changed-first": _copy_changed_first,
    "deepcopy-changed-first": _deepcopy_changed_first,
    "only-a-copy-changed": _only_a_copy_changed,
    "pickled": _pickled,
}
MOMENTS = ("before-start", "after-start", "after-body", "after-return")


def application(change: str, moment: str, kept: list[Session]) -> ASGIApp:
    act = CHANGES[change]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        session: Session = scope["session"]
        kept.append(session)
        if moment == "before-start":
            act(session)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if moment == "after-start":
            act(session)
        await send({"type": "http.response.body", "body": b"ok"})
        if moment == "after-body":
            act(session)

    return app


_RANDOM = re.compile(rb"nonce-[A-Za-z0-9_-]+|=[A-Za-z0-9_-]{20,}|\b[0-9a-f]{64}\b|\b[0-9a-f]{16}\b")


def normalised(value: object) -> str:
    return _RANDOM.sub(b"<random>", repr(value).encode()).decode()


async def exchange(target: ASGIApp, kept: list[Session], moment: str, change: str) -> list[Message]:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 443),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await target(scope, receive, send)
    if moment == "after-return":
        CHANGES[change](kept[-1])  # the application kept its session past the request
    return sent


def alone(app: ASGIApp, store: WatchedStore, sink: RecordingSink) -> ASGIApp:
    return SessionMiddleware(
        app,
        SessionSettings(),
        store=store,
        secret_keys=[KEY],
        events=EventEmitter([sink]),
        clock=FakeClock(),
    )


def shielded(app: ASGIApp, store: WatchedStore, sink: RecordingSink) -> ASGIApp:
    settings = {
        "mode": "development",
        "secret_keys": [KEY],
        "transport": {"allowed_hosts": ["testserver"]},
    }
    return Shield(app, Settings.model_validate(settings), events=EventEmitter([sink]), store=store)


async def run(
    build: Callable[..., ASGIApp], change: str, moment: str
) -> tuple[str, list[str], list[str]]:
    store, sink = WatchedStore(clock=FakeClock()), RecordingSink()
    kept: list[Session] = []
    target = build(application(change, moment, kept), store, sink)
    sent = await exchange(target, kept, moment, change)
    kinds = [str(r.get("kind")) for r in sink.records if r.get("kind") != "sys_startup"]
    return normalised(sent), [normalised(key) for key in store.writes], kinds


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("build", [alone, shielded], ids=["alone", "shield"])
async def test_the_save_waits_for_a_change_and_answers_as_before(
    monkeypatch: pytest.MonkeyPatch, build: Callable[..., ASGIApp], change: str, moment: str
) -> None:
    lazy = await run(build, change, moment)
    monkeypatch.setattr(SessionMiddleware, "enter", eager_enter)
    assert lazy == await run(build, change, moment)


@pytest.mark.parametrize("build", [alone, shielded], ids=["alone", "shield"])
async def test_the_cases_are_not_vacuous(build: Callable[..., ASGIApp]) -> None:
    """A change before the start saves (a cookie, a write); none, or one after, does not."""
    sent, writes, _ = await run(build, "set-item", "before-start")
    assert "set-cookie" in sent
    assert len(writes) == 1
    for change, moment in (("untouched", "before-start"), ("set-item", "after-start")):
        sent, writes, _ = await run(build, change, moment)
        assert "set-cookie" not in sent
        assert writes == []


async def test_an_untouched_session_leaves_only_its_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hook is made for a new session nobody changes: its place stays the edit
    that appends nothing, and the session's link to the request goes with it."""
    seen: list[tuple[Any, Any]] = []

    def watching(self: SessionMiddleware, flow: Flow) -> Any:
        pending = _LAZY_ENTER(self, flow)
        seen.append((flow.hooks[-1], flow.scope["session"]._unsaved))
        return pending

    monkeypatch.setattr(SessionMiddleware, "enter", watching)
    store, sink = WatchedStore(clock=FakeClock()), RecordingSink()
    kept: list[Session] = []
    app = alone(application("untouched", "before-start", kept), store, sink)
    await exchange(app, kept, "before-start", "untouched")
    ((hook, unsaved),) = seen
    assert hook is _SAVE_LATER
    assert unsaved is not None
    assert unsaved[0]() is None  # the flow is gone with the request: nothing keeps it


@pytest.mark.parametrize(
    "start",
    [
        {"type": "http.response.start", "status": 200},
        {"type": "http.response.start", "status": 200, "headers": ((b"x-app", b"1"),)},
    ],
    ids=["start-without-headers", "start-with-tuple-headers"],
)
async def test_an_untouched_session_sends_the_start_as_the_app_did(start: Message) -> None:
    """The place kept for the hook is an edit that changes nothing: the very message
    the application sent goes out (no copy, no `headers` added)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b"ok"})

    store, sink = WatchedStore(clock=FakeClock()), RecordingSink()
    sent = await exchange(alone(app, store, sink), [], "before-start", "untouched")
    assert sent[0] is start
