"""The benchmarked application, in three shapes: raw ASGI, Starlette and FastAPI.

Routes, identical in every shape:

* `GET /hello`   -> 200 text "hello"
* `POST /submit` -> 200 text: the number of fields in the url-encoded form
* `GET /api`     -> 200 JSON {"ok": true}
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion.types import ASGIApp, Receive, Scope, Send

_TEXT = b"text/plain; charset=utf-8"
_JSON = b"application/json"


async def _respond(send: Send, status: int, content_type: bytes, payload: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The routes with nothing but the ASGI protocol: the floor every variant is measured on."""
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path == "/hello" and method == "GET":
        await _respond(send, 200, _TEXT, b"hello")
    elif path == "/api" and method == "GET":
        await _respond(send, 200, _JSON, json.dumps({"ok": True}).encode())
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
        await _respond(send, 200, _TEXT, str(len(fields)).encode())
    else:
        await _respond(send, 404, _TEXT, b"not found")


async def _hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def _submit(request: Request) -> Response:
    async with request.form() as form:
        return PlainTextResponse(str(len(form)))


async def _api(request: Request) -> Response:
    return JSONResponse({"ok": True})


def starlette_app() -> ASGIApp:
    return Starlette(
        routes=[
            Route("/hello", _hello, methods=["GET"]),
            Route("/submit", _submit, methods=["POST"]),
            Route("/api", _api, methods=["GET"]),
        ]
    )


def fastapi_app() -> ASGIApp:
    from fastapi import FastAPI

    app = FastAPI()
    app.add_api_route("/hello", _hello, methods=["GET"])
    app.add_api_route("/submit", _submit, methods=["POST"])
    app.add_api_route("/api", _api, methods=["GET"])
    return app
