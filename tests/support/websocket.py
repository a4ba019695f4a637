"""One WebSocket handshake driven by hand, as an ASGI server would: the scope, the
`websocket.connect`, and the first answer of the application (the accept, or the
refusal after which the client leaves)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bastion.types import ASGIApp, Message, Scope

WAIT_SECONDS = 2.0
ACCEPTED = 101  # what `answer_status` gives an accepted socket (the 101 a server sends)


def handshake_scope(
    path: str,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    client: tuple[str, int] = ("127.0.0.1", 5000),
    query: bytes = b"",
    subprotocols: Sequence[str] = (),
    denial_response: bool = True,
) -> Scope:
    """A `websocket` scope to `testserver`, with the denial-response extension unless
    told otherwise (then a refusal is a close)."""
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"testserver"), *headers],
        "client": client,
        "server": ("testserver", 80),
        "subprotocols": list(subprotocols),
        "extensions": {"websocket.http.response": {}} if denial_response else {},
    }
    return scope


async def first_message(app: ASGIApp, scope: Scope) -> Message:
    """Call `app` with `scope`; the first message it sends. The client stays until the
    application has answered, then leaves."""
    messages: list[Message] = []
    connected = False
    done = asyncio.Event()

    async def receive() -> Message:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        await done.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        messages.append(dict(message))
        if message["type"] in ("websocket.close", "websocket.http.response.body"):
            done.set()

    async with asyncio.timeout(WAIT_SECONDS):
        await app(scope, receive, send)
    return messages[0]


def answer_status(first: Message) -> tuple[int, dict[bytes, bytes]]:
    """`ACCEPTED` for an accept; else the refusal's HTTP status and headers, or its close
    code (no headers) when the server offered no denial response."""
    if first["type"] == "websocket.accept":
        return ACCEPTED, {}
    if first["type"] == "websocket.close":
        return int(first["code"]), {}
    assert first["type"] == "websocket.http.response.start", first
    return int(first["status"]), dict(first.get("headers", []))
