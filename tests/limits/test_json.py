"""The JSON depth and size scanner: tables, agreement with `json`, chunk independence."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.limits.json import JSONScanner, is_json_media_type
from bastion.limits.reasons import REASON_JSON_TOO_DEEP, REASON_JSON_TOO_LARGE

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
