"""A session-counting Starlette app behind `Shield`, for multi-worker server tests.

Configured only through `BASTION_*` variables (store URL, keys), as a deployment is.
`POST /login?u=NAME` logs in; `POST /count` adds one to a counter in the session;
`GET /whoami` shows the user, the counter and the worker's process id.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.sessions import Session
from bastion.shield import Shield
from bastion.types import ASGIApp


async def login(request: Request) -> Response:
    session: Session = request.session  # type: ignore[assignment]  # Bastion's Session
    session.login(request.query_params["u"])
    session["count"] = 0
    return JSONResponse({"pid": os.getpid()})


async def count(request: Request) -> Response:
    request.session["count"] = int(request.session.get("count", 0)) + 1
    return JSONResponse({"pid": os.getpid(), "count": request.session["count"]})


async def whoami(request: Request) -> Response:
    session: Session = request.session  # type: ignore[assignment]  # Bastion's Session
    return JSONResponse(
        {"pid": os.getpid(), "user": session.user_id, "count": session.get("count")}
    )


def create_app() -> ASGIApp:
    app = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/count", count, methods=["POST"]),
            Route("/whoami", whoami),
        ]
    )
    return Shield(app)
