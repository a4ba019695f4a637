"""Form bodies: fields, files and part sizes, counted while the body streams past.

Threat: form parsers hold every field in memory and do work per part, so a body with
hundreds of thousands of tiny fields, thousands of file parts (each a temporary
file), one enormous field, or enormous part headers costs the server far more than
it costs the sender (CVE-2023-30798 in Starlette, CVE-2023-24580 in Django,
CVE-2023-25577 in Werkzeug).
Defence: two small sans-IO counters that see each chunk once and keep bounded state,
so the body is refused before the application's parser has done that work.
Not covered: decoding. The counters never build fields or files; the application
still receives the original bytes and parses them itself.

The counters must never count fewer fields than any parser the application might
use, or an attacker could hide parts from them. So both err on the side of counting:

* url-encoded: every `&` and every `;` separates a field (python-multipart, and so
  Starlette, split on both; Django's `limited_parse_qsl` too), empty fields included;
* multipart: every occurrence of the delimiter `--boundary` starts a part, wherever
  it appears. RFC 2046 section 5.1.1 forbids the delimiter inside a part, so this
  over-counts only bodies that are malformed anyway, and it does not depend on which
  line breaks (CRLF, or the LF alone that lenient parsers accept) precede it. Every
  part counts as a field; a part whose headers mention `filename` also counts as a
  file. A delimiter after the closing one is refused as malformed.

References: RFC 7578 https://www.rfc-editor.org/rfc/rfc7578 (multipart/form-data);
RFC 2046 section 5.1.1 (boundary grammar); RFC 2231 sections 3 and 4 (parameter
continuations and charsets, refused beside a boundary); WHATWG URL section 5.1
(application/x-www-form-urlencoded); werkzeug `sansio/multipart.py` (a sans-IO
decoder, the model for the states below).
"""

from __future__ import annotations

import re
from enum import Enum, auto
from typing import Final

from bastion.limits.reasons import (
    REASON_FORM_PART_HEADERS_TOO_LARGE,
    REASON_FORM_PART_TOO_LARGE,
    REASON_FORM_TOO_MANY_FIELDS,
    REASON_FORM_TOO_MANY_FILES,
    REASON_MULTIPART_MALFORMED,
)

_URLENCODED_SEPARATOR: Final = re.compile(rb"[&;]")

# RFC 2046 section 5.1.1:
#   boundary := 0*69<bchars> bcharsnospace
#   bchars := bcharsnospace / " "
#   bcharsnospace := DIGIT / ALPHA / "'" / "(" / ")" / "+" / "_" / "," / "-" / "." /
#                    "/" / ":" / "=" / "?"
_BOUNDARY: Final = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]\Z")
# RFC 9110 section 5.6.6: parameter = parameter-name "=" parameter-value, where the
# value is a token or a quoted-string.
_TOKEN: Final = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# Narrower than the RFC on purpose (see `parse_boundary`): a name is a token without
# `*` (no RFC 2231 parameter), a quoted string holds no backslash (no quoted-pair).
_NAME: Final = rb"[!#$%&'+.^_`|~0-9A-Za-z-]+"
_PARAMETER: Final = re.compile(
    rb"[ \t]*;[ \t]*(" + _NAME + rb")=(" + _TOKEN + rb'|"[^"\\]*")[ \t]*'
)
_FILENAME: Final = b"filename"  # `filename=` and `filename*=` (RFC 7578 section 4.2)
_HEADER_ENDS: Final = (b"\r\n\r\n", b"\n\n")


def parse_boundary(content_type: bytes) -> bytes | None:
    r"""The multipart boundary of a `Content-Type` value, or None if it is unusable.

    Strict on purpose: the parameters must parse, `boundary` must appear exactly once
    and match RFC 2046. A lenient guess could pick a different boundary than the
    application's parser, and count the parts of a body the application never sees.
    Django reads the parameters through `email.message` (`parse_header_parameters`),
    and this grammar must never read them apart from it, so it refuses two more:

    * an RFC 2231 parameter, any name with a `*` (RFC 2231 sections 3 and 4):
      `email.message` joins `boundary*0=C` (or `boundary*=utf-8''C`) into the
      boundary `C`, which replaces `boundary=B` wherever it stands, so Django split
      the body at a boundary the layer never counted at (python-multipart ignores
      them; no browser or HTTP client sends one);
    * a backslash in the parameters (a quoted-pair), or a `"` before the first
      `;`: `email.message` finds where a quoted value ends by counting `"` less
      `\"`, so after `a="x\\"` a quote is still open to it, the `; boundary=B`
      that follows is inside the value of `a`, and a `boundary=C` further on,
      inside a quoted value here, is its boundary. Without either, it cuts at
      every `;` this grammar cuts at.

    A `*` in a name and a backslash in a value fail `_PARAMETER` itself: an
    ordinary `Content-Type` pays one more search, for a `"` before the first `;`.
    """
    semicolon = content_type.find(b";")
    # A backslash after it, and a `*` in a name, fail `_PARAMETER`.
    if semicolon == -1 or content_type.find(b'"', 0, semicolon) != -1:
        return None
    position = semicolon
    rest = content_type.rstrip(b" \t")
    boundary: bytes | None = None
    while position < len(rest):
        match = _PARAMETER.match(rest, position)
        if match is None:
            return None
        position = match.end()
        if match.group(1).lower() != b"boundary":
            continue
        if boundary is not None:
            return None
        value = match.group(2)
        if value.startswith(b'"'):
            # No bchar needs escaping, and `_PARAMETER` lets no backslash in.
            value = value[1:-1]
        boundary = value
    if boundary is None or not _BOUNDARY.match(boundary):
        return None
    return boundary


class URLEncodedCounter:
    """Bounds the number of fields and the size of each field of a url-encoded body."""

    __slots__ = ("_current_bytes", "_fields", "max_field_bytes", "max_fields")

    def __init__(self, *, max_fields: int, max_field_bytes: int) -> None:
        self.max_fields = max_fields
        self.max_field_bytes = max_field_bytes
        self._fields = 0
        self._current_bytes = 0

    def feed(self, data: bytes) -> str:
        if not data:
            return ""
        if not self._fields:
            self._fields = 1  # the first byte of the body opens the first field
            if self._fields > self.max_fields:
                return REASON_FORM_TOO_MANY_FIELDS
        # The common case, counted in C: the chunk can cross neither limit (every field
        # it opens fits, and none can outgrow a chunk that fits whole), so no
        # separator needs a look of its own; only the bytes after the last one do.
        separators = data.count(b"&") + data.count(b";")
        if (
            self._fields + separators <= self.max_fields
            and self._current_bytes + len(data) <= self.max_field_bytes
        ):
            if separators:
                self._fields += separators
                self._current_bytes = len(data) - 1 - max(data.rfind(b"&"), data.rfind(b";"))
            else:
                self._current_bytes += len(data)
            return ""
        start = 0
        # At most max_fields + 1 iterations over the whole body: the loop stops at
        # the first separator over the limit. Checks run in byte order, so the
        # verdict is the same however the body is split into chunks.
        for separator in _URLENCODED_SEPARATOR.finditer(data):
            if self._current_bytes + separator.start() - start > self.max_field_bytes:
                return REASON_FORM_PART_TOO_LARGE
            self._fields += 1
            if self._fields > self.max_fields:
                return REASON_FORM_TOO_MANY_FIELDS
            self._current_bytes = 0
            start = separator.end()
        self._current_bytes += len(data) - start
        if self._current_bytes > self.max_field_bytes:
            return REASON_FORM_PART_TOO_LARGE
        return ""

    def end(self) -> str:
        return ""


class _State(Enum):
    PREAMBLE = auto()  # before the first delimiter: ignored
    AFTER_DELIMITER = auto()  # `--` next closes the body, anything else opens a part
    HEADERS = auto()  # a part's headers, up to the first blank line
    DATA = auto()  # a part's content, up to the next delimiter
    EPILOGUE = auto()  # after the closing delimiter: ignored, but no delimiter allowed


class MultipartCounter:
    """Bounds parts, files, part size and part-header size of a multipart body.

    A state machine over a small buffer (`_State`). In the states that look for the
    delimiter, everything but the last `len(delimiter) + 1` bytes is dropped after
    each chunk: those few bytes could be the start of a delimiter and its line
    break, split across chunks. In `HEADERS` the buffer holds one part's headers,
    which `max_part_header_bytes` bounds; the search for the blank line resumes where
    the last chunk's search stopped, so dripping headers byte by byte stays linear.
    """

    __slots__ = (
        "_buffer",
        "_delimiter",
        "_fed",
        "_fields",
        "_files",
        "_header_scanned",
        "_part_bytes",
        "_state",
        "max_fields",
        "max_files",
        "max_part_bytes",
        "max_part_header_bytes",
    )

    def __init__(
        self,
        boundary: bytes,
        *,
        max_fields: int,
        max_files: int,
        max_part_bytes: int,
        max_part_header_bytes: int,
    ) -> None:
        self.max_fields = max_fields
        self.max_files = max_files
        self.max_part_bytes = max_part_bytes
        self.max_part_header_bytes = max_part_header_bytes
        self._delimiter = b"--" + boundary
        self._buffer = bytearray()
        self._state = _State.PREAMBLE
        self._fed = False
        self._fields = 0
        self._files = 0
        self._part_bytes = 0
        self._header_scanned = 0

    def feed(self, data: bytes) -> str:
        if not data:
            return ""
        self._fed = True
        self._buffer += data
        reason, consumed = self._advance()
        del self._buffer[:consumed]
        return reason

    def end(self) -> str:
        """The body is complete: it must have been empty or properly closed."""
        if self._fed and self._state is not _State.EPILOGUE:
            return REASON_MULTIPART_MALFORMED
        return ""

    def _advance(self) -> tuple[str, int]:
        """Run the state machine over the buffer: (reason or "", bytes consumed)."""
        buffer, delimiter = self._buffer, self._delimiter
        position = 0
        while True:
            state = self._state
            if state is _State.PREAMBLE or state is _State.EPILOGUE:
                found = buffer.find(delimiter, position)
                if found == -1:
                    return "", max(position, len(buffer) - len(delimiter) + 1)
                if state is _State.EPILOGUE:
                    return REASON_MULTIPART_MALFORMED, position
                position = found + len(delimiter)
                self._state = _State.AFTER_DELIMITER
            elif state is _State.AFTER_DELIMITER:
                if len(buffer) - position < 2:
                    return "", position
                if buffer[position : position + 2] == b"--":
                    position += 2
                    self._state = _State.EPILOGUE
                    continue
                self._fields += 1
                if self._fields > self.max_fields:
                    return REASON_FORM_TOO_MANY_FIELDS, position
                self._state = _State.HEADERS
                self._header_scanned = 0
            elif state is _State.HEADERS:
                reason, position = self._scan_headers(position)
                if reason or self._state is _State.HEADERS:
                    return reason, position
            else:
                reason, position = self._scan_data(position)
                if reason or self._state is _State.DATA:
                    return reason, position

    def _scan_headers(self, position: int) -> tuple[str, int]:
        buffer = self._buffer
        # Resume 3 bytes early: a blank line may straddle the previous chunk's end.
        start = position + max(0, self._header_scanned - 3)
        ends = [
            (found, len(mark)) for mark in _HEADER_ENDS if (found := buffer.find(mark, start)) != -1
        ]
        if not ends:
            self._header_scanned = len(buffer) - position
            # The last 3 bytes may be the start of the blank line, not headers.
            if self._header_scanned - 3 > self.max_part_header_bytes:
                return REASON_FORM_PART_HEADERS_TOO_LARGE, position
            return "", position
        found, mark_length = min(ends)
        if found - position > self.max_part_header_bytes:
            return REASON_FORM_PART_HEADERS_TOO_LARGE, position
        headers = bytes(buffer[position:found])
        if self._delimiter in headers:
            return REASON_MULTIPART_MALFORMED, position
        if _FILENAME in headers.lower():
            self._files += 1
            if self._files > self.max_files:
                return REASON_FORM_TOO_MANY_FILES, position
        self._state = _State.DATA
        self._part_bytes = 0
        return "", found + mark_length

    def _scan_data(self, position: int) -> tuple[str, int]:
        buffer, delimiter = self._buffer, self._delimiter
        found = buffer.find(delimiter, position)
        if found == -1:
            # Keep what could still be a line break and the start of a delimiter.
            keep_from = max(position, len(buffer) - len(delimiter) - 1)
            self._part_bytes += keep_from - position
            if self._part_bytes > self.max_part_bytes:
                return REASON_FORM_PART_TOO_LARGE, keep_from
            return "", keep_from
        # The line break before a delimiter belongs to the delimiter (RFC 2046).
        data_end = found
        if found - 2 >= position and buffer[found - 2 : found] == b"\r\n":
            data_end = found - 2
        elif found - 1 >= position and buffer[found - 1] == 0x0A:
            data_end = found - 1
        self._part_bytes += data_end - position
        if self._part_bytes > self.max_part_bytes:
            return REASON_FORM_PART_TOO_LARGE, position
        self._state = _State.AFTER_DELIMITER
        return "", found + len(delimiter)
