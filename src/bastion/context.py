"""The per-request context, `scope["bastion"]`.

Every layer reads and fills one `RequestContext` instead of re-deriving facts from
the scope: the transport layer resolves the client address, scheme and host once
(through trusted proxies only), the headers layer draws the CSP nonce, and later
layers fill the session, the principal and the rate-limit state. A layer used alone
creates the context on first use, so every layer works with or without `Shield`.

The request id is random rather than a counter, so it reveals nothing about traffic
volume; it is not a secret and is shown to users as the incident id of a 500.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

from bastion.types import Scope

SCOPE_KEY: Final = "bastion"
_REQUEST_ID_BYTES: Final = 8  # 64 bits: unique across any realistic log retention


@dataclass(slots=True)
class RequestContext:
    """What Bastion knows about one request (HTTP) or one connection (WebSocket).

    `client`, `scheme` and `host` start as the server reported them and are replaced
    by the transport layer with the values resolved through trusted proxies. `host`
    is `None` until some layer has validated the `Host` header.
    """

    request_id: str
    client: tuple[str, int] | None
    scheme: str
    host: str | None = None
    port: int | None = None
    csp_nonce: str = ""
    session: Any = None
    principal: Any = None
    rate_limit: Any = None
    refused_by: str | None = None
    """The Bastion layer that answered this request with a refusal, if one did: an
    outer layer then knows the status it sees is Bastion's, not the application's."""

    @property
    def client_host(self) -> str | None:
        return self.client[0] if self.client else None

    @property
    def is_secure(self) -> bool:
        return self.scheme in ("https", "wss")


def new_request_id() -> str:
    # `secrets.token_hex` spelt out (it is `os.urandom(n).hex()`), without its two
    # Python-level calls on every request.
    return os.urandom(_REQUEST_ID_BYTES).hex()


def get_context(scope: Scope) -> RequestContext:
    """Return the request's context, creating it from the raw scope on first use."""
    context: RequestContext | None = scope.get(SCOPE_KEY)
    if context is None:
        client = scope.get("client")
        default_scheme = "ws" if scope["type"] == "websocket" else "http"
        context = RequestContext(
            request_id=os.urandom(_REQUEST_ID_BYTES).hex(),  # `new_request_id`, inlined
            client=(str(client[0]), int(client[1])) if client else None,
            scheme=scope.get("scheme", default_scheme),
        )
        scope[SCOPE_KEY] = context
    return context
