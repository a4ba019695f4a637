"""The fused HTTP path of `Shield` against the chain of layer middlewares it replaces.

Two identical `Shield` stacks (same settings, fresh stores) get the same requests:
one through `Shield.__call__` (the fused stages), one through `Shield._stack` (the
middleware chain; WebSocket scopes: `test_fused_websocket`). Every ASGI message sent,
every event emitted and the request context must match, once the random values
(request id, CSP nonce, session id, CSRF token) are replaced by placeholders.

The store that fails with a bug (not a `StoreError`) is a stand-in: a real
`MemoryStore` that raises on demand, since no real store fails that way on cue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from bastion.context import SCOPE_KEY
from bastion.csrf import issue_token
from bastion.events import EventEmitter
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.stores.gcra import GCRAResult
from bastion.stores.memory import MemoryStore
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from tests.conftest import RecordingSink

pytestmark = pytest.mark.anyio

SECRET_KEYS = ["fused-test-secret-key-not-for-production-0123456789"]
ORIGIN = "https://app.example"


def settings() -> Settings:
    return Settings.model_validate(
        {
            "mode": "development",
            "secret_keys": SECRET_KEYS,
            "transport": {"allowed_hosts": ["testserver"]},
            "limits": {"max_body_bytes": 512},
            "cors": {"allow_origins": [ORIGIN], "allow_headers": ["content-type"]},
            "ratelimit": {"limits": {"GET /limited": ["1/minute"]}},
            "policy": {"routes": {"GET /admin": "authenticated"}},
        }
    )


class BrokenStore(MemoryStore):
    """A real memory store that fails with a bug while `broken` is set."""

    broken = False

    async def gcra_unless(self, *args: Any, **kwargs: Any) -> GCRAResult | None:
        if self.broken:
            raise RuntimeError("bug inside a stage")
        return await super().gcra_unless(*args, **kwargs)

    async def gcra(self, *args: Any, **kwargs: Any) -> GCRAResult:
        if self.broken:
            raise RuntimeError("bug inside a stage")
        return await super().gcra(*args, **kwargs)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serves `/token` (issues a CSRF token), `/boom` (raises), anything else (200)."""
    if scope["type"] != "http":
        return
    body = b""
    if scope["method"] == "POST":
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
    if scope["path"] == "/boom":
        raise RuntimeError("bug in the app")
    text = issue_token(scope).encode() if scope["path"] == "/token" else b"ok " + body
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"server", b"app/1.0")],
        }
    )
    await send({"type": "http.response.body", "body": text})


@dataclass
class Exchange:
    """What one request produced: the messages sent and the context left behind."""

    messages: list[Message] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    user: Any = None


async def call(
    target: ASGIApp,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
) -> Exchange:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers
        if any(line[0] == b"host" for line in headers)
        else [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 443),
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    result = Exchange()

    async def receive() -> Message:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        result.messages.append(message)

    await target(scope, receive, send)
    context = scope[SCOPE_KEY]
    result.context = {name: getattr(context, name) for name in ("client", "scheme", "host", "port")}
    result.context["has_nonce"] = bool(context.csp_nonce)
    result.context["principal"] = repr(context.principal)
    user = scope.get("user")
    result.user = (
        type(user).__name__,
        getattr(user, "is_authenticated", None),
        getattr(user, "display_name", None),
        sorted(getattr(scope.get("auth"), "scopes", ())),
        type(scope.get("session")).__name__,
    )
    return result


@dataclass
class Stack:
    shield: Shield
    sink: RecordingSink
    store: BrokenStore
    target: ASGIApp
    cookies: dict[bytes, bytes] = field(default_factory=dict)


def build(fused: bool) -> Stack:
    sink = RecordingSink()
    store = BrokenStore()
    shield = Shield(app, settings(), events=EventEmitter([sink]), store=store)
    return Stack(shield, sink, store, shield if fused else shield._stack)


_RANDOM = re.compile(
    rb"\b[0-9a-f]{16}\b"  # request id
    rb"|nonce-[A-Za-z0-9+/=_-]+"  # CSP nonce
    rb"|=[A-Za-z0-9_-]{20,}"  # session id in a cookie
    rb"|[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_.-]{10,}|[A-Za-z0-9_-]{40,}"  # CSRF token
)


def normalised(value: object) -> str:
    """A value with request ids, nonces, session ids and tokens replaced."""
    text = repr(value).encode()
    return _RANDOM.sub(b"<random>", text).decode()


def events(sink: RecordingSink) -> list[str]:
    return [
        normalised({k: v for k, v in record.items() if k not in ("timestamp", "request_id")})
        for record in sink.records
        if record.get("kind") != "sys_startup"
    ]


FORM = b"comment=hi"
CASES = [
    pytest.param("GET", "/", [], b"", id="fused-get-ok"),
    pytest.param("POST", "/form", "token", FORM, id="fused-post-form-with-csrf-token"),
    pytest.param("POST", "/form", [], FORM, id="fused-post-form-without-token"),
    pytest.param("GET", "/", [(b"host", b"evil.example")], b"", id="fused-refused-host"),
    pytest.param(
        "POST",
        "/form",
        [(b"sec-fetch-site", b"same-origin"), (b"content-type", b"text/plain")],
        b"x" * 2000,
        id="fused-oversized-body",
    ),
    pytest.param(
        "OPTIONS",
        "/api",
        [(b"origin", ORIGIN.encode()), (b"access-control-request-method", b"POST")],
        b"",
        id="fused-cors-preflight",
    ),
    pytest.param(
        "OPTIONS",
        "/api",
        [(b"origin", b"https://evil.example"), (b"access-control-request-method", b"PUT")],
        b"",
        id="fused-cors-preflight-refused",
    ),
    pytest.param("GET", "/limited", "twice", b"", id="fused-rate-limited-client"),
    pytest.param("GET", "/admin", [], b"", id="fused-policy-refusal"),
    pytest.param("GET", "/boom", [], b"", id="fused-exception-in-app"),
    pytest.param("GET", "/limited", "broken", b"", id="fused-exception-in-stage"),
    # A header name that is no bytes (no server sends one): the flow reads the lines
    # before any stage runs, and what that raises is answered as any other failure.
    pytest.param(
        "GET", "/", [(bytearray(b"x-odd"), b"1")], b"", id="fused-malformed-scope-headers"
    ),
]


async def scenario(
    fused: bool, method: str, path: str, headers: Any, body: bytes
) -> tuple[list[Exchange], list[str]]:
    stack = build(fused)
    exchanges: list[Exchange] = []
    sent = list(headers) if isinstance(headers, list) else []
    if headers == "token":
        # A page load gives the browser its session cookie and a form token.
        page = await call(stack.target, "GET", "/token", [])
        exchanges.append(page)
        start, body_message = page.messages
        cookie = next(v for k, v in start["headers"] if k == b"set-cookie").split(b";")[0]
        token = body_message["body"]
        sent = [
            (b"cookie", cookie),
            (b"content-type", b"application/x-www-form-urlencoded"),
        ]
        body = body + b"&csrf_token=" + token
    if headers == "twice":
        exchanges.append(await call(stack.target, method, path, sent, body))
    if headers == "broken":
        stack.store.broken = True
    exchanges.append(await call(stack.target, method, path, sent, body))
    return exchanges, events(stack.sink)


@pytest.mark.parametrize(("method", "path", "headers", "body"), CASES)
async def test_fused_and_chained_stacks_answer_alike(
    method: str, path: str, headers: Any, body: bytes
) -> None:
    chained, chained_events = await scenario(False, method, path, headers, body)
    fused, fused_events = await scenario(True, method, path, headers, body)
    assert [normalised(e.messages) for e in fused] == [normalised(e.messages) for e in chained]
    assert [e.context for e in fused] == [e.context for e in chained]
    assert [e.user for e in fused] == [e.user for e in chained]
    assert fused_events == chained_events


EXPECTED_STATUS = {
    "fused-get-ok": 200,
    "fused-post-form-with-csrf-token": 200,
    "fused-post-form-without-token": 403,
    "fused-refused-host": 400,
    "fused-oversized-body": 413,
    "fused-cors-preflight": 204,
    "fused-cors-preflight-refused": 403,
    "fused-rate-limited-client": 429,
    "fused-policy-refusal": 401,
    "fused-exception-in-app": 500,
    "fused-exception-in-stage": 500,
    "fused-malformed-scope-headers": 500,
}


@pytest.mark.parametrize(("method", "path", "headers", "body"), CASES)
async def test_each_case_is_the_answer_it_names(
    request: pytest.FixtureRequest, method: str, path: str, headers: Any, body: bytes
) -> None:
    """The table is not vacuous: each case gets the status its name says."""
    exchanges, _ = await scenario(True, method, path, headers, body)
    case_id = request.node.callspec.id
    assert exchanges[-1].messages[0]["status"] == EXPECTED_STATUS[case_id]


async def test_http_takes_the_fused_path() -> None:
    stack = build(True)
    assert stack.shield._http is not stack.shield._stack
    exchange = await call(stack.shield, "GET", "/", [])
    assert exchange.messages[0]["status"] == 200
