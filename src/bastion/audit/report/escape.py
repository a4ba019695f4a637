"""Text the audited site chose, made inert wherever a report shows it.

Threat: findings quote what the audited site sent (header values, paths from its
OpenAPI document, script URLs), and whoever controls the site chooses that text.
Shown as it came, it can drive the reader's terminal (ECMA-48 escape sequences), or
make the report lie to the eye ("Trojan Source", CVE-2021-42574): a bidirectional
override or isolate (U+202A..U+202E, U+2066..U+2069) reorders what follows it, so a
route reads as another one and text after it seems to belong elsewhere, and
zero-width or default-ignorable characters (U+200B..U+200F, U+2060, U+FEFF, Hangul
fillers, tag characters) hide text or make two strings look alike. In a SARIF log
the text reaches a code-scanning page, which makes `[text](url)` a link whose text
need not be its target (SARIF 2.1.0 section 3.11.6), replaces `{0}` with an
argument (section 3.11.5), and (GitHub does) renders some Markdown: raw HTML, and
character references that bring a bidi override back (`&#x202e;`).
Defence: one definition of what a reader cannot see as itself (`is_hidden`: the
control, format, surrogate, private-use and unassigned categories, line and
paragraph separators, and the rest of Unicode's default-ignorable code points),
shown visibly wherever a report puts text:

* `printable`: for a terminal and HTML, each such character as `\\xNN`, `\\uNNNN` or
  `\\UNNNNNNNN`, as Python writes it in a string literal.
* `inert_json`: a JSON document with each such character as a JSON `\\uNNNN` escape:
  it reads back to the very same strings, and `cat report.json` shows them inert.
* `sarif_text`: `printable`, bounded to `SARIF_TEXT_CHARS`, with the characters
  that make a link, a placeholder, HTML or a character reference escaped as SARIF
  and Markdown read them (`\\[`, `{{`, `\\<`, `\\&`).
* `printable_bounded`: `printable`, bounded as `sarif_text` is (a SARIF logical
  location's name); both cut between characters, never inside an escape.

Not covered: look-alike letters from other scripts (Cyrillic U+0430 for Latin "a") and
combining marks, which ordinary text in many languages needs; a backslash the site
wrote is kept as it is, so the site can write the text `\\u202e`, which then shows as
just that.

References: Unicode Standard Annex #9 (bidirectional algorithm), section 2
https://www.unicode.org/reports/tr9/ ; UAX #44 and DerivedCoreProperties.txt
(Default_Ignorable_Code_Point) https://www.unicode.org/reports/tr44/ ; Trojan Source
https://trojansource.codes/ ; ECMA-48 (control functions); SARIF 2.1.0 sections
3.11.3 to 3.11.6
https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/sarif-v2.1.0-errata01-os-complete.html ;
GitHub Flavored Markdown, sections 2.4 (backslash escapes), 2.5 (entity references),
6.3 (links), 6.6 (raw HTML) https://github.github.com/gfm/
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from typing import Final

# Characters no reader sees as themselves: controls (Cc), format characters (Cf:
# bidi controls, zero-width characters, soft hyphen, tags), lone surrogates (Cs,
# which a JSON document can carry and no output encoding can write), private use
# (Co: any glyph a font likes), unassigned code points (Cn: what a later Unicode
# makes of them is unknown), and the line and paragraph separators (Zl, Zp).
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Default_Ignorable_Code_Point (DerivedCoreProperties.txt) outside those categories:
# the combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian
# free variation selectors and the variation selectors. A renderer draws them as
# nothing, or changes the look of the character before.
_IGNORABLE_RANGES: Final = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)
SARIF_TEXT_CHARS: Final = 500
"""At most this many characters of one site-chosen text in a SARIF message, escapes
counted. GitHub titles an alert with the message's first sentence; the evidence that
follows names a header or a route, and the Observatory's evidence is already cut at
300 characters. The JSON report keeps the whole text."""
CUT_MARK: Final = "…"
# Escaped with a backslash in SARIF text: the link brackets and the backslash itself
# (SARIF 2.1.0 section 3.11.6: the backslash too, or the site's own "\" would undo
# the escape of the "[" after it), "<" (raw HTML and autolinks in Markdown) and "&"
# (a character reference such as `&#x202e;`).
_SARIF_BACKSLASHED: Final = frozenset("\\[]<&")
# Doubled: SARIF 2.1.0 section 3.11.5, "the characters '{' and '}' SHALL be
# represented by the character sequences '{{' and '}}'".
_SARIF_DOUBLED: Final = frozenset("{}")


def is_hidden(char: str) -> bool:
    """Whether `char` (one character) cannot be seen as itself in a report."""
    if unicodedata.category(char) in _HIDDEN_CATEGORIES:
        return True
    code = ord(char)
    return any(low <= code <= high for low, high in _IGNORABLE_RANGES)


def escape_char(char: str) -> str:
    """`char` as Python writes it in a literal: `\\x1b`, `\\u202e`, `\\U000e0041`."""
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """`text` with every hidden character (`is_hidden`, newlines too) shown escaped."""
    if text.isascii() and text.isprintable():
        return text  # the usual case: nothing to escape
    return "".join(_printable_char(c) for c in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code > 0xFFFF:  # JSON writes it as a UTF-16 surrogate pair (RFC 8259 section 7)
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def inert_json(document: object, *, indent: int = 2) -> str:
    """`document` as JSON (UTF-8 text kept readable), every hidden character escaped.

    `json.dumps` already escapes C0 controls inside strings, and outside strings a
    document holds only ASCII punctuation, digits, spaces and the newlines of its
    indentation: every other hidden character is inside a string, where `\\uNNNN`
    means that very character.
    """
    text = json.dumps(document, indent=indent, ensure_ascii=False)
    if text.isascii() and "\x7f" not in text:
        return text
    return "".join(_json_escape(c) if c != "\n" and is_hidden(c) else c for c in text)


def _sarif_char(char: str) -> str:
    if is_hidden(char):
        return escape_char(char)
    if char in _SARIF_BACKSLASHED:
        return "\\" + char
    if char in _SARIF_DOUBLED:
        return char + char
    return char


def _printable_char(char: str) -> str:
    return escape_char(char) if is_hidden(char) else char


def _bounded(text: str, shown: Callable[[str], str], limit: int) -> str:
    """Each character of `text` as `shown` writes it, at most `limit` characters in
    all; a longer text is cut between two characters' pieces, never inside an
    escape, and ends with `CUT_MARK`."""
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = shown(char)
        if used + len(piece) > limit:
            pieces.append(CUT_MARK)
            break
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces)


def sarif_text(text: str, *, limit: int = SARIF_TEXT_CHARS) -> str:
    """`text` fit for a SARIF plain-text message: hidden characters shown escaped, no
    link, placeholder, HTML or character reference, and at most `limit` characters
    of it; a longer text is cut (never inside an escape) and ends with `CUT_MARK`."""
    return _bounded(text, _sarif_char, limit)


def printable_bounded(text: str, *, limit: int = SARIF_TEXT_CHARS) -> str:
    """`printable(text)`, at most `limit` characters of it, cut as `sarif_text` cuts
    (a SARIF logical location's name: shown as text, never as Markdown)."""
    return _bounded(text, _printable_char, limit)
