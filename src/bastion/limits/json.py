"""JSON nesting depth and size, checked while the body streams past.

Threat: a small JSON body nested thousands of levels deep (`[[[[...`) makes a
recursive parser (CPython's `json`, and most others) exhaust its stack: a
`RecursionError` (a 500 and a traceback) or, in C parsers without a guard, a crash.
A huge JSON body costs memory and time in the parser.
Defence: `JSONScanner` follows only what decides nesting (string, escape and bracket
state) over raw bytes, iteratively, keeping a handful of integers, and gives its
verdict as soon as a limit is crossed, before the parser ever sees the body.
Not covered: whether the body is valid JSON (the application's parser decides that),
and other expensive shapes (huge numbers, many keys), which stay bounded by size.

Why bytes are enough: JSON exchanged between systems MUST be UTF-8 (RFC 8259
section 8.1), and in UTF-8 the ASCII bytes `"`, `\\`, `[`, `]`, `{`, `}` never occur
inside a multi-byte character, so a byte-level scan tokenises exactly as a parser
does. UTF-16 and UTF-32, which `json.loads` also accepts on bytes, would break that
(an escaped quote there is `\\ 00 " 00`): `bastion.limits.checks` refuses a body
that `json.detect_encoding` would not decode as UTF-8, before this scan matters.

References: RFC 8259 https://www.rfc-editor.org/rfc/rfc8259 (sections 2, 7, 8.1).
"""

from __future__ import annotations

import re
from typing import Final

from bastion.limits.reasons import REASON_JSON_TOO_DEEP, REASON_JSON_TOO_LARGE

# Outside strings only these bytes matter; inside, only the quote and the backslash.
_QUOTE: Final = 0x22
_BACKSLASH: Final = 0x5C
_OPENERS: Final = frozenset(b"[{")
_CLOSERS: Final = frozenset(b"]}")
_STRING_EVENT: Final = re.compile(rb'["\\]')
_NEXT_QUOTE: Final = re.compile(rb'"')


class JSONScanner:
    """Bounds the nesting depth and size of one JSON body, fed in chunks.

    `feed` returns a `REASON_*` constant at the first violation and "" otherwise;
    once it has returned a reason the scanner's verdict is final. The algorithm:

    * inside a string, jump (in C, with a regular expression) to the next quote or
      backslash; a backslash skips the byte after it, which may be the first byte
      of the next chunk (`_escape_pending`);
    * outside strings, take the run of bytes up to the next quote and count its
      brackets with `bytes.count` (in C). If the run cannot reach the limit or go
      below zero (`depth + openers <= max_depth` and `closers <= depth`), apply the
      counts at once; otherwise walk that run byte by byte, which only happens near
      the limit or in bracket soup such as `[][][]`.

    Depth is the number of containers open at once: `1` and `"a"` have depth 0,
    `[]` depth 1, `{"a": [1]}` depth 2. A closer with nothing open is ignored (the
    application's parser rejects such a body anyway), so depth never goes negative
    and is never lower than a parser's. Work is linear in the body; state is a few
    integers and flags, whatever the input.
    """

    __slots__ = ("_depth", "_escape_pending", "_in_string", "_size", "max_bytes", "max_depth")

    def __init__(self, *, max_depth: int, max_bytes: int) -> None:
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self._depth = 0
        self._size = 0
        self._in_string = False
        self._escape_pending = False

    def feed(self, data: bytes) -> str:
        allowed = self.max_bytes - self._size
        self._size += len(data)
        if len(data) > allowed:
            # Scan up to the limit first: the verdict names the first violation in
            # byte order, whatever the chunking.
            return self._scan(data[: max(allowed, 0)]) or REASON_JSON_TOO_LARGE
        return self._scan(data)

    def end(self) -> str:
        """The body is complete. Depth and size were decided while feeding."""
        return ""

    def _scan(self, data: bytes) -> str:
        end = len(data)
        position = 0
        if self._escape_pending and end:
            self._escape_pending = False
            position = 1
        while position < end:
            if self._in_string:
                match = _STRING_EVENT.search(data, position)
                if match is None:
                    return ""
                position = match.end()
                if data[match.start()] == _BACKSLASH:
                    if position == end:
                        self._escape_pending = True
                        return ""
                    position += 1
                else:
                    self._in_string = False
                continue
            match = _NEXT_QUOTE.search(data, position)
            run_end = match.start() if match is not None else end
            if not self._count_run(data, position, run_end):
                return REASON_JSON_TOO_DEEP
            if match is None:
                return ""
            self._in_string = True
            position = run_end + 1
        return ""

    def _count_run(self, data: bytes, start: int, end: int) -> bool:
        """Apply the brackets of `data[start:end]` (no quotes in it); False if too deep."""
        openers = data.count(b"[", start, end) + data.count(b"{", start, end)
        closers = data.count(b"]", start, end) + data.count(b"}", start, end)
        if self._depth + openers <= self.max_depth and closers <= self._depth:
            self._depth += openers - closers
            return True
        depth = self._depth
        for byte in data[start:end]:
            if byte in _OPENERS:
                depth += 1
                if depth > self.max_depth:
                    return False
            elif byte in _CLOSERS and depth:
                depth -= 1
        self._depth = depth
        return True


def is_json_media_type(media_type: str) -> bool:
    """`application/json` and the structured-syntax suffix `+json` (RFC 6839 section 3.1)."""
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))
