"""The escaping every report writer shares (`bastion.audit.report.escape`), directly.

The attacks through a real hostile server are in test_attack_audit_report.py; here
the three functions are checked against a table and, for any text at all (lone
surrogates, unassigned code points, astral characters), with hypothesis.
"""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit.report.escape import (
    CUT_MARK,
    SARIF_TEXT_CHARS,
    inert_json,
    printable,
    sarif_text,
)
from tests.audit.test_attack_audit_report import _unescaped

ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()))
_UNSEEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _unseen(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in _UNSEEN]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("\x1b[31mred", "\\x1b[31mred", id="escape-csi"),
        pytest.param("\x9b2J", "\\x9b2J", id="escape-c1-csi"),
        pytest.param("a\nb\tc\r", "a\\x0ab\\x09c\\x0d", id="escape-newline-tab-return"),
        pytest.param("\x7f", "\\x7f", id="escape-delete"),
        pytest.param("/\u202eexe.txt", "/\\u202eexe.txt", id="escape-bidi-override"),
        pytest.param("\u2066a\u2069", "\\u2066a\\u2069", id="escape-bidi-isolate"),
        pytest.param("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c", id="escape-bidi-marks"),
        pytest.param("ad\u200bmin", "ad\\u200bmin", id="escape-zero-width-space"),
        pytest.param(
            "\u200c\u200d\u2060\ufeff", "\\u200c\\u200d\\u2060\\ufeff", id="escape-joiners"
        ),
        pytest.param("ad\xadmin", "ad\\xadmin", id="escape-soft-hyphen"),
        pytest.param("\U000e0041\U000e007f", "\\U000e0041\\U000e007f", id="escape-tag-characters"),
        pytest.param("\u2028\u2029", "\\u2028\\u2029", id="escape-line-paragraph-separators"),
        pytest.param("\ud800", "\\ud800", id="escape-lone-surrogate"),
        pytest.param("\ue000", "\\ue000", id="escape-private-use"),
        pytest.param("\u0378", "\\u0378", id="escape-unassigned"),
        pytest.param("\u3164\u115f\uffa0", "\\u3164\\u115f\\uffa0", id="escape-hangul-fillers"),
        pytest.param("a\u034fb", "a\\u034fb", id="escape-grapheme-joiner"),
        pytest.param("x\ufe0f\U000e0100", "x\\ufe0f\\U000e0100", id="escape-variation-selectors"),
        pytest.param("GET /items/1", "GET /items/1", id="plain-ascii-ok"),
        pytest.param(
            "caf\u00e9 \u65e5\u672c \u0639\u0631\u0628\u064a", None, id="plain-scripts-ok"
        ),
        pytest.param("e\u0301", None, id="plain-combining-accent-ok"),
        pytest.param("a\u00a0b\u3000c", None, id="plain-other-spaces-ok"),
        pytest.param("[bold]\\u202e", None, id="plain-markup-and-backslash-ok"),
    ],
)
def test_printable(text: str, shown: str | None) -> None:
    assert printable(text) == (text if shown is None else shown)


@given(ANY_TEXT)
def test_printable_shows_every_character(text: str) -> None:
    shown = printable(text)
    assert _unseen(shown) == []
    shown.encode("utf-8")


@given(st.recursive(ANY_TEXT, lambda inner: st.lists(inner) | st.dictionaries(ANY_TEXT, inner)))
def test_inert_json_reads_back_the_same_and_shows_nothing_hidden(document: object) -> None:
    text = inert_json({"value": document})
    assert json.loads(text) == {"value": document}
    assert [c for c in _unseen(text) if c != "\n"] == []
    text.encode("utf-8")


def test_inert_json_keeps_readable_text_as_it_is() -> None:
    assert inert_json({"route": "GET /caf\u00e9"}) == '{\n  "route": "GET /caf\u00e9"\n}'
    assert inert_json(["\U000e0041"], indent=0) == '[\n"\\udb40\\udc41"\n]'


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("[a](https://evil.example)", "\\[a\\](https://evil.example)", id="sarif-link"),
        pytest.param("\\[a](x)", "\\\\\\[a\\](x)", id="sarif-backslash-before-bracket"),
        pytest.param("<b>&amp;</b>", "\\<b>\\&amp;\\</b>", id="sarif-html-and-entity"),
        pytest.param("{0} {x}", "{{0}} {{x}}", id="sarif-placeholders"),
        pytest.param("a\u202eb\n", "a\\u202eb\\x0a", id="sarif-hidden"),
        pytest.param("server: nginx/1.2 (Ubuntu)", None, id="sarif-plain-ok"),
    ],
)
def test_sarif_text(text: str, shown: str | None) -> None:
    assert sarif_text(text) == (text if shown is None else shown)


@given(ANY_TEXT, st.integers(min_value=1, max_value=60))
def test_sarif_text_is_inert_and_bounded(text: str, limit: int) -> None:
    shown = sarif_text(text, limit=limit)
    assert _unseen(shown) == []
    assert _unescaped(shown.removesuffix(CUT_MARK)) == []
    assert len(shown) <= limit + len(CUT_MARK)
    whole = sarif_text(text, limit=10 * len(text) + 10)  # every escape is at most 10 long
    if len(whole) <= limit:
        assert shown == whole
    else:  # cut, and only between two escapes
        assert shown.endswith(CUT_MARK)
        assert whole.startswith(shown.removesuffix(CUT_MARK))


def test_sarif_text_default_bound() -> None:
    assert sarif_text("x" * SARIF_TEXT_CHARS) == "x" * SARIF_TEXT_CHARS
    assert sarif_text("x" * (SARIF_TEXT_CHARS + 1)) == "x" * SARIF_TEXT_CHARS + CUT_MARK
    # An escape is kept whole: the cut falls before it.
    assert sarif_text("x" * (SARIF_TEXT_CHARS - 1) + "[") == "x" * (SARIF_TEXT_CHARS - 1) + CUT_MARK
