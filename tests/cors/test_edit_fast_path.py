"""The CORS layer's response edits with their memo of names that are neither
`Vary` nor `Access-Control-*` (`_PLAIN_NAMES`) against the edits they replaced
(copied here unchanged from be819b2), on a table of header lists: application CORS
lines in any case, `Vary` lines, names that hold the prefix elsewhere, lists,
tuples and malformed lines, with the memo cold and warm."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, cast

import pytest

from bastion.cors import (
    _ACAC,
    _ACAO,
    _CORS_NAME_STARTS,
    _CORS_PREFIX,
    _EDITED_NAME_STARTS,
    _PLAIN_NAMES,
    _PLAIN_NAMES_ENTRIES,
    _PLAIN_NAMES_MAX_BYTES,
    _VARIES_ON_ORIGIN,
    _VARY_ORIGIN,
    build_response_edit,
    rewrite_headers,
    strip_app_cors,
)
from bastion.stages import HeaderEdit
from bastion.types import RawHeaders


def _reference_strip_app_cors(headers: RawHeaders) -> RawHeaders:
    """`strip_app_cors` as it was before its short path (be819b2), unchanged."""
    for name, _ in headers:
        if name[:1] in _CORS_NAME_STARTS and name.lower().startswith(_CORS_PREFIX):
            return [line for line in headers if not line[0].lower().startswith(_CORS_PREFIX)]
    return headers


def _reference_build_response_edit(
    grant: tuple[tuple[bytes, bytes], ...], *, keep_app_cors: bool
) -> HeaderEdit:
    """`build_response_edit` as it was before its short path (be819b2), unchanged."""
    with_vary = (_VARY_ORIGIN, *grant)

    def edit(headers: RawHeaders) -> RawHeaders:
        varies_on_origin = False
        for name, value in headers:
            if name[:1] in _EDITED_NAME_STARTS:
                lower = name.lower()
                if lower == b"vary" and _VARIES_ON_ORIGIN.search(value) is not None:
                    varies_on_origin = True
                elif lower == b"vary" or (lower.startswith(_CORS_PREFIX) and not keep_app_cors):
                    return rewrite_headers(headers, grant, keep_app_cors=keep_app_cors)
        if varies_on_origin:
            return [*headers, *grant]
        return [*headers, *with_vary]

    return edit


_GRANT = ((_ACAO, b"https://app.example"), _ACAC)

EDITS: dict[str, tuple[Callable[[RawHeaders], RawHeaders], Callable[[RawHeaders], RawHeaders]]] = {
    "strip": (strip_app_cors, _reference_strip_app_cors),
    "no-grant": (
        build_response_edit((), keep_app_cors=False),
        _reference_build_response_edit((), keep_app_cors=False),
    ),
    "no-grant-monitor": (
        build_response_edit((), keep_app_cors=True),
        _reference_build_response_edit((), keep_app_cors=True),
    ),
    "grant": (
        build_response_edit(_GRANT, keep_app_cors=False),
        _reference_build_response_edit(_GRANT, keep_app_cors=False),
    ),
}

_PLAIN = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"5")]

HEADER_LISTS = [
    pytest.param([], id="cors-fast-none"),
    pytest.param(_PLAIN, id="cors-fast-plain"),
    pytest.param([*_PLAIN, (b"vary", b"Origin, Sec-Fetch-Site")], id="cors-fast-vary-origin"),
    pytest.param([*_PLAIN, (b"vary", b"Accept")], id="cors-fast-vary-other"),
    pytest.param([(b"Vary", b"accept"), *_PLAIN], id="cors-fast-vary-upper-name"),
    pytest.param([(b"VARY", b"*")], id="cors-fast-vary-star"),
    pytest.param([(b"vary", b"")], id="cors-fast-vary-empty"),
    pytest.param(
        [(b"vary", b"Origin"), (b"vary", b"Cookie")], id="cors-fast-vary-lines-origin-first"
    ),
    pytest.param(
        [(b"vary", b"Cookie"), (b"vary", b"origin")], id="cors-fast-vary-lines-origin-last"
    ),
    pytest.param([(b"x-vary", b"Accept"), *_PLAIN], id="cors-fast-vary-inside-a-name"),
    pytest.param(
        [*_PLAIN, (b"access-control-allow-origin", b"https://evil.example")],
        id="cors-fast-app-grant",
    ),
    pytest.param(
        [(b"Access-Control-Allow-Origin", b"*"), *_PLAIN], id="cors-fast-app-grant-title-case"
    ),
    pytest.param(
        [(b"ACCESS-CONTROL-ALLOW-CREDENTIALS", b"true"), (b"aCcEsS-cOnTrOl-Expose-Headers", b"x")],
        id="cors-fast-app-lines-any-case",
    ),
    pytest.param(
        [(b"access-control-allow-origin", b"*"), (b"vary", b"Accept")],
        id="cors-fast-app-grant-and-vary",
    ),
    pytest.param([(b"x-access-control-note", b"1"), *_PLAIN], id="cors-fast-prefix-inside-a-name"),
    pytest.param([(b"access-control", b"1")], id="cors-fast-prefix-without-dash"),
    pytest.param([(b"access-control-", b"1")], id="cors-fast-prefix-alone"),
    pytest.param([(b"allow", b"GET"), (b"age", b"1")], id="cors-fast-other-a-names"),
    pytest.param([[b"access-control-allow-origin", b"*"], [b"a", b"b"]], id="cors-fast-list-pairs"),
    pytest.param([("content-type", "text/plain"), ("x", "y")], id="cors-fast-text-names"),
    pytest.param([("vary", "x"), (b"a", b"b")], id="cors-fast-text-vary"),
    pytest.param([("access-control-allow-origin", "*")], id="cors-fast-text-cors-name"),
]


@pytest.mark.parametrize("edit_name", EDITS)
@pytest.mark.parametrize("as_tuple", [False, True], ids=["list", "tuple"])
@pytest.mark.parametrize("headers", HEADER_LISTS)
def test_edit_matches_the_edit_it_replaced(
    edit_name: str, headers: list[Any], *, as_tuple: bool
) -> None:
    edit, reference = EDITS[edit_name]
    lines: Any = tuple(headers) if as_tuple else list(headers)
    _PLAIN_NAMES.clear()
    for _ in range(2):  # the memo cold, then warm
        try:
            expected = reference(lines)
        except (TypeError, AttributeError) as error:  # text names the reference cannot lower
            with pytest.raises(error.__class__):
                edit(lines)
            continue
        result = edit(lines)
        assert result == expected
        assert [line.__class__ for line in result] == [line.__class__ for line in expected]
        # "Nothing to change" is told by identity (`HeaderEdit`): the same list, or a new one.
        assert (result is lines) == (expected is lines)


def test_the_memo_holds_only_names_neither_vary_nor_cors() -> None:
    """cors-plain-names-verdicts: after every table answer went through every edit,
    the memo holds bytes names that are neither `Vary` nor `Access-Control-*`."""
    _PLAIN_NAMES.clear()
    for edit, _ in EDITS.values():
        for param in HEADER_LISTS:
            with contextlib.suppress(TypeError, AttributeError):  # text names, as before
                edit(list(cast("list[Any]", param.values[0])))
    assert _PLAIN_NAMES
    for name in _PLAIN_NAMES:
        assert name.__class__ is bytes
        assert name.lower() != b"vary"
        assert not name.lower().startswith(_CORS_PREFIX)


@pytest.mark.parametrize("edit_name", EDITS)
def test_plain_names_memo_bounded_spray(edit_name: str) -> None:
    """cors-plain-names-bounded-spray: an answer's names may echo a client's; a spray
    of distinct names leaves the memo bounded in entries and name length, and every
    answer edited as the reference edits it (CORS lines among them still go)."""
    edit, reference = EDITS[edit_name]
    _PLAIN_NAMES.clear()
    for index in range(3 * _PLAIN_NAMES_ENTRIES):
        lines = [
            (b"x-echo-%d" % index, b"1"),
            (b"x-" + b"long" * 20 + b"-%d" % index, b"2"),
            (b"Access-Control-Allow-Origin", b"*") if index % 3 == 0 else (b"x-ok", b"3"),
            (b"Vary", b"Accept") if index % 5 == 0 else (b"content-type", b"text/plain"),
        ]
        assert edit(lines) == reference(lines)
        assert len(_PLAIN_NAMES) <= _PLAIN_NAMES_ENTRIES
    assert _PLAIN_NAMES
    assert all(len(name) <= _PLAIN_NAMES_MAX_BYTES for name in _PLAIN_NAMES)


@pytest.mark.parametrize("edit_name", EDITS)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"content-type", b"text/plain", b"x")], id="cors-fast-three-items"),
        pytest.param([(b"access-control-allow-origin",)], id="cors-fast-one-item"),
        pytest.param([()], id="cors-fast-empty-line"),
        pytest.param([None], id="cors-fast-not-a-pair"),
    ],
)
def test_malformed_lines_fail_as_before(edit_name: str, headers: list[Any]) -> None:
    edit, reference = EDITS[edit_name]
    with pytest.raises((TypeError, ValueError)) as expected:
        reference(headers)
    with pytest.raises(expected.type):
        edit(headers)


@pytest.mark.parametrize("edit_name", EDITS)
def test_a_malformed_line_after_an_app_cors_line_is_left_as_before(edit_name: str) -> None:
    """cors-fast-malformed-after-cors-line: the old loop stopped at the first CORS
    line, before a malformed one; the short path's failure hands over to it."""
    edit, reference = EDITS[edit_name]
    headers: Any = [(b"access-control-allow-origin", b"*"), (b"x", b"1", b"extra")]
    try:
        expected = reference(headers)
    except ValueError:
        with pytest.raises(ValueError, match="unpack"):
            edit(headers)
        return
    assert edit(headers) == expected
