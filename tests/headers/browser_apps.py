"""The application served to Chromium by `test_browser.py`: one HTML page behind the
headers layer with its default settings."""

from __future__ import annotations

from bastion.events import EventEmitter
from bastion.headers import HeadersMiddleware
from bastion.types import ASGIApp, Receive, Scope, Send

PAGE = b"<!doctype html><title>headers</title><p>hello</p>"


async def _page(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/html; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": PAGE})


def default_headers_app() -> ASGIApp:
    return HeadersMiddleware(_page, events=EventEmitter([]))
