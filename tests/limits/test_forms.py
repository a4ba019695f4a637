"""The form counters: boundary parsing, tables, exact limits, and never counting fewer
parts than a real parser (python-multipart, Starlette's) finds in the same bytes."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from python_multipart.multipart import MultipartParser, parse_options_header

from bastion.limits import LimitsSettings
from bastion.limits.checks import plan_body, read_head
from bastion.limits.forms import MultipartCounter, URLEncodedCounter, parse_boundary
from bastion.limits.reasons import (
    REASON_FORM_PART_HEADERS_TOO_LARGE,
    REASON_FORM_PART_TOO_LARGE,
    REASON_FORM_TOO_MANY_FIELDS,
    REASON_FORM_TOO_MANY_FILES,
    REASON_MULTIPART_MALFORMED,
)
from bastion.limits.settings import resolve_limits
from tests.limits.harness import Part, multipart_body

BOUNDARY = b"x-b0undary"
DEFAULT_LIMITS = resolve_limits(LimitsSettings())
BIG = 10**9


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def encode(parts: list[Part], *, newline: bytes = b"\r\n", boundary: bytes = BOUNDARY) -> bytes:
    return multipart_body(parts, boundary, newline=newline)


def header_block_bytes(part: Part, newline: bytes = b"\r\n") -> int:
    """What the counter measures: from the end of the delimiter to the blank line."""
    return len(newline) + len(newline.join(part.header_lines()))


def multipart_verdict(
    chunks: list[bytes],
    *,
    max_fields: int = BIG,
    max_files: int = BIG,
    max_part_bytes: int = BIG,
    max_part_header_bytes: int = BIG,
) -> str:
    counter = MultipartCounter(
        BOUNDARY,
        max_fields=max_fields,
        max_files=max_files,
        max_part_bytes=max_part_bytes,
        max_part_header_bytes=max_part_header_bytes,
    )
    for chunk in chunks:
        reason = counter.feed(chunk)
        if reason:
            return reason
    return counter.end()


def urlencoded_verdict(chunks: list[bytes], *, max_fields: int, max_field_bytes: int = BIG) -> str:
    counter = URLEncodedCounter(max_fields=max_fields, max_field_bytes=max_field_bytes)
    for chunk in chunks:
        reason = counter.feed(chunk)
        if reason:
            return reason
    return counter.end()


BOUNDARIES = [
    pytest.param(b"multipart/form-data; boundary=abc", b"abc", id="plain"),
    pytest.param(b"multipart/form-data;boundary=abc", b"abc", id="no-space"),
    pytest.param(b"multipart/form-data; Boundary=abc", b"abc", id="name-case-insensitive"),
    pytest.param(b'multipart/form-data; boundary="a b:c"', b"a b:c", id="quoted-with-space"),
    pytest.param(b"multipart/form-data; charset=utf-8; boundary=abc", b"abc", id="other-param"),
    pytest.param(b"multipart/form-data; boundary=" + b"a" * 70, b"a" * 70, id="70-chars"),
    pytest.param(b"multipart/form-data", None, id="missing"),
    pytest.param(b"multipart/form-data; boundary=", None, id="empty"),
    pytest.param(b"multipart/form-data; boundary=" + b"a" * 71, None, id="71-chars"),
    pytest.param(b'multipart/form-data; boundary="ab "', None, id="ends-with-space"),
    pytest.param(b"multipart/form-data; boundary=a;boundary=b", None, id="duplicated"),
    pytest.param(b'multipart/form-data; boundary="a\\"b"', None, id="quote-not-a-bchar"),
    pytest.param(b'multipart/form-data; boundary="\\a"', None, id="quoted-pair"),
    pytest.param(b"multipart/form-data; boundary=a b", None, id="unquoted-space"),
    pytest.param(b'multipart/form-data; x="a;boundary=evil"; boundary=ok', b"ok", id="quoted-semi"),
    pytest.param(b"multipart/form-data; garbage; boundary=abc", None, id="bad-parameter"),
]


@pytest.mark.parametrize(("content_type", "expected"), BOUNDARIES)
def test_parse_boundary(content_type: bytes, expected: bytes | None) -> None:
    assert parse_boundary(content_type) == expected


_PARAMETER_TEXT = st.text(alphabet=' ;="\\abx-:', max_size=6)
_PARAMETERS = st.lists(
    st.tuples(
        st.sampled_from(["", " ", ";", "; ", " ;\t"]),
        st.sampled_from(["boundary", "Boundary", "x", ""]),
        st.sampled_from(["=", "", " = "]),
        _PARAMETER_TEXT | _PARAMETER_TEXT.map(lambda text: f'"{text}"'),
    ),
    max_size=3,
).map(lambda parts: "".join("".join(part) for part in parts).encode())


@settings(max_examples=500, deadline=None)
@given(
    parameters=_PARAMETERS | st.text(alphabet=' ;="\\abBOUNDARYx-:', max_size=40).map(str.encode)
)
def test_boundary_never_differs_from_python_multipart(parameters: bytes) -> None:
    """Whenever Starlette's parser (python-multipart) would parse a body as multipart,
    we count it with the same boundary, or refuse it."""
    for media_type in (b"multipart/form-data", b"Multipart/Form-Data"):
        content_type = media_type + parameters
        theirs, options = parse_options_header(content_type)
        if theirs != b"multipart/form-data" or b"boundary" not in options:
            continue
        plan = plan_body(read_head([(b"content-type", content_type)]), DEFAULT_LIMITS)
        assert plan.refusal or plan.boundary == options[b"boundary"]


FORM = [Part("a", b"hello"), Part("f", b"file-data", "x.txt"), Part("g", b"")]

MULTIPART_TABLE = [
    pytest.param(encode(FORM), {}, "", id="legit"),
    pytest.param(encode(FORM, newline=b"\n"), {}, "", id="legit-lf-only"),
    pytest.param(b"", {}, "", id="empty-body"),
    pytest.param(b"--" + BOUNDARY + b"--\r\n", {}, "", id="no-parts"),
    pytest.param(b"preamble\r\n" + encode(FORM) + b"epilogue", {}, "", id="preamble-epilogue"),
    pytest.param(encode(FORM), {"max_fields": 3}, "", id="fields-at-limit"),
    pytest.param(encode(FORM), {"max_fields": 2}, REASON_FORM_TOO_MANY_FIELDS, id="too-many"),
    pytest.param(encode(FORM), {"max_files": 1}, "", id="files-at-limit"),
    pytest.param(encode(FORM), {"max_files": 0}, REASON_FORM_TOO_MANY_FILES, id="too-many-files"),
    pytest.param(encode(FORM), {"max_part_bytes": 9}, "", id="part-at-limit"),
    pytest.param(encode(FORM), {"max_part_bytes": 8}, REASON_FORM_PART_TOO_LARGE, id="part-big"),
    pytest.param(
        encode(FORM),
        {"max_part_header_bytes": header_block_bytes(FORM[1])},
        "",
        id="part-headers-at-limit",
    ),
    pytest.param(
        encode(FORM),
        {"max_part_header_bytes": header_block_bytes(FORM[1]) - 1},
        REASON_FORM_PART_HEADERS_TOO_LARGE,
        id="part-headers-too-large",
    ),
    pytest.param(
        b"--" + BOUNDARY + b"\r\n" + b"X: " + b"a" * 100,
        {"max_part_header_bytes": 50},
        REASON_FORM_PART_HEADERS_TOO_LARGE,
        id="part-headers-never-end",
    ),
    pytest.param(b"no delimiter at all", {}, REASON_MULTIPART_MALFORMED, id="no-delimiter"),
    pytest.param(encode(FORM)[:-20], {}, REASON_MULTIPART_MALFORMED, id="unclosed"),
    pytest.param(
        encode(FORM) + encode(FORM), {}, REASON_MULTIPART_MALFORMED, id="parts-after-close"
    ),
    pytest.param(
        b"--" + BOUNDARY + b"\r\nX: --" + BOUNDARY + b"\r\n\r\nd\r\n--" + BOUNDARY + b"--",
        {},
        REASON_MULTIPART_MALFORMED,
        id="delimiter-in-headers",
    ),
    pytest.param(
        # A delimiter glued to data still counts: some parser might split there.
        encode([Part("a", b"x--" + BOUNDARY + b"\r\n\r\ny")]),
        {"max_fields": 1},
        REASON_FORM_TOO_MANY_FIELDS,
        id="glued-delimiter-counts",
    ),
    pytest.param(
        encode([Part("a", b"", "FILENAME.TXT")]).replace(b"filename", b"FileName"),
        {"max_files": 0},
        REASON_FORM_TOO_MANY_FILES,
        id="filename-any-case",
    ),
]


@pytest.mark.parametrize(("body", "limits", "expected"), MULTIPART_TABLE)
def test_multipart_table(body: bytes, limits: dict[str, int], expected: str) -> None:
    assert multipart_verdict([body], **limits) == expected
    assert multipart_verdict([bytes([b]) for b in body], **limits) == expected


def test_multipart_state_stays_small() -> None:
    """A 4 MiB part is counted with a buffer of a few dozen bytes, not the part."""
    counter = MultipartCounter(
        BOUNDARY, max_fields=10, max_files=10, max_part_bytes=BIG, max_part_header_bytes=1024
    )
    head = b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="a"\r\n\r\n'
    assert counter.feed(head) == ""
    for _ in range(64):
        assert counter.feed(b"z" * 65536) == ""
        assert len(counter._buffer) <= len(BOUNDARY) + 3
    assert counter.feed(b"\r\n--" + BOUNDARY + b"--") == ""
    assert counter.end() == ""


_NAMES = st.text(alphabet="abcxyz_", min_size=1, max_size=6)
_DATA = st.binary(max_size=40).filter(lambda data: BOUNDARY not in data)
_PARTS = st.lists(st.builds(Part, name=_NAMES, data=_DATA, filename=st.none() | _NAMES), max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    parts=_PARTS,
    newline=st.sampled_from([b"\r\n", b"\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=12),
)
def test_multipart_limits_are_exact(parts: list[Part], newline: bytes, cuts: list[int]) -> None:
    # With LF line breaks, data ending in CR is ambiguous: a CRLF parser (and the
    # counter) reads that CR as part of the delimiter's line break, one byte less.
    assume(newline == b"\r\n" or not any(part.data.endswith(b"\r") for part in parts))
    chunks = split(encode(parts, newline=newline), cuts)
    fields = len(parts)
    files = sum(part.filename is not None for part in parts)
    largest = max((len(part.data) for part in parts), default=0)
    headers = max((header_block_bytes(part, newline) for part in parts), default=1)
    exact = {
        "max_fields": max(fields, 1),
        "max_files": files,
        "max_part_bytes": max(largest, 1),
        "max_part_header_bytes": headers,
    }
    assert multipart_verdict(chunks, **exact) == ""
    if fields:
        assert multipart_verdict(chunks, max_fields=fields - 1) == REASON_FORM_TOO_MANY_FIELDS
    if files:
        assert multipart_verdict(chunks, max_files=files - 1) == REASON_FORM_TOO_MANY_FILES
    if largest:
        assert multipart_verdict(chunks, max_part_bytes=largest - 1) == REASON_FORM_PART_TOO_LARGE
    if parts:
        assert (
            multipart_verdict(chunks, max_part_header_bytes=headers - 1)
            == REASON_FORM_PART_HEADERS_TOO_LARGE
        )


def python_multipart_parts(body: bytes) -> int:
    """How many parts python-multipart (Starlette's parser) begins on `body`."""
    began = 0

    def on_part_begin() -> None:
        nonlocal began
        began += 1

    parser = MultipartParser(BOUNDARY, {"on_part_begin": on_part_begin})
    try:
        parser.write(body)
        parser.finalize()
    except Exception:  # noqa: S110 - a parse error ends the count, nothing more
        pass
    return began


_MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["lf", "insert", "duplicate", "delete"]),
        st.integers(min_value=0, max_value=10_000),
        st.binary(min_size=1, max_size=8) | st.sampled_from([b"\r\n", b"--", b"\r\n\r\n", b"\n"]),
    ),
    max_size=6,
)


def mutate(body: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    for kind, at, data in mutations:
        at %= len(body) + 1
        if kind == "lf":
            body = body[:at] + body[at:].replace(b"\r\n", b"\n", 1)
        elif kind == "insert":
            body = body[:at] + data + body[at:]
        elif kind == "duplicate":
            body = body[:at] + body[at : at + 64] + body[at:]
        else:
            body = body[:at] + body[at + len(data) :]
    return body


@settings(max_examples=400, deadline=None)
@given(parts=_PARTS, mutations=_MUTATIONS, newline=st.sampled_from([b"\r\n", b"\n"]))
def test_never_counts_fewer_parts_than_python_multipart(
    parts: list[Part], mutations: list[tuple[str, int, bytes]], newline: bytes
) -> None:
    """The security property: a body we accept with max_fields=N never gives the
    application's parser more than N parts, however it is mangled."""
    body = mutate(encode(parts, newline=newline), mutations)
    seen = python_multipart_parts(body)
    if seen:
        assert multipart_verdict([body], max_fields=seen - 1) != ""


@settings(max_examples=300, deadline=None)
@given(
    parts=_PARTS,
    mutations=_MUTATIONS,
    cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=12),
    limits=st.fixed_dictionaries(
        {
            "max_fields": st.integers(min_value=0, max_value=6),
            "max_files": st.integers(min_value=0, max_value=4),
            "max_part_bytes": st.integers(min_value=0, max_value=50),
            "max_part_header_bytes": st.integers(min_value=0, max_value=120),
        }
    ),
)
def test_multipart_verdict_does_not_depend_on_chunk_boundaries(
    parts: list[Part],
    mutations: list[tuple[str, int, bytes]],
    cuts: list[int],
    limits: dict[str, int],
) -> None:
    body = mutate(encode(parts), mutations)
    assert multipart_verdict(split(body, cuts), **limits) == multipart_verdict([body], **limits)


URLENCODED_TABLE = [
    pytest.param(b"a=1&b=2", 2, "", id="two-fields"),
    pytest.param(b"a=1&b=2", 1, REASON_FORM_TOO_MANY_FIELDS, id="two-over-one"),
    pytest.param(b"a=1;b=2", 1, REASON_FORM_TOO_MANY_FIELDS, id="semicolon-separates"),
    pytest.param(b"&&&&", 4, REASON_FORM_TOO_MANY_FIELDS, id="empty-fields-count"),
    pytest.param(b"", 0, "", id="empty-body"),
    pytest.param(b"&".join([b"f=1"] * 1000), 1000, "", id="django-default-1000"),
    pytest.param(b"&".join([b"f=1"] * 1001), 1000, REASON_FORM_TOO_MANY_FIELDS, id="1001"),
]


@pytest.mark.parametrize(("body", "max_fields", "expected"), URLENCODED_TABLE)
def test_urlencoded_table(body: bytes, max_fields: int, expected: str) -> None:
    assert urlencoded_verdict([body], max_fields=max_fields) == expected
    assert urlencoded_verdict([bytes([b]) for b in body], max_fields=max_fields) == expected


def test_urlencoded_field_size() -> None:
    body = b"a=" + b"x" * 98 + b"&b=1"
    assert urlencoded_verdict([body], max_fields=10, max_field_bytes=100) == ""
    assert urlencoded_verdict(split(body, [50, 101]), max_fields=10, max_field_bytes=100) == ""
    assert (
        urlencoded_verdict(split(body, [50, 101]), max_fields=10, max_field_bytes=99)
        == REASON_FORM_PART_TOO_LARGE
    )


@settings(max_examples=300, deadline=None)
@given(
    body=st.text(alphabet="ab=&;%", max_size=200).map(str.encode),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10),
)
def test_urlencoded_counts_at_least_the_parser_and_ignores_chunking(
    body: bytes, cuts: list[int]
) -> None:
    parsed = max(
        len(parse_qsl(body.decode(), keep_blank_values=True, separator=separator))
        for separator in ("&", ";")
    )
    if parsed:
        assert urlencoded_verdict([body], max_fields=parsed - 1) == REASON_FORM_TOO_MANY_FIELDS
    for max_fields in (1, 3, 10):
        for max_field_bytes in (2, 10, BIG):
            assert urlencoded_verdict(
                split(body, cuts), max_fields=max_fields, max_field_bytes=max_field_bytes
            ) == urlencoded_verdict([body], max_fields=max_fields, max_field_bytes=max_field_bytes)
