"""A protected app in three shapes (raw ASGI, Starlette, FastAPI) that records hits."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.auth.principal import get_principal
from bastion.types import ASGIApp, Receive, Scope, Send

FRAMEWORKS = ("raw", "starlette", "fastapi")


def _who(scope: Scope) -> str:
    principal = get_principal(scope)
    return f"{principal.source}:{principal.identity}" if principal else "anonymous"


def make_protected_app(framework: str, hits: list[str]) -> ASGIApp:
    async def admin(request: Request) -> Response:
        hits.append(request.url.path)
        return PlainTextResponse(_who(request.scope))

    async def public(request: Request) -> Response:
        return PlainTextResponse(_who(request.scope))

    if framework == "starlette":
        return Starlette(routes=[Route("/admin", admin), Route("/public", public)])
    if framework == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()
        app.add_api_route("/admin", admin)
        app.add_api_route("/public", public)
        fastapi_app: ASGIApp = app
        return fastapi_app

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        status, body = 404, b"not found"
        if path == "/admin":
            hits.append(path)
            status, body = 200, _who(scope).encode()
        elif path == "/public":
            status, body = 200, _who(scope).encode()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return raw


async def call(
    app: ASGIApp,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    raw_path: bytes | None = None,
    method: str = "GET",
) -> tuple[int, dict[bytes, bytes], bytes]:
    """Drive an ASGI app with a hand-built scope (no client normalises the path).

    `receive` answers as a server does: the empty body, then, once the response is
    complete, the disconnect (Quart listens for it until the response is sent)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    messages: list[dict[str, Any]] = []
    requested = False
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], dict(start.get("headers", [])), body
