"""The adapter's per-request shortcuts on the head's size and on the step of `receive`
decide exactly as the plain algorithms they replace.

* the head's size is summed in a loop: every head gets the 431 that the length of
  its names and values joined (the sum it replaced, kept here as the reference)
  gives, named at the boundaries and over generated heads (the loop stops at
  the line limit, past which the count alone decides);
* the wrapped `receive` steps the server's `receive` through a generator
  (`_Exchange._fetch`) instead of the server's coroutine itself: a server that
  holds the message, one that waits for it and one whose `receive` is no coroutine
  get the same verdict on every named body, legitimate or attack, and only a wait
  is ever timed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.events import EventEmitter
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.limits.checks import HEADER_LINE_OVERHEAD_BYTES, check_header_size
from bastion.limits.reasons import (
    REASON_BODY_TIMEOUT,
    REASON_BODY_TOO_LARGE,
    REASON_CONTENT_LENGTH_MISMATCH,
    REASON_CONTENT_LENGTH_TOO_LARGE,
    REASON_FORM_TOO_MANY_FIELDS,
    REASON_HEADERS_TOO_LARGE,
    REASON_HEADERS_TOO_MANY,
    REASON_JSON_TOO_DEEP,
)
from bastion.types import Message, RawHeaders, Receive, Scope, Send
from tests.conftest import RecordingSink
from tests.limits.harness import http_scope
from tests.limits.test_middleware import read_body

MAX_HEADER_COUNT = 6
MAX_HEADER_BYTES = 120
MAX_BODY = 100


def reference_head_reason(raw: RawHeaders) -> str:
    """The head's verdict as the layer computed it before the loop: the length of
    every name and value joined, plus the line overhead."""
    size = len(b"".join(itertools.chain.from_iterable(raw)))
    return check_header_size(
        len(raw),
        size + HEADER_LINE_OVERHEAD_BYTES * len(raw),
        max_count=MAX_HEADER_COUNT,
        max_bytes=MAX_HEADER_BYTES,
    )


@dataclass
class Outcome:
    status: int | None = None
    seen: list[tuple[bytes, bool]] = field(default_factory=list)  # the app's body, cut off


async def _never_reads() -> Message:  # pragma: no cover - the head decides alone
    raise AssertionError("a head-only request reads nothing")


async def run_head(raw: RawHeaders, events: EventEmitter | None = None) -> Outcome:
    outcome = Outcome()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            outcome.status = message["status"]

    middleware = LimitsMiddleware(
        app,
        LimitsSettings(max_header_count=MAX_HEADER_COUNT, max_header_bytes=MAX_HEADER_BYTES),
        events=events,
    )
    await middleware(http_scope("GET", "/", raw), _never_reads, send)
    return outcome


def head_of(total: int, lines: int = 2) -> RawHeaders:
    """`lines` header lines whose names, values and overhead come to `total` bytes."""
    raw = [(b"host", b"localhost")] + [(b"x-%d" % i, b"") for i in range(1, lines)]
    used = sum(len(n) + len(v) + HEADER_LINE_OVERHEAD_BYTES for n, v in raw)
    name, value = raw[-1]
    raw[-1] = (name, value + b"v" * (total - used))
    return raw


HEADS = [
    pytest.param(head_of(MAX_HEADER_BYTES), "", id="legit-head-at-the-byte-limit"),
    pytest.param(head_of(MAX_HEADER_BYTES, MAX_HEADER_COUNT), "", id="legit-head-at-both-limits"),
    pytest.param(
        head_of(MAX_HEADER_BYTES + 1), REASON_HEADERS_TOO_LARGE, id="limits-head-one-byte-over"
    ),
    pytest.param(
        head_of(MAX_HEADER_BYTES + 1, MAX_HEADER_COUNT),
        REASON_HEADERS_TOO_LARGE,
        id="limits-head-at-the-line-limit-one-byte-over",
    ),
    pytest.param(
        [(b"x-a", b"v" * 60), (b"x-a", b"v" * 60)],
        REASON_HEADERS_TOO_LARGE,
        id="limits-head-repeated-name-over",  # the index has one name: the raw lines count
    ),
    pytest.param(
        [(b"a", b"")] * (MAX_HEADER_COUNT + 1),
        REASON_HEADERS_TOO_MANY,
        id="limits-head-too-many-lines",
    ),
    pytest.param(
        [(b"v" * MAX_HEADER_BYTES, b"")], REASON_HEADERS_TOO_LARGE, id="limits-head-long-name"
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("raw", "reason"), HEADS)
async def test_named_heads(
    raw: RawHeaders, reason: str, events: EventEmitter, sink: RecordingSink
) -> None:
    assert reference_head_reason(raw) == reason  # the case is what its name says
    outcome = await run_head(raw, events)
    assert outcome.status == (431 if reason else 200)
    assert sink.reasons() == ([reason] if reason else [])


_NAMES = st.binary(min_size=1, max_size=30)
_VALUES = st.binary(max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=MAX_HEADER_COUNT + 2))
def test_generated_heads_match_the_joined_length(raw: list[tuple[bytes, bytes]]) -> None:
    outcome = asyncio.run(run_head(raw))
    assert outcome.status == (431 if reference_head_reason(raw) else 200)


# --- the step of `receive` -----------------------------------------------------------

Server = Callable[[Sequence[Message]], Callable[[], Awaitable[Message]]]


def coroutine_server(
    messages: Sequence[Message], *, wait: float | None = None
) -> Callable[[], Awaitable[Message]]:
    """A server whose `receive` is a coroutine: it holds every message (`wait` None),
    or waits `wait` seconds first (0: a loop turn)."""
    queue = list(messages)

    async def receive() -> Message:
        if wait is not None:
            await asyncio.sleep(wait)
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    return receive


def future_server(
    messages: Sequence[Message], *, wait: float = 0.0
) -> Callable[[], Awaitable[Message]]:
    """A server whose `receive` returns a future, set on the next loop turn, or
    `wait` seconds later."""
    queue = list(messages)

    def receive() -> asyncio.Future[Message]:
        result: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        message = queue.pop(0) if queue else {"type": "http.disconnect"}
        if wait:
            result.get_loop().call_later(wait, result.set_result, message)
        else:
            result.get_loop().call_soon(result.set_result, message)
        return result

    return receive


holding = coroutine_server
waiting = partial(coroutine_server, wait=0.0)
future = future_server
slow = partial(coroutine_server, wait=0.01)
slow_future = partial(future_server, wait=0.01)


SERVERS = [
    pytest.param(holding, id="server-holds-the-body"),
    pytest.param(waiting, id="server-waits"),
    pytest.param(future, id="server-returns-a-future"),
]

FORM = (b"content-type", b"application/x-www-form-urlencoded")
JSON = (b"content-type", b"application/json")


def length(size: int) -> tuple[bytes, bytes]:
    return (b"content-length", b"%d" % size)


def chunks(*parts: bytes) -> list[Message]:
    return [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1}
        for index, part in enumerate(parts)
    ]


DEEP = json.dumps(json.loads("[" * 40 + "]" * 40)).encode()

# (head, messages, status, reason, what the app gets: its body and whether it was cut off)
BODIES = [
    pytest.param(
        [FORM, length(11)],
        chunks(b"a=1&b=2&c=3"),
        200,
        "",
        (b"a=1&b=2&c=3", False),
        id="legit-form-in-one-message",
    ),
    pytest.param(
        [FORM],
        chunks(b"a=1&", b"b=2"),
        200,
        "",
        (b"a=1&b=2", False),
        id="legit-chunked-form",
    ),
    pytest.param(
        [JSON, length(8)],
        chunks(b'{"a": 1}'),
        200,
        "",
        (b'{"a": 1}', False),
        id="legit-json-in-one-message",
    ),
    pytest.param([], chunks(b""), 200, "", (b"", False), id="legit-no-body"),
    pytest.param(
        [FORM, length(3)],
        chunks(b"a=1&b=2"),
        400,
        REASON_CONTENT_LENGTH_MISMATCH,
        (b"", True),
        id="limits-body-longer-than-declared",
    ),
    pytest.param(
        [FORM, length(9)],
        chunks(b"a=1&b=2"),
        400,
        REASON_CONTENT_LENGTH_MISMATCH,
        (b"", True),
        id="limits-body-shorter-than-declared",
    ),
    pytest.param(
        [FORM, length(MAX_BODY + 1)],
        chunks(b"a" * (MAX_BODY + 1)),
        413,
        REASON_CONTENT_LENGTH_TOO_LARGE,
        None,
        id="limits-oversized-declared-body",
    ),
    pytest.param(
        [FORM],
        chunks(b"a" * 60, b"a" * 60),
        413,
        REASON_BODY_TOO_LARGE,
        (b"a" * 60, True),
        id="limits-chunked-body-over-the-limit",
    ),
    pytest.param(
        [],
        chunks(b"a" * (MAX_BODY + 1)),
        413,
        REASON_BODY_TOO_LARGE,
        (b"", True),
        id="limits-undeclared-body-over-the-limit",
    ),
    pytest.param(
        [FORM, length(7)],
        chunks(b"a&b&c&d"),
        400,
        REASON_FORM_TOO_MANY_FIELDS,
        (b"", True),
        id="limits-form-too-many-fields-in-one-message",
    ),
    pytest.param(
        [JSON, length(len(DEEP))],
        chunks(DEEP),
        400,
        REASON_JSON_TOO_DEEP,
        (b"", True),
        id="limits-json-too-deep-in-one-message",
    ),
]


def body_settings(**overrides: Any) -> LimitsSettings:
    return LimitsSettings(
        max_body_bytes=MAX_BODY, max_form_fields=3, max_json_depth=10, **overrides
    )


async def run_body(
    middleware_settings: LimitsSettings,
    head: RawHeaders,
    receive: Callable[[], Awaitable[Message]],
    events: EventEmitter,
) -> Outcome:
    outcome = Outcome()

    async def app(scope: Scope, app_receive: Receive, send: Send) -> None:
        outcome.seen.append(await read_body(app_receive))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            outcome.status = message["status"]

    middleware = LimitsMiddleware(app, middleware_settings, events=events)
    await asyncio.wait_for(middleware(http_scope(headers=head), receive, send), 10)
    return outcome


@pytest.mark.anyio
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize(("head", "messages", "status", "reason", "seen"), BODIES)
async def test_every_server_gets_the_same_verdict(
    server: Server,
    head: RawHeaders,
    messages: list[Message],
    status: int,
    reason: str,
    seen: tuple[bytes, bool] | None,
    events: EventEmitter,
    sink: RecordingSink,
) -> None:
    outcome = await run_body(body_settings(), head, server(messages), events)
    assert outcome.status == status
    assert sink.reasons() == ([reason] if reason else [])
    assert outcome.seen == ([seen] if seen is not None else [])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("server", "status", "reason"),
    [
        pytest.param(holding, 200, "", id="legit-held-body-is-never-timed"),
        pytest.param(slow, 408, REASON_BODY_TIMEOUT, id="limits-slow-body-is-timed"),
        pytest.param(slow_future, 408, REASON_BODY_TIMEOUT, id="limits-slow-future-is-timed"),
    ],
)
async def test_only_a_wait_is_timed(
    server: Server, status: int, reason: str, events: EventEmitter, sink: RecordingSink
) -> None:
    """With a deadline far shorter than the server's wait, a body the server held
    passes (no wait, no timer) and the same body on a server that must wait for it
    is cut off: the step tells the two apart."""
    tight = body_settings(body_idle_timeout_seconds=1e-9)
    outcome = await run_body(tight, [FORM, length(3)], server(chunks(b"a=1")), events)
    assert outcome.status == status
    assert sink.reasons() == ([reason] if reason else [])


@pytest.mark.anyio
async def test_a_stalled_body_is_cut_off(events: EventEmitter, sink: RecordingSink) -> None:
    """limits-stalled-body: the first chunk comes at once, the rest never does."""
    first = chunks(b"a=1&", b"b=2")[0]
    served = False

    async def receive() -> Message:
        nonlocal served
        if not served:
            served = True
            return first
        await asyncio.Event().wait()
        raise AssertionError("never")  # pragma: no cover

    outcome = await run_body(body_settings(body_idle_timeout_seconds=0.05), [FORM], receive, events)
    assert outcome.status == 408
    assert sink.reasons() == [REASON_BODY_TIMEOUT]
    assert outcome.seen == [(b"a=1&", True)]
