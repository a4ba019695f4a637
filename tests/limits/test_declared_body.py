"""The adapter's shortcuts on the head and the body agree with the checks they stand for.

`read_declared_body` (the head of a request with a body field, without a
`RequestHead`) must give exactly what `read_head_index`, `plan_body` and
`check_declared_body` give, with its bounded memo of plans or without it; and the
url-encoded counter's count in C must give the verdicts, in the same byte order,
of the loop it skips.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.events import EventEmitter
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.limits.checks import (
    PLAN_MEMO_ENTRIES,
    PLAN_MEMO_KEY_BYTES,
    BodyPlan,
    _FormInspector,
    _Inspector,
    check_declared_body,
    make_inspector,
    plan_body,
    read_declared_body,
    read_head_index,
)
from bastion.limits.forms import URLEncodedCounter
from bastion.limits.json import UTF8_ENCODINGS, EncodingPrefix, LeadingJSON
from bastion.limits.reasons import (
    REASON_CONTENT_TYPE_NOT_ALLOWED,
    REASON_FORM_PART_TOO_LARGE,
    REASON_FORM_TOO_MANY_FIELDS,
    REASON_JSON_NOT_UTF8,
)
from bastion.limits.settings import BodyLimits, resolve_limits
from bastion.stages import Flow
from bastion.types import Message, RawHeaders
from tests.conftest import RecordingSink, asgi_client
from tests.limits.harness import http_scope
from tests.support.apps import make_app

DEFAULTS = resolve_limits(LimitsSettings())
JSON_ONLY = resolve_limits(LimitsSettings(allowed_content_types=["application/json"]))


async def _never(message: Message) -> None:  # pragma: no cover - never sent to
    raise AssertionError("nothing is sent")


async def _nothing() -> Message:  # pragma: no cover - never read
    raise AssertionError("nothing is read")


def index(headers: RawHeaders) -> Flow:
    """The flow's header index, as the stages read it."""
    return Flow(http_scope(headers=headers), _nothing, _never)


def by_the_checks(flow: Flow, limits: BodyLimits) -> tuple[str, BodyPlan, int | None]:
    head = read_head_index(
        flow.headers,
        len(flow.scope["headers"]),
        sum(len(name) + len(value) for name, value in flow.scope["headers"]),
    )
    plan = plan_body(head, limits)
    return check_declared_body(head, limits, plan), plan, head.content_length


LENGTHS = [b"42", b"0", b"007", b"42, 42", b"42,43", b"", b"-1", b"+5", b"0x10", b"4 2"]
LENGTHS += [b"9" * 30, b" 42 "]
TYPES = [
    b"application/json",
    b"application/json; charset=utf-8",
    b" Application/JSON ",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=abc",
    b"multipart/form-data",
    b"text/plain",
    b"application/problem+json",
    b"",
    b";",
]

header_lines = st.lists(
    st.one_of(
        st.sampled_from(LENGTHS).map(lambda v: (b"content-length", v)),
        st.sampled_from(TYPES).map(lambda v: (b"content-type", v)),
        st.just((b"transfer-encoding", b"chunked")),
        st.just((b"x-other", b"1")),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(headers=header_lines, json_only=st.booleans())
def test_read_declared_body_is_the_checks(headers: RawHeaders, json_only: bool) -> None:
    limits = JSON_ONLY if json_only else DEFAULTS
    flow = index(headers)
    expected = by_the_checks(flow, limits)
    plans: dict[bytes | None, BodyPlan] = {}
    assert read_declared_body(flow.headers, limits, plans) == expected
    assert read_declared_body(flow.headers, limits, plans) == expected  # from the memo


def test_plan_memo_is_bounded_whatever_the_client_sends() -> None:
    """Every request may bring a new `Content-Type`: the memo never holds more than
    its bound, keeps no long value and no multipart boundary, and its plans stay
    right after it was emptied."""
    plans: dict[bytes | None, BodyPlan] = {}
    for number in range(PLAN_MEMO_ENTRIES * 20):
        content_type = b"text/x-attacker-%d" % number
        flow = index([(b"content-length", b"1"), (b"content-type", content_type)])
        assert read_declared_body(flow.headers, JSON_ONLY, plans) == by_the_checks(flow, JSON_ONLY)
        assert read_declared_body(flow.headers, JSON_ONLY, plans)[0] == (
            REASON_CONTENT_TYPE_NOT_ALLOWED
        )
        assert len(plans) <= PLAN_MEMO_ENTRIES
    long_type = b"application/json; x=" + b"a" * PLAN_MEMO_KEY_BYTES
    for content_type in (long_type, b"multipart/form-data; boundary=b%d" % len(plans)):
        plans.clear()
        flow = index([(b"content-length", b"1"), (b"content-type", content_type)])
        assert read_declared_body(flow.headers, DEFAULTS, plans) == by_the_checks(flow, DEFAULTS)
        assert plans == {}


@pytest.mark.anyio
async def test_content_type_per_request_keeps_the_memo_bounded(
    events: EventEmitter, sink: RecordingSink
) -> None:
    """`limits-content-type-churn`: a client that sends a new media type with every
    request is refused every time (the allowlist), and the layer's memo of plans
    stays within its bound; the JSON request beside it passes."""
    app = LimitsMiddleware(
        make_app("raw"), LimitsSettings(allowed_content_types=["application/json"]), events=events
    )
    async with asgi_client(app) as client:
        for number in range(PLAN_MEMO_ENTRIES * 3):
            response = await client.post(
                "/submit", content=b"x", headers={"content-type": f"text/x-{number}"}
            )
            assert response.status_code == 415
        ok = await client.post(
            "/submit", content=b"[1]", headers={"content-type": "application/json"}
        )
    assert ok.status_code == 200
    assert len(sink.records) == PLAN_MEMO_ENTRIES * 3
    assert len(app._default_route.plans) <= PLAN_MEMO_ENTRIES


class LoopCounter:
    """The url-encoded counter as it was, separator by separator (the reference)."""

    def __init__(self, *, max_fields: int, max_field_bytes: int) -> None:
        self.max_fields = max_fields
        self.max_field_bytes = max_field_bytes
        self.fields = 0
        self.current_bytes = 0

    def feed(self, data: bytes) -> str:
        if not data:
            return ""
        if not self.fields:
            self.fields = 1
            if self.fields > self.max_fields:
                return REASON_FORM_TOO_MANY_FIELDS
        start = 0
        for separator in re.finditer(rb"[&;]", data):
            if self.current_bytes + separator.start() - start > self.max_field_bytes:
                return REASON_FORM_PART_TOO_LARGE
            self.fields += 1
            if self.fields > self.max_fields:
                return REASON_FORM_TOO_MANY_FIELDS
            self.current_bytes = 0
            start = separator.end()
        self.current_bytes += len(data) - start
        if self.current_bytes > self.max_field_bytes:
            return REASON_FORM_PART_TOO_LARGE
        return ""


@settings(max_examples=500, deadline=None)
@given(
    body=st.lists(st.sampled_from([b"a", b"=", b"&", b";", b"bb", b"%26"]), max_size=40).map(
        b"".join
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=5),
    max_fields=st.integers(min_value=1, max_value=8),
    max_field_bytes=st.integers(min_value=0, max_value=8),
)
def test_urlencoded_count_in_c_gives_the_loops_verdicts(
    body: bytes, cuts: list[int], max_fields: int, max_field_bytes: int
) -> None:
    counter = URLEncodedCounter(max_fields=max_fields, max_field_bytes=max_field_bytes)
    reference = LoopCounter(max_fields=max_fields, max_field_bytes=max_field_bytes)
    edges = [0, *sorted(cut % (len(body) + 1) for cut in cuts), len(body)]
    for start, end in itertools.pairwise(edges):
        chunk = body[start:end]
        verdict = counter.feed(chunk)
        assert verdict == reference.feed(chunk)
        if verdict:
            return  # the first violation is final: nothing more is fed
        assert (counter._fields, counter._current_bytes) == (
            reference.fields,
            reference.current_bytes,
        )


class ReferenceFormInspector:
    """The form inspector as it was: every body through the encoding prefix and the
    leading-JSON scan (the reference for the plain-form shortcut)."""

    def __init__(self, counter: _Inspector, max_depth: int) -> None:
        self.counter = counter
        self.max_depth = max_depth
        self.prefix = EncodingPrefix()
        self.leading: LeadingJSON | None = None

    def feed(self, data: bytes) -> str:
        data = self.prefix.feed(data)
        return self.inspect(data) if self.prefix.encoding else ""

    def end(self) -> str:
        return self.inspect(self.prefix.end()) or self.counter.end()

    def inspect(self, data: bytes) -> str:
        if self.leading is None:
            if self.prefix.encoding not in UTF8_ENCODINGS:
                return REASON_JSON_NOT_UTF8
            self.leading = LeadingJSON.for_encoding(self.prefix.encoding, max_depth=self.max_depth)
        reason, scanned = self.leading.scan(data)
        return self.counter.feed(data[:scanned]) or reason


FIRST_BYTES = [b"a", b"-", b"=", b"&", b" ", b"\n", b"[", b"{", b"\x00", b"\xef\xbb\xbf"]
FIRST_BYTES += [b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b"a\x00", b"\xef", b"\x00a", b"\xff"]
PIECES = [b"a", b"=", b"&", b"[", b"]", b"{", b"}", b"\x00", b" ", b'"', b"--b\r\n", b"\r\n\r\n"]


@settings(max_examples=800, deadline=None)
@given(
    start=st.sampled_from(FIRST_BYTES),
    rest=st.lists(st.sampled_from(PIECES), max_size=30).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=100), max_size=4),
    multipart=st.booleans(),
)
def test_the_plain_form_shortcut_gives_the_full_inspections_verdicts(
    start: bytes, rest: bytes, cuts: list[int], multipart: bool
) -> None:
    """Whatever the first bytes (BOMs, NULs, whitespace, brackets, or a real form's)
    and however the body is chunked, the verdicts are those of the full inspection."""
    body = start + rest
    limits = resolve_limits(LimitsSettings(max_json_depth=3, max_form_fields=6))
    plan = (
        BodyPlan(syntax="multipart", boundary=b"b") if multipart else BodyPlan(syntax="urlencoded")
    )
    inspector = make_inspector(plan, limits)
    fresh = make_inspector(plan, limits)
    assert inspector is not None
    assert isinstance(fresh, _FormInspector)
    reference = ReferenceFormInspector(fresh._counter, max_depth=3)
    edges = [0, *sorted(cut % (len(body) + 1) for cut in cuts), len(body)]
    for begin, end in itertools.pairwise(edges):
        chunk = body[begin:end]
        if not chunk:
            continue  # `BodyCheck` feeds no empty chunk
        verdict = inspector.feed(chunk)
        assert verdict == reference.feed(chunk)
        if verdict:
            return
    assert inspector.end() == reference.end()
