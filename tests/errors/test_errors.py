"""The error shield: attack cases (what must never reach the client) and the
legitimate responses that must pass through unchanged."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from bastion.errors import (
    REASON_DEBUG_PAGE,
    REASON_EXCEPTION_AFTER_START,
    REASON_UNHANDLED_EXCEPTION,
    ErrorSettings,
    ErrorsMiddleware,
    body_leaks_internals,
    scrub_validation_body,
)
from bastion.events import EventEmitter
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.conftest import RecordingSink, asgi_client
from tests.support.apps import BOOM, fastapi_app, starlette_app

pytestmark = pytest.mark.anyio


def _assert_generic(response: httpx.Response) -> None:
    assert response.status_code == 500
    assert BOOM not in response.text
    assert "Traceback" not in response.text
    assert 'File "' not in response.text
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("app_factory", "accept", "content_type"),
    [
        pytest.param(
            lambda: starlette_app(debug=False),
            "text/html",
            "text/html",
            id="errors-exception-starlette-html",
        ),
        pytest.param(
            lambda: starlette_app(debug=True),
            "text/html",
            "text/html",
            id="errors-starlette-debug-page-html",
        ),
        pytest.param(
            lambda: starlette_app(debug=True),
            "*/*",
            "text/html",
            id="errors-starlette-debug-traceback-text",
        ),
        pytest.param(
            lambda: fastapi_app(debug=True),
            "application/json",
            "application/json",
            id="errors-fastapi-debug-json",
        ),
        pytest.param(
            lambda: fastapi_app(debug=False),
            "application/json",
            "application/json",
            id="errors-exception-fastapi-json",
        ),
    ],
)
async def test_exceptions_and_debug_pages_become_generic(
    app_factory: Any, accept: str, content_type: str, sink: RecordingSink, events: EventEmitter
) -> None:
    app = ErrorsMiddleware(app_factory(), events=events)
    async with asgi_client(app) as client:
        response = await client.get("/boom", headers={"accept": accept})
    _assert_generic(response)
    assert response.headers["content-type"].startswith(content_type)
    request_id = sink.records[-1]["request_id"]
    assert isinstance(request_id, str)
    assert request_id in response.text
    assert REASON_UNHANDLED_EXCEPTION in sink.reasons()


async def test_raw_asgi_exception(
    sink: RecordingSink, events: EventEmitter, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support.apps import raw_app

    with caplog.at_level(logging.ERROR, logger="bastion.errors"):
        async with asgi_client(ErrorsMiddleware(raw_app, events=events)) as client:
            response = await client.get("/boom")
    _assert_generic(response)
    # The detail goes to the log only, as one JSON line under the incident id.
    (record,) = [r for r in caplog.records if r.name == "bastion.errors"]
    logged = json.loads(record.getMessage())
    assert logged["incident"] == sink.records[0]["request_id"]
    assert logged["exception"] == "RuntimeError"
    assert BOOM in logged["traceback"]


async def test_app_5xx_with_traceback_text_is_replaced(
    sink: RecordingSink, events: EventEmitter
) -> None:
    async def leaky(request: Request) -> Response:
        trace = 'Traceback (most recent call last):\n  File "/srv/app.py", line 3\nKeyError: db'
        return PlainTextResponse(trace, status_code=500)

    app = ErrorsMiddleware(Starlette(routes=[Route("/", leaky)]), events=events)
    async with asgi_client(app) as client:
        response = await client.get("/")
    assert response.status_code == 500
    assert "srv/app.py" not in response.text
    assert sink.reasons() == [REASON_DEBUG_PAGE]


async def test_deliberate_5xx_without_internals_passes() -> None:
    async def unavailable(request: Request) -> Response:
        return JSONResponse(
            {"error": "maintenance"}, status_code=503, headers={"retry-after": "30"}
        )

    app = ErrorsMiddleware(Starlette(routes=[Route("/", unavailable)]))
    async with asgi_client(app) as client:
        response = await client.get("/")
    assert response.status_code == 503
    assert response.json() == {"error": "maintenance"}
    assert response.headers["retry-after"] == "30"


async def test_exception_after_response_start_truncates(
    sink: RecordingSink, events: EventEmitter
) -> None:
    async def stream(request: Request) -> Response:
        async def chunks() -> Any:
            yield b"first chunk;"
            raise RuntimeError(BOOM)

        return StreamingResponse(chunks())

    app = ErrorsMiddleware(Starlette(routes=[Route("/", stream)]), events=events)
    sent: list[dict[str, Any]] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await never.wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "server": ("t", 80),
        "client": ("1.2.3.4", 1),
        "root_path": "",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    await app(scope, receive, send)
    # The response started with 200 and never completed: the server will close it.
    assert sent[0]["status"] == 200
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert bodies
    assert all(m.get("more_body") for m in bodies), "a truncated body must never look complete"
    assert all(BOOM.encode() not in m.get("body", b"") for m in sent)
    assert REASON_EXCEPTION_AFTER_START in sink.reasons()


class Login(BaseModel):
    username: str
    pin: int


def _validation_app() -> FastAPI:
    app = FastAPI()

    @app.post("/login")
    async def login(body: Login) -> dict[str, str]:
        return {"user": body.username}

    return app


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"username": "alice", "pin": "hunter2-secret"}, id="errors-422-echoes-input"),
        pytest.param({"username": ["hunter2-secret"], "pin": 1}, id="errors-422-echoes-list"),
        pytest.param({"pin": "hunter2-secret"}, id="errors-422-missing-field-echoes-body"),
    ],
)
async def test_validation_errors_do_not_echo_input(payload: dict[str, Any]) -> None:
    async with asgi_client(ErrorsMiddleware(_validation_app())) as client:
        response = await client.post("/login", json=payload)
    assert response.status_code == 422
    assert "hunter2-secret" not in response.text
    detail = response.json()["detail"]
    assert detail
    assert all("input" not in item and "ctx" not in item for item in detail)
    assert all("loc" in item and "msg" in item for item in detail)
    assert int(response.headers["content-length"]) == len(response.content)


async def test_valid_request_passes_unchanged() -> None:
    async with asgi_client(ErrorsMiddleware(_validation_app())) as client:
        response = await client.post("/login", json={"username": "alice", "pin": 1234})
    assert response.status_code == 200
    assert response.json() == {"user": "alice"}


async def test_validation_echo_can_be_allowed_explicitly() -> None:
    app = ErrorsMiddleware(_validation_app(), ErrorSettings(insecure_pass_validation_input=True))
    async with asgi_client(app) as client:
        response = await client.post("/login", json={"username": "a", "pin": "visible"})
    assert "visible" in response.text


@pytest.mark.parametrize("framework", ["raw", "starlette", "fastapi"])
async def test_normal_responses_pass_through(framework: str) -> None:
    from tests.support.apps import make_app

    async with asgi_client(ErrorsMiddleware(make_app(framework))) as client:
        assert (await client.get("/")).text == "hello"
        assert (await client.post("/submit", content=b"x" * 10)).text == "10"
        assert (await client.get("/missing")).status_code == 404


async def test_debug_shows_details_in_development_only_page() -> None:
    app = ErrorsMiddleware(starlette_app(), debug=True)
    async with asgi_client(app) as client:
        response = await client.get("/boom", headers={"accept": "application/json"})
    assert response.status_code == 500
    assert BOOM in response.json()["debug"]


async def test_monitor_only_reports_debug_page_but_passes_it(
    sink: RecordingSink, events: EventEmitter
) -> None:
    async def leaky(request: Request) -> Response:
        return PlainTextResponse("Traceback (most recent call last): x", status_code=500)

    app = ErrorsMiddleware(
        Starlette(routes=[Route("/", leaky)]), ErrorSettings(monitor_only=True), events=events
    )
    async with asgi_client(app) as client:
        response = await client.get("/")
    assert "Traceback" in response.text
    assert sink.records[0]["action"] == "monitored"


async def test_websocket_exception_closes_with_1011(
    sink: RecordingSink, events: EventEmitter
) -> None:
    async def ws_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise RuntimeError(BOOM)

    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await ErrorsMiddleware(ws_app, events=events)(
        {"type": "websocket", "path": "/ws", "headers": [], "client": ("1.2.3.4", 1)},
        receive,
        send,
    )
    assert sent[-1] == {"type": "websocket.close", "code": 1011}
    assert sink.reasons() == [REASON_UNHANDLED_EXCEPTION]


async def test_lifespan_passes_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    wrapped: ASGIApp = ErrorsMiddleware(app)
    await wrapped({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


@pytest.mark.parametrize(
    ("body", "leaks"),
    [
        (b"Traceback (most recent call last):", True),
        (b'  File "/usr/lib/python3/x.py", line 1', True),
        (b"<title>Starlette Debugger</title>", True),
        (b"Internal Server Error", False),
        (b'{"error": "maintenance"}', False),
    ],
)
def test_leak_detection(body: bytes, leaks: bool) -> None:
    assert body_leaks_internals(body) is leaks


def test_scrub_keeps_non_fastapi_shapes() -> None:
    assert scrub_validation_body(b"not json") is None
    assert scrub_validation_body(b'{"detail": "text"}') is None
    scrubbed = scrub_validation_body(b'{"detail": [{"loc": ["a"], "msg": "m", "input": "s"}]}')
    assert scrubbed is not None
    assert json.loads(scrubbed) == {"detail": [{"loc": ["a"], "msg": "m"}]}


def _gzip_app() -> ASGIApp:
    from starlette.middleware.gzip import GZipMiddleware

    app = _validation_app()
    app.add_middleware(GZipMiddleware, minimum_size=10)

    @app.get("/unavailable")
    async def unavailable() -> Response:
        trace = 'Traceback (most recent call last):\n  File "/srv/app.py", line 3' * 5
        return PlainTextResponse(trace, status_code=503)

    return app


@pytest.mark.parametrize(
    ("method", "path", "payload", "status"),
    [
        pytest.param(
            "POST",
            "/login",
            {"username": "a", "pin": "hunter2-secret"},
            422,
            id="errors-422-gzipped-echo",
        ),
        pytest.param("GET", "/unavailable", None, 503, id="errors-5xx-gzipped-traceback"),
    ],
)
async def test_compressed_bodies_that_cannot_be_inspected_become_generic(
    method: str, path: str, payload: dict[str, Any] | None, status: int
) -> None:
    async with asgi_client(ErrorsMiddleware(_gzip_app())) as client:
        response = await client.request(
            method, path, json=payload, headers={"accept-encoding": "gzip"}
        )
    assert response.status_code == status
    assert "hunter2-secret" not in response.text
    assert "srv/app.py" not in response.text
    assert "content-encoding" not in response.headers


async def test_uncompressed_422_still_scrubbed_beside_gzip_middleware() -> None:
    async with asgi_client(ErrorsMiddleware(_gzip_app())) as client:
        response = await client.post(
            "/login", json={"username": "a", "pin": "x"}, headers={"accept-encoding": "identity"}
        )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "pin"]


async def test_held_5xx_is_released_before_background_tasks_finish() -> None:
    from starlette.background import BackgroundTask

    release = asyncio.Event()
    seen_by_client = asyncio.Event()

    async def wait_for_client() -> None:
        await asyncio.wait_for(seen_by_client.wait(), timeout=5)
        release.set()

    async def endpoint(request: Request) -> Response:
        return JSONResponse(
            {"error": "busy"}, status_code=503, background=BackgroundTask(wait_for_client)
        )

    app = ErrorsMiddleware(Starlette(routes=[Route("/", endpoint)]))
    messages: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            seen_by_client.set()

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "server": ("t", 80),
        "client": ("1.2.3.4", 1),
        "root_path": "",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    # If the response were held until the app returned, the background task would
    # wait for the client forever (bounded by its 5 s timeout) and fail the test.
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    assert release.is_set()
    assert messages[0]["status"] == 503


async def test_head_gets_generic_headers_without_content() -> None:
    async with asgi_client(ErrorsMiddleware(starlette_app())) as client:
        response = await client.head("/boom")
    assert response.status_code == 500
    assert response.content == b""


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        pytest.param(
            "login failed password=hunter2-secret",
            "hunter2-secret",
            id="errors-log-password-assignment",
        ),
        pytest.param(
            "bad header Authorization: Bearer abc.def-secret",
            "abc.def-secret",
            id="errors-log-bearer-token",
        ),
        pytest.param(
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl here",
            "eyJzdWIiOiIxIn0",
            id="errors-log-jwt",
        ),
    ],
)
async def test_exception_logs_are_scrubbed(
    message: str, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError(message)

    with caplog.at_level(logging.ERROR, logger="bastion.errors"):
        async with asgi_client(ErrorsMiddleware(app)) as client:
            await client.get("/")
    (record,) = caplog.records
    assert secret not in record.getMessage()
    assert "ValueError" in record.getMessage()


async def test_exception_logs_cannot_forge_lines(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError('bad input\n{"kind": "authn_login_success"}\r\n\x1b[2K')

    with caplog.at_level(logging.ERROR, logger="bastion.errors"):
        async with asgi_client(ErrorsMiddleware(app)) as client:
            await client.get("/")
    line = caplog.records[0].getMessage()
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line


TRACE_500 = 'Traceback (most recent call last):\n  File "/srv/app.py", line 3\nKeyError: db'


def _leaky_app(framework: str) -> ASGIApp:
    """Each framework answering a 500 whose body is a traceback (a home-made debug page)."""
    if framework == "raw":

        async def raw(scope: Scope, receive: Receive, send: Send) -> None:
            body = TRACE_500.encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": body})

        return raw

    async def leaky(request: Request) -> Response:
        return PlainTextResponse(TRACE_500, status_code=500)

    if framework == "starlette":
        return Starlette(routes=[Route("/", leaky)])
    app = FastAPI()
    app.add_api_route("/", leaky)
    return app


@pytest.mark.parametrize("framework", ["raw", "starlette", "fastapi"])
async def test_debug_page_suppressed_in_every_framework(
    framework: str, sink: RecordingSink, events: EventEmitter
) -> None:
    async with asgi_client(ErrorsMiddleware(_leaky_app(framework), events=events)) as client:
        response = await client.get("/")
    assert response.status_code == 500
    assert "srv/app.py" not in response.text
    assert sink.reasons() == [REASON_DEBUG_PAGE]
