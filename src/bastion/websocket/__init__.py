"""WebSocket guard: the defences a WebSocket needs that HTTP layers cannot give it.

Threats:

* Cross-Site WebSocket Hijacking (CSWSH): the handshake is not subject to CORS, so
  a page on any site can open a socket to ours and the browser attaches the user's
  cookies. Defence: `Origin` must be allowed or our own; a handshake without
  `Origin` is refused when a session cookie would authenticate it.
* Unauthenticated or replayed connections: per-route access (`authenticated` by
  default); credentials are the session, a signed single-use ticket (`?ticket=`,
  `issue_ticket`), or a bearer token in `Sec-WebSocket-Protocol`, never echoed.
* Resource exhaustion: message size, per-connection and per-principal message
  rates, an idle timeout, and connection caps per client and per principal counted
  in the shared store (so they hold across workers).
* Malformed input: an optional pydantic model per route validates every message.
* Sessions outliving their revocation: a live socket is closed within
  `revocation_check_seconds` once its session is gone or a ban applies.

Not covered: memory spent by the server before the guard sees a message (set the
server's own limit, uvicorn `--ws-max-size`, to match `max_message_bytes`);
compression bombs (per-message deflate is the server's: keep its limits);
application-level authorisation of what a message asks for; an application that
never calls `receive` learns of a guard-initiated close only through dropped sends.

The package reads in this order: `reasons`, `core` (the decisions), `tickets`,
`settings`, `middleware` (the adapter).

References: RFC 6455 https://www.rfc-editor.org/rfc/rfc6455 (sections 4.1, 7.4.1,
10.2); OWASP WebSocket Security Cheat Sheet
https://cheatsheetseries.owasp.org/cheatsheets/WebSocket_Security_Cheat_Sheet.html ;
ASGI WebSocket spec and denial-response extension
https://asgi.readthedocs.io/en/latest/specs/www.html#websocket .
"""

from __future__ import annotations

from bastion.websocket.core import (
    BEARER_SUBPROTOCOL,
    BearerOffer,
    OriginPolicy,
    check_origin,
    choose_subprotocol,
    split_bearer,
)
from bastion.websocket.middleware import (
    BanCheck,
    BearerVerdict,
    BearerVerifier,
    WebSocketGuardMiddleware,
    WebSocketPrincipal,
    client_ban_check,
)
from bastion.websocket.reasons import (
    REASON_BANNED,
    REASON_BEARER_EXPIRED,
    REASON_BEARER_INVALID,
    REASON_BEARER_MALFORMED,
    REASON_BEARER_REVOKED,
    REASON_CLIENT_CONNECTIONS,
    REASON_CONNECTION_RATE,
    REASON_CREDENTIAL_MISMATCH,
    REASON_FOREIGN_ORIGIN,
    REASON_IDLE,
    REASON_INVALID_MESSAGE,
    REASON_MESSAGE_TOO_BIG,
    REASON_NO_ORIGIN_WITH_SESSION,
    REASON_NULL_ORIGIN,
    REASON_ORIGIN_MALFORMED,
    REASON_PRINCIPAL_CONNECTIONS,
    REASON_PRINCIPAL_RATE,
    REASON_SESSION_REVOKED,
    REASON_TICKET_EXPIRED,
    REASON_TICKET_INVALID,
    REASON_TICKET_REUSED,
    REASON_UNAUTHENTICATED,
)
from bastion.websocket.settings import WebSocketSettings
from bastion.websocket.tickets import WebSocketTickets, issue_ticket

__all__ = [
    "BEARER_SUBPROTOCOL",
    "REASON_BANNED",
    "REASON_BEARER_EXPIRED",
    "REASON_BEARER_INVALID",
    "REASON_BEARER_MALFORMED",
    "REASON_BEARER_REVOKED",
    "REASON_CLIENT_CONNECTIONS",
    "REASON_CONNECTION_RATE",
    "REASON_CREDENTIAL_MISMATCH",
    "REASON_FOREIGN_ORIGIN",
    "REASON_IDLE",
    "REASON_INVALID_MESSAGE",
    "REASON_MESSAGE_TOO_BIG",
    "REASON_NO_ORIGIN_WITH_SESSION",
    "REASON_NULL_ORIGIN",
    "REASON_ORIGIN_MALFORMED",
    "REASON_PRINCIPAL_CONNECTIONS",
    "REASON_PRINCIPAL_RATE",
    "REASON_SESSION_REVOKED",
    "REASON_TICKET_EXPIRED",
    "REASON_TICKET_INVALID",
    "REASON_TICKET_REUSED",
    "REASON_UNAUTHENTICATED",
    "BanCheck",
    "BearerOffer",
    "BearerVerdict",
    "BearerVerifier",
    "OriginPolicy",
    "WebSocketGuardMiddleware",
    "WebSocketPrincipal",
    "WebSocketSettings",
    "WebSocketTickets",
    "check_origin",
    "choose_subprotocol",
    "client_ban_check",
    "issue_ticket",
    "split_bearer",
]
