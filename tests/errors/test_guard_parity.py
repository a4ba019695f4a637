"""The errors layer's two HTTP paths answer alike: `guard_http` (its own `send`
wrapper, the layer alone) and `guard_stages` (the guard applied by the flow,
`Shield`'s path), over every way a response can go wrong or pass, with the guard
that holds 422 bodies and the one that lets them through."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bastion.errors import ErrorSettings, ErrorsMiddleware
from bastion.events import EventEmitter
from bastion.types import Message, Receive, Scope, Send
from tests.conftest import RecordingSink

pytestmark = pytest.mark.anyio

App = Callable[[Scope, Receive, Send], Awaitable[None]]
_TRACEBACK = b'Traceback (most recent call last):\n  File "/app.py", line 1\n'
_VALIDATION = json.dumps(
    {"detail": [{"loc": ["body", "password"], "msg": "bad", "input": "hunter2", "ctx": {}}]}
).encode()
_ID = re.compile(rb"[0-9a-f]{16}")


def _answer(status: int, *bodies: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> App:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        for index, body in enumerate(bodies):
            more = index < len(bodies) - 1
            await send({"type": "http.response.body", "body": body, "more_body": more})

    return app


def _then_raise(app: App) -> App:
    async def raising(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, send)
        raise RuntimeError("boom")

    return raising


async def _raise_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("boom")


async def _start_only(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 502, "headers": []})


async def _unfinished(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"a", "more_body": True})


APPS = [
    pytest.param(_answer(200, b"ok"), id="errors-guard-ok"),
    pytest.param(_answer(200, b"a", b"b"), id="errors-guard-streamed-ok"),
    pytest.param(_raise_at_once, id="errors-guard-exception-before-start"),
    pytest.param(_then_raise(_answer(200, b"a", b"b")), id="errors-guard-exception-after-body"),
    pytest.param(_then_raise(_unfinished), id="errors-guard-exception-mid-body"),
    pytest.param(_then_raise(_answer(200, b"ok")), id="errors-guard-exception-after-end"),
    pytest.param(_answer(500, _TRACEBACK), id="errors-guard-traceback-500"),
    pytest.param(_answer(503, b'{"reason": "maintenance"}'), id="errors-guard-deliberate-503"),
    pytest.param(_answer(500, b"Internal ", b"Server Error"), id="errors-guard-default-500"),
    pytest.param(
        _then_raise(_answer(500, b"Internal Server Error")),
        id="errors-guard-default-500-then-raise",
    ),
    pytest.param(_answer(500, b"x" * 1500, b"y" * 1500), id="errors-guard-held-too-large"),
    pytest.param(_start_only, id="errors-guard-5xx-never-finished"),
    pytest.param(_answer(422, _VALIDATION), id="errors-guard-validation-scrubbed"),
    pytest.param(_answer(422, b"not json"), id="errors-guard-validation-not-json"),
    pytest.param(_answer(422, b"[" * 1500, b"]"), id="errors-guard-validation-too-large"),
    pytest.param(
        _answer(500, _TRACEBACK, headers=[(b"content-encoding", b"gzip")]),
        id="errors-guard-encoded-500",
    ),
]


async def _run(path: str, layer: ErrorsMiddleware, app: App, sink: RecordingSink) -> Any:
    sink.records.clear()
    sent: list[Message] = []
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "scheme": "https",
        "headers": [(b"host", b"example.com"), (b"accept", b"application/json")],
        "client": ("192.0.2.1", 1),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    if path == "alone":
        await layer.guard_http(app, scope, receive, send)
    else:
        await layer.guard_stages((), app, scope, receive, send)
    messages = [
        {key: _ID.sub(b"<id>", v) if isinstance(v, bytes) else v for key, v in message.items()}
        for message in sent
    ]
    events = [
        {key: value for key, value in record.items() if key not in ("request_id", "timestamp")}
        for record in sink.records
    ]
    return messages, events


@pytest.mark.parametrize("pass_validation", [False, True], ids=["scrub", "pass-validation"])
@pytest.mark.parametrize("app", APPS)
async def test_fused_guard_answers_as_the_wrapper(app: App, pass_validation: bool) -> None:
    sink = RecordingSink()
    settings = ErrorSettings(
        max_inspected_bytes=1024, insecure_pass_validation_input=pass_validation
    )
    layer = ErrorsMiddleware(app, settings, events=EventEmitter([sink]))
    alone = await _run("alone", layer, app, sink)
    fused = await _run("fused", layer, app, sink)
    assert fused == alone


@pytest.mark.parametrize("path", ["alone", "fused"])
@pytest.mark.parametrize(
    "app",
    [
        pytest.param(
            _answer(500, _TRACEBACK + b"x" * 1500, b'  File "/secret.py"\n', b"tail"),
            id="errors-replaced-traceback-rest-dropped",
        ),
        pytest.param(
            _answer(422, b"[" * 1500, b'"hunter2"', b"]"),
            id="errors-replaced-validation-rest-dropped",
        ),
        pytest.param(
            _answer(500, b"x" * 1500, b"more", headers=[(b"content-encoding", b"gzip")]),
            id="errors-replaced-encoded-rest-dropped",
        ),
    ],
)
async def test_a_replaced_response_sends_nothing_after_the_generic_page(
    app: App, path: str
) -> None:
    """A held response replaced by the generic page while the application was still
    sending it: the server gets the generic page, whole, and then nothing (the rest
    of a traceback must not follow a complete response onto the connection)."""
    sink = RecordingSink()
    layer = ErrorsMiddleware(
        app, ErrorSettings(max_inspected_bytes=1024), events=EventEmitter([sink])
    )
    messages, _ = await _run(path, layer, app, sink)
    assert [message["type"] for message in messages] == [
        "http.response.start",
        "http.response.body",
    ]
    assert not messages[1].get("more_body")
    assert b"secret" not in messages[1]["body"]
    assert b"hunter2" not in messages[1]["body"]
