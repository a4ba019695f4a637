"""The JSON depth and size scanner: tables, agreement with `json`, chunk independence.

Then the inspectors built on it: `DeclaredJSON` for bodies labelled JSON, and
`UndeclaredJSON` for any other body that `json.loads` would still parse.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.limits.json import (
    DeclaredJSON,
    JSONScanner,
    LeadingJSON,
    UndeclaredJSON,
    is_json_media_type,
)
from bastion.limits.reasons import (
    REASON_JSON_NOT_UTF8,
    REASON_JSON_TOO_DEEP,
    REASON_JSON_TOO_LARGE,
)

UNLIMITED = 10**12


def verdict(chunks: list[bytes], *, max_depth: int, max_bytes: int = UNLIMITED) -> str:
    scanner = JSONScanner(max_depth=max_depth, max_bytes=max_bytes)
    for chunk in chunks:
        reason = scanner.feed(chunk)
        if reason:
            return reason
    return scanner.end()


def depth_of(value: Any) -> int:
    """Nesting depth as the scanner defines it, computed on the parsed value."""
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


TABLE = [
    pytest.param(b"1", 0, "", id="scalar-depth-0"),
    pytest.param(b'"[[["', 0, "", id="brackets-in-string"),
    pytest.param(b"[]", 1, "", id="empty-array-depth-1"),
    pytest.param(b"[]", 0, REASON_JSON_TOO_DEEP, id="empty-array-over-0"),
    pytest.param(b'{"a": [1]}', 2, "", id="object-array-2"),
    pytest.param(b'{"a": [1]}', 1, REASON_JSON_TOO_DEEP, id="object-array-over-1"),
    pytest.param(b'["\\"", [1]]', 2, "", id="escaped-quote-does-not-close"),
    pytest.param(b'["\\\\", [[1]]]', 2, REASON_JSON_TOO_DEEP, id="escaped-backslash-closes"),
    pytest.param(b'["\\\\\\"[[[["]', 1, "", id="backslashes-then-quote-in-string"),
    pytest.param(b"[[1],[2],[3]]", 2, "", id="siblings-do-not-add"),
    pytest.param(b"]]]][[", 2, "", id="stray-closers-never-lower-depth"),
    pytest.param(b"]]]][[[", 2, REASON_JSON_TOO_DEEP, id="stray-closers-do-not-hide-openers"),
    pytest.param('["é[", {"ü": []}]'.encode(), 3, "", id="utf8-strings"),
    pytest.param(b"[" * 101, 100, REASON_JSON_TOO_DEEP, id="depth-101"),
    pytest.param(b"[" * 100 + b"]" * 100, 100, "", id="depth-100-ok"),
]


@pytest.mark.parametrize(("document", "max_depth", "expected"), TABLE)
def test_table(document: bytes, max_depth: int, expected: str) -> None:
    assert verdict([document], max_depth=max_depth) == expected
    # The same bytes one at a time: every escape and string straddles a chunk.
    assert verdict([bytes([b]) for b in document], max_depth=max_depth) == expected


def test_size_limit_counts_every_chunk() -> None:
    assert verdict([b"[1,", b"2]"], max_depth=5, max_bytes=5) == ""
    assert verdict([b"[1,", b"23]"], max_depth=5, max_bytes=5) == REASON_JSON_TOO_LARGE


def test_depth_100000_is_refused_fast_and_without_recursion() -> None:
    document = b"[" * 100_000 + b"]" * 100_000
    assert len(document) == 200_000
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100)  # the scanner must not need the stack at all
    try:
        started = time.perf_counter()
        whole = verdict([document], max_depth=100)
        chunked = verdict(split(document, list(range(0, 200_000, 7))), max_depth=100)
        elapsed = time.perf_counter() - started
    finally:
        sys.setrecursionlimit(limit)
    assert whole == chunked == REASON_JSON_TOO_DEEP
    assert elapsed < 1.0


def test_bracket_soup_of_a_mebibyte_is_linear() -> None:
    document = b"[" + b"[]," * 350_000 + b"[]]"
    started = time.perf_counter()
    assert verdict([document], max_depth=2) == ""
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        ("application/json", True),
        ("application/problem+json", True),
        ("application/reports+json", True),
        ("application/jsonp", False),
        ("text/json", False),
        ("application/json-seq", False),
    ],
)
def test_json_media_types(media_type: str, expected: bool) -> None:
    assert is_json_media_type(media_type) is expected


# Strings full of the bytes that matter, to exercise string and escape state.
_TEXT = st.text(alphabet=st.sampled_from('ab"\\[]{}/ é\n\t\u2028'), max_size=8)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    value=_JSON_VALUES,
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_agrees_with_json_loads_depth(
    value: Any, ensure_ascii: bool, indent: int | None, cuts: list[int]
) -> None:
    document = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent).encode()
    depth = depth_of(json.loads(document))
    chunks = split(document, cuts)
    assert verdict(chunks, max_depth=depth) == ""
    if depth:
        assert verdict(chunks, max_depth=depth - 1) == REASON_JSON_TOO_DEEP


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300)
    | st.text(alphabet=st.sampled_from('"\\[]{}a'), max_size=300).map(str.encode),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10),
    max_depth=st.integers(min_value=0, max_value=6),
    max_bytes=st.integers(min_value=0, max_value=400),
)
def test_verdict_does_not_depend_on_chunk_boundaries(
    data: bytes, cuts: list[int], max_depth: int, max_bytes: int
) -> None:
    """Any bytes at all, valid JSON or not: the split never changes the verdict."""
    chunked = verdict(split(data, cuts), max_depth=max_depth, max_bytes=max_bytes)
    assert chunked == verdict([data], max_depth=max_depth, max_bytes=max_bytes)


@pytest.mark.parametrize(
    ("document", "max_depth", "expected_index"),
    [
        pytest.param(b"[[[", 2, 2, id="third-opener"),
        pytest.param(b'["[[[", [[1]]]', 2, 9, id="after-a-string"),
        pytest.param(b"[]" * 50 + b"[[", 1, 101, id="after-bracket-soup"),
        pytest.param(b"[[1]]", 2, 5, id="none"),
    ],
)
def test_scan_names_the_violating_byte(
    document: bytes, max_depth: int, expected_index: int
) -> None:
    scanner = JSONScanner(max_depth=max_depth, max_bytes=UNLIMITED)
    reason, scanned = scanner.scan(document)
    assert scanned == expected_index
    assert reason == (REASON_JSON_TOO_DEEP if expected_index < len(document) else "")


def test_scan_names_the_byte_over_the_size_limit() -> None:
    scanner = JSONScanner(max_depth=5, max_bytes=4)
    assert scanner.scan(b"[1,2]") == (REASON_JSON_TOO_LARGE, 4)


# The inspectors of whole bodies: the encoding is decided on the first four bytes.

Inspector = DeclaredJSON | UndeclaredJSON


def inspect(inspector: Inspector, chunks: list[bytes]) -> str:
    for chunk in chunks:
        reason = inspector.feed(chunk)
        if reason:
            return reason
    return inspector.end()


def declared(max_depth: int = 100) -> DeclaredJSON:
    return DeclaredJSON(max_depth=max_depth, max_bytes=UNLIMITED)


def undeclared(max_depth: int = 100) -> UndeclaredJSON:
    return UndeclaredJSON(max_depth=max_depth)


DEEP = b"[" * 101
# A Windows tool's INI file: UTF-16 with a BOM, and it begins with a bracket.
INI_UTF16 = "[General]\r\nName=x\r\n[Other]\r\nKey=[1]\r\n".encode("utf-16")
_RANDOM = random.Random(20240611)
BLOB = _RANDOM.randbytes(256 * 1024)

INSPECTIONS = [
    # Labelled JSON: UTF-8 only, from the first byte.
    pytest.param(declared, b"", 100, "", id="declared-empty-ok"),
    pytest.param(declared, b"[1]", 1, "", id="declared-short-ok"),
    pytest.param(declared, b"[[", 1, REASON_JSON_TOO_DEEP, id="declared-short-deep"),
    pytest.param(declared, DEEP, 100, REASON_JSON_TOO_DEEP, id="declared-deep"),
    pytest.param(declared, b"\xef\xbb\xbf[1]", 100, "", id="declared-utf8-bom-ok"),
    pytest.param(declared, b"\xff\xfe", 100, REASON_JSON_NOT_UTF8, id="declared-short-utf16"),
    pytest.param(
        declared, "[1]".encode("utf-16-le"), 100, REASON_JSON_NOT_UTF8, id="declared-utf16"
    ),
    # Labelled anything else: depth, when it begins like a JSON container.
    pytest.param(undeclared, b"", 100, "", id="undeclared-empty-ok"),
    pytest.param(undeclared, b"see [1] and [2] {x}", 1, "", id="undeclared-text-brackets-ok"),
    pytest.param(undeclared, b"[INFO] a\n[WARN] b\n" * 50, 1, "", id="undeclared-log-ok"),
    pytest.param(undeclared, b"x" + DEEP, 100, "", id="undeclared-text-then-brackets-ok"),
    pytest.param(undeclared, b'"' + DEEP, 100, "", id="undeclared-string-first-ok"),
    pytest.param(undeclared, b"1 " + DEEP, 100, "", id="undeclared-number-first-ok"),
    pytest.param(undeclared, DEEP, 100, REASON_JSON_TOO_DEEP, id="undeclared-deep"),
    pytest.param(undeclared, b"[" * 100 + b"]" * 100, 100, "", id="undeclared-at-limit-ok"),
    pytest.param(
        undeclared, b" \t\r\n" * 300 + DEEP, 100, REASON_JSON_TOO_DEEP, id="undeclared-ws-first"
    ),
    pytest.param(
        undeclared, b"{" + b'"a":{' * 100, 100, REASON_JSON_TOO_DEEP, id="undeclared-objects"
    ),
    pytest.param(
        undeclared, b"\xef\xbb\xbf \n" + DEEP, 100, REASON_JSON_TOO_DEEP, id="undeclared-utf8-bom"
    ),
    pytest.param(undeclared, b"[]", 1, "", id="undeclared-short-ok"),
    pytest.param(undeclared, b"[[", 1, REASON_JSON_TOO_DEEP, id="undeclared-short-deep"),
    # UTF-16 and UTF-32, which `json.loads` decodes by itself, are scanned decoded.
    pytest.param(undeclared, INI_UTF16, 1, "", id="undeclared-utf16-ini-file-ok"),
    pytest.param(
        undeclared, (" " + "[" * 101).encode("utf-16-le"), 100, REASON_JSON_TOO_DEEP, id="utf16-le"
    ),
    pytest.param(
        undeclared, ("[" * 101).encode("utf-16-be"), 100, REASON_JSON_TOO_DEEP, id="utf16-be"
    ),
    pytest.param(
        undeclared, ("[" * 101).encode("utf-16"), 100, REASON_JSON_TOO_DEEP, id="utf16-bom"
    ),
    pytest.param(
        undeclared, ("[" * 101).encode("utf-32-le"), 100, REASON_JSON_TOO_DEEP, id="utf32-le"
    ),
    pytest.param(
        undeclared, ("[" * 101).encode("utf-32"), 100, REASON_JSON_TOO_DEEP, id="utf32-bom"
    ),
    pytest.param(
        undeclared,
        ('["\\"", ' + "[" * 100).encode("utf-16-le"),
        100,
        REASON_JSON_TOO_DEEP,
        id="utf16-escaped-quote-hides-nothing",
    ),
    # Binary: a scan that meets bytes no JSON text contains ends without a verdict.
    pytest.param(undeclared, BLOB, 100, "", id="undeclared-binary-ok"),
    pytest.param(undeclared, b"{" + BLOB, 100, "", id="undeclared-binary-brace-first-ok"),
    pytest.param(undeclared, b"[" + BLOB, 100, "", id="undeclared-binary-bracket-first-ok"),
    pytest.param(undeclared, b"[[[\x00" + DEEP, 100, "", id="undeclared-nul-ends-the-scan-ok"),
    pytest.param(
        undeclared, DEEP + b"\x00", 100, REASON_JSON_TOO_DEEP, id="undeclared-deep-before-nul"
    ),
    pytest.param(
        undeclared,
        b'["\x01", ' + DEEP,
        100,
        REASON_JSON_TOO_DEEP,
        id="undeclared-control-in-a-string-does-not-end-it",
    ),
]


@pytest.mark.parametrize(("make", "body", "max_depth", "expected"), INSPECTIONS)
def test_inspectors(
    make: Callable[[int], Inspector], body: bytes, max_depth: int, expected: str
) -> None:
    assert inspect(make(max_depth), [body]) == expected
    # Byte by byte: the encoding prefix, the BOM and the whitespace all straddle chunks.
    assert inspect(make(max_depth), [bytes([b]) for b in body[:4096]] + [body[4096:]]) == expected


def test_unparsable_binary_would_not_parse() -> None:
    """The premise of ending the scan at non-JSON text: `json.loads` fails there."""
    with pytest.raises(ValueError, match="Expecting"):
        json.loads(b"[[[\x00" + DEEP)
    # Random binary reaches such a byte at once, so a deep random walk never starts.
    assert inspect(undeclared(1), [b"{" + BLOB]) == ""


def test_leading_json_settles_on_the_first_byte() -> None:
    leading = LeadingJSON(max_depth=1)
    assert leading.scan(b"  \n") == ("", 3)
    assert not leading.settled
    assert leading.scan(b"--boundary [[[[") == ("", 15)
    assert leading.settled


_ENCODINGS = st.sampled_from(
    ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
)
_WHITESPACE = st.text(alphabet=" \t\r\n", max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    value=_JSON_VALUES,
    ensure_ascii=st.booleans(),
    encoding=_ENCODINGS,
    before=_WHITESPACE,
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_undeclared_agrees_with_json_loads_in_every_encoding(
    value: Any, ensure_ascii: bool, encoding: str, before: str, cuts: list[int]
) -> None:
    """Whatever the encoding `json.loads` accepts, a document is refused exactly when
    it is deeper than the limit."""
    document = (before + json.dumps(value, ensure_ascii=ensure_ascii)).encode(encoding)
    parsed = json.loads(document)
    assert parsed == value
    depth = depth_of(parsed)
    chunks = split(document, cuts)
    assert inspect(undeclared(max(depth, 1)), chunks) == ""
    if depth > 1:
        assert inspect(undeclared(depth - 1), chunks) == REASON_JSON_TOO_DEEP


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300)
    | st.text(alphabet=st.sampled_from(' \t"\\[]{}a\x00'), max_size=300).map(str.encode)
    | st.text(alphabet=st.sampled_from(' "\\[]{}a'), max_size=100).map(
        lambda text: text.encode("utf-16")
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10),
    max_depth=st.integers(min_value=1, max_value=6),
)
def test_undeclared_verdict_does_not_depend_on_chunk_boundaries(
    data: bytes, cuts: list[int], max_depth: int
) -> None:
    assert inspect(undeclared(max_depth), split(data, cuts)) == inspect(
        undeclared(max_depth), [data]
    )
