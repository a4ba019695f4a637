"""Finding the token field in a form body: url-encoded and multipart, bounded.

The adapter reads at most `max_body_bytes` of body (then replays it to the app
unchanged), and these functions look for one field in it. They never build the
form: url-encoded bodies go through `urllib.parse.parse_qsl` with a field bound;
multipart bodies get a linear scan of part headers (`bytes.find` only, no
backtracking), stopping at the first part named for the token.

A parser differential is harmless here: the token proves who made the request, it is
not data for the app. If our scan finds a token the app's parser would not see (or
the other way round), the app simply ignores that field. When a body holds the field
twice, the first one is checked.

References: WHATWG URL section 5.1 (application/x-www-form-urlencoded);
RFC 7578 (multipart/form-data) and RFC 2046 section 5.1.1 (boundary grammar).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl

URLENCODED: Final = b"application/x-www-form-urlencoded"
MULTIPART: Final = b"multipart/form-data"

# RFC 2046 section 5.1.1: boundary := 0*69<bchars> bcharsnospace
_BOUNDARY: Final = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]\Z")
# RFC 9110 section 5.6.6 parameters (`; name=value`), value a token or quoted-string.
_TOKEN: Final = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAMETER: Final = re.compile(
    rb"[ \t]*;[ \t]*(" + _TOKEN + rb")[ \t]*=[ \t]*(" + _TOKEN + rb'|"(?:[^"\\\r\n]|\\.)*")'
)
_CONTENT_DISPOSITION: Final = b"content-disposition"


def _parameters(untrusted_rest: bytes) -> dict[bytes, bytes] | None:
    """`; a=b; c="d"` as a dict with lower-case names and unquoted values.

    None if the text is not a clean parameter list, or names one parameter twice
    (an ambiguity two parsers could resolve differently).
    """
    found: dict[bytes, bytes] = {}
    position = 0
    rest = untrusted_rest.rstrip(b" \t;")
    while position < len(rest):
        match = _PARAMETER.match(rest, position)
        if match is None:
            return None
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith(b'"'):
            value = re.sub(rb"\\(.)", rb"\1", value[1:-1])
        if name in found:
            return None
        found[name] = value
        position = match.end()
    return found


def parse_content_type(untrusted_value: bytes | None) -> tuple[bytes, dict[bytes, bytes]]:
    """The lower-case media type and its parameters; (b"", {}) if there is none."""
    if untrusted_value is None:
        return b"", {}
    media_type, separator, rest = untrusted_value.partition(b";")
    parameters = _parameters(separator + rest) if separator else {}
    return media_type.strip().lower(), parameters or {}


def token_from_urlencoded(body: bytes, field: str, max_fields: int) -> str | None:
    # Decoded as latin-1 (every byte is one character, so nothing can fail) rather
    # than passed as bytes: `parse_qsl` re-encodes bytes results as ASCII and raises
    # on any other field's non-ASCII value, which would hide the token.
    try:
        pairs = parse_qsl(
            body.decode("latin-1"),
            keep_blank_values=True,
            max_num_fields=max_fields,
            errors="replace",
        )
    except ValueError:  # more fields than max_fields: not a form we look through
        return None
    for name, value in pairs:
        if name == field:
            return value
    return None


def _is_field_part(untrusted_headers: bytes, wanted: bytes) -> bool:
    """Is this part `Content-Disposition: form-data; name="<wanted>"`, not a file?"""
    for line in untrusted_headers.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or name.strip().lower() != _CONTENT_DISPOSITION:
            continue
        disposition, separator, rest = value.strip().partition(b";")
        if disposition.strip().lower() != b"form-data" or not separator:
            return False
        parameters = _parameters(separator + rest)
        return (
            parameters is not None
            and parameters.get(b"name") == wanted
            and b"filename" not in parameters
            and b"filename*" not in parameters
        )
    return False


def token_from_multipart(body: bytes, boundary: bytes, field: str, max_parts: int) -> str | None:
    """The value of the first part named `field`, scanning at most `max_parts` parts.

    Only complete parts count: a part whose closing delimiter is not in `body`
    is not read. Lines end with CRLF, as RFC 7578 requires and browsers send.
    """
    if not _BOUNDARY.match(boundary):
        return None
    delimiter = b"--" + boundary
    wanted = field.encode("ascii")
    position = body.find(delimiter)
    if position == -1 or (position > 0 and body[position - 2 : position] != b"\r\n"):
        return None  # no delimiter, or one not at the start of a line
    for _ in range(max_parts):
        after = position + len(delimiter)
        if body.startswith(b"--", after):
            return None  # the close delimiter: no more parts
        line_end = body.find(b"\r\n", after)
        if line_end == -1:
            return None
        headers_end = body.find(b"\r\n\r\n", line_end)
        if headers_end == -1:
            return None
        content_start = headers_end + 4
        next_delimiter = body.find(b"\r\n" + delimiter, content_start)
        if next_delimiter == -1:
            return None
        if _is_field_part(body[line_end + 2 : headers_end], wanted):
            try:
                return body[content_start:next_delimiter].decode("ascii")
            except UnicodeDecodeError:
                return None
        position = next_delimiter + 2
    return None


def token_from_form(
    body: bytes, untrusted_content_type: bytes | None, field: str, max_fields: int
) -> str | None:
    """The token field of a url-encoded or multipart body; None for any other body."""
    media_type, parameters = parse_content_type(untrusted_content_type)
    if media_type == URLENCODED:
        return token_from_urlencoded(body, field, max_fields)
    if media_type == MULTIPART:
        boundary = parameters.get(b"boundary")
        if boundary is None:
            return None
        return token_from_multipart(body, boundary, field, max_fields)
    return None
