"""The RFC 7239 `Forwarded` header: its grammar, parsed strictly.

Threat: a client writes its own `Forwarded` elements, or breaks the header's syntax
(an unterminated quoted-string, a repeated parameter) so that a lenient parser reads
a client-written `for=` or `proto=` as if our proxy had written it.
Defence: the whole value is parsed against the grammar, and any syntax error makes
the whole value unreadable (None): the resolver then refuses the request instead of
guessing where one element ends. Which elements are believed is the resolver's
decision (`bastion.transport.proxies.resolve_forwarded`), not this parser's.
Not covered: the meaning of the parameters (`for=` node syntax is parsed by the
resolver; `by=` is never read).

References: RFC 7239 section 4 (Forwarded) https://www.rfc-editor.org/rfc/rfc7239#section-4 ;
RFC 9110 sections 5.6.1 (lists), 5.6.2 (token) and 5.6.4 (quoted-string)
https://www.rfc-editor.org/rfc/rfc9110#section-5.6 .
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

OWS: Final = " \t"

# RFC 7239 section 4 via RFC 9110 section 5.6: token, quoted-string, pairs and lists.
#   Forwarded         = 1#forwarded-element
#   forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
#   forwarded-pair    = token "=" value
#   value             = token / quoted-string
_TCHARS: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED: Final = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_FORWARDED_PAIR: Final = re.compile(rf"({_TCHARS})=({_TCHARS}|{_QUOTED})[ \t]*")
_QUOTED_PAIR: Final = re.compile(r"\\(.)")


def parse_forwarded(value: str) -> tuple[Mapping[str, str], ...] | None:
    """Parse an RFC 7239 `Forwarded` value into its elements, or None if malformed.

    Grammar (section 4): `1#forwarded-element`, an element being `forwarded-pair`s
    separated by `;`, a pair `token "=" ( token / quoted-string )`. Parameter names
    are case-insensitive; a parameter MUST NOT occur twice in one element. Empty list
    elements are skipped (RFC 9110 section 5.6.1). Deviation: optional whitespace is
    accepted around `;` as well as `,`, as some proxies write it.
    """
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    position, end = 0, len(value)
    while True:
        while position < end and value[position] in OWS:
            position += 1
        if position == end:
            break
        char = value[position]
        if char in ",;":
            if char == "," and current:
                elements.append(current)
                current = {}
            position += 1
            continue
        match = _FORWARDED_PAIR.match(value, position)
        if match is None:
            return None
        name, raw = match[1].lower(), match[2]
        if name in current:
            return None
        current[name] = _QUOTED_PAIR.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw
        position = match.end()
        if position < end and value[position] not in ",;":
            return None
    if current:
        elements.append(current)
    return tuple(elements)
