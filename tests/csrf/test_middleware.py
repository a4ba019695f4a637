"""The ASGI adapter: scopes, modes, Vary, body replay, the session link, helpers."""

from __future__ import annotations

import inspect
from typing import Any

import httpx
import jinja2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bastion.csrf import (
    REASON_BODY_TOO_LARGE,
    REASON_CROSS_SITE,
    REASON_METHOD_OVERRIDE,
    REASON_NO_SESSION,
    REASON_ORIGIN_MISMATCH,
    CSRFMiddleware,
    CSRFSettings,
    csrf_token_processor,
    install_csrf_token,
    issue_token,
)
from bastion.csrf.middleware import append_vary
from bastion.events import EventEmitter
from bastion.exceptions import ConfigurationError
from bastion.sessions import SessionMiddleware
from bastion.transport import TransportMiddleware, TransportSettings
from bastion.types import Message, Receive, Scope, Send
from tests.conftest import RecordingSink, asgi_client
from tests.csrf.harness import CSRF_KEY, SESSION_KEY, build

pytestmark = pytest.mark.anyio

CROSS = [(b"sec-fetch-site", b"cross-site")]


class RecordingApp:
    """A raw app that records the scope and every message it received."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.headers = headers or []
        self.scopes: list[Scope] = []
        self.received: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"app"})


def csrf(app: Any, settings: CSRFSettings | None = None, events: EventEmitter | None = None) -> Any:
    return CSRFMiddleware(app, settings, secret_keys=[CSRF_KEY], events=events)


class Chunks:
    """A `receive` that yields the given messages, then records any further call."""

    def __init__(self, *bodies: bytes, disconnect_after: bool = False) -> None:
        self.messages: list[Message] = [
            {"type": "http.request", "body": body, "more_body": index < len(bodies) - 1}
            for index, body in enumerate(bodies)
        ]
        if disconnect_after:
            self.messages[-1]["more_body"] = True
            self.messages.append({"type": "http.disconnect"})
        self.sent = list(self.messages)
        self.calls = 0

    async def __call__(self) -> Message:
        self.calls += 1
        if self.messages:
            return self.messages.pop(0)
        return {"type": "http.disconnect"}


def http_scope(
    headers: list[tuple[bytes, bytes]], method: str = "POST", path: str = "/x"
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"bank.example"), *headers],
        "client": ("127.0.0.1", 1),
    }


async def run(app: Any, scope: dict[str, Any], receive: Receive) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


# --- Scopes and modes --------------------------------------------------------------


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
async def test_other_scopes_pass_through_untouched(scope_type: str) -> None:
    inner = RecordingApp()
    scope = {"type": scope_type, "headers": [(b"origin", b"https://evil.example")]}
    await run(csrf(inner), scope, Chunks(b""))
    assert inner.scopes == [scope]
    assert "bastion.csrf" not in scope


async def test_disabled_layer_passes_everything(events: EventEmitter, sink: RecordingSink) -> None:
    inner = RecordingApp()
    app = csrf(inner, CSRFSettings(enabled=False), events)
    sent = await run(app, http_scope(CROSS), Chunks(b"x"))
    assert sent[0]["status"] == 200
    assert sink.records == []
    assert not any(name == b"vary" for name, _ in sent[0]["headers"])


async def test_monitor_only_reports_and_lets_through(
    events: EventEmitter, sink: RecordingSink
) -> None:
    inner = RecordingApp()
    app = csrf(inner, CSRFSettings(monitor_only=True), events)
    sent = await run(app, http_scope(CROSS), Chunks(b"x"))
    assert sent[0]["status"] == 200
    assert [(r["reason"], r["action"]) for r in sink.records] == [(REASON_CROSS_SITE, "monitored")]


async def test_monitor_only_replays_a_body_it_read() -> None:
    stack = build("raw", CSRFSettings(monitor_only=True, max_body_bytes=4))
    body = b"0123456789"
    response = await stack.request("POST", "/transfer", content=body)
    assert response.status_code == 200
    assert response.content == body
    assert stack.csrf_reasons() == [REASON_BODY_TOO_LARGE]


async def test_refusal_event(events: EventEmitter, sink: RecordingSink) -> None:
    app = csrf(RecordingApp(), events=events)
    scope = http_scope([(b"origin", b"https://evil.example")], method="PUT", path="/acct")
    sent = await run(app, scope, Chunks(b""))
    assert sent[0]["status"] == 403
    record = sink.records[0]
    assert {k: record[k] for k in ("kind", "reason", "layer", "action", "status", "method")} == {
        "kind": "malicious_csrf",
        "reason": REASON_ORIGIN_MISMATCH,
        "layer": "csrf",
        "action": "blocked",
        "status": 403,
        "method": "PUT",
    }
    assert record["path"] == "/acct"
    assert record["details"] == {"origin": "https://evil.example", "sec_fetch_site": None}


async def test_method_override_event_names_the_cause(
    events: EventEmitter, sink: RecordingSink
) -> None:
    app = csrf(RecordingApp(), events=events)
    scope = http_scope([*CROSS, (b"x-http-method-override", b"DELETE")], method="GET")
    await run(app, scope, Chunks(b""))
    details = sink.records[0]["details"]
    assert sink.records[0]["reason"] == REASON_METHOD_OVERRIDE
    assert isinstance(details, dict)
    assert (details["cause"], details["method_override"]) == (REASON_CROSS_SITE, "DELETE")


async def test_refusal_is_generic_and_json_when_asked() -> None:
    app = csrf(RecordingApp())
    sent = await run(app, http_scope([*CROSS, (b"accept", b"application/json")]), Chunks(b""))
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"cache-control"] == b"no-store"
    assert b'"status": 403' in sent[1]["body"]


# --- Vary --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app_headers", "expected"),
    [
        pytest.param([], [b"Origin, Sec-Fetch-Site"], id="none"),
        pytest.param(
            [(b"vary", b"Accept-Encoding")],
            [b"Accept-Encoding", b"Origin, Sec-Fetch-Site"],
            id="appended",
        ),
        pytest.param([(b"Vary", b"origin")], [b"origin", b"Sec-Fetch-Site"], id="partly-there"),
        pytest.param(
            [(b"vary", b"Origin"), (b"vary", b"sec-fetch-site")],
            [b"Origin", b"sec-fetch-site"],
            id="all-there",
        ),
        pytest.param([(b"vary", b"*")], [b"*"], id="star"),
    ],
)
async def test_vary_is_appended(
    app_headers: list[tuple[bytes, bytes]], expected: list[bytes]
) -> None:
    app = csrf(RecordingApp(app_headers))
    sent = await run(app, http_scope([(b"sec-fetch-site", b"same-origin")]), Chunks(b""))
    assert [v for k, v in sent[0]["headers"] if k.lower() == b"vary"] == expected


async def test_no_vary_on_safe_requests() -> None:
    app = csrf(RecordingApp())
    sent = await run(app, http_scope(CROSS, method="GET"), Chunks(b""))
    assert not any(k == b"vary" for k, _ in sent[0]["headers"])


def test_append_vary_keeps_the_apps_list() -> None:
    headers = [(b"content-type", b"text/plain")]
    assert append_vary(headers, [b"Origin"]) == [*headers, (b"vary", b"Origin")]
    assert headers == [(b"content-type", b"text/plain")]  # not modified in place


# --- The body ----------------------------------------------------------------------


async def test_body_not_read_when_metadata_decides() -> None:
    inner = RecordingApp()
    receive = Chunks(b"a", b"b")
    await run(csrf(inner), http_scope([(b"sec-fetch-site", b"same-origin")]), receive)
    assert inner.received == receive.sent
    assert receive.calls == 2  # only the app's own calls


async def test_body_not_read_when_token_is_in_the_header() -> None:
    stack = build("raw")
    token, session_id = await stack.token_and_session()
    inner_received: list[Message] = []
    calls = 0

    async def receive() -> Message:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": b"payload", "more_body": False}

    async def app(scope: Scope, receive_: Receive, send: Send) -> None:
        inner_received.append(await receive_())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    stack2 = build("raw", app=app, store=stack.store, clock=stack.clock)
    scope = http_scope(
        [(b"x-csrf-token", token.encode()), (b"cookie", f"__Host-session={session_id}".encode())]
    )
    sent = await run(stack2.app, scope, receive)
    assert sent[0]["status"] == 200
    assert calls == 1  # the app's one call; the layer read nothing
    assert inner_received[0]["body"] == b"payload"


async def test_form_body_is_replayed_message_for_message() -> None:
    """The app receives the very same message objects, in order, then the real
    `receive` (here, a disconnect)."""
    stack = build("raw")
    token, session_id = await stack.token_and_session()
    inner = RecordingApp()
    stack2 = build("raw", app=inner, store=stack.store, clock=stack.clock)
    body = f"a=1&csrf_token={token}&b=2".encode()
    receive = Chunks(body[:5], body[5:50], body[50:], b"")
    scope = http_scope(
        [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"cookie", f"__Host-session={session_id}".encode()),
        ]
    )
    sent = await run(stack2.app, scope, receive)
    assert sent[0]["status"] == 200
    assert len(inner.received) == 4
    assert all(got is sent_ for got, sent_ in zip(inner.received, receive.sent, strict=True))


async def test_body_too_large_is_refused_without_reading_on(
    events: EventEmitter, sink: RecordingSink
) -> None:
    stack = build("raw", CSRFSettings(max_body_bytes=10))
    _, session_id = await stack.token_and_session()
    receive = Chunks(b"x" * 8, b"y" * 8, b"z" * 8)
    scope = http_scope([(b"cookie", f"__Host-session={session_id}".encode())])
    sent = await run(stack.app, scope, receive)
    assert sent[0]["status"] == 403
    assert stack.csrf_reasons() == [REASON_BODY_TOO_LARGE]
    assert receive.calls == 2  # stopped as soon as the limit was passed


async def test_token_in_a_body_within_the_limit() -> None:
    stack = build("raw", CSRFSettings(max_body_bytes=400))
    token, session_id = await stack.token_and_session()
    body = f"csrf_token={token}".encode()
    assert len(body) < 400
    response = await stack.request(
        "POST",
        "/transfer",
        session_id=session_id,
        headers={"content-type": "application/x-www-form-urlencoded"},
        content=body,
    )
    assert response.status_code == 200


async def test_client_disconnect_while_reading() -> None:
    stack = build("raw")
    _, session_id = await stack.token_and_session()
    inner = RecordingApp()
    stack2 = build("raw", app=inner, store=stack.store, clock=stack.clock)
    scope = http_scope([(b"cookie", f"__Host-session={session_id}".encode())])
    sent = await run(stack2.app, scope, Chunks(b"partial", disconnect_after=True))
    assert [m for m in sent if m["type"] == "http.response.start"] == []
    assert inner.scopes == []  # the app never ran


# --- Without the session layer -----------------------------------------------------


async def test_alone_the_metadata_and_origin_checks_work(
    events: EventEmitter, sink: RecordingSink
) -> None:
    app = csrf(RecordingApp(), events=events)
    ok = await run(app, http_scope([(b"sec-fetch-site", b"same-origin")]), Chunks(b""))
    origin_ok = await run(app, http_scope([(b"origin", b"https://bank.example")]), Chunks(b""))
    refused = await run(app, http_scope(CROSS), Chunks(b""))
    assert [ok[0]["status"], origin_ok[0]["status"], refused[0]["status"]] == [200, 200, 403]


async def test_alone_a_token_request_is_refused_no_session(
    events: EventEmitter, sink: RecordingSink
) -> None:
    receive = Chunks(b"csrf_token=abc")
    sent = await run(csrf(RecordingApp(), events=events), http_scope([]), receive)
    assert sent[0]["status"] == 403
    assert sink.reasons() == [REASON_NO_SESSION]
    assert receive.calls == 0  # nothing can verify it: the body is not even read


async def test_starlette_session_dict_is_not_a_bastion_session(
    events: EventEmitter, sink: RecordingSink
) -> None:
    scope = http_scope([])
    scope["session"] = {"csrf": "planted"}
    sent = await run(csrf(RecordingApp(), events=events), scope, Chunks(b""))
    assert sent[0]["status"] == 403
    assert sink.reasons() == [REASON_NO_SESSION]


# --- With the transport layer ------------------------------------------------------


async def test_origin_compared_with_the_transport_layers_resolution(
    events: EventEmitter, sink: RecordingSink
) -> None:
    """Behind a TLS-terminating proxy the server sees http; the transport layer
    resolves https from the trusted proxy's header, so the browser's https Origin
    matches. Without that resolution the same request is a scheme mismatch."""
    behind_proxy = TransportMiddleware(
        csrf(RecordingApp(), events=events),
        TransportSettings(allowed_hosts=("bank.example",), trusted_proxies=("10.0.0.1/32",)),
        events=events,
    )
    headers = {"origin": "https://bank.example", "x-forwarded-proto": "https"}
    async with asgi_client(behind_proxy, "http://bank.example", ("10.0.0.1", 5000)) as client:
        response = await client.post("/x", headers=headers)
    assert response.status_code == 200
    async with asgi_client(csrf(RecordingApp(), events=events), "http://bank.example") as client:
        alone = await client.post("/x", headers=headers)
    assert alone.status_code == 403
    assert sink.reasons() == [REASON_ORIGIN_MISMATCH]


# --- Token helpers -----------------------------------------------------------------


def test_issue_token_needs_the_layers() -> None:
    with pytest.raises(ConfigurationError, match="no CSRFMiddleware"):
        issue_token({"type": "http"})
    app = csrf(RecordingApp())
    with pytest.raises(ConfigurationError, match="SessionMiddleware"):
        issue_token({"type": "http", "bastion.csrf": app.tokens})
    with pytest.raises(TypeError):
        issue_token(42)


async def test_issue_token_works_with_the_layer_disabled() -> None:
    stack = build("raw", CSRFSettings(enabled=False))
    token, _ = await stack.token_and_session()
    assert token


async def test_issued_tokens_create_one_session_and_differ() -> None:
    stack = build("raw")
    first, session_id = await stack.token_and_session()
    again = await stack.request("GET", "/form", session_id=session_id)
    assert again.text != first
    assert stack.session_cookie(again) is None  # same session, nothing new to set


def _templates(tmp_path: Any) -> Jinja2Templates:
    (tmp_path / "form.html").write_text(
        '<form method="post"><input type="hidden" name="csrf_token" value="{{ csrf_token() }}">'
        "</form>"
    )
    return Jinja2Templates(directory=str(tmp_path))


def _token_in(html: str) -> str:
    return html.split('value="')[1].split('"')[0]


async def test_jinja2_global(tmp_path: Any) -> None:
    templates = _templates(tmp_path)
    install_csrf_token(templates)

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "form.html")

    async def post(request: Request) -> Response:
        return PlainTextResponse("posted")

    stack = build(
        app=Starlette(routes=[Route("/page", page), Route("/post", post, methods=["POST"])])
    )
    response = await stack.request("GET", "/page")
    session_id = stack.session_cookie(response)
    assert session_id is not None
    token = _token_in(response.text)
    posted = await stack.request(
        "POST",
        "/post",
        session_id=session_id,
        headers={"content-type": "application/x-www-form-urlencoded"},
        content=f"csrf_token={token}".encode(),
    )
    assert posted.status_code == 200
    assert posted.text == "posted"


async def test_jinja2_context_processor(tmp_path: Any) -> None:
    (tmp_path / "plain.html").write_text("no form here")
    (tmp_path / "form.html").write_text("{{ csrf_token() }}")
    templates = Jinja2Templates(directory=str(tmp_path), context_processors=[csrf_token_processor])

    async def plain(request: Request) -> Response:
        return templates.TemplateResponse(request, "plain.html")

    async def form(request: Request) -> Response:
        return templates.TemplateResponse(request, "form.html")

    stack = build(app=Starlette(routes=[Route("/plain", plain), Route("/form2", form)]))
    plain_response = await stack.request("GET", "/plain")
    assert stack.session_cookie(plain_response) is None  # no token drawn, no session made
    form_response = await stack.request("GET", "/form2")
    assert stack.session_cookie(form_response) is not None
    assert len(form_response.text) > 100


def test_jinja2_global_from_a_raw_scope() -> None:
    env = jinja2.Environment(autoescape=True)
    install_csrf_token(env)
    with pytest.raises(ConfigurationError):
        env.from_string("{{ csrf_token() }}").render(scope={"type": "http"})
    with pytest.raises(TypeError):
        install_csrf_token(object())


# --- Construction ------------------------------------------------------------------


def test_app_is_positional_only_and_keys_are_required() -> None:
    parameters = inspect.signature(CSRFMiddleware).parameters
    assert parameters["app"].kind is inspect.Parameter.POSITIONAL_ONLY
    assert parameters["secret_keys"].kind is inspect.Parameter.KEYWORD_ONLY
    with pytest.raises(ConfigurationError):
        CSRFMiddleware(RecordingApp(), secret_keys=[])


async def test_starlette_add_middleware() -> None:
    async def post(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/x", post, methods=["POST"])])
    app.add_middleware(CSRFMiddleware, settings=CSRFSettings(), secret_keys=[CSRF_KEY])
    app.add_middleware(SessionMiddleware, secret_keys=[SESSION_KEY])
    async with asgi_client(app, "https://bank.example") as client:
        ok = await client.post("/x", headers={"sec-fetch-site": "same-origin"})
        refused = await client.post("/x", headers={"sec-fetch-site": "cross-site"})
        missing = await client.post("/x")
    assert [ok.status_code, refused.status_code, missing.status_code] == [200, 403, 403]


async def test_httpx_client_sees_vary_on_allowed_post() -> None:
    stack = build("starlette")
    response: httpx.Response = await stack.request(
        "POST", "/transfer", headers={"sec-fetch-site": "same-origin"}, content=b"x"
    )
    assert response.headers.get_list("vary") == ["Origin, Sec-Fetch-Site"]
