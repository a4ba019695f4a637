"""The stack under test, `SessionMiddleware(CSRFMiddleware(app))`, and its clients.

Requests go to `https://bank.example` through httpx's in-process ASGI transport, one
client per request, with the session cookie set by hand, so each test says exactly
which cookies a request carries. `send_raw` drives the ASGI app with a hand-built
scope, for paths that httpx would normalise (`/hook/../admin`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from bastion.csrf import CSRFMiddleware, CSRFSettings
from bastion.events import EventEmitter
from bastion.sessions import SessionMiddleware, SessionSettings
from bastion.stores import MemoryStore
from bastion.types import ASGIApp, Message
from tests.conftest import RecordingSink, asgi_client
from tests.csrf.apps import make_app
from tests.support.clock import FakeClock as Clock
from tests.support.secret_watch import never_logged

ORIGIN = "https://bank.example"
CSRF_KEY = never_logged("csrf-test-key-" + "0123456789abcdefghijklmnopqrstuvwxyz")
NEW_CSRF_KEY = never_logged("csrf-test-key-new-" + "zyxwvutsrqponmlkjihgfedcba9876543210")
SESSION_KEY = never_logged("session-test-key-" + "abcdefghijklmnopqrstuvwxyz0123456789")
# Sessions that outlive the token (idle time included), so an expired token is
# reported as expired, not as belonging to a session that has gone.
LONG_SESSIONS = SessionSettings(idle_timeout_seconds=86_400, absolute_timeout_seconds=86_400)


class SharedStore(MemoryStore):
    """A memory store that stays truthy when empty.

    `SessionMiddleware` takes `store or MemoryStore(...)`, and an empty `MemoryStore`
    is falsy (it has `__len__`), so a shared store passed in empty would be swapped
    for a private one. Tests that share one store between stacks use this.
    """

    def __bool__(self) -> bool:
        return True


@dataclass
class Stack:
    app: ASGIApp
    store: MemoryStore
    clock: Clock
    sink: RecordingSink
    session_settings: SessionSettings
    base_url: str = ORIGIN

    @property
    def cookie_name(self) -> str:
        return self.session_settings.effective_cookie_name

    def csrf_reasons(self) -> list[str]:
        return [str(r["reason"]) for r in self.sink.records if r["layer"] == "csrf"]

    async def request(
        self,
        method: str,
        path: str,
        *,
        session_id: str | None = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        all_headers = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if session_id is not None:
            all_headers.append(("cookie", f"{self.cookie_name}={session_id}"))
        async with asgi_client(self.app, base_url=self.base_url) as client:
            return await client.request(method, path, headers=all_headers, content=content)

    def session_cookie(self, response: httpx.Response) -> str | None:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            if name == self.cookie_name:
                return rest.split(";")[0]
        return None

    async def token_and_session(self, session_id: str | None = None) -> tuple[str, str]:
        """A token from `GET /form`, and the session it is bound to."""
        response = await self.request("GET", "/form", session_id=session_id)
        assert response.status_code == 200
        issued = self.session_cookie(response) or session_id
        assert issued is not None
        return response.text, issued


def build(
    framework: str = "raw",
    settings: CSRFSettings | None = None,
    *,
    csrf_keys: tuple[str, ...] = (CSRF_KEY,),
    session_settings: SessionSettings | None = None,
    store: MemoryStore | None = None,
    clock: Clock | None = None,
    sink: RecordingSink | None = None,
    base_url: str = ORIGIN,
    app: ASGIApp | None = None,
) -> Stack:
    clock = clock or Clock()
    store = store if store is not None else SharedStore(clock=clock)
    sink = sink if sink is not None else RecordingSink()
    events = EventEmitter([sink])
    session_settings = session_settings or SessionSettings()
    csrf = CSRFMiddleware(
        app or make_app(framework), settings, secret_keys=csrf_keys, events=events, clock=clock
    )
    stack = SessionMiddleware(
        csrf,
        session_settings,
        store=store,
        secret_keys=[SESSION_KEY],
        events=events,
        clock=clock,
    )
    return Stack(stack, store, clock, sink, session_settings, base_url)


def multipart(
    fields: list[tuple[str, bytes]], boundary: str = "----bastionBoundary7MA4YWxk"
) -> tuple[bytes, str]:
    """A multipart/form-data body as browsers build it, and its content type."""
    parts = [
        b"--"
        + boundary.encode()
        + b"\r\n"
        + f'Content-Disposition: form-data; name="{name}"'.encode()
        + b"\r\n\r\n"
        + value
        + b"\r\n"
        for name, value in fields
    ]
    body = b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class RawResult:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def send_raw(
    app: ASGIApp,
    *,
    method: str = "POST",
    path: str,
    raw_path: bytes | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    scheme: str = "https",
) -> RawResult:
    """One request through the ASGI app with exactly the given scope fields."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bank.example"), *(headers or [])],
        "client": ("127.0.0.1", 5000),
        "server": ("bank.example", 443),
    }
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return RawResult(start["status"], list(start.get("headers", [])), content)
