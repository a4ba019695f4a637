"""The applications behind the WebSocket guard, for real server processes.

    serve("tests.websocket.app_factory:create_app", env={SETTINGS_ENV: ...})
    serve("tests.websocket.app_factory:create_channels_app", ...)

Both serve the same HTTP routes (a raw ASGI app) inside `SessionMiddleware`, with
the guard innermost; one memory store, owned by the server process, holds the
sessions, tickets and counters. WebSocket routes:

* `/ws/echo`   authenticated; answers each JSON text message with `{"echo", "user"}`;
* `/ws/chat`   authenticated; messages must match `Chat`;
* `/ws/public` public.

HTTP routes: `POST /login?user=NAME` (signs in), `GET /ticket` (a ticket for the
signed-in user), `POST /revoke` (revokes every session of the signed-in user).
"""

from __future__ import annotations

import json
import os
from typing import Any, Final

from pydantic import BaseModel, Field

from bastion.events import EventEmitter
from bastion.sessions import Session, SessionMiddleware, SessionSettings
from bastion.stores.memory import MemoryStore
from bastion.types import ASGIApp, Receive, Scope, Send
from bastion.websocket import WebSocketGuardMiddleware, WebSocketSettings, issue_ticket

SETTINGS_ENV: Final = "BASTION_TEST_WS_SETTINGS"
KEY: Final = "ws-test-key-" + "abcdefghijklmnopqrstuvwxyz0123456789"
BEARER_TOKENS: Final = {"token-for-carol-0123456789": "carol"}


class Chat(BaseModel):
    text: str = Field(max_length=100)


async def verify_bearer(untrusted_token: str) -> object | None:
    return BEARER_TOKENS.get(untrusted_token)


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def http_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    session = scope.get("session")
    assert isinstance(session, Session)
    path, method = scope["path"], scope["method"]
    if path == "/login" and method == "POST":
        user = scope["query_string"].decode().removeprefix("user=")
        session.login(user)
        await _respond(send, 200, b"ok")
    elif path == "/ticket" and session.user_id is not None:
        await _respond(send, 200, issue_ticket(scope, session.user_id).encode())
    elif path == "/revoke" and method == "POST" and session.user_id is not None:
        count = await session.revoke_user(session.user_id)
        await _respond(send, 200, str(count).encode())
    else:
        await _respond(send, 404 if session.user_id else 401, b"no")


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await http_app(scope, receive, send)
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    offered = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    principal = scope["bastion"].principal
    user = getattr(principal, "identity", principal)
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            content = json.loads(message.get("text") or "")
        except ValueError:
            content = None
        await send({"type": "websocket.send", "text": json.dumps({"echo": content, "user": user})})


def _settings() -> WebSocketSettings:
    return WebSocketSettings.model_validate_json(os.environ.get(SETTINGS_ENV, "{}"))


def _wrap(inner: ASGIApp) -> ASGIApp:
    store = MemoryStore()
    guard = WebSocketGuardMiddleware(
        inner,
        _settings(),
        store=store,
        secret_keys=[KEY],
        events=EventEmitter(()),  # quiet; events are tested in-process
        bearer_verifier=verify_bearer,
        schemas={"/ws/chat": Chat},
    )
    return SessionMiddleware(
        guard,
        SessionSettings(insecure_cookie_over_http=True),
        store=store,
        secret_keys=[KEY],
        events=EventEmitter(()),
    )


def create_app() -> ASGIApp:
    return _wrap(echo_app)


def create_channels_app() -> ASGIApp:
    """The same guard in front of a Django Channels `AsyncJsonWebsocketConsumer`."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False, SECRET_KEY=KEY, INSTALLED_APPS=[], ALLOWED_HOSTS=["127.0.0.1"]
        )
        django.setup()
    from channels.generic.websocket import (
        AsyncJsonWebsocketConsumer,
    )

    class EchoConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]  # untyped base
        async def connect(self) -> None:
            await self.accept()

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            principal = self.scope["bastion"].principal
            user = getattr(principal, "identity", principal)
            await self.send_json({"echo": content, "user": user})

    consumer = EchoConsumer.as_asgi()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await consumer(scope, receive, send)
        else:
            await http_app(scope, receive, send)

    return _wrap(app)
