"""The WebSocket guard's decisions, over plain data (sans-IO).

Nothing here awaits, logs, reads a clock or touches a store: the adapter gathers
the facts, calls these functions and acts on their verdict.

* `check_origin`: the Cross-Site WebSocket Hijacking defence. Browsers send
  `Origin` on every WebSocket handshake (RFC 6455 section 4.1, item 8) and a page
  cannot forge it, but the handshake is not subject to CORS: any page may open a
  socket to any server, with the user's cookies. So the server must check it. An
  absent `Origin` means a non-browser client; such a client carries no victim's
  cookies, so it may connect with a ticket or a bearer token, but never on the
  strength of a session cookie alone.
* `split_bearer`: the bearer token offered as `Sec-WebSocket-Protocol: bearer,
  <token>` (browsers cannot set `Authorization` on a WebSocket). The token is taken
  out of the subprotocol list so it is never echoed back or seen by the app.
* `take_token`: a per-connection token bucket, as the GCRA step of
  `bastion.stores.gcra` on a TAT held in memory.

References: RFC 6455 sections 1.3, 4.1, 10.2 (origin considerations)
https://www.rfc-editor.org/rfc/rfc6455 ; OWASP WebSocket Security Cheat Sheet
https://cheatsheetseries.owasp.org/cheatsheets/WebSocket_Security_Cheat_Sheet.html ;
CSWSH https://christian-schneider.net/CrossSiteWebSocketHijacking.html
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bastion.hosts import Origin, parse_host_header, parse_origin
from bastion.stores.gcra import GCRALimit
from bastion.websocket.reasons import (
    REASON_BEARER_MALFORMED,
    REASON_FOREIGN_ORIGIN,
    REASON_NO_ORIGIN_WITH_SESSION,
    REASON_NULL_ORIGIN,
    REASON_ORIGIN_MALFORMED,
)

BEARER_SUBPROTOCOL: Final = "bearer"
"""The subprotocol that announces a token in the next list entry (Kubernetes uses
`base64url.bearer.authorization.k8s.io.<token>`; a separate entry keeps the token
out of the name the server echoes)."""
_HTTP_SCHEME: Final = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """The compiled origin rule: parsed allowlist and the same-origin switch."""

    allowed: frozenset[Origin]
    allow_same_origin: bool


def own_origin(
    scheme: str, host: str | None, port: int | None, untrusted_host: bytes | None
) -> Origin | None:
    """This request's own origin, as a browser on the same site would send it.

    Prefers the host the transport layer validated; alone, falls back to the
    `Host` header (a forged `Host` can only make a request same-origin with the
    host it names, which is what the attacker could reach directly anyway).
    """
    http_scheme = _HTTP_SCHEME.get(scheme)
    if http_scheme is None:
        return None
    if host is None:
        if untrusted_host is None:
            return None
        parsed = parse_host_header(untrusted_host)
        if parsed is None:
            return None
        host, port = parsed.host, parsed.port
    default = 443 if http_scheme == "https" else 80
    return Origin(http_scheme, host, port if port is not None else default)


def check_origin(
    untrusted_origins: Sequence[bytes],
    own: Origin | None,
    policy: OriginPolicy,
    *,
    cookie_authenticated: bool,
) -> str:
    """The refusal reason for the handshake's `Origin` lines, or "" to allow."""
    if not untrusted_origins:
        return REASON_NO_ORIGIN_WITH_SESSION if cookie_authenticated else ""
    if len(untrusted_origins) != 1:
        return REASON_ORIGIN_MALFORMED
    value = untrusted_origins[0].strip()
    if value.lower() == b"null":
        return REASON_NULL_ORIGIN
    origin = parse_origin(value)
    if origin is None or origin.scheme not in ("http", "https"):
        return REASON_ORIGIN_MALFORMED
    if origin in policy.allowed:
        return ""
    if policy.allow_same_origin and own is not None and origin == own:
        return ""
    return REASON_FOREIGN_ORIGIN


@dataclass(frozen=True, slots=True)
class BearerOffer:
    """What `split_bearer` found: the token (None if not offered), the subprotocols
    left for the app, and a refusal reason ("" when well formed)."""

    untrusted_token: str | None
    subprotocols: tuple[str, ...]
    reason: str = ""


# What a handshake that offers no subprotocol offers, the usual case: one shared value
# (a `BearerOffer` is immutable), not one built per connection.
_NOTHING_OFFERED: Final = BearerOffer(None, ())


def split_bearer(subprotocols: Sequence[str]) -> BearerOffer:
    """Take `bearer, <token>` out of the offered subprotocols."""
    if not subprotocols:
        return _NOTHING_OFFERED
    names = tuple(subprotocols)
    if BEARER_SUBPROTOCOL not in names:
        return BearerOffer(None, names)
    index = names.index(BEARER_SUBPROTOCOL)
    if index + 1 >= len(names) or names.count(BEARER_SUBPROTOCOL) != 1:
        return BearerOffer(None, names, REASON_BEARER_MALFORMED)
    rest = names[:index] + names[index + 2 :]
    return BearerOffer(names[index + 1], rest)


def choose_subprotocol(chosen: str | None, offer: BearerOffer) -> str | None:
    """The subprotocol to echo in the accept: never the token.

    A client that offered subprotocols fails the handshake unless the server
    selects one of them (RFC 6455 section 4.1, item 6 of the client's checks,
    enforced by browsers), so a bearer connection echoes `bearer` when the app
    chose nothing.
    """
    if offer.untrusted_token is None:
        return chosen
    if chosen is None or chosen == offer.untrusted_token or chosen not in offer.subprotocols:
        return BEARER_SUBPROTOCOL
    return chosen


def take_token(tat_us: int | None, now_us: int, limit: GCRALimit) -> tuple[bool, int | None]:
    """One message against a connection's bucket: (allowed, the TAT to keep).

    The verdict and TAT of `gcra_step` (a test holds them equal), without building
    its result: this runs on every message.
    """
    interval = limit.emission_interval_us
    tat = now_us if tat_us is None or tat_us < now_us else tat_us
    new_tat = tat + limit.cost * interval
    if new_tat - limit.burst_tolerance_us - interval > now_us:
        return False, tat_us
    return True, new_tat if limit.cost > 0 else None


def hashed_key(prefix: str, untrusted_name: str) -> str:
    """A store key for a client- or principal-chosen name (hashed: bounded, opaque)."""
    return prefix + hashlib.sha256(untrusted_name.encode("utf-8", "surrogatepass")).hexdigest()
