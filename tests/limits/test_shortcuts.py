"""The adapter's per-request shortcuts decide exactly as the general path they skip.

* `whole_body_fits`: a whole body in one message that it passes is one a fresh
  `BodyCheck` passes too (over the attack table's bodies, and hypothesis), and the
  boundaries it decides on (field count, field size, body size, declared length, the
  first bytes) are attacked by name through the middleware, one message each;
* `read_declared_body`'s one-line `Content-Length` and `REFUSED_METHOD_SPELLINGS`
  give what the general parse and `str.upper` give;
* a layer without per-route rules serves every request from its default route.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.events import EventEmitter
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.limits.checks import (
    REFUSED_METHOD_SPELLINGS,
    REFUSED_METHODS,
    BodyCheck,
    BodyPlan,
    read_declared_body,
    whole_body_fits,
)
from bastion.limits.reasons import (
    REASON_BODY_TOO_LARGE,
    REASON_CONTENT_LENGTH_MISMATCH,
    REASON_CONTENT_TYPE_NOT_ALLOWED,
    REASON_FORM_PART_TOO_LARGE,
    REASON_FORM_TOO_MANY_FIELDS,
    REASON_JSON_NOT_UTF8,
    REASON_JSON_TOO_DEEP,
    REASON_METHOD_NOT_ALLOWED,
    STATUS_BY_REASON,
)
from bastion.limits.settings import resolve_limits
from bastion.stages import Flow
from bastion.types import Message, RawHeaders, Receive, Scope, Send
from tests.conftest import RecordingSink
from tests.limits.harness import ScriptedPeer, http_scope
from tests.limits.test_attacks import CASES, Case
from tests.limits.test_middleware import read_body

FORM = (b"content-type", b"application/x-www-form-urlencoded")


async def _never_sends(message: Message) -> None:  # pragma: no cover - never sent to
    raise AssertionError("nothing is sent")


async def _never_reads() -> Message:  # pragma: no cover - never read
    raise AssertionError("nothing is read")


def index(headers: RawHeaders) -> Flow:
    return Flow(http_scope(headers=headers), _never_reads, _never_sends)


def client_headers(case: Case, body: bytes) -> RawHeaders:
    """The header lines a client sends for `case`: its own, and `Content-Length`
    unless it set one."""
    pairs = case.headers.items() if isinstance(case.headers, dict) else case.headers
    headers = [(name.lower().encode(), value.encode()) for name, value in pairs]
    if not any(name == b"content-length" for name, _ in headers):
        headers.append((b"content-length", str(len(body)).encode()))
    return headers


BODY_CASES = [
    case
    for case in CASES
    if isinstance(case.values[0], Case) and isinstance(case.values[0].content, bytes)
]


@pytest.mark.parametrize("case", BODY_CASES)
def test_whole_body_shortcut_agrees_with_the_body_check_on_the_attack_table(case: Case) -> None:
    """Parity over every attack (and legitimate) body of `test_attacks` sent whole:
    the shortcut passes only what the `BodyCheck` passes."""
    assert isinstance(case.content, bytes)
    body = case.content
    limits = resolve_limits(LimitsSettings(**case.settings))
    flow = index(client_headers(case, body))
    _, plan, declared = read_declared_body(flow.headers, limits, {})
    verdict = BodyCheck(limits, plan, declared).feed(body, more_body=False)
    if whole_body_fits(body, plan, limits, declared):
        assert verdict == ""
    if case.reason in (REASON_FORM_TOO_MANY_FIELDS, REASON_FORM_PART_TOO_LARGE):
        assert not whole_body_fits(body, plan, limits, declared)


def test_the_shortcut_is_taken_for_a_browser_form() -> None:
    """Not a test that cannot fail: the common form does skip the inspector."""
    limits = resolve_limits(LimitsSettings())
    body = b"name=alice&email=alice%40example.com&comment=hello+world"
    flow = index([FORM, (b"content-length", str(len(body)).encode())])
    _, plan, declared = read_declared_body(flow.headers, limits, {})
    assert whole_body_fits(body, plan, limits, declared)


PIECES = [b"a", b"=", b"&", b";", b"[", b"{", b"\x00", b" ", b"\xef", b"\xfe", b"%5B"]
PLANS = [
    BodyPlan(),
    BodyPlan(syntax="urlencoded"),
    BodyPlan(syntax="json"),
    BodyPlan(syntax="undeclared"),
    BodyPlan(syntax="multipart", boundary=b"b"),
    BodyPlan(refusal=REASON_CONTENT_TYPE_NOT_ALLOWED),
]


@settings(max_examples=1500, deadline=None)
@given(
    body=st.lists(st.sampled_from(PIECES), max_size=16).map(b"".join),
    plan=st.sampled_from(PLANS),
    declared_offset=st.sampled_from([None, 0, 0, -1, 1]),
    max_fields=st.integers(min_value=1, max_value=5),
    max_field_bytes=st.integers(min_value=1, max_value=12),
    max_body_bytes=st.integers(min_value=1, max_value=20),
)
def test_whole_body_shortcut_passes_only_what_the_body_check_passes(
    body: bytes,
    plan: BodyPlan,
    declared_offset: int | None,
    max_fields: int,
    max_field_bytes: int,
    max_body_bytes: int,
) -> None:
    limits = resolve_limits(
        LimitsSettings(
            max_body_bytes=max_body_bytes,
            max_form_fields=max_fields,
            max_form_part_bytes=max_field_bytes,
            max_json_depth=2,
        )
    )
    declared = None if declared_offset is None else max(len(body) + declared_offset, 0)
    verdict = BodyCheck(limits, plan, declared).feed(body, more_body=False)
    if whole_body_fits(body, plan, limits, declared):
        assert verdict == ""


@dataclass
class BodyApp:
    """Reads the whole body and answers 200 with it; remembers what it saw."""

    seen: list[tuple[bytes, bool]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, disconnected = await read_body(receive)
        self.seen.append((body, disconnected))
        if disconnected:
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def shortcut(
    body: bytes,
    reason: str = "",
    *,
    length: bytes | None = b"",
    content_type: bytes = FORM[1],
    **limits: Any,
) -> tuple[bytes, str, bytes | None, bytes, dict[str, Any]]:
    return body, reason, length, content_type, limits


SMALL_FORM: dict[str, Any] = {"max_form_fields": 3, "max_form_part_bytes": 8}
SHORTCUT_ATTACKS = [
    pytest.param(
        *shortcut(b"a=1&b=2&c=3", **SMALL_FORM), id="limits-shortcut-form-fields-at-limit-ok"
    ),
    pytest.param(
        *shortcut(b"a=1&b=2&c=3&", REASON_FORM_TOO_MANY_FIELDS, **SMALL_FORM),
        id="limits-shortcut-form-fields-one-over",
    ),
    pytest.param(
        *shortcut(b"a=1&b=2;c=3", REASON_FORM_TOO_MANY_FIELDS, max_form_fields=2),
        id="limits-shortcut-form-semicolon-counts",
    ),
    pytest.param(*shortcut(b"a=123456", **SMALL_FORM), id="limits-shortcut-form-field-at-limit-ok"),
    pytest.param(
        *shortcut(b"a=1234567", REASON_FORM_PART_TOO_LARGE, **SMALL_FORM),
        id="limits-shortcut-form-field-one-over",
    ),
    pytest.param(
        *shortcut(b"a=12&b=12345678", REASON_FORM_PART_TOO_LARGE, **SMALL_FORM),
        id="limits-shortcut-form-last-field-one-over",
    ),
    pytest.param(
        *shortcut(b"a=123456&b=1234", **SMALL_FORM),
        id="limits-shortcut-form-longer-than-a-field-ok",
    ),
    pytest.param(
        *shortcut(b"[[[x", REASON_JSON_TOO_DEEP, max_json_depth=2),
        id="limits-shortcut-form-json-first-byte",
    ),
    pytest.param(
        *shortcut("a=1".encode("utf-16-le"), REASON_JSON_NOT_UTF8),
        id="limits-shortcut-form-utf16-second-byte",
    ),
    pytest.param(
        *shortcut(b"a=1&b=2", REASON_CONTENT_LENGTH_MISMATCH, length=b"6"),
        id="limits-shortcut-content-length-lies-smaller",
    ),
    pytest.param(
        *shortcut(b"a=1&b=2", REASON_CONTENT_LENGTH_MISMATCH, length=b"8"),
        id="limits-shortcut-content-length-lies-larger",
    ),
    pytest.param(
        *shortcut(b"a=1&b=234", length=None, max_body_bytes=9),
        id="limits-shortcut-unsized-body-at-limit-ok",
    ),
    pytest.param(
        *shortcut(b"a=1&b=2345", REASON_BODY_TOO_LARGE, length=None, max_body_bytes=9),
        id="limits-shortcut-unsized-body-one-over",
    ),
    pytest.param(
        *shortcut(b"", length=b"0", allowed_content_types=["application/json"]),
        id="limits-shortcut-empty-body-any-type-ok",
    ),
    pytest.param(
        *shortcut(
            b"x", REASON_CONTENT_TYPE_NOT_ALLOWED, length=None, allowed_content_types=["text/csv"]
        ),
        id="limits-shortcut-unsized-body-type-not-allowed",
    ),
    pytest.param(*shortcut(b"a=1", content_type=b"text/plain"), id="limits-shortcut-text-ok"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "reason", "length", "content_type", "limits"), SHORTCUT_ATTACKS)
async def test_shortcut_boundaries_through_the_middleware(
    body: bytes,
    reason: str,
    length: bytes | None,
    content_type: bytes,
    limits: dict[str, Any],
    events: EventEmitter,
    sink: RecordingSink,
) -> None:
    """Each body arrives whole, in one `http.request` message: the shortcut's case."""
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", length or str(len(body)).encode()))
    app = BodyApp([])
    middleware = LimitsMiddleware(app, LimitsSettings(**limits), events=events)
    peer = ScriptedPeer([body])
    await middleware(http_scope(headers=headers), peer.receive, peer.send)
    assert middleware.in_flight == 0
    if reason:
        assert peer.status == STATUS_BY_REASON[reason]
        assert sink.reasons() == [reason]
        assert app.seen == [(b"", True)]  # the body never reached the application
    else:
        assert (peer.status, peer.body_sent) == (200, body)
        assert sink.records == []
        assert app.seen == [(body, False)]


LENGTH_LINES = [
    [b"0"],
    [b"56"],
    [b"0056"],
    [b"9" * 18],
    [b"9" * 19],
    [b"9" * 20],
    [b"0" * 19 + b"7"],
    [b"1" + b"0" * 19],
    [b"56", b"56"],
    [b"56", b"57"],
    [b""],
    [b" 56"],
    [b"56 "],
    [b"+56"],
    [b"-1"],
    [b"\xd9\xa5"],  # ARABIC-INDIC DIGIT FIVE in UTF-8: not an ASCII digit
    [b"5_6"],
]


@pytest.mark.parametrize("lines", LENGTH_LINES)
def test_one_line_content_length_parses_as_the_general_path(lines: list[bytes]) -> None:
    """The one-line fast parse gives what `read_head_index` gives, or refuses alike."""
    from bastion.limits.checks import check_declared_body, plan_body, read_head_index

    limits = resolve_limits(LimitsSettings())
    flow = index([FORM, *((b"content-length", line) for line in lines)])
    head = read_head_index(
        flow.headers,
        len(flow.scope["headers"]),
        sum(len(name) + len(value) for name, value in flow.scope["headers"]),
    )
    plan = plan_body(head, limits)
    expected = (check_declared_body(head, limits, plan), plan, head.content_length)
    assert read_declared_body(flow.headers, limits, {}) == expected


def test_refused_method_spellings_are_what_upper_refuses() -> None:
    """`method in REFUSED_METHOD_SPELLINGS` is `method.upper() in REFUSED_METHODS`:
    every ASCII spelling is there, and no other code point upper-cases to letters of
    those words only (so no non-ASCII spelling exists)."""
    assert all(spelling.upper() in REFUSED_METHODS for spelling in REFUSED_METHOD_SPELLINGS)
    assert len(REFUSED_METHOD_SPELLINGS) == sum(2 ** len(m) for m in REFUSED_METHODS)
    letters = set("".join(REFUSED_METHODS))
    others = [code for code in range(128, sys.maxunicode + 1) if set(chr(code).upper()) <= letters]
    assert others == []


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["trace", "TrAcK", "TRACE"])
async def test_refused_method_in_any_case(
    method: str, events: EventEmitter, sink: RecordingSink
) -> None:
    """`limits-trace-any-case`: TRACE and TRACK are refused however they are spelt."""
    app = BodyApp([])
    middleware = LimitsMiddleware(app, LimitsSettings(), events=events)
    peer = ScriptedPeer()
    scope = http_scope(method=method, path="/")
    await middleware(scope, peer.receive, peer.send)
    assert peer.status == STATUS_BY_REASON[REASON_METHOD_NOT_ALLOWED]
    assert sink.reasons() == [REASON_METHOD_NOT_ALLOWED]
    assert app.seen == []
    assert middleware.in_flight == 0


def test_without_route_rules_every_request_takes_the_default_route() -> None:
    assert LimitsMiddleware(BodyApp([]), LimitsSettings())._routes is None
    assert (
        LimitsMiddleware(
            BodyApp([]), LimitsSettings(routes={"POST /upload": {"max_body_bytes": 10}})
        )._routes
        is not None
    )
