"""The same small application in three shapes: raw ASGI, Starlette and FastAPI.

Layer tests wrap each of them, so every attack case runs against every framework
(the `framework_app` fixture). Routes:

* `GET /`          -> 200 text "hello"
* `GET /json`      -> 200 JSON {"ok": true}
* `POST /submit`   -> 200 text: the number of body bytes the app received
* `POST /echo`     -> 200, echoes the body back with the request's content type
* `GET /boom`      -> raises RuntimeError("kaboom-secret-detail")
* `GET /context`   -> 200 JSON view of scope["bastion"] (client, scheme, host, nonce)
* `GET /page`      -> 200 HTML page with an inline script carrying the CSP nonce
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion.types import ASGIApp, Receive, Scope, Send

FRAMEWORKS = ("raw", "starlette", "fastapi")
BOOM = "kaboom-secret-detail"


def context_view(scope: Scope) -> dict[str, Any]:
    context = scope.get("bastion")
    if context is None:
        return {}
    return {
        "client": list(context.client) if context.client else None,
        "scheme": context.scheme,
        "host": context.host,
        "port": context.port,
        "csp_nonce": context.csp_nonce,
        "request_id": context.request_id,
    }


def page_html(scope: Scope) -> bytes:
    """A page whose inline script carries the request's nonce (empty without one)."""
    context = scope.get("bastion")
    nonce = context.csp_nonce if context is not None else ""
    return f'<!doctype html><script nonce="{nonce}">go()</script>'.encode()


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    path, method = scope["path"], scope["method"]
    content_type = b"text/plain; charset=utf-8"
    status = 200
    if path == "/" and method in ("GET", "HEAD"):
        payload = b"hello"
    elif path == "/json":
        payload, content_type = b'{"ok":true}', b"application/json"
    elif path == "/submit" and method == "POST":
        payload = str(len(body)).encode()
    elif path == "/echo" and method == "POST":
        payload = body
        content_type = dict(scope["headers"]).get(b"content-type", content_type)
    elif path == "/boom":
        raise RuntimeError(BOOM)
    elif path == "/context":
        payload, content_type = json.dumps(context_view(scope)).encode(), b"application/json"
    elif path == "/page":
        payload, content_type = page_html(scope), b"text/html; charset=utf-8"
    else:
        status, payload = 404, b"not found"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(payload))],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def _json(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _submit(request: Request) -> Response:
    return PlainTextResponse(str(len(await request.body())))


async def _echo(request: Request) -> Response:
    return Response(await request.body(), media_type=request.headers.get("content-type"))


async def _boom(request: Request) -> Response:
    raise RuntimeError(BOOM)


async def _context(request: Request) -> Response:
    return JSONResponse(context_view(request.scope))


async def _page(request: Request) -> Response:
    return HTMLResponse(page_html(request.scope))


def starlette_app(debug: bool = False) -> Starlette:
    return Starlette(
        debug=debug,
        routes=[
            Route("/", _hello, methods=["GET", "HEAD"]),
            Route("/json", _json),
            Route("/submit", _submit, methods=["POST"]),
            Route("/echo", _echo, methods=["POST"]),
            Route("/boom", _boom),
            Route("/context", _context),
            Route("/page", _page),
        ],
    )


def fastapi_app(debug: bool = False) -> Any:
    from fastapi import FastAPI

    app = FastAPI(debug=debug)
    app.add_api_route("/", _hello, methods=["GET", "HEAD"])
    app.add_api_route("/json", _json)
    app.add_api_route("/submit", _submit, methods=["POST"])
    app.add_api_route("/echo", _echo, methods=["POST"])
    app.add_api_route("/boom", _boom)
    app.add_api_route("/context", _context)
    app.add_api_route("/page", _page)
    return app


def make_app(framework: str) -> ASGIApp:
    if framework == "raw":
        return raw_app
    if framework == "starlette":
        return starlette_app()
    if framework == "fastapi":
        app: ASGIApp = fastapi_app()
        return app
    raise ValueError(framework)
