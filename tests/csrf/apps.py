"""Small session-using apps for the CSRF tests, as raw ASGI, Starlette and FastAPI.

Routes (the same in each shape):

* `GET /form`        -> 200 text: a fresh CSRF token (issuing it creates the session)
* `POST /login?u=`   -> logs the session in as `u` (rotating its id and CSRF secret)
* `POST /rotate`     -> rotates the session
* anything else      -> 200, the body echoed back exactly as the app received it,
                        with the request's content type; `x-app-path` names the path
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.csrf import issue_token
from bastion.csrf.dependencies import CSRFToken  # at module level: FastAPI resolves it here
from bastion.sessions import Session
from bastion.types import ASGIApp, Receive, Scope, Send

FRAMEWORKS = ("raw", "starlette", "fastapi")


async def _reply(send: Send, body: bytes, content_type: bytes, path: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", content_type),
                (b"x-app-path", path.encode("utf-8", "replace")),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
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
    session: Session = scope["session"]
    path, method = scope["path"], scope["method"]
    if path == "/form" and method == "GET":
        await _reply(send, issue_token(scope).encode(), b"text/plain", path)
    elif path == "/login":
        session.login(scope["query_string"].decode().partition("u=")[2] or "alice")
        await _reply(send, b"logged in", b"text/plain", path)
    elif path == "/rotate":
        session.rotate()
        await _reply(send, b"rotated", b"text/plain", path)
    else:
        content_type = dict(scope["headers"]).get(b"content-type", b"application/octet-stream")
        await _reply(send, body, content_type, path)


async def _form(request: Request) -> Response:
    return PlainTextResponse(issue_token(request))


async def _login(request: Request) -> Response:
    session: Session = request.scope["session"]
    session.login(request.query_params.get("u", "alice"))
    return PlainTextResponse("logged in")


async def _rotate(request: Request) -> Response:
    session: Session = request.scope["session"]
    session.rotate()
    return PlainTextResponse("rotated")


async def _echo(request: Request) -> Response:
    return Response(
        await request.body(),
        media_type=request.headers.get("content-type", "application/octet-stream"),
        headers={"x-app-path": request.url.path},
    )


_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/form", _form, methods=["GET"]),
            Route("/login", _login, methods=["POST"]),
            Route("/rotate", _rotate, methods=["POST"]),
            Route("/{path:path}", _echo, methods=_METHODS),
        ]
    )


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/form", response_class=PlainTextResponse)
    def form(token: CSRFToken) -> str:
        return token

    app.add_api_route("/login", _login, methods=["POST"])
    app.add_api_route("/rotate", _rotate, methods=["POST"])
    app.add_api_route("/{path:path}", _echo, methods=_METHODS)
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
