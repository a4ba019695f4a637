"""Two servers for the browser test, built by uvicorn `--factory` in their own process.

* `bank_app`: `SessionMiddleware(CSRFMiddleware(app))` around a small Starlette app,
  wrapped in a recorder that notes every request as it arrived (before any layer
  could refuse it), so the test can see which cookies and headers the browser sent.
  `GET /` is the bank's page with a same-origin transfer form carrying a token;
  `POST /transfer` changes state; `GET /state` reports the state and the record.
* `evil_app`: the attacker's site. Its pages make the browser post to the bank
  (`BANK_URL` in the environment) by themselves, the moment they load.

The bank is served over plain HTTP on 127.0.0.1 and visited as `localhost`; the
attacker's pages are visited as `127.0.0.1`, a different site.
"""

from __future__ import annotations

import html
import json
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion.csrf import CSRFMiddleware, issue_token
from bastion.sessions import Session, SessionMiddleware, SessionSettings
from bastion.stores import MemoryStore
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.support.secret_watch import never_logged

KEY = never_logged("browser-test-key-" + "0123456789abcdefghijklmnopqrstuvwxyz")
COOKIE = "session"  # `__Host-session` without its prefix: plain HTTP
BANK_PAGE = """<!doctype html>
<title>Bank</title>
<p id="user">{user}</p>
<form id="transfer" method="post" action="/transfer" enctype="{enctype}">
  <input type="hidden" name="csrf_token" value="{token}">
  <input name="to" value="bob">
  <input name="amount" value="10">
  <button id="send" type="submit">Send</button>
</form>
"""
EVIL_FORM = """<!doctype html>
<title>Win a prize</title>
<form id="attack" method="post" action="{target}" enctype="{enctype}">
  <input type="hidden" name="to" value="mallory">
  <input type="hidden" name="amount" value="1000000">
</form>
<script>document.getElementById("attack").submit();</script>
"""
EVIL_FETCH = """<!doctype html>
<title>Win a prize</title>
<p id="status">sending</p>
<script>
fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"content-type": "text/plain"}}, body: "to=mallory&amount=1000000"}})
  .finally(() => {{ document.getElementById("status").textContent = "sent"; }});
</script>
"""


class Recorder:
    """Notes what each request carried, as it arrived, before any layer acts."""

    def __init__(self, app: ASGIApp, log: list[dict[str, Any]]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/transfer":
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            cookies = [
                pair.strip().partition("=")[0]
                for name, value in headers
                if name == "cookie"
                for pair in value.split(";")
            ]
            entry: dict[str, Any] = {
                "method": scope["method"],
                "cookie_names": cookies,
                "sec_fetch_site": next((v for k, v in headers if k == "sec-fetch-site"), None),
                "origin": next((v for k, v in headers if k == "origin"), None),
                "status": None,
            }
            self.log.append(entry)

            async def send_recording(message: Any) -> None:
                if message["type"] == "http.response.start":
                    entry["status"] = message["status"]
                await send(message)

            await self.app(scope, receive, send_recording)
            return
        await self.app(scope, receive, send)


def bank_app() -> ASGIApp:
    state: dict[str, Any] = {"transfers": []}
    log: list[dict[str, Any]] = []

    async def home(request: Request) -> Response:
        session: Session = request.scope["session"]
        session["user"] = "alice"
        page = BANK_PAGE.format(
            user=html.escape(session["user"]),
            token=issue_token(request),
            enctype=html.escape(request.query_params.get("enctype", "multipart/form-data")),
        )
        return HTMLResponse(page)

    async def transfer(request: Request) -> Response:
        form = await request.form()
        state["transfers"].append({"to": str(form.get("to")), "amount": str(form.get("amount"))})
        return PlainTextResponse("transfer done")

    async def report(request: Request) -> Response:
        return JSONResponse({"transfers": state["transfers"], "log": log})

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/transfer", transfer, methods=["POST"]),
            Route("/state", report),
        ]
    )
    return Recorder(
        SessionMiddleware(
            CSRFMiddleware(app, secret_keys=[KEY]),
            SessionSettings(insecure_cookie_over_http=True),
            store=MemoryStore(),
            secret_keys=[KEY],
        ),
        log,
    )


def evil_app() -> ASGIApp:
    target = os.environ["BANK_URL"].rstrip("/") + "/transfer"

    async def form_page(request: Request) -> Response:
        enctype = request.query_params.get("enctype", "application/x-www-form-urlencoded")
        return HTMLResponse(
            EVIL_FORM.format(target=html.escape(target), enctype=html.escape(enctype))
        )

    async def fetch_page(request: Request) -> Response:
        return HTMLResponse(EVIL_FETCH.format(target=json.dumps(target)[1:-1]))

    return Starlette(routes=[Route("/", form_page), Route("/fetch", fetch_page)])
