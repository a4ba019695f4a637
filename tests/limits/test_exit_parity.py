"""The short paths of `LimitsMiddleware.enter` against the general ones.

* The exit. A request leaves with the layer's plain `_InFlight.leave` until it has
  something of its own to release (a timer) or absorb (a body cut off): then
  `_Exchange._own_exit` puts `on_exit` in its place. The general path registers
  `on_exit` for every request from the start (`_GeneralExit`, as the layer did
  before); over the attack table, on every framework, both answer alike: the same
  status, reasons, body, exception and in-flight count.
* The header size, read with one join over the raw lines instead of
  the sum of the lines' lengths (what `Flow.header_bytes` was): the same verdict at and
  around both limits.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable
from typing import Any

import pytest

from bastion.events import EventEmitter
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.limits.checks import HEADER_LINE_OVERHEAD_BYTES, check_header_size
from bastion.limits.middleware import _Exchange
from bastion.limits.reasons import REASON_BODY_TOO_LARGE, STATUS_BY_REASON
from bastion.stages import Flow, run_stages
from bastion.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send
from tests.conftest import RecordingSink, asgi_client
from tests.limits.harness import ScriptedPeer, http_scope
from tests.limits.test_attacks import CASES, Case

pytestmark = pytest.mark.anyio

_REQUEST_ID = re.compile(r"request id: [0-9a-f]+")


class _GeneralExit(LimitsMiddleware):
    """The general path: every request's exit is `on_exit` from the start."""

    def enter(self, flow: Flow) -> Awaitable[bool] | None:
        pending = super().enter(flow)
        exchange = getattr(flow.receive, "__self__", None)
        if isinstance(exchange, _Exchange):
            # As the layer registered it before the short path: at once, in the
            # place of its own (the last exit, made by this `enter`).
            assert flow.exits[-1] is self._leave
            flow.exits[-1] = exchange.on_exit
        return pending


async def _answer(layer_type: type[LimitsMiddleware], case: Case, app: ASGIApp) -> Any:
    """Everything one request shows of the layer's decision."""
    sink = RecordingSink()
    layer = layer_type(app, LimitsSettings(**case.settings), events=EventEmitter([sink]))
    content = case.content if isinstance(case.content, bytes) else case.content()
    raised: str | None = None
    status, text = 0, ""
    try:
        async with asgi_client(layer) as client:
            response = await client.request(
                case.method, case.path, headers=case.headers, content=content or None
            )
            status, text = response.status_code, _REQUEST_ID.sub("", response.text)
    except Exception as exc:  # compared, not expected
        raised = type(exc).__name__
    return status, text, sink.reasons(), layer.in_flight, raised


@pytest.mark.parametrize("case", CASES)
async def test_exit_short_path_answers_as_the_general_one(
    case: Case, framework_app: ASGIApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    short = await _answer(LimitsMiddleware, case, framework_app)
    general = await _answer(_GeneralExit, case, framework_app)
    assert short == general
    assert short[3] == 0  # the in-flight count, left by every request
    assert short[4] is None


def _flow(headers: RawHeaders, peer: ScriptedPeer) -> Flow:
    return Flow(http_scope(headers=headers), peer.receive, peer.send)


def _outer_exit(error: BaseException | None) -> BaseException | None:
    return error


def _inner_exit(error: BaseException | None) -> BaseException | None:
    return error


@pytest.mark.parametrize("general", [False, True], ids=["limits-exit-short", "limits-exit-general"])
def test_own_exit_takes_the_place_of_leave(general: bool) -> None:
    """limits-exit-in-place: `on_exit` replaces `leave` where it was (the exits
    unwind in order), once; past the exits there is nothing to replace."""
    layer = (_GeneralExit if general else LimitsMiddleware)(_reads, LimitsSettings())
    flow = _flow([], ScriptedPeer())
    flow.exits.append(_outer_exit)
    assert layer.enter(flow) is None
    flow.exits.append(_inner_exit)
    exchange = flow.receive.__self__  # type: ignore[attr-defined]
    assert isinstance(exchange, _Exchange)
    assert flow.exits == [_outer_exit, exchange.on_exit if general else layer._leave, _inner_exit]
    exchange._own_exit()
    exchange._own_exit()
    assert flow.exits == [_outer_exit, exchange.on_exit, _inner_exit]
    flow.exits.clear()
    exchange._own_exit()
    assert flow.exits == []


class _Recorder:
    """A stage inside the limits layer: records the error its exit is handed, and
    the limits layer's exchange."""

    def __init__(self) -> None:
        self.errors: list[BaseException | None] = []
        self.exchanges: list[_Exchange] = []

    def enter(self, flow: Flow) -> None:
        self.exchanges.append(flow.receive.__self__)  # type: ignore[attr-defined]
        flow.exits.append(self.leave)

    def leave(self, error: BaseException | None) -> BaseException | None:
        self.errors.append(error)
        return error


async def _reads_then_fails(scope: Scope, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    raise RuntimeError("the application failed on the body it did not get")


@pytest.mark.parametrize("layer_type", [LimitsMiddleware, _GeneralExit], ids=["short", "general"])
async def test_cut_off_body_failure_reaches_inner_exits_then_is_absorbed(
    layer_type: type[LimitsMiddleware],
) -> None:
    """limits-exit-absorbs-in-place: the application fails on a body cut off
    (413); the stage inside the layer still sees the failure, as in a chain, and
    the layer absorbs it (its refusal was the answer)."""
    layer = layer_type(_reads_then_fails, LimitsSettings(max_body_bytes=10))
    recorder = _Recorder()
    peer = ScriptedPeer([b"x" * 5, b"x" * 20])
    headers = [(b"transfer-encoding", b"chunked")]
    await asyncio.wait_for(
        run_stages(
            (layer, recorder),
            _reads_then_fails,
            http_scope(headers=headers),
            peer.receive,
            peer.send,
        ),
        timeout=5,
    )
    assert peer.status == STATUS_BY_REASON[REASON_BODY_TOO_LARGE]
    assert [type(error) for error in recorder.errors] == [RuntimeError]
    assert layer.in_flight == 0


async def _reads(scope: Scope, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("layer_type", [LimitsMiddleware, _GeneralExit], ids=["short", "general"])
async def test_a_waited_body_leaves_no_timer(layer_type: type[LimitsMiddleware]) -> None:
    """limits-exit-stops-timer: a body the client was slow to send made the
    request's timer; the exit that takes `leave`'s place cancels it."""
    layer = layer_type(_reads, LimitsSettings())
    recorder = _Recorder()
    peer = ScriptedPeer([b"a=1", b"&b=2"], delay_seconds=0.01)
    headers = [(b"content-type", b"application/x-www-form-urlencoded")]
    await asyncio.wait_for(
        run_stages((layer, recorder), _reads, http_scope(headers=headers), peer.receive, peer.send),
        timeout=5,
    )
    assert peer.status == 200
    pace = recorder.exchanges[0]._pace
    assert pace is not None
    assert pace._timer is None
    assert recorder.errors == [None]
    assert layer.in_flight == 0


async def _never_reads() -> Message:  # pragma: no cover - never read
    raise AssertionError("read")


def _head(count: int, delta: int) -> RawHeaders:
    """`count` lines whose size with overhead is `delta` bytes off the limit below
    (the last line's value makes up the difference; none when it would be negative)."""
    lines = [(b"x-h%d" % index, b"") for index in range(count)]
    size = sum(len(name) + HEADER_LINE_OVERHEAD_BYTES for name, _ in lines)
    if count and _MAX_BYTES + delta > size:
        lines[-1] = (lines[-1][0], b"v" * (_MAX_BYTES + delta - size))
    return lines


_MAX_COUNT, _MAX_BYTES = 10, 200
HEADS = [
    pytest.param(count, delta, id=f"limits-header-size-{count}-lines-{delta:+d}-bytes")
    for count in (0, 1, 9, 10, 11)
    for delta in (-200, -1, 0, 1, 100)
]


@pytest.mark.parametrize(("count", "delta"), HEADS)
async def test_header_size_joined_agrees_with_the_summed_lengths(count: int, delta: int) -> None:
    """The layer's verdict on a head (its reason, or none) is `check_header_size`
    over the summed lengths of its names and values, at and around both limits."""
    sink = RecordingSink()
    layer = LimitsMiddleware(
        _reads,
        LimitsSettings(max_header_count=_MAX_COUNT, max_header_bytes=_MAX_BYTES),
        events=EventEmitter([sink]),
    )
    peer = ScriptedPeer()
    flow = Flow(http_scope(method="GET", headers=_head(count, delta)), _never_reads, peer.send)
    expected = check_header_size(
        count,
        sum(len(name) + len(value) for name, value in flow.scope["headers"])
        + HEADER_LINE_OVERHEAD_BYTES * count,
        max_count=_MAX_COUNT,
        max_bytes=_MAX_BYTES,
    )
    pending = layer.enter(flow)
    refused = pending is not None and await pending
    assert refused is bool(expected)
    assert sink.reasons() == ([expected] if expected else [])
