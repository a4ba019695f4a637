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
from types import MemberDescriptorType
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
    nonce_source: Callable[[], str] | None = None
    """Set by a headers layer whose CSP carries a nonce: `csp_nonce` is drawn from it
    on its first read (a template, or the header of a page), so a response that
    needs none (an API answer gets the resource set) never draws one."""

    @property
    def client_host(self) -> str | None:
        return self.client[0] if self.client else None

    @property
    def is_secure(self) -> bool:
        return self.scheme in ("https", "wss")


# `request_id` and `csp_nonce` are drawn on their first read. A `__getattr__` would do
# that too, but a class with one gets no specialised attribute reads (CPython 3.11
# falls back to the generic lookup for every field of every context, read many
# times per request by every layer): the two fields are properties instead, over the
# dataclass's own slots, and every other field stays a plain slot read.
_REQUEST_ID_SLOT: Final[MemberDescriptorType] = vars(RequestContext)["request_id"]
_CSP_NONCE_SLOT: Final[MemberDescriptorType] = vars(RequestContext)["csp_nonce"]


def _read_request_id(context: RequestContext) -> str:
    """The request id, drawn now if it was never set, and fixed for the request."""
    try:
        request_id: str = _REQUEST_ID_SLOT.__get__(context, RequestContext)
    except AttributeError:  # a context made by `get_context`, read for the first time
        request_id = new_request_id()
        _REQUEST_ID_SLOT.__set__(context, request_id)
    return request_id


def _read_csp_nonce(context: RequestContext) -> str:
    """The CSP nonce: drawn from the headers layer's source on the first read, or ""
    while there is none (not kept, so a headers layer inside can still ask for one)."""
    try:
        nonce: str = _CSP_NONCE_SLOT.__get__(context, RequestContext)
    except AttributeError:
        source = context.nonce_source
        if source is None:
            return ""
        nonce = source()
        _CSP_NONCE_SLOT.__set__(context, nonce)
    return nonce


setattr(  # noqa: B010 - replaces the slot's descriptor, which mypy cannot type
    RequestContext,
    "request_id",
    property(_read_request_id, _REQUEST_ID_SLOT.__set__, doc="The request id."),
)
setattr(  # noqa: B010 - as above
    RequestContext,
    "csp_nonce",
    property(_read_csp_nonce, _CSP_NONCE_SLOT.__set__, doc="The CSP nonce of this request."),
)


def new_request_id() -> str:
    # `secrets.token_hex` spelt out (it is `os.urandom(n).hex()`), without its two
    # Python-level calls on every request.
    return os.urandom(_REQUEST_ID_BYTES).hex()


_new_context = object.__new__


def get_context(scope: Scope) -> RequestContext:
    """Return the request's context, creating it from the raw scope on first use.

    The context is made without `request_id` and `csp_nonce`, which are drawn on
    their first read (the two properties above); every other field gets its default, as the
    dataclass's `__init__` would give it (a test compares the two).

    `client` becomes a `(str, int)` tuple (a server may send a list, or a subclass).
    What servers send, that very tuple, is kept as it is: an immutable value equal to
    its conversion, without the two type calls (about a third of this function's
    cost). Anything else is converted, as before.
    """
    context: RequestContext | None = scope.get(SCOPE_KEY)
    if context is None:
        client = scope.get("client")
        context = _new_context(RequestContext)
        if (
            client.__class__ is not tuple
            or len(client) != 2
            or client[0].__class__ is not str
            or client[1].__class__ is not int
        ):
            client = (str(client[0]), int(client[1])) if client else None
        context.client = client
        context.scheme = scope.get("scheme", "ws" if scope["type"] == "websocket" else "http")
        context.host = None
        context.port = None
        context.nonce_source = None  # `csp_nonce` left unset: see `_read_csp_nonce`
        context.session = None
        context.principal = None
        context.rate_limit = None
        context.refused_by = None
        scope[SCOPE_KEY] = context
    return context
