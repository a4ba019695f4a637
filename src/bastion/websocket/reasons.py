"""Reason codes and close codes of the WebSocket guard.

Outside, a refused handshake is the generic 403 (or close 1008) every layer answers
with, and a closed connection carries only its close code. Inside, the event names
one of these reasons, and each reappears as the id of the attack test that
triggers it. A reason never changes meaning.

References: RFC 6455 section 7.4.1 (defined close codes)
https://www.rfc-editor.org/rfc/rfc6455#section-7.4.1 ; IANA WebSocket close code
registry (1012, 1013).
"""

from __future__ import annotations

from typing import Final

# --- Close codes (RFC 6455 section 7.4.1 and the IANA registry) -------------------
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
"""Used for the idle timeout: the server is leaving this connection, not failing."""
CLOSE_INVALID_PAYLOAD: Final = 1007
""""Data within a message that was not consistent with the type of the message"."""
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_AGAIN_LATER: Final = 1013

# --- Handshake --------------------------------------------------------------------
REASON_FOREIGN_ORIGIN: Final = "foreign-origin"
"""`Origin` is neither allowed nor this server's own: Cross-Site WebSocket Hijacking."""
REASON_NULL_ORIGIN: Final = "null-origin"
"""`Origin: null` (sandboxed frames, `data:` pages): never trusted."""
REASON_ORIGIN_MALFORMED: Final = "origin-malformed"
"""`Origin` is not a serialised http(s) origin, or was sent more than once."""
REASON_NO_ORIGIN_WITH_SESSION: Final = "no-origin-with-session-cookie"
"""No `Origin`, yet the session cookie would authenticate the connection."""
REASON_UNAUTHENTICATED: Final = "unauthenticated"
"""The route requires a principal and the handshake carried none."""
REASON_TICKET_INVALID: Final = "ticket-invalid"
"""Not a ticket we issued (malformed, tampered with, retired key, sent twice), or one
of the earlier form that names no session (refused: it could outlive one)."""
REASON_TICKET_EXPIRED: Final = "ticket-expired"
"""A ticket we issued, older than `ticket_max_age_seconds`."""
REASON_TICKET_REUSED: Final = "ticket-reused"
"""A valid ticket that already opened a connection: tickets are single use."""
REASON_BEARER_INVALID: Final = "bearer-invalid"
"""The bearer token in `Sec-WebSocket-Protocol` was refused by the verifier."""
REASON_BEARER_MALFORMED: Final = "bearer-malformed"
"""`bearer` offered as a subprotocol without a token after it."""
REASON_CREDENTIAL_MISMATCH: Final = "credential-mismatch"
"""The handshake names two callers: the one the authentication layer resolved (an
`Authorization` bearer, an API key, the session; else the session's user) and another
that the guard's own credential (a ticket, a subprotocol bearer, the session cookie)
names. Trust neither, as two `Authorization` lines are refused: the socket would run
as one caller while the scope's `user` names the other."""
REASON_BANNED: Final = "banned"
"""A ban predicate refused the client or principal."""
REASON_CLIENT_CONNECTIONS: Final = "client-connection-cap"
"""The client already holds `max_connections_per_client` connections."""
REASON_PRINCIPAL_CONNECTIONS: Final = "principal-connection-cap"
"""The principal already holds `max_connections_per_principal` connections."""

# --- Messages -----------------------------------------------------------------------
REASON_MESSAGE_TOO_BIG: Final = "message-too-big"
REASON_INVALID_MESSAGE: Final = "invalid-message"
REASON_CONNECTION_RATE: Final = "connection-message-rate"
REASON_PRINCIPAL_RATE: Final = "principal-message-rate"
REASON_IDLE: Final = "idle-timeout"

# --- Live connections ---------------------------------------------------------------
REASON_SESSION_REVOKED: Final = "session-revoked"
"""The session that authenticated the connection (its cookie's, or the one its ticket
was issued from) no longer exists in the store: the live socket is closed, and a
ticket bound to it is refused at the handshake."""
REASON_BEARER_EXPIRED: Final = "bearer-expired"
"""The subprotocol bearer that authenticated the socket has expired (its `exp`, or
its maximum age, plus the verifier's leeway): the live socket is closed."""
REASON_BEARER_REVOKED: Final = "bearer-revoked"
"""The subprotocol bearer that authenticated the socket was revoked (its `jti`) while
the socket was open: the live socket is closed."""
REASON_STORE_DOWN: Final = "store-unavailable"
REASON_CHECK_FAILED: Final = "revocation-check-failed"
"""A ban predicate raised during a live check (the error is logged): the socket ends."""
REASON_CLOSED: Final = "closed"
"""A close by the client or the application (an `allowed` event with the code)."""
