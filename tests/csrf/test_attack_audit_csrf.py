"""CSRF attacks found in the attack audit, each beside the legitimate request that must
still pass: a form body sent in a flood of tiny (or empty) messages."""

from __future__ import annotations

import tracemalloc

import pytest

from bastion.csrf import REASON_BODY_TOO_LARGE, REASON_TOKEN_MISSING, CSRFSettings
from bastion.csrf.middleware import MAX_KEPT_MESSAGES
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from tests.csrf.harness import build

pytestmark = pytest.mark.anyio

FORM = b"application/x-www-form-urlencoded"
# Far more messages than a browser sends for any form; each one kept would cost a
# few hundred bytes, so the peak tells kept messages from merged bytes.
FLOOD_MESSAGES = 50_000
# What reading and replaying a body of a few hundred bytes may cost, with room for
# the rest of the request; a kept message per chunk costs several megabytes.
MAX_PEAK_BYTES = 1024 * 1024


class Trickle:
    """A `receive` that yields `body` in `chunk`-byte messages, with `empty` empty
    messages (more to come, no byte) before each of them."""

    def __init__(self, body: bytes, *, chunk: int, empty: int = 0) -> None:
        self.pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        self.empty = empty
        self.position = 0
        self.empties_left = empty

    async def __call__(self) -> Message:
        if self.position >= len(self.pieces):
            return {"type": "http.disconnect"}
        if self.empties_left:
            self.empties_left -= 1
            return {"type": "http.request", "body": b"", "more_body": True}
        piece = self.pieces[self.position]
        self.position += 1
        self.empties_left = self.empty
        last = self.position == len(self.pieces)
        return {"type": "http.request", "body": piece, "more_body": not last}


class Echo:
    """An app that reads the whole body and answers with it."""

    def __init__(self) -> None:
        self.messages = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            self.messages += 1
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": bytes(body)})


async def _post(app: ASGIApp, receive: Receive, session_id: str) -> tuple[int, bytes, int]:
    """Post through `app` with `receive`; the status, the body the app echoed, and
    the peak memory traced while the request ran."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "https",
        "path": "/transfer",
        "raw_path": b"/transfer",
        "query_string": b"",
        "headers": [
            (b"host", b"bank.example"),
            (b"content-type", FORM),
            (b"cookie", f"__Host-session={session_id}".encode()),
        ],
        "client": ("127.0.0.1", 5000),
    }
    tracemalloc.start()
    try:
        await app(scope, receive, send)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, peak


@pytest.mark.parametrize(
    ("chunk", "empty", "body_bytes", "with_token", "status"),
    [
        pytest.param(4096, 0, 20_000, True, 200, id="csrf-form-token-in-large-chunks-ok"),
        pytest.param(1, 0, FLOOD_MESSAGES, True, 200, id="csrf-form-token-one-byte-per-message-ok"),
        pytest.param(1, 0, FLOOD_MESSAGES, False, 403, id="csrf-body-flood-one-byte-messages"),
        pytest.param(64, 200, 16_000, False, 403, id="csrf-body-flood-empty-messages"),
        pytest.param(64, 200, 16_000, True, 200, id="csrf-form-token-between-empty-messages-ok"),
    ],
)
async def test_a_body_in_many_tiny_messages_costs_memory_by_its_bytes(
    chunk: int, empty: int, body_bytes: int, with_token: bool, status: int
) -> None:
    """A client without Fetch Metadata or `Origin` sends its form in one-byte (or
    empty) messages: the layer must not keep a message object per byte while it
    looks for the token. The body the app reads is the body sent, byte for byte."""
    stack = build("raw")
    token, session_id = await stack.token_and_session()
    echo = Echo()
    app = build("raw", app=echo, store=stack.store, clock=stack.clock, sink=stack.sink)
    field = f"csrf_token={token}".encode() if with_token else b"note=hello"
    body = field + b"&pad=" + b"x" * (body_bytes - len(field) - 5)
    receive = Trickle(body, chunk=chunk, empty=empty)
    got_status, echoed, peak = await _post(app.app, receive, session_id)
    assert got_status == status
    if status == 200:
        assert echoed == body
        assert echo.messages <= MAX_KEPT_MESSAGES + 2
    else:
        assert stack.csrf_reasons()[-1] == REASON_TOKEN_MISSING
    assert peak < MAX_PEAK_BYTES + 4 * len(body)


async def test_a_flood_past_the_body_limit_is_still_refused_and_replayed() -> None:
    """Past `max_body_bytes`, the refusal stays `body-too-large`, and in monitor-only
    mode the app still gets every byte, in order."""
    stack = build("raw", CSRFSettings(monitor_only=True, max_body_bytes=1000))
    _, session_id = await stack.token_and_session()
    echo = Echo()
    app = build(
        "raw",
        CSRFSettings(monitor_only=True, max_body_bytes=1000),
        app=echo,
        store=stack.store,
        clock=stack.clock,
        sink=stack.sink,
    )
    body = bytes(range(256)) * 8
    status, echoed, _ = await _post(app.app, Trickle(body, chunk=3), session_id)
    assert status == 200
    assert echoed == body
    assert stack.csrf_reasons()[-1] == REASON_BODY_TOO_LARGE
