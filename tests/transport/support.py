"""Helpers for driving the transport layer directly, where httpx cannot go.

httpx always sends a `Host` header and speaks neither WebSocket nor lifespan, so
these cases build the ASGI scope by hand and record what the layer sends.

`url_app` is the application the URL cases run against, in the three shapes of
`tests.support.apps.FRAMEWORKS`: it answers with the URLs the framework builds from
the scope it was given, over HTTP (`GET /where`) and over a WebSocket (`/ws`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bastion.context import SCOPE_KEY, RequestContext
from bastion.transport import TransportMiddleware
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from tests.conftest import RecordingSink


def make_scope(
    scope_type: str = "http",
    *,
    headers: Sequence[tuple[bytes, bytes]] = ((b"host", b"bank.example"),),
    scheme: str | None = None,
    client: tuple[str, int] | None = ("203.0.113.9", 5000),
    path: str = "/",
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A minimal HTTP or WebSocket scope, as a server would deliver it."""
    scope: dict[str, Any] = {
        "type": scope_type,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": scheme or ("https" if scope_type == "http" else "wss"),
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(headers),
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    if scope_type == "http":
        scope["method"] = "GET"
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


class RecordingApp:
    """An ASGI app that records the scope it was called with, then answers 200."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"app"})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.accept"})


async def run(app: ASGIApp, scope: Scope, incoming: Sequence[Message] = ()) -> list[Message]:
    """Call `app` once with `scope`; return every message it sent."""
    pending = list(incoming) or [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


_REQUEST_ID = re.compile(rb"request id: [0-9a-f]+")


@dataclass(frozen=True, slots=True)
class Observed:
    """What one request through the transport layer shows (`observe`)."""

    messages: list[Message]
    """What the layer sent, with the request id in a refusal's body masked."""
    events: list[dict[str, object]]
    """The events it emitted, without the request id and time."""
    seen: list[tuple[Scope, tuple[Any, ...]]]
    """The scope the application was called with, and the context fields asked for
    (none when the layer answered)."""


async def observe(
    layer: TransportMiddleware,
    sink: RecordingSink,
    scope: Scope,
    context_fields: Callable[[RequestContext], tuple[Any, ...]],
) -> Observed:
    """Call `layer` once on `scope` in front of an application that answers 200 and
    records its scope and `context_fields` of the request's context; `sink` is the
    layer's event sink (cleared first)."""
    seen: list[tuple[Scope, tuple[Any, ...]]] = []

    async def app(app_scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((app_scope, context_fields(app_scope[SCOPE_KEY])))
        if app_scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"app"})
        else:
            await send({"type": "websocket.accept"})

    layer.app = app
    sink.records.clear()
    incoming: list[Message] = (
        [{"type": "websocket.connect"}] if scope["type"] == "websocket" else []
    )
    messages = [
        {**message, "body": _REQUEST_ID.sub(b"<id>", message["body"])}
        if "body" in message
        else message
        for message in await run(layer, scope, incoming)
    ]
    events = [
        {key: value for key, value in record.items() if key not in ("request_id", "timestamp")}
        for record in sink.records
    ]
    return Observed(messages, events, seen)


# --- the URL application ----------------------------------------------------------------


def _raw_urls(scope: Scope) -> dict[str, str]:
    # What a hand-written app does: trust the scope's scheme and Host header.
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"host"), "")
    url = f"{scope['scheme']}://{host}{scope['path']}"
    return {"url": url, "url_for": url}


async def _raw_url_app(scope: Scope, receive: Receive, send: Send) -> None:
    body = json.dumps(_raw_urls(scope))
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": body})
        await send({"type": "websocket.close", "code": 1000})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


async def _where(request: Request) -> Response:
    return JSONResponse({"url": str(request.url), "url_for": str(request.url_for("where"))})


async def _ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"url": str(websocket.url), "url_for": str(websocket.url_for("ws"))})
    await websocket.close()


def url_app(framework: str) -> ASGIApp:
    """`GET /where` and WebSocket `/ws`, each answering {"url", "url_for"}."""
    if framework == "raw":
        return _raw_url_app
    if framework == "starlette":
        return Starlette(
            routes=[Route("/where", _where, name="where"), WebSocketRoute("/ws", _ws, name="ws")]
        )
    if framework == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()
        app.add_api_route("/where", _where, name="where")
        app.add_api_websocket_route("/ws", _ws, name="ws")
        fastapi_app: ASGIApp = app
        return fastapi_app
    raise ValueError(framework)
