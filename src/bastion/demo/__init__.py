"""A small example application, served hardened by `bastion demo`.

Until the Bastion Bank demo exists, this is a few Starlette routes that show each
layer at work: a page whose inline script runs only because it carries the CSP
nonce, a form, a JSON endpoint, a route that raises (the error shield answers with a
generic page and an incident id), and a route that echoes the resolved context.
"""

from __future__ import annotations

import html
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion.context import get_context
from bastion.settings import Settings
from bastion.shield import Shield

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bastion demo</title></head>
<body>
<h1>Bastion demo</h1>
<p>This page is served through Bastion's full stack. Look at the response headers.</p>
<p id="nonce-check">The nonce'd script has not run.</p>
<script nonce="{nonce}">document.getElementById("nonce-check").textContent =
  "The nonce'd inline script ran.";</script>
<script>document.title = "an injected script ran";</script>
<form method="post" action="/echo"><input name="message" value="hello">
<button>Send</button></form>
<ul>
<li><a href="/api/status">/api/status</a>: JSON</li>
<li><a href="/context">/context</a>: what Bastion resolved for this request</li>
<li><a href="/boom">/boom</a>: a route that raises</li>
</ul>
</body></html>
"""


async def home(request: Request) -> Response:
    return HTMLResponse(_PAGE.replace("{nonce}", get_context(request.scope).csp_nonce))


async def echo(request: Request) -> Response:
    form = await request.form()
    message = str(form.get("message", ""))
    return HTMLResponse(f"<p>You sent: {html.escape(message)}</p><a href='/'>back</a>")


async def status(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def context(request: Request) -> Response:
    ctx = get_context(request.scope)
    return JSONResponse(
        {
            "request_id": ctx.request_id,
            "client": ctx.client_host,
            "scheme": ctx.scheme,
            "host": ctx.host,
        }
    )


async def boom(request: Request) -> Response:
    raise RuntimeError("this detail stays in the server log")


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_unprotected_app() -> Starlette:
    """The example application with no protection at all (debug page on, even)."""
    return Starlette(
        debug=True,
        routes=[
            Route("/", home),
            Route("/echo", echo, methods=["POST"]),
            Route("/api/status", status),
            Route("/context", context),
            Route("/boom", boom),
            Route("/health", health),
        ],
    )


def create_app(settings: Settings | None = None, **overrides: Any) -> Shield:
    """The example application behind Bastion's full stack."""
    return Shield(create_unprotected_app(), settings, **overrides)
