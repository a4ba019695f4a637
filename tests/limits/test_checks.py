"""The pure head checks, body plans and `BodyCheck`, and the settings they compile from."""

from __future__ import annotations

import email.message
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from python_multipart.multipart import parse_options_header

from bastion.limits import LimitsSettings, RouteLimitsSettings
from bastion.limits.checks import (
    BodyCheck,
    BodyPlan,
    Syntax,
    check_declared_body,
    check_headers,
    make_inspector,
    plan_body,
    read_head,
)
from bastion.limits.reasons import (
    REASON_BODY_TOO_LARGE,
    REASON_CONTENT_LENGTH_INVALID,
    REASON_CONTENT_LENGTH_MISMATCH,
    REASON_CONTENT_LENGTH_TOO_LARGE,
    REASON_CONTENT_TYPE_INVALID,
    REASON_CONTENT_TYPE_NOT_ALLOWED,
    REASON_FORM_TOO_MANY_FIELDS,
    REASON_HEADERS_TOO_LARGE,
    REASON_HEADERS_TOO_MANY,
    REASON_JSON_NOT_UTF8,
    REASON_JSON_TOO_DEEP,
    REASON_MULTIPART_MALFORMED,
    STATUS_BY_REASON,
)
from bastion.limits.settings import BodyLimits, compile_routes, resolve_limits
from bastion.types import RawHeaders

DEFAULTS = resolve_limits(LimitsSettings())


def limits(**values: object) -> BodyLimits:
    return resolve_limits(LimitsSettings.model_validate(values))


CONTENT_LENGTHS = [
    pytest.param([b"42"], 42, False, id="plain"),
    pytest.param([b"0"], 0, False, id="zero"),
    pytest.param([b"007"], 7, False, id="leading-zeros"),
    pytest.param([b"42, 42"], 42, False, id="identical-list"),
    pytest.param([b"42", b"42"], 42, False, id="identical-lines"),
    pytest.param([b"42, 43"], None, True, id="differing-list"),
    pytest.param([b"42", b"43"], None, True, id="differing-lines"),
    pytest.param([b"-1"], None, True, id="negative"),
    pytest.param([b"+5"], None, True, id="plus-sign"),
    pytest.param([b"0x10"], None, True, id="hex"),
    pytest.param([b"1_000"], None, True, id="underscore"),
    pytest.param([b""], None, True, id="empty"),
    pytest.param([b"4 2"], None, True, id="inner-space"),
    pytest.param(["٤٢".encode()], None, True, id="non-ascii-digits"),
    pytest.param([b"9" * 40], 10**19, False, id="forty-digits-capped"),
    pytest.param([], None, False, id="absent"),
]


@pytest.mark.parametrize(("values", "length", "invalid"), CONTENT_LENGTHS)
def test_content_length(values: list[bytes], length: int | None, invalid: bool) -> None:
    head = read_head([(b"content-length", value) for value in values])
    assert (head.content_length, head.content_length_invalid) == (length, invalid)


def test_header_count_and_bytes() -> None:
    headers: RawHeaders = [(b"a", b"12345"), (b"bb", b"")]
    head = read_head(headers)
    assert (head.header_count, head.header_bytes) == (2, 1 + 5 + 2 + 8)
    assert check_headers(head, max_count=2, max_bytes=16) == ""
    assert check_headers(head, max_count=1, max_bytes=16) == REASON_HEADERS_TOO_MANY
    assert check_headers(head, max_count=2, max_bytes=15) == REASON_HEADERS_TOO_LARGE


PLANS = [
    pytest.param(None, {}, BodyPlan(syntax="json"), id="no-type-is-json-as-fastapi"),
    pytest.param(b"", {}, BodyPlan(syntax="json"), id="empty-type-is-json"),
    pytest.param(b"application/json", {}, BodyPlan(syntax="json"), id="json"),
    pytest.param(b"Application/JSON ; charset=UTF-8", {}, BodyPlan(syntax="json"), id="json-case"),
    pytest.param(b"application/json; junk", {}, BodyPlan(syntax="json"), id="json-bad-params"),
    pytest.param(b"application/vnd.api+json", {}, BodyPlan(syntax="json"), id="suffix-json"),
    pytest.param(
        b"application/x-www-form-urlencoded", {}, BodyPlan(syntax="urlencoded"), id="urlencoded"
    ),
    pytest.param(
        b"multipart/form-data; boundary=zz",
        {},
        BodyPlan(syntax="multipart", boundary=b"zz"),
        id="multipart",
    ),
    pytest.param(
        b"multipart/form-data",
        {},
        BodyPlan(refusal=REASON_MULTIPART_MALFORMED),
        id="multipart-no-boundary",
    ),
    pytest.param(b"text/plain", {}, BodyPlan(syntax="undeclared"), id="text-undeclared"),
    pytest.param(
        b"application/octet-stream", {}, BodyPlan(syntax="undeclared"), id="binary-undeclared"
    ),
    pytest.param(
        b"application/jsonx", {}, BodyPlan(syntax="undeclared"), id="near-json-undeclared"
    ),
    pytest.param(
        b"text/plain",
        {"allowed_content_types": ["application/json"]},
        BodyPlan(refusal=REASON_CONTENT_TYPE_NOT_ALLOWED),
        id="not-allowed",
    ),
    pytest.param(
        None,
        {"allowed_content_types": ["application/json"]},
        BodyPlan(refusal=REASON_CONTENT_TYPE_NOT_ALLOWED),
        id="missing-not-allowed",
    ),
    pytest.param(
        b"TEXT/CSV; charset=utf-8",
        {"allowed_content_types": ["text/*"]},
        BodyPlan(syntax="undeclared"),
        id="type-wildcard",
    ),
    pytest.param(
        b"image/png",
        {"allowed_content_types": ["*/*"]},
        BodyPlan(syntax="undeclared"),
        id="any-wildcard",
    ),
]


@pytest.mark.parametrize(("content_type", "settings_values", "plan"), PLANS)
def test_plan_body(
    content_type: bytes | None, settings_values: dict[str, object], plan: BodyPlan
) -> None:
    headers: RawHeaders = [] if content_type is None else [(b"content-type", content_type)]
    assert plan_body(read_head(headers), limits(**settings_values)) == plan


def fastapi_parses_json(content_type: str) -> bool:
    """FastAPI's own test (fastapi/routing.py) for parsing a body as JSON."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


_MEDIA_TYPES = st.sampled_from(
    [
        "application/json",
        "application/problem+json",
        "multipart/form-data",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/jsonx",
        "",
    ]
)
_CASE = st.sampled_from([str.lower, str.upper, str.title])
_SPACE = st.text(alphabet=" \t\xa0\x85\x1c\x1f\x0b", max_size=2)
_PARAMS = st.sampled_from(["", ";", "; boundary=abc", '; boundary="a;b"', ";charset=utf-8", '"'])


@settings(max_examples=500, deadline=None)
@given(before=_SPACE, media_type=_MEDIA_TYPES, case=_CASE, after=_SPACE, params=_PARAMS)
def test_we_inspect_whatever_the_frameworks_parse(
    before: str, media_type: str, case: Callable[[str], str], after: str, params: str
) -> None:
    """No spelling of a Content-Type makes FastAPI parse JSON, or Starlette parse a
    form, that the layer does not inspect (or refuse)."""
    content_type = before + case(media_type) + after + params
    plan = plan_body(read_head([(b"content-type", content_type.encode("latin-1"))]), DEFAULTS)
    if plan.refusal:
        return
    if fastapi_parses_json(content_type):
        assert plan.syntax == "json"
    starlette_form, _ = parse_options_header(content_type)
    if starlette_form == b"multipart/form-data":
        assert plan.syntax == "multipart"
    if starlette_form == b"application/x-www-form-urlencoded":
        assert plan.syntax == "urlencoded"


def test_conflicting_content_types_are_invalid() -> None:
    head = read_head([(b"content-type", b"text/plain"), (b"content-type", b"application/json")])
    assert plan_body(head, DEFAULTS).refusal == REASON_CONTENT_TYPE_INVALID
    same = read_head([(b"content-type", b"text/plain"), (b"content-type", b"text/plain")])
    assert plan_body(same, DEFAULTS) == BodyPlan(syntax="undeclared")


UNDECLARED = BodyPlan(syntax="undeclared")
URLENCODED = BodyPlan(syntax="urlencoded")
MULTIPART = BodyPlan(syntax="multipart", boundary=b"bb")

DECLARED = [
    pytest.param([(b"content-length", b"10")], "", id="small"),
    pytest.param([(b"content-length", b"1048577")], REASON_CONTENT_LENGTH_TOO_LARGE, id="large"),
    pytest.param([(b"content-length", b"x")], REASON_CONTENT_LENGTH_INVALID, id="invalid"),
    pytest.param(
        [(b"content-length", b"0"), (b"content-type", b"text/plain")], "", id="bodiless-any-type"
    ),
    pytest.param(
        [(b"content-length", b"1"), (b"content-type", b"multipart/form-data")],
        REASON_MULTIPART_MALFORMED,
        id="declared-body-bad-boundary",
    ),
    pytest.param(
        [(b"transfer-encoding", b"chunked"), (b"content-type", b"multipart/form-data")],
        REASON_MULTIPART_MALFORMED,
        id="chunked-body-bad-boundary",
    ),
]


@pytest.mark.parametrize(("headers", "expected"), DECLARED)
def test_check_declared_body(headers: RawHeaders, expected: str) -> None:
    head = read_head(headers)
    assert check_declared_body(head, DEFAULTS, plan_body(head, DEFAULTS)) == expected


def feed_all(check: BodyCheck, chunks: list[bytes]) -> str:
    for index, chunk in enumerate(chunks):
        reason = check.feed(chunk, more_body=index < len(chunks) - 1)
        if reason:
            return reason
    return ""


BODIES = [
    pytest.param(BodyPlan(), None, [b"a" * 10, b"b" * 10], "", id="unchecked"),
    pytest.param(BodyPlan(), None, [b"a" * 1048576, b"b"], REASON_BODY_TOO_LARGE, id="too-large"),
    pytest.param(BodyPlan(), 5, [b"abc", b"de"], "", id="length-exact"),
    pytest.param(BodyPlan(), 5, [b"abc", b"def"], REASON_CONTENT_LENGTH_MISMATCH, id="longer"),
    pytest.param(BodyPlan(), 5, [b"abc", b""], REASON_CONTENT_LENGTH_MISMATCH, id="shorter"),
    pytest.param(
        BodyPlan(refusal=REASON_CONTENT_TYPE_NOT_ALLOWED), None, [b""], "", id="refusal-no-body"
    ),
    pytest.param(
        BodyPlan(refusal=REASON_CONTENT_TYPE_NOT_ALLOWED),
        None,
        [b"", b"x"],
        REASON_CONTENT_TYPE_NOT_ALLOWED,
        id="refusal-first-byte",
    ),
    pytest.param(BodyPlan(syntax="json"), None, [b"[" * 101], REASON_JSON_TOO_DEEP, id="deep"),
    pytest.param(
        BodyPlan(syntax="json"),
        None,
        ['["\\"", [1]]'.encode("utf-16-le")],
        REASON_JSON_NOT_UTF8,
        id="json-utf16-le",
    ),
    pytest.param(
        BodyPlan(syntax="json"),
        None,
        [b"\xfe\xff", b"\x00[\x00]"],
        REASON_JSON_NOT_UTF8,
        id="json-utf16-bom-split",
    ),
    pytest.param(BodyPlan(syntax="json"), None, [b"\xef\xbb\xbf[1]"], "", id="json-utf8-bom-ok"),
    pytest.param(BodyPlan(syntax="json"), None, [b'["a\x00b"]'], "", id="json-late-nul-is-utf8"),
    pytest.param(BodyPlan(syntax="json"), 0, [b""], "", id="json-empty-ok"),
    pytest.param(BodyPlan(syntax="json"), None, [b"", b""], "", id="json-empty-chunked-ok"),
    pytest.param(BodyPlan(syntax="json"), None, [b"[", b"1", b"]"], "", id="json-3-bytes-ok"),
    # Any other type: JSON depth when the body begins like a JSON container.
    pytest.param(UNDECLARED, None, [b"see [1] {2}"], "", id="undeclared-text-ok"),
    pytest.param(UNDECLARED, None, [b"  ", b"\n[" * 101], REASON_JSON_TOO_DEEP, id="undeclared"),
    pytest.param(
        UNDECLARED, None, [("[" * 101).encode("utf-16")], REASON_JSON_TOO_DEEP, id="undeclared-u16"
    ),
    # Forms: counted, and scanned for depth when they begin like a JSON container.
    pytest.param(URLENCODED, None, [b'{"a": [1, {"b": 2}]}'], "", id="urlencoded-json-ok"),
    pytest.param(URLENCODED, None, [b"a=[[[[&b={{{{"], "", id="urlencoded-brackets-ok"),
    pytest.param(URLENCODED, None, [b"[" * 101], REASON_JSON_TOO_DEEP, id="urlencoded-deep"),
    pytest.param(
        URLENCODED, None, ["[1]".encode("utf-16-le")], REASON_JSON_NOT_UTF8, id="urlencoded-utf16"
    ),
    pytest.param(
        MULTIPART, None, [b"[" * 101 + b"\r\n--bb--\r\n"], REASON_JSON_TOO_DEEP, id="mp-deep"
    ),
    pytest.param(MULTIPART, None, [b"--bb--\r\n" + b"[[[[" * 30], "", id="multipart-epilogue-ok"),
]


@pytest.mark.parametrize(("plan", "declared", "chunks", "expected"), BODIES)
def test_body_check(
    plan: BodyPlan, declared: int | None, chunks: list[bytes], expected: str
) -> None:
    assert feed_all(BodyCheck(DEFAULTS, plan, declared), chunks) == expected


ORDER = [
    pytest.param(URLENCODED, b"[&&&" + b"[" * 10, REASON_FORM_TOO_MANY_FIELDS, id="fields-first"),
    pytest.param(URLENCODED, b"[" * 10 + b"&&&", REASON_JSON_TOO_DEEP, id="depth-first"),
    pytest.param(
        MULTIPART,
        b"[" * 10 + b"\r\n--bb\r\n\r\na\r\n--bb\r\n\r\nb\r\n--bb\r\n\r\nc\r\n--bb--\r\n",
        REASON_JSON_TOO_DEEP,
        id="multipart-depth-first",
    ),
    pytest.param(
        MULTIPART,
        b"[\r\n--bb\r\n\r\na\r\n--bb\r\n\r\nb\r\n--bb\r\n\r\n" + b"[" * 10,
        REASON_FORM_TOO_MANY_FIELDS,
        id="multipart-fields-first",
    ),
]


@pytest.mark.parametrize(("plan", "body", "expected"), ORDER)
def test_form_and_json_verdicts_name_the_first_violation(
    plan: BodyPlan, body: bytes, expected: str
) -> None:
    body_limits = limits(max_form_fields=2, max_json_depth=5)
    whole = feed_all(BodyCheck(body_limits, plan, None), [body])
    one_by_one = feed_all(BodyCheck(body_limits, plan, None), [bytes([b]) for b in body])
    assert whole == one_by_one == expected


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_body_limit_is_exact(sizes: list[int]) -> None:
    body_limits = limits(max_body_bytes=500)
    total = sum(sizes)
    chunks = [b"x" * size for size in sizes] or [b""]
    expected = REASON_BODY_TOO_LARGE if total > 500 else ""
    assert feed_all(BodyCheck(body_limits, BodyPlan(), None), chunks) == expected


_PLANS = st.sampled_from(
    [
        BodyPlan(),
        BodyPlan(syntax="json"),
        BodyPlan(syntax="undeclared"),
        BodyPlan(syntax="urlencoded"),
        BodyPlan(syntax="multipart", boundary=b"bb"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    plan=_PLANS,
    body=st.binary(max_size=200)
    | st.text(alphabet='[]{}"\\&;=-b\r\n', max_size=200).map(str.encode),
    declared=st.none() | st.integers(min_value=0, max_value=200),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10),
    sizes=st.tuples(*[st.integers(min_value=1, max_value=150)] * 4),
)
def test_body_verdict_does_not_depend_on_chunk_boundaries(
    plan: BodyPlan,
    body: bytes,
    declared: int | None,
    cuts: list[int],
    sizes: tuple[int, int, int, int],
) -> None:
    body_bytes, json_bytes, depth, fields = sizes
    body_limits = limits(
        max_body_bytes=body_bytes,
        max_json_bytes=json_bytes,
        max_json_depth=depth,
        max_form_fields=fields,
        max_form_part_bytes=json_bytes,
    )
    points = sorted({min(cut, len(body)) for cut in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    whole = feed_all(BodyCheck(body_limits, plan, declared), [body])
    assert feed_all(BodyCheck(body_limits, plan, declared), chunks) == whole


def test_every_reason_has_a_status() -> None:
    assert set(STATUS_BY_REASON.values()) <= {400, 405, 408, 413, 415, 431, 503}


def test_route_rules_inherit_and_follow_the_body_limit() -> None:
    limits_settings = LimitsSettings(
        max_json_depth=10,
        routes={
            "POST /upload": RouteLimitsSettings(max_body_bytes=10_000_000),
            "/api/*": {"allowed_content_types": ["application/json"], "max_json_depth": 3},
        },
    )
    table = compile_routes(limits_settings)
    upload = table.lookup("POST", "/upload")
    api = table.lookup("PUT", "/api/items")
    assert upload is not None
    assert api is not None
    assert table.lookup("GET", "/upload") is None
    assert (upload.max_body_bytes, upload.max_form_part_bytes, upload.max_json_bytes) == (
        10_000_000,
        10_000_000,
        10_000_000,
    )
    assert upload.max_json_depth == 10
    assert api.max_json_depth == 3
    assert api.content_types.allows("application/json")
    assert not api.content_types.allows("text/plain")


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"max_body_bytes": 0}, id="zero-body"),
        pytest.param({"max_body_bytes": -1}, id="negative-body"),
        pytest.param({"allowed_content_types": []}, id="empty-types"),
        pytest.param({"allowed_content_types": ["json"]}, id="not-a-media-type"),
        pytest.param({"allowed_content_types": ["text/plain; charset=utf-8"]}, id="params"),
        pytest.param({"allowed_content_types": ["*/json"]}, id="star-type"),
        pytest.param({"routes": {"upload": {}}}, id="bad-pattern"),
        pytest.param({"routes": {"/u": {"max_body_byte": 1}}}, id="misspelt-route-field"),
        pytest.param({"max_body_byte": 1}, id="misspelt-field"),
        pytest.param({"body_timeout_seconds": 0}, id="zero-timeout"),
    ],
)
def test_settings_are_validated(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LimitsSettings.model_validate(values)


def test_media_ranges_are_normalised() -> None:
    parsed = LimitsSettings(allowed_content_types=(" Application/JSON ", "text/*"))
    assert parsed.allowed_content_types == ("application/json", "text/*")


@pytest.mark.parametrize("syntax", ["json", "undeclared", "urlencoded", "multipart"])
def test_a_fresh_inspector_accepts_an_empty_body(syntax: Syntax) -> None:
    # `BodyCheck` builds its inspector on the first byte only; that is the same
    # verdict only because every inspector accepts an empty body.
    limits = resolve_limits(LimitsSettings())
    inspector = make_inspector(BodyPlan(syntax=syntax, boundary=b"b0undary"), limits)
    assert inspector is not None
    assert inspector.end() == ""
