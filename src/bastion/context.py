"""The per-request context, `scope["bastion"]`.

Every layer reads and fills one `RequestContext` instead of re-deriving facts from
the scope: the transport layer resolves the client address, scheme and host once
(through trusted proxies only), the headers layer draws the CSP nonce, and later
layers fill the session, the principal and the rate-limit state. A layer used alone
creates the context on first use, so every layer works with or without `Shield`.

The request id is random rather than a counter, so it reveals nothing about traffic
volume; it is not a secret and is shown to users as the incident id of a 500. Most
requests never need it (only events, refusals and error pages name it), so the
context `get_context` makes draws it on its first read, and keeps it for the rest of
the request: a fresh value per request all the same, never shared between two.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

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
    nonce_source: Callable[[], str] | None = None
    """Set by a headers layer whose CSP carries a nonce: `csp_nonce` is drawn from it
    on its first read (a template, or the header of a page), so a response that
    needs none (an API answer gets the resource set) never draws one."""

    @property
    def client_host(self) -> str | None:
        return self.client[0] if self.client else None

    if not TYPE_CHECKING:  # to mypy, a misspelt attribute stays an error

        def __getattr__(self, name: str) -> Any:
            # Called only when the slot is unset: the `request_id` of a context made
            # by `get_context`, drawn now and fixed for the rest of the request.
            if name == "request_id":
                request_id = self.request_id = new_request_id()
                return request_id
            if name == "csp_nonce":
                # Unset until read: drawn from the headers layer's source, or ""
                # (not kept, so a headers layer inside can still ask for one).
                source = self.nonce_source
                if source is None:
                    return ""
                nonce = self.csp_nonce = source()
                return nonce
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def is_secure(self) -> bool:
        return self.scheme in ("https", "wss")


def new_request_id() -> str:
    # `secrets.token_hex` spelt out (it is `os.urandom(n).hex()`), without its two
    # Python-level calls on every request.
    return os.urandom(_REQUEST_ID_BYTES).hex()


_new_context = object.__new__


def get_context(scope: Scope) -> RequestContext:
    """Return the request's context, creating it from the raw scope on first use.

    The context is made without `request_id` and `csp_nonce`, which are drawn on
    their first read (`RequestContext.__getattr__`); every other field gets its default, as the
    dataclass's `__init__` would give it (a test compares the two).
    """
    context: RequestContext | None = scope.get(SCOPE_KEY)
    if context is None:
        client = scope.get("client")
        context = _new_context(RequestContext)
        context.client = (str(client[0]), int(client[1])) if client else None
        context.scheme = scope.get("scheme", "ws" if scope["type"] == "websocket" else "http")
        context.host = None
        context.port = None
        context.nonce_source = None  # `csp_nonce` left unset: see `__getattr__`
        context.session = None
        context.principal = None
        context.rate_limit = None
        context.refused_by = None
        scope[SCOPE_KEY] = context
    return context
