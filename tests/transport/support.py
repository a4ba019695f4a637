"""Helpers for driving the transport layer directly, where httpx cannot go.

httpx always sends a `Host` header and speaks neither WebSocket nor lifespan, so
these cases build the ASGI scope by hand and record what the layer sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bastion.types import ASGIApp, Message, Receive, Scope, Send


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
