"""Short-lived, single-use connection tickets, for clients that cannot send cookies
to the socket's host or should not (a page on another origin, a native app).

Threat: a token in the query string ends up in access logs, proxy logs and
browser history, where anyone who reads them could replay it.
Defence: the ticket is signed for one purpose (`websocket-ticket`), names its user,
expires after `ticket_max_age_seconds`, and is single use: the first connection
that presents it claims `wsticket:<sha256(ticket)>` with `set_if_absent`, so a
replay, even a concurrent one on another worker, is refused. Each ticket carries a
random nonce, so two tickets for one user are different values. The signer refuses
every non-canonical spelling, so one ticket cannot be respelled into a "new" one.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import SecretStr

from bastion.exceptions import ConfigurationError
from bastion.signing import Signer
from bastion.websocket.reasons import REASON_TICKET_EXPIRED, REASON_TICKET_INVALID

TICKETS_SCOPE_KEY: Final = "bastion.websocket"
TICKET_PURPOSE: Final = "websocket-ticket"
TICKET_KEY_PREFIX: Final = "wsticket:"
_NONCE_BYTES: Final = 16  # 128 bits: tickets never repeat
MAX_TICKET_CHARS: Final = 1024  # a user id of a few hundred characters, signed


@dataclass(frozen=True, slots=True)
class TicketCheck:
    """The user a ticket names, or the refusal reason."""

    user_id: str | None
    reason: str = ""


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

    def issue(self, user_id: str) -> str:
        if not user_id:
            raise ValueError("user_id must be non-empty")
        payload = json.dumps([user_id, secrets.token_urlsafe(_NONCE_BYTES)]).encode()
        return self._signer.sign(base64.urlsafe_b64encode(payload).rstrip(b"=")).decode()

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
            user_id, _nonce = json.loads(base64.urlsafe_b64decode(padded))
        except (ValueError, TypeError):
            return TicketCheck(None, REASON_TICKET_INVALID)
        if not isinstance(user_id, str) or not user_id:
            return TicketCheck(None, REASON_TICKET_INVALID)
        return TicketCheck(user_id)


def issue_ticket(scope_or_request: Any, user_id: str) -> str:
    """A ticket for `user_id`, from an HTTP endpoint behind the WebSocket guard.

    The application must have authenticated `user_id` itself (a session, a token):
    whoever holds the ticket connects as that user. Raises ConfigurationError when no
    `WebSocketGuardMiddleware` with `secret_keys` serves the request.
    """
    scope = getattr(scope_or_request, "scope", scope_or_request)
    if not isinstance(scope, Mapping):
        raise TypeError("issue_ticket expects an ASGI scope or a request with a .scope")
    tickets = scope.get(TICKETS_SCOPE_KEY)
    if not isinstance(tickets, WebSocketTickets):
        raise ConfigurationError(
            "issue_ticket: no WebSocketGuardMiddleware with secret_keys serves this request"
        )
    return tickets.issue(user_id)
