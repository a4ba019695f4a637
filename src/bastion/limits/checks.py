"""The pure decisions of the limits layer: the request head, and the body as it streams.

`read_head` turns raw headers into `RequestHead` facts in one pass. `check_headers`
and `check_declared_body` decide on the head alone, before the application runs, as
does `REFUSED_METHODS`, the methods refused whatever the application would do.
`plan_body` decides what the body will be checked for, and `BodyCheck` applies that
plan chunk by chunk, keeping bounded state, and names the first violation.
`whole_body_fits` passes, without a `BodyCheck`, a whole body in one message that
plainly meets its plan (never a body the `BodyCheck` would refuse).

`Content-Length` grammar (RFC 9110 section 8.6): `1*DIGIT`. A recipient may accept a
list of identical values (`42, 42`, or the same value on several lines) as one; any
other list, a sign, a space inside or an empty value is invalid and answered 400, as
h11 and Go's net/http do. A body must be exactly as long as it declared: bytes past
the declared length are never handed to the application (that is how request
smuggling through a lenient front end starts), and a body that ends short is refused.

References: RFC 9110 sections 8.3 (Content-Type), 8.6 (Content-Length), 9.3.8
(TRACE); RFC 9112 section 6 (message body); RFC 6585 section 5 (431); OWASP WSTG
"Test HTTP Methods" (Cross-Site Tracing)
https://owasp.org/www-project-web-security-testing-guide/latest/4-Web_Application_Security_Testing/02-Configuration_and_Deployment_Management_Testing/06-Test_HTTP_Methods
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from bastion.limits.forms import MultipartCounter, URLEncodedCounter, parse_boundary
from bastion.limits.json import (
    UTF8_ENCODINGS,
    DeclaredJSON,
    EncodingPrefix,
    LeadingJSON,
    UndeclaredJSON,
    is_json_media_type,
)
from bastion.limits.reasons import (
    REASON_BODY_TOO_LARGE,
    REASON_CONTENT_LENGTH_INVALID,
    REASON_CONTENT_LENGTH_MISMATCH,
    REASON_CONTENT_LENGTH_TOO_LARGE,
    REASON_CONTENT_TYPE_INVALID,
    REASON_CONTENT_TYPE_NOT_ALLOWED,
    REASON_HEADERS_TOO_LARGE,
    REASON_HEADERS_TOO_MANY,
    REASON_JSON_NOT_UTF8,
    REASON_MULTIPART_MALFORMED,
)
from bastion.limits.settings import BodyLimits
from bastion.types import RawHeaders

# `: ` between name and value and CRLF after it, as the line was on the wire.
HEADER_LINE_OVERHEAD_BYTES: Final = 4
# 10**19 exceeds 2**63: no server frames a larger body, and capping the digits keeps
# int() away from CPython's quadratic conversion of huge digit strings.
_MAX_LENGTH_DIGITS: Final = 19
_URLENCODED: Final = "application/x-www-form-urlencoded"
# Methods that echo the request back (TRACE, RFC 9110 section 9.3.8, and TRACK, IIS's
# twin of it): an application that answers them hands a script the request's
# `Cookie` and `Authorization` lines, which the browser keeps from it otherwise
# (Cross-Site Tracing). No application needs them; they are refused whatever the
# application would do. Compared upper-cased: methods are case-sensitive (RFC 9110
# section 9.1), but some frameworks upper-case them before routing.
REFUSED_METHODS: Final = frozenset({"TRACE", "TRACK"})
# Every spelling of them that `str.upper` maps to one (`TrAcE`...), so the adapter
# tests membership without calling `upper` per request. ASCII spellings are all
# there are: no other code point upper-cases to letters of these words only
# (`test_checks` walks every code point), and `str.upper` maps each character alone.
REFUSED_METHOD_SPELLINGS: Final = frozenset(
    "".join(letters)
    for method in REFUSED_METHODS
    for letters in itertools.product(*((c, c.lower()) for c in method))
)
_MULTIPART_FORM: Final = "multipart/form-data"
# `read_declared_body` remembers the plan of each `Content-Type` value it met, per
# route (a plan depends on the value and the route's limits alone). The values are
# the client's: the memo holds at most this many, of at most this many bytes, and is
# emptied when full, so an attacker who sends a new value per request costs it its
# hits, never memory. Multipart values are never kept: their boundary is drawn
# afresh for each request.
PLAN_MEMO_ENTRIES: Final = 64
PLAN_MEMO_KEY_BYTES: Final = 256

# What a body is checked as: "json" when labelled JSON or not labelled, "undeclared"
# for any other type but a form (JSON depth, if it begins like JSON), "" not at all.
Syntax = Literal["", "json", "undeclared", "urlencoded", "multipart"]


@dataclass(frozen=True, slots=True)
class RequestHead:
    """Facts from a request's raw headers, read in one pass."""

    header_count: int
    header_bytes: int
    content_length: int | None  # None when absent or invalid
    content_length_invalid: bool
    has_transfer_encoding: bool
    content_type: bytes | None  # the raw value; None when absent
    content_type_conflict: bool  # several lines that disagree

    @property
    def declares_body(self) -> bool:
        return bool(self.content_length) or self.has_transfer_encoding

    @property
    def media_type(self) -> str | None:
        """Lower-case `type/subtype` without parameters; None when absent or empty.

        Normalised exactly as the frameworks' parsers do (the part before the first
        `;`, decoded as latin-1, `str.strip()`, lower-cased: `email.message` for
        FastAPI and Django, python-multipart for Starlette). `str.strip()` also
        removes `\xa0` and `\x1c`-`\x1f`, so a stricter strip here would let
        `application/json\xa0` reach FastAPI's JSON parser unscanned. Django also
        cuts at an `=` before the first `;`, where the others do not: a body whose
        media type holds one is refused (`_plan_for`).
        """
        return _media_type(self.content_type)


def _media_type(content_type: bytes | None) -> str | None:
    """`RequestHead.media_type` of a raw `Content-Type` value."""
    if content_type is None:
        return None
    media_type = content_type.decode("latin-1").partition(";")[0].strip().lower()
    return media_type or None


def read_head(headers: RawHeaders) -> RequestHead:
    size = 0
    lengths: list[bytes] = []
    content_types: list[bytes] = []
    has_transfer_encoding = False
    for name, value in headers:
        size += len(name) + len(value)
        lowered = name.lower()
        if lowered == b"content-length":
            lengths.extend(part.strip() for part in value.split(b","))
        elif lowered == b"content-type":
            content_types.append(value.strip())
        elif lowered == b"transfer-encoding":
            has_transfer_encoding = True
    length, length_invalid = _parse_content_length(lengths)
    return RequestHead(
        header_count=len(headers),
        header_bytes=size + HEADER_LINE_OVERHEAD_BYTES * len(headers),
        content_length=length,
        content_length_invalid=length_invalid,
        has_transfer_encoding=has_transfer_encoding,
        content_type=content_types[0] if content_types else None,
        content_type_conflict=len(set(content_types)) > 1,
    )


def read_head_index(headers: Mapping[bytes, list[bytes]], count: int, size: int) -> RequestHead:
    """`read_head` on headers already read into a lower-cased index
    (`bastion.stages.Flow.headers`), with the raw list's line `count` and the
    bytes of its names and values (`size`): the same facts, without another pass."""
    lengths = _length_parts(headers.get(b"content-length", ()))
    content_type: bytes | None = None
    conflict = False
    for value in headers.get(b"content-type", ()):
        if content_type is None:
            content_type = value.strip()
        elif value.strip() != content_type:
            conflict = True
    length, length_invalid = _parse_content_length(lengths) if lengths else (None, False)
    return RequestHead(
        header_count=count,
        header_bytes=size + HEADER_LINE_OVERHEAD_BYTES * count,
        content_length=length,
        content_length_invalid=length_invalid,
        has_transfer_encoding=b"transfer-encoding" in headers,
        content_type=content_type,
        content_type_conflict=conflict,
    )


def _length_parts(lines: list[bytes] | tuple[()]) -> list[bytes]:
    """The comma-separated values of the `Content-Length` lines, stripped."""
    lengths: list[bytes] = []
    for value in lines:
        for part in value.split(b","):
            lengths.append(part.strip())
    return lengths


def read_declared_body(
    headers: Mapping[bytes, list[bytes]],
    limits: BodyLimits,
    plans: MutableMapping[bytes | None, BodyPlan],
) -> tuple[str, BodyPlan, int | None]:
    """What the adapter needs of a head with a body field, from the index of
    `read_head_index`: the refusal of `check_declared_body` ("" when none), the plan of
    `plan_body`, and the declared length, without building a `RequestHead`.

    `plans` is the route's memo of plans by `Content-Type` value (see
    `PLAN_MEMO_ENTRIES`); the plan is `plan_body`'s whether it comes from there or not.
    """
    lines = headers.get(b"content-length")
    length: int | None = None
    length_invalid = False
    if lines is not None:
        value = lines[0]
        if len(lines) == 1 and len(value) <= _MAX_LENGTH_DIGITS and value.isdigit():
            # One line of at most that many ASCII digits (the common case): what
            # `_parse_content_length` makes of it, without the list and the calls.
            length = int(value)
        else:
            length, length_invalid = _parse_content_length(_length_parts(lines))
    content_type: bytes | None = None
    conflict = False
    types = headers.get(b"content-type")
    if types is not None:
        content_type = types[0].strip()
        if len(types) > 1:
            for value in types[1:]:
                if value.strip() != content_type:
                    conflict = True
    if conflict:
        plan = _PLAN_CONTENT_TYPE_INVALID
    else:
        found = plans.get(content_type)
        if found is None:
            found = _plan_for(content_type, limits)
            if found.syntax != "multipart" and (
                content_type is None or len(content_type) <= PLAN_MEMO_KEY_BYTES
            ):
                if len(plans) >= PLAN_MEMO_ENTRIES:
                    plans.clear()
                plans[content_type] = found
        plan = found
    # `check_declared_body`, on these facts.
    if length_invalid:
        return REASON_CONTENT_LENGTH_INVALID, plan, length
    if length is not None and length > limits.max_body_bytes:
        return REASON_CONTENT_LENGTH_TOO_LARGE, plan, length
    if length or b"transfer-encoding" in headers:
        return plan.refusal, plan, length
    return "", plan, length


def _parse_content_length(values: list[bytes]) -> tuple[int | None, bool]:
    if not values:
        return None, False
    first = values[0]
    if values.count(first) != len(values):
        return None, True
    if not first or not first.isdigit():  # bytes.isdigit is ASCII-only
        return None, True
    digits = first.lstrip(b"0") or b"0"
    if len(digits) > _MAX_LENGTH_DIGITS:
        return 10**_MAX_LENGTH_DIGITS, False
    return int(digits), False


def check_headers(head: RequestHead, *, max_count: int, max_bytes: int) -> str:
    return check_header_size(
        head.header_count, head.header_bytes, max_count=max_count, max_bytes=max_bytes
    )


def check_header_size(count: int, size_bytes: int, *, max_count: int, max_bytes: int) -> str:
    """`check_headers` on the line `count` and the bytes with line overhead
    (`RequestHead.header_bytes`) alone: what a head without body fields needs."""
    if count > max_count:
        return REASON_HEADERS_TOO_MANY
    if size_bytes > max_bytes:
        return REASON_HEADERS_TOO_LARGE
    return ""


@dataclass(frozen=True, slots=True)
class BodyPlan:
    """What a request's body is checked for.

    `refusal` is decided from the head but applied only when the body turns out to
    have a byte: a bodiless request is never refused for its content type.
    """

    refusal: str = ""
    syntax: Syntax = ""
    boundary: bytes = b""


# The facts of a head without `Content-Length`, `Content-Type` or
# `Transfer-Encoding` (sizes aside): `plan_body` of it is a route's plan for any
# request that declares nothing about a body.
UNLABELLED_HEAD: Final = RequestHead(0, 0, None, False, False, None, False)
_UNDECLARED: Final = BodyPlan(syntax="undeclared")
# The plans without a boundary are the same for every request: built once.
_PLAN_JSON: Final = BodyPlan(syntax="json")
_PLAN_URLENCODED: Final = BodyPlan(syntax="urlencoded")
_PLAN_CONTENT_TYPE_INVALID: Final = BodyPlan(refusal=REASON_CONTENT_TYPE_INVALID)
_PLAN_CONTENT_TYPE_NOT_ALLOWED: Final = BodyPlan(refusal=REASON_CONTENT_TYPE_NOT_ALLOWED)


def plan_body(head: RequestHead, limits: BodyLimits) -> BodyPlan:
    """Choose the checks for the body from its media type.

    A body with no `Content-Type` is scanned as JSON: FastAPI parses exactly those
    as JSON, so leaving them unscanned would let a deep document through. Every
    other body, forms included, is scanned for JSON depth too when it begins like a
    JSON container (`bastion.limits.json`): `json.loads` ignores the label.
    """
    if head.content_type_conflict:
        # Frameworks disagree on which line wins; we cannot tell which parser runs.
        return _PLAN_CONTENT_TYPE_INVALID
    return _plan_for(head.content_type, limits)


def _plan_for(content_type: bytes | None, limits: BodyLimits) -> BodyPlan:
    """`plan_body` of a head whose `Content-Type` lines agree on `content_type`.

    A media type that holds an `=` is refused (`REASON_CONTENT_TYPE_INVALID`), as
    lines that disagree are: parsers disagree on where it ends, so the layer cannot
    tell which parser runs. Django (`parse_header_parameters`, through
    `email.message`'s `get_params`) cuts it at the `=` when a `;` follows, so
    `multipart/form-data=x; boundary=B` is a multipart body to it, whose parts the
    layer counted as none; FastAPI (`Message.get_content_type`) and python-multipart
    (Starlette) cut it at the `;` alone, so `application/x-www-form-urlencoded=+json;
    a=b` is JSON to FastAPI and a form to Django. No media type holds one (RFC 9110
    section 8.3.1: `type "/" subtype`, both tokens), so nothing legitimate is lost.
    Without an `=` every reading agrees with `_media_type`: a `"` before the first
    `;` (where `email.message`, which skips a `;` inside quotes, may cut later) is in
    every reading, and none is a type a framework parses.
    """
    media_type = _media_type(content_type)
    if media_type is not None and "=" in media_type:
        return _PLAN_CONTENT_TYPE_INVALID
    if not limits.content_types.allows(media_type):
        return _PLAN_CONTENT_TYPE_NOT_ALLOWED
    if media_type is None or is_json_media_type(media_type):
        return _PLAN_JSON
    if media_type == _URLENCODED:
        return _PLAN_URLENCODED
    if media_type == _MULTIPART_FORM:
        boundary = parse_boundary(content_type or b"")
        if boundary is None:
            return BodyPlan(refusal=REASON_MULTIPART_MALFORMED)
        return BodyPlan(syntax="multipart", boundary=boundary)
    return _UNDECLARED


def check_declared_body(head: RequestHead, limits: BodyLimits, plan: BodyPlan) -> str:
    """Refuse on the head alone what the body would be refused for anyway."""
    if head.content_length_invalid:
        return REASON_CONTENT_LENGTH_INVALID
    if head.content_length is not None and head.content_length > limits.max_body_bytes:
        return REASON_CONTENT_LENGTH_TOO_LARGE
    if head.declares_body:
        return plan.refusal
    return ""


class _Inspector(Protocol):
    def feed(self, data: bytes) -> str: ...

    def end(self) -> str: ...


# A body whose first byte is none of these, and whose second byte is not NUL, is
# UTF-8 to `json.detect_encoding` however it goes on (every UTF-16 and UTF-32 BOM,
# and the UTF-8 one, begins with 0x00, 0xEF, 0xFE or 0xFF; without a BOM, only a NUL
# among the first two bytes means UTF-16 or UTF-32), and does not begin like a JSON
# container (`LeadingJSON`: JSON whitespace first, then `[` or `{`).
_NOT_PLAIN_FIRST: Final = frozenset(b"\x00\xef\xfe\xff \t\n\r[{")


class _FormInspector:
    """A form counter, and beside it the JSON depth scan of a form body that begins
    like a JSON container.

    `curl -d` labels every body url-encoded, so JSON APIs that call `json.loads`
    whatever the label receive JSON so labelled all the time, and an attacker can
    label a deep document so. A form a browser sends never begins with `[` or `{`
    (url-encoding escapes both; a multipart body begins with its delimiter), so the
    scan settles on the first byte of a real form.

    The counter gets only the bytes before the scan's violation, so the verdict names
    the first violation in byte order, however the body is chunked. A form body that
    `json.loads` would decode as UTF-16 or UTF-32 is refused: no browser sends one
    (forms are ASCII up to their file contents), and the byte scan cannot read it.

    The first two bytes of a real form settle both questions at once (`_NOT_PLAIN_FIRST`):
    such a body goes straight to the counter, and the encoding prefix and the scan
    are never made.
    """

    __slots__ = ("_counter", "_leading", "_max_depth", "_plain", "_prefix")

    def __init__(self, counter: _Inspector, *, max_depth: int) -> None:
        self._counter = counter
        self._max_depth = max_depth
        self._prefix: EncodingPrefix | None = None  # made on the first bytes, unless plain
        self._leading: LeadingJSON | None = None
        self._plain = False  # UTF-8 and no JSON container: only the counter is left

    def feed(self, data: bytes) -> str:
        if self._plain:
            return self._counter.feed(data)
        prefix = self._prefix
        if prefix is None:
            if len(data) >= 2 and data[0] not in _NOT_PLAIN_FIRST and data[1]:
                self._plain = True
                return self._counter.feed(data)
            prefix = self._prefix = EncodingPrefix()
        data = prefix.feed(data)
        return self._inspect(data) if prefix.encoding else ""

    def end(self) -> str:
        if self._prefix is None:  # plain, or nothing was fed (an empty body is no JSON)
            return self._counter.end()
        data = self._prefix.end()
        # Once the scan has begun, the end adds nothing to inspect unless the prefix
        # still held bytes (an empty scan and an empty count find nothing).
        if data or self._leading is None:
            reason = self._inspect(data)
            if reason:
                return reason
        return self._counter.end()

    def _inspect(self, data: bytes) -> str:
        if self._leading is None:
            assert self._prefix is not None  # made before anything is inspected
            encoding = self._prefix.encoding
            if encoding not in UTF8_ENCODINGS:
                return REASON_JSON_NOT_UTF8
            self._leading = LeadingJSON.for_encoding(encoding, max_depth=self._max_depth)
        reason, scanned = self._leading.scan(data)
        return self._counter.feed(data[:scanned]) or reason


def make_inspector(plan: BodyPlan, limits: BodyLimits) -> _Inspector | None:
    if plan.syntax == "json":
        return DeclaredJSON(max_depth=limits.max_json_depth, max_bytes=limits.max_json_bytes)
    if plan.syntax == "undeclared":
        return UndeclaredJSON(max_depth=limits.max_json_depth)
    if plan.syntax == "urlencoded":
        return _FormInspector(
            URLEncodedCounter(
                max_fields=limits.max_form_fields, max_field_bytes=limits.max_form_part_bytes
            ),
            max_depth=limits.max_json_depth,
        )
    if plan.syntax == "multipart":
        return _FormInspector(
            MultipartCounter(
                plan.boundary,
                max_fields=limits.max_form_fields,
                max_files=limits.max_form_files,
                max_part_bytes=limits.max_form_part_bytes,
                max_part_header_bytes=limits.max_form_part_header_bytes,
            ),
            max_depth=limits.max_json_depth,
        )
    return None


class BodyCheck:
    """Checks one request body, chunk by chunk, in the order the chunks arrive.

    `feed` returns the first violation's `REASON_*` ("" while none). It is called
    before the chunk reaches the application, so a refused chunk is never seen by
    it. State is a byte count and the inspector's bounded state, never the body.
    The inspector is built on the first byte: most requests have no body, and every
    inspector accepts an empty one (`end()` of a fresh inspector is "").
    """

    __slots__ = (
        "_declared_length",
        "_inspector",
        "_limit",
        "_over",
        "_plan",
        "_received",
        "_refusal",
        "limits",
    )

    def __init__(self, limits: BodyLimits, plan: BodyPlan, declared_length: int | None) -> None:
        self.limits = limits
        self._refusal = plan.refusal
        self._declared_length = declared_length
        self._plan = plan
        # None until the first byte to inspect; `_NO_INSPECTOR` when the plan has none.
        self._inspector: _Inspector | None = None
        self._received = 0
        # The size limit the body meets first, and its reason: fixed for the body.
        self._limit, self._over = limits.max_body_bytes, REASON_BODY_TOO_LARGE
        if declared_length is not None and declared_length <= self._limit:
            self._limit, self._over = declared_length, REASON_CONTENT_LENGTH_MISMATCH

    def feed(self, chunk: bytes, *, more_body: bool) -> str:
        if chunk:
            if self._refusal:
                return self._refusal
            # Inspect only the bytes within the size limits first, so the verdict
            # names the first violation in byte order, however the body is chunked.
            allowed = self._limit - self._received
            self._received += len(chunk)
            inspected = chunk if len(chunk) <= allowed else chunk[: max(allowed, 0)]
            if inspected:
                inspector = self._inspector
                if inspector is None:
                    inspector = self._inspector = (
                        make_inspector(self._plan, self.limits) or _NO_INSPECTOR
                    )
                reason = inspector.feed(inspected)
                if reason:
                    return reason
            if len(chunk) > allowed:
                return self._over
        if more_body:
            return ""
        if self._declared_length is not None and self._received != self._declared_length:
            return REASON_CONTENT_LENGTH_MISMATCH
        return self._inspector.end() if self._inspector is not None else ""


def whole_body_fits(
    body: bytes, plan: BodyPlan, limits: BodyLimits, declared_length: int | None
) -> bool:
    """Whether `body`, a request's whole body in one message, meets every check of
    `plan`: True only when a fresh `BodyCheck` would return "" for it, decided in C
    without building one. False means "not decided here", never "refused": the
    caller then runs the `BodyCheck`, which names the violation, if any.

    Decided here: an empty body (no check applies to no bytes, but the declared
    length), a plan without inspection, and the common url-encoded form, exactly as
    `_FormInspector` and `URLEncodedCounter` take it on their first chunk: two
    plain first bytes (`_NOT_PLAIN_FIRST`: UTF-8, no JSON container), at most as many
    fields as allowed (one, plus one per `&` or `;`), and no field longer than the
    whole body, which fits the field limit. A form with more fields, or longer than
    the field limit, goes to the counter, which checks field by field.
    """
    size = len(body)
    if size > limits.max_body_bytes:
        return False
    if declared_length is not None and size != declared_length:
        return False
    if not size:
        return True
    if plan.refusal:
        return False
    syntax = plan.syntax
    if not syntax:
        return True
    if syntax != "urlencoded" or size < 2 or body[0] in _NOT_PLAIN_FIRST or not body[1]:
        return False
    if size > limits.max_form_part_bytes:
        return False
    # Each separator is a byte: a body shorter than the field limit has no more
    # fields than it allows, counted or not.
    max_fields = limits.max_form_fields
    return size < max_fields or 1 + body.count(b"&") + body.count(b";") <= max_fields


class _NoInspector:
    """The inspector of a plan that inspects nothing."""

    __slots__ = ()

    def feed(self, data: bytes) -> str:
        return ""

    def end(self) -> str:
        return ""


_NO_INSPECTOR: Final = _NoInspector()
