"""JSON nesting depth and size, checked while the body streams past.

Threat: a small JSON body nested thousands of levels deep (`[[[[...`) makes a
recursive parser (CPython's `json`, and most others) exhaust its stack: a
`RecursionError` (a 500 and a traceback) or, in C parsers without a guard, a crash.
`json.loads`, and so Starlette's `Request.json()` and Django code that calls
`json.loads(request.body)`, parses whatever bytes it is given, whatever their
`Content-Type`: a deep document labelled `text/plain`, or url-encoded as
`curl -d` labels every body, crashes such an application just as surely.
A huge JSON body costs memory and time in the parser.
Defence: `JSONScanner` follows only what decides nesting (string, escape and bracket
state) over raw bytes, iteratively, keeping a handful of integers, and gives its
verdict as soon as a limit is crossed, before the parser ever sees the body.

* A body labelled JSON (or not labelled at all, which FastAPI parses as JSON):
  `DeclaredJSON` checks its depth and size from the first byte, and refuses it
  unless it is UTF-8.
* Any other body, forms included: its depth is checked when, as `json.loads` would
  read it, its first character other than JSON whitespace is `[` or `{`
  (`UndeclaredJSON`; `LeadingJSON` beside the form counters, in `checks`). Every
  other JSON text (a string, a number, `true`) has no nesting to check. The JSON
  size limit does not apply: such a body is bounded by the body limit the route
  chose for it, and an upload that happens to be JSON is no parser's input.

Not covered: whether the body is valid JSON (the application's parser decides that),
other expensive shapes (huge numbers, many keys), which stay bounded by size, and
supersets of JSON that allow comments before the first bracket (JSON5, YAML).

Why bytes are enough: JSON exchanged between systems MUST be UTF-8 (RFC 8259
section 8.1), and in UTF-8 the ASCII bytes `"`, `\\`, `[`, `]`, `{`, `}` never occur
inside a multi-byte character, so a byte-level scan tokenises exactly as a parser
does. UTF-16 and UTF-32, which `json.loads` also accepts on bytes (it picks the
encoding from the first four bytes, `json.detect_encoding`), would break that (an
escaped quote there is `\\ 00 " 00`). So a body labelled JSON must be UTF-8, so must
a form (`checks`), and any other body in UTF-16 or UTF-32 is decoded for the scan.

Undeclared bodies are often binary, and one random upload in 128 starts with `[` or
`{`: its bracket bytes then walk up and down at random, and a 1 MiB blob of random
bytes goes past the default depth limit more often than not. So the scan of an
undeclared body ends, passing it, at its first byte outside a string that no JSON
text may contain there (a control character other than whitespace,
`_NOT_JSON_TEXT`): every parser fails at that byte, and the nesting before it was
already checked. Random bytes outside a string meet one every ten bytes or so; a
JSON document never does.

References: RFC 8259 https://www.rfc-editor.org/rfc/rfc8259 (sections 2, 7, 8.1);
CPython `json.detect_encoding` and `json.decoder.WHITESPACE`.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from typing import Final

from bastion.limits.reasons import (
    REASON_JSON_NOT_UTF8,
    REASON_JSON_TOO_DEEP,
    REASON_JSON_TOO_LARGE,
)

# Outside strings only these bytes matter; inside, only the quote and the backslash.
_QUOTE: Final = 0x22
_BACKSLASH: Final = 0x5C
_OPENERS: Final = frozenset(b"[{")
_CLOSERS: Final = frozenset(b"]}")
_STRING_EVENT: Final = re.compile(rb'["\\]')
_NEXT_QUOTE: Final = re.compile(rb'"')
# RFC 8259 section 2: ws = *( %x20 / %x09 / %x0A / %x0D ); CPython's decoder skips
# exactly these before the value.
_LEADING_WHITESPACE: Final = re.compile(rb"[ \t\n\r]*")
# C0 controls and DEL, less the whitespace of JSON and of its supersets (JSON5 adds
# VT and FF): RFC 8259 allows none of them outside a string, and no parser skips them.
_NOT_JSON_TEXT: Final = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
# How many bytes `json.detect_encoding` looks at.
ENCODING_PREFIX_BYTES: Final = 4
UTF8_ENCODINGS: Final = frozenset({"utf-8", "utf-8-sig"})
# An undeclared body's size is the body limit's business, not the JSON size limit's.
_UNBOUNDED: Final = sys.maxsize


class JSONScanner:
    """Bounds the nesting depth and size of one JSON body, fed in chunks.

    `feed` returns a `REASON_*` constant at the first violation and "" otherwise;
    once it has returned a reason the scanner's verdict is final. `scan` does the
    same and also says how many bytes of the chunk came before the violation. The
    algorithm:

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

    With `stop_at_non_json_text`, the scan ends for good, with no verdict, at the
    first `_NOT_JSON_TEXT` byte outside a string (see the module docstring).
    """

    __slots__ = (
        "_depth",
        "_escape_pending",
        "_in_string",
        "_size",
        "_stopped",
        "max_bytes",
        "max_depth",
        "stop_at_non_json_text",
    )

    def __init__(
        self, *, max_depth: int, max_bytes: int, stop_at_non_json_text: bool = False
    ) -> None:
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.stop_at_non_json_text = stop_at_non_json_text
        self._depth = 0
        self._size = 0
        self._in_string = False
        self._escape_pending = False
        self._stopped = False

    def feed(self, data: bytes) -> str:
        return self.scan(data)[0]

    def scan(self, data: bytes) -> tuple[str, int]:
        """The verdict on `data`, and how many of its bytes precede the violating one
        (all of them when there is none)."""
        if self._stopped:
            return "", len(data)
        allowed = self.max_bytes - self._size
        self._size += len(data)
        if len(data) > allowed:
            # Scan up to the limit first: the verdict names the first violation in
            # byte order, whatever the chunking.
            within = max(allowed, 0)
            reason, scanned = self._scan(data[:within])
            return (reason, scanned) if reason else (REASON_JSON_TOO_LARGE, within)
        return self._scan(data)

    def end(self) -> str:
        """The body is complete. Depth and size were decided while feeding."""
        return ""

    @property
    def stopped(self) -> bool:
        """The scan met non-JSON text and has ended without a verdict."""
        return self._stopped

    def _scan(self, data: bytes) -> tuple[str, int]:
        end = len(data)
        position = 0
        if self._escape_pending and end:
            self._escape_pending = False
            position = 1
        while position < end:
            if self._in_string:
                match = _STRING_EVENT.search(data, position)
                if match is None:
                    return "", end
                position = match.end()
                if data[match.start()] == _BACKSLASH:
                    if position == end:
                        self._escape_pending = True
                        return "", end
                    position += 1
                else:
                    self._in_string = False
                continue
            match = _NEXT_QUOTE.search(data, position)
            run_end = match.start() if match is not None else end
            if self.stop_at_non_json_text:
                not_text = _NOT_JSON_TEXT.search(data, position, run_end)
                if not_text is not None:
                    self._stopped = True
                    too_deep = self._count_run(data, position, not_text.start())
                    return (REASON_JSON_TOO_DEEP, too_deep) if too_deep >= 0 else ("", end)
            too_deep = self._count_run(data, position, run_end)
            if too_deep >= 0:
                return REASON_JSON_TOO_DEEP, too_deep
            if match is None:
                return "", end
            self._in_string = True
            position = run_end + 1
        return "", end

    def _count_run(self, data: bytes, start: int, end: int) -> int:
        """Apply the brackets of `data[start:end]` (no quotes in it); the index of the
        opener that goes too deep, or -1."""
        openers = data.count(b"[", start, end) + data.count(b"{", start, end)
        closers = data.count(b"]", start, end) + data.count(b"}", start, end)
        if self._depth + openers <= self.max_depth and closers <= self._depth:
            self._depth += openers - closers
            return -1
        depth = self._depth
        for index in range(start, end):
            byte = data[index]
            if byte in _OPENERS:
                depth += 1
                if depth > self.max_depth:
                    return index
            elif byte in _CLOSERS and depth:
                depth -= 1
        self._depth = depth
        return -1


class EncodingPrefix:
    """Holds back the first bytes of a body until its JSON encoding is known.

    `json.loads` reads a bytes document as UTF-8, UTF-16 or UTF-32 by its first four
    bytes (a BOM, or where the NUL bytes are: `json.detect_encoding`). Nothing is
    inspected before that is decided, so no verdict depends on how the first bytes
    were split into chunks. A body shorter than that is decided at its end.
    """

    __slots__ = ("_held", "encoding")

    def __init__(self) -> None:
        self._held = b""
        self.encoding = ""  # "" while undecided

    def feed(self, data: bytes) -> bytes:
        """The bytes to inspect now: empty while the encoding is undecided."""
        if self.encoding:
            return data
        data = self._held + data
        if len(data) < ENCODING_PREFIX_BYTES:
            self._held = data
            return b""
        self._held = b""
        self.encoding = json.detect_encoding(data)
        return data

    def end(self) -> bytes:
        """The body is complete: decide now, on what there is, and release it."""
        data, self._held = self._held, b""
        if not self.encoding:
            self.encoding = json.detect_encoding(data)
        return data


class LeadingJSON:
    """Scans a UTF-8 body for depth when it begins like a JSON container.

    The leading `skip_bytes` (the UTF-8 BOM that `json.loads` drops) and JSON
    whitespace are passed over, in as many chunks as they span. If the next byte is
    `[` or `{`, the rest goes to a `JSONScanner` that stops at non-JSON text;
    otherwise the body is settled at once, and costs nothing more.
    """

    __slots__ = ("_not_container", "_scanner", "_skip_bytes", "max_depth")

    def __init__(self, *, max_depth: int, skip_bytes: int = 0) -> None:
        self.max_depth = max_depth
        self._skip_bytes = skip_bytes
        self._scanner: JSONScanner | None = None
        self._not_container = False

    @classmethod
    def for_encoding(cls, encoding: str, *, max_depth: int) -> LeadingJSON:
        bom = len(codecs.BOM_UTF8) if encoding == "utf-8-sig" else 0
        return cls(max_depth=max_depth, skip_bytes=bom)

    @property
    def settled(self) -> bool:
        """No verdict can come any more: not a container, or not JSON text."""
        return self._not_container or (self._scanner is not None and self._scanner.stopped)

    def scan(self, data: bytes) -> tuple[str, int]:
        """As `JSONScanner.scan`."""
        if self._scanner is not None:
            return self._scanner.scan(data)
        if self._not_container:
            return "", len(data)
        start = min(self._skip_bytes, len(data))
        self._skip_bytes -= start
        whitespace = _LEADING_WHITESPACE.match(data, start)
        start = whitespace.end() if whitespace is not None else start
        if start == len(data):
            return "", start
        if data[start] not in _OPENERS:
            self._not_container = True
            return "", len(data)
        self._scanner = JSONScanner(
            max_depth=self.max_depth, max_bytes=_UNBOUNDED, stop_at_non_json_text=True
        )
        reason, scanned = self._scanner.scan(data[start:])
        return reason, start + scanned


class DeclaredJSON:
    """The JSON checks of a body labelled JSON, or not labelled: UTF-8, depth, size."""

    __slots__ = ("_prefix", "_scanner")

    def __init__(self, *, max_depth: int, max_bytes: int) -> None:
        self._prefix = EncodingPrefix()
        self._scanner = JSONScanner(max_depth=max_depth, max_bytes=max_bytes)

    def feed(self, data: bytes) -> str:
        return self._inspect(self._prefix.feed(data))

    def end(self) -> str:
        return self._inspect(self._prefix.end()) or self._scanner.end()

    def _inspect(self, data: bytes) -> str:
        encoding = self._prefix.encoding
        if not encoding:
            return ""
        if encoding not in UTF8_ENCODINGS:
            return REASON_JSON_NOT_UTF8
        return self._scanner.feed(data)


class UndeclaredJSON:
    """The JSON check of a body labelled neither JSON nor a form: depth, if it begins
    like a JSON container.

    A UTF-16 or UTF-32 body (which `json.loads` would decode as such) is decoded
    incrementally and re-encoded as UTF-8 for the scan. Invalid sequences become
    U+FFFD, which is no bracket, quote or backslash: `json.loads` refuses such a body
    outright, and for a valid one the scan is exact.
    """

    __slots__ = ("_decoder", "_leading", "_prefix", "max_depth")

    def __init__(self, *, max_depth: int) -> None:
        self.max_depth = max_depth
        self._prefix = EncodingPrefix()
        self._leading: LeadingJSON | None = None
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, data: bytes) -> str:
        return self._inspect(self._prefix.feed(data), final=False)

    def end(self) -> str:
        return self._inspect(self._prefix.end(), final=True)

    def _inspect(self, data: bytes, *, final: bool) -> str:
        encoding = self._prefix.encoding
        if not encoding:
            return ""
        if self._leading is None:
            self._leading = LeadingJSON.for_encoding(encoding, max_depth=self.max_depth)
            if encoding not in UTF8_ENCODINGS:
                self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        if self._leading.settled:
            return ""
        if self._decoder is not None:
            data = self._decoder.decode(data, final).encode("utf-8", "surrogatepass")
        return self._leading.scan(data)[0]


def is_json_media_type(media_type: str) -> bool:
    """`application/json` and the structured-syntax suffix `+json` (RFC 6839 section 3.1)."""
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))
