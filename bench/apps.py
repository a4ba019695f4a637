"""The benchmarked application, in three shapes: raw ASGI, Starlette and FastAPI.

Routes, identical in every shape:

* `GET /hello`   -> 200 text "hello"
* `POST /submit` -> 200 text: the number of fields in the url-encoded form
* `GET /api`     -> 200 JSON {"ok": true}
* `WS /ws`       -> accepts, then echoes every text or bytes message until the client closes

The plain shapes check nothing: `GET /api` is "behind a bearer token" only in the
stacks that check one (the peer stacks and Bastion).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bastion.types import ASGIApp, Receive, Scope, Send

_TEXT = b"text/plain; charset=utf-8"
_JSON = b"application/json"
Header = tuple[bytes, bytes]


async def _respond(
    send: Send, status: int, content_type: bytes, payload: bytes, added: Sequence[Header] = ()
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(payload))]
    if added:  # the raw app alone skips even an empty extend: it is every ratio's floor
        headers += added
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def raw_application(added_lines: Mapping[str, Sequence[Header]] | None = None) -> ASGIApp:
    """The routes with nothing but the ASGI protocol: the floor every variant is measured on.

    `added_lines` maps a route's name (`"GET /hello"`) to header lines that every 200
    response on that route carries after the app's own: `bench.stacks` builds
    "raw ASGI + Bastion's lines" with them, to measure what a server spends on the
    lines Bastion adds apart from Bastion's code. They are bound per route here, once,
    so the app carries them with no wrapper around it and nothing more per request
    than the longer header list. Without them, this is `raw_app`.
    """
    lines = added_lines or {}
    hello_lines = tuple(lines.get("GET /hello", ()))
    submit_lines = tuple(lines.get("POST /submit", ()))
    api_lines = tuple(lines.get("GET /api", ()))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await _raw_echo(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/hello" and method == "GET":
            await _respond(send, 200, _TEXT, b"hello", hello_lines)
        elif path == "/api" and method == "GET":
            await _respond(send, 200, _JSON, json.dumps({"ok": True}).encode(), api_lines)
        elif path == "/submit" and method == "POST":
            body = b""
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            fields = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
            await _respond(send, 200, _TEXT, str(len(fields)).encode(), submit_lines)
        else:
            await _respond(send, 404, _TEXT, b"not found")

    return app


raw_app: Final = raw_application()


async def _raw_echo(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 1008})
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            text = message.get("text")
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        else:  # websocket.disconnect
            return


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def submit(request: Request) -> Response:
    async with request.form() as form:
        return PlainTextResponse(str(len(form)))


async def api(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        return


def starlette_routes() -> list[Route | WebSocketRoute]:
    return [
        Route("/hello", hello, methods=["GET"]),
        Route("/submit", submit, methods=["POST"]),
        Route("/api", api, methods=["GET"]),
        WebSocketRoute("/ws", echo),
    ]


def starlette_app() -> ASGIApp:
    return Starlette(routes=starlette_routes())


def fastapi_app() -> ASGIApp:
    from fastapi import FastAPI

    app = FastAPI()
    app.add_api_route("/hello", hello, methods=["GET"])
    app.add_api_route("/submit", submit, methods=["POST"])
    app.add_api_route("/api", api, methods=["GET"])
    app.add_api_websocket_route("/ws", echo)
    return app
