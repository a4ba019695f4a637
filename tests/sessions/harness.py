"""A small session-using application and a client that keeps cookies by hand.

The app's routes: `GET /` shows the session; `POST /set?k=v` writes; `POST /login?u=`
logs in (rotating the id); `POST /logout`; `POST /rotate`; `POST /revoke?u=` revokes
every session of a user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from bastion.events import EventEmitter
from bastion.sessions import Session, SessionMiddleware, SessionSettings
from bastion.stores import MemoryStore
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.support.clock import FakeClock as Clock
from tests.support.secret_watch import never_logged

KEY = never_logged("session-test-key-" + "abcdefghijklmnopqrstuvwxyz")


async def session_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    session: Session = scope["session"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    result: Any = None
    if path == "/set":
        session.update(query)
    elif path == "/login":
        session.login(query["u"])
    elif path == "/logout":
        session.logout()
    elif path == "/rotate":
        session.rotate()
    elif path == "/roles":
        session.change_roles(query["r"].split(",") if query.get("r") else [])
    elif path == "/revoke":
        result = await session.revoke_user(query["u"])
    body = json.dumps(
        {"data": dict(session), "user": session.user_id, "new": session.is_new, "result": result}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass
class Harness:
    app: ASGIApp
    store: MemoryStore
    clock: Clock
    settings: SessionSettings
    events: EventEmitter
    store_reads: list[str] = field(default_factory=list)


def build(settings: SessionSettings | None = None, events: EventEmitter | None = None) -> Harness:
    clock = Clock()
    store = CountingStore(clock=clock)
    settings = settings or SessionSettings(insecure_cookie_over_http=True)
    emitter = events or EventEmitter([])
    app = SessionMiddleware(
        session_app, settings, store=store, secret_keys=[KEY], events=emitter, clock=clock
    )
    return Harness(app, store, clock, settings, emitter, store.reads)


class CountingStore(MemoryStore):
    """A real memory store that also records which keys were read."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reads: list[str] = []

    async def get(self, key: str) -> bytes | None:
        self.reads.append(key)
        return await super().get(key)
