"""Short-lived, single-use connection tickets, for clients that cannot send cookies
to the socket's host or should not (a page on another origin, a native app).

Threats: a token in the query string ends up in access logs, proxy logs and
browser history, where anyone who reads them could replay it; and a socket opened
with a ticket would outlive the session the ticket was issued from (a logout, an
administrator's `revoke_user`), as a session-authenticated socket does not.
Defence: the ticket is signed for one purpose (`websocket-ticket`), names its user,
expires after `ticket_max_age_seconds`, and is single use: the first connection
that presents it claims `wsticket:<sha256(ticket)>` with `set_if_absent`, so a
replay, even a concurrent one on another worker, is refused. Each ticket carries a
random nonce, so two tickets for one user are different values. The signer refuses
every non-canonical spelling, so one ticket cannot be respelled into a "new" one.

A ticket issued from a request whose session has a user is bound to that session:
it carries the session's store key (`session:<sha256(id)>`, what the store keys the
session by, never the id, which is the bearer secret of the cookie; the session
layer's own store dumps hold the same). The guard refuses the ticket once that key
is gone from the store, and its watcher closes the socket when it goes, as for a
session-authenticated socket. A ticket issued with no session user (the request
was authenticated by a token) is bound to nothing and lives as before: only its
lifetime, single use, bans and the idle timeout limit it.

Payload: JSON `[user_id, nonce, session_key or null]`, base64url, signed. A ticket
of the earlier two-element form is refused (`ticket-invalid`): it cannot say which
session it came from, and tickets live only `ticket_max_age_seconds` (minutes at
most), so a client holding one when this version starts fetches another.

Not covered: a ticket stolen and used within its lifetime before its owner uses
it (keep the lifetime short; fetch it over authenticated HTTPS right before use).

References: OWASP WebSocket Security Cheat Sheet (authentication);
https://devcenter.heroku.com/articles/websocket-security#authentication-authorization
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import SecretStr

from bastion.auth.principal import Principal
from bastion.context import SCOPE_KEY
from bastion.exceptions import ConfigurationError
from bastion.signing import Signer
from bastion.websocket.reasons import REASON_TICKET_EXPIRED, REASON_TICKET_INVALID

TICKETS_SCOPE_KEY: Final = "bastion.websocket"
TICKET_PURPOSE: Final = "websocket-ticket"
TICKET_KEY_PREFIX: Final = "wsticket:"
_NONCE_BYTES: Final = 16  # 128 bits: tickets never repeat
# A user id of a few hundred characters and a few dozen role names, signed: well
# under the 8 KiB request line servers accept (uvicorn's h11, nginx's default).
MAX_TICKET_CHARS: Final = 2048
# A session store key is `session:` and a SHA-256 in hex (72 characters); the bound
# leaves room for another store's prefix while keeping a ticket well under its cap.
MAX_SESSION_KEY_CHARS: Final = 128


@dataclass(frozen=True, slots=True)
class TicketCheck:
    """The user a ticket names, the session store key it is bound to (None: bound to
    none) and the roles it carries, or the refusal reason."""

    user_id: str | None
    reason: str = ""
    session_key: str | None = None
    roles: frozenset[str] = frozenset()


def _is_session_key(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_SESSION_KEY_CHARS


def _is_role_list(value: object) -> bool:
    """A bound ticket's roles: a non-empty list of non-empty names (`issue` writes
    none when there are none)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(name, str) and name for name in value)
    )


class WebSocketTickets:
    """Issues and verifies tickets; single use is the adapter's (it owns the store)."""

    __slots__ = ("_signer", "max_age_seconds")

    def __init__(
        self,
        secret_keys: Sequence[SecretStr | str],
        *,
        max_age_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = Signer(secret_keys, purpose=TICKET_PURPOSE, clock=clock)
        self.max_age_seconds = max_age_seconds

    def issue(
        self, user_id: str, *, session_key: str | None = None, roles: Iterable[str] = ()
    ) -> str:
        """A ticket for `user_id`, bound to the session stored under `session_key`
        (None: to no session; `issue_ticket` finds the key in the request), carrying
        that session's `roles` (module docstring; only with a session)."""
        if not user_id:
            raise ValueError("user_id must be non-empty")
        if session_key is not None and not _is_session_key(session_key):
            raise ValueError("session_key must be a non-empty store key")
        names = sorted(set(roles))
        if names and session_key is None:
            raise ValueError("roles travel only in a ticket bound to a session (session_key)")
        if not all(isinstance(name, str) and name for name in names):
            raise ValueError("roles must be non-empty names")
        fields: list[object] = [user_id, secrets.token_urlsafe(_NONCE_BYTES), session_key]
        if names:
            fields.append(names)
        payload = json.dumps(fields)
        ticket = self._signer.sign(base64.urlsafe_b64encode(payload.encode()).rstrip(b"=")).decode()
        if len(ticket) > MAX_TICKET_CHARS:
            # `check` would refuse it: say so now, not at the client's handshake.
            raise ValueError("user_id (with the roles) is too long for a ticket")
        return ticket

    def check(self, untrusted_ticket: str) -> TicketCheck:
        """Verify signature, then age: two calls, so an expired ticket is named as such."""
        if len(untrusted_ticket) > MAX_TICKET_CHARS:
            return TicketCheck(None, REASON_TICKET_INVALID)
        if self._signer.unsign(untrusted_ticket, max_age_seconds=None) is None:
            return TicketCheck(None, REASON_TICKET_INVALID)
        value = self._signer.unsign(untrusted_ticket, max_age_seconds=self.max_age_seconds)
        if value is None:
            return TicketCheck(None, REASON_TICKET_EXPIRED)
        try:
            padded = value + b"=" * (-len(value) % 4)
            fields = json.loads(base64.urlsafe_b64decode(padded))
        except (ValueError, TypeError):
            return TicketCheck(None, REASON_TICKET_INVALID)
        # Three elements, or four with roles, or refused: a two-element ticket of the
        # earlier form names no session, and accepting it would let it outlive one.
        if not isinstance(fields, list) or len(fields) not in (3, 4):
            return TicketCheck(None, REASON_TICKET_INVALID)
        user_id, session_key = fields[0], fields[2]
        if not isinstance(user_id, str) or not user_id:
            return TicketCheck(None, REASON_TICKET_INVALID)
        if session_key is not None and not _is_session_key(session_key):
            return TicketCheck(None, REASON_TICKET_INVALID)
        roles: frozenset[str] = frozenset()
        if len(fields) == 4:
            # Roles only beside a session: `issue` writes them nowhere else.
            if session_key is None or not _is_role_list(fields[3]):
                return TicketCheck(None, REASON_TICKET_INVALID)
            roles = frozenset(fields[3])
        return TicketCheck(user_id, session_key=session_key, roles=roles)


def _session_roles(scope: Mapping[str, Any], user_id: str) -> frozenset[str]:
    """The roles the authentication layer found in the request's session for
    `user_id` (its principal's, when that principal is this session user), else none."""
    context = scope.get(SCOPE_KEY)
    principal = getattr(context, "principal", None)
    if (
        isinstance(principal, Principal)
        and principal.source == "session"
        and principal.identity == user_id
    ):
        return principal.roles
    return frozenset()


def _bound_session_key(scope: Mapping[str, Any]) -> str | None:
    """The store key of the request's session when it has a user, else None.

    A session whose id changes as this response starts (a login, `rotate`,
    `change_roles`) or that ends (`logout`) has no key a ticket could stay bound to:
    the old key is deleted then, and the new one is not drawn yet. Issuing from it
    raises (a ticket bound to the old key would be refused; one bound to none would
    outlive the session); issue it from the next request.
    """
    session = scope.get("session")
    if getattr(session, "user_id", None) is None:
        return None  # no session user: the app authenticated `user_id` otherwise
    if getattr(session, "rotate_requested", False) or getattr(session, "logout_requested", False):
        raise ValueError(
            "issue_ticket: this session's id changes or ends as the response starts "
            "(login, rotate, change_roles, logout); issue the ticket in a later request"
        )
    key = getattr(session, "store_key", None)
    return key if isinstance(key, str) else None


def issue_ticket(scope_or_request: Any, user_id: str) -> str:
    """A ticket for `user_id`, from an HTTP endpoint behind the WebSocket guard.

    The application must have authenticated `user_id` itself (a session, a token):
    whoever holds the ticket connects as that user. When the request's session has a
    user, the ticket is bound to that session (module docstring): the guard refuses
    it, and closes its socket, once the session is gone; and when the authentication
    layer's principal is that session's user `user_id`, the ticket carries its roles,
    for the route policy's `roles:` rules. Raises ConfigurationError
    when no `WebSocketGuardMiddleware` with `secret_keys` serves the request, and
    ValueError when the session's id changes in this very request.
    """
    scope = getattr(scope_or_request, "scope", scope_or_request)
    if not isinstance(scope, Mapping):
        raise TypeError("issue_ticket expects an ASGI scope or a request with a .scope")
    tickets = scope.get(TICKETS_SCOPE_KEY)
    if not isinstance(tickets, WebSocketTickets):
        raise ConfigurationError(
            "issue_ticket: no WebSocketGuardMiddleware with secret_keys serves this request"
        )
    session_key = _bound_session_key(scope)
    roles = _session_roles(scope, user_id) if session_key is not None else frozenset()
    return tickets.issue(user_id, session_key=session_key, roles=roles)
