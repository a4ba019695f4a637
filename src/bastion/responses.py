"""Generic answers: the one way every layer refuses a request.

Outside, every refusal looks the same: the status from the design table and a
generic body that names nothing but the status and the request id (as Fernet raises
one `InvalidToken` for every failure). Inside, the precise reason goes to the event
stream. A refused WebSocket handshake is answered with an HTTP response where the
server supports the ASGI "websocket.http.response" extension, and otherwise with a
close frame whose code matches the refusal.

References: ASGI WebSocket denial response
https://asgi.readthedocs.io/en/latest/extensions.html#websocket-denial-response ;
RFC 6455 section 7.4.1 (close codes).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from http import HTTPStatus
from typing import Final

from bastion.context import get_context
from bastion.events import Action, EventEmitter, SecurityEvent, default_emitter
from bastion.types import RawHeaders, Scope, Send

WS_POLICY_VIOLATION: Final = 1008
WS_MESSAGE_TOO_BIG: Final = 1009
WS_TRY_AGAIN_LATER: Final = 1013
WS_INTERNAL_ERROR: Final = 1011

# Every generated answer tells the browser not to sniff it, cache it, run anything in
# it or frame it. These answers are produced outside the headers layer (a refused
# host never reaches it), so they carry their own lock-down policy.
GENERIC_HEADERS: Final[RawHeaders] = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """All lines of one header, comma-joined (RFC 9110 section 5.3), or None."""
    values = [value for key, value in headers if key.lower() == name]
    if not values:
        return None
    return values[0] if len(values) == 1 else b", ".join(values)


def wants_json(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    accept = header_value(headers, b"accept")
    return accept is not None and b"json" in accept.lower()


@lru_cache(maxsize=64)
def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def generic_body(status: int, request_id: str, *, as_json: bool) -> tuple[bytes, bytes]:
    """The body and content type of a generic answer; never any request data."""
    phrase = _phrase(status)
    if as_json:
        body = json.dumps({"error": phrase, "status": status, "request_id": request_id})
        return body.encode(), b"application/json"
    return f"{status} {phrase}\nrequest id: {request_id}\n".encode(), b"text/plain; charset=utf-8"


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
) -> None:
    """Send a complete response; for HEAD (`head=True`) the headers without content."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


def ws_close_code(status: int) -> int:
    if status == 413:
        return WS_MESSAGE_TOO_BIG
    if status in (503, 429):
        return WS_TRY_AGAIN_LATER
    if status >= 500:
        return WS_INTERNAL_ERROR
    return WS_POLICY_VIOLATION


async def send_generic(
    scope: Scope, send: Send, status: int, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with a generic body, over HTTP or as a refused WebSocket handshake."""
    request_id = get_context(scope).request_id
    if scope["type"] == "websocket":
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": ws_close_code(status)})
            return
        body, content_type = generic_body(status, request_id, as_json=False)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [*GENERIC_HEADERS, *headers, (b"content-type", content_type)],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    body, content_type = generic_body(status, request_id, as_json=wants_json(scope["headers"]))
    await send_response(
        send,
        status,
        body,
        [*GENERIC_HEADERS, *headers, (b"content-type", content_type)],
        head=scope.get("method") == "HEAD",
    )


class Refuser:
    """A layer's one way to refuse: emit the event, then answer (unless monitoring).

    Built once per layer. Calling it returns True when the request was answered and
    the layer must stop, and False in monitor-only mode, where the decision is
    reported with `action="monitored"` and the request goes on.
    """

    __slots__ = ("events", "layer", "monitor_only")

    def __init__(
        self, layer: str, events: EventEmitter | None = None, *, monitor_only: bool = False
    ) -> None:
        self.layer = layer
        self.events = events or default_emitter()
        self.monitor_only = monitor_only

    def event(
        self,
        scope: Scope,
        *,
        kind: str,
        reason: str,
        status: int | None = None,
        action: Action | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        action = action or ("monitored" if self.monitor_only else "blocked")
        if not self.events.wants(kind, action):
            return  # no sink takes it: no event built, no request id drawn for it
        context = get_context(scope)
        self.events.emit(
            SecurityEvent(
                kind=kind,
                reason=reason,
                layer=self.layer,
                action=action,
                status=status,
                request_id=context.request_id,
                client=context.client_host,
                method=scope.get("method", "WEBSOCKET" if scope["type"] == "websocket" else None),
                path=scope.get("path"),
                principal=_principal_name(context.principal),
                details=details or {},
            )
        )

    async def __call__(
        self,
        scope: Scope,
        send: Send,
        *,
        status: int,
        kind: str,
        reason: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        details: dict[str, object] | None = None,
    ) -> bool:
        self.event(scope, kind=kind, reason=reason, status=status, details=details)
        if self.monitor_only:
            return False
        get_context(scope).refused_by = self.layer
        await send_generic(scope, send, status, headers)
        return True


def _principal_name(principal: object) -> str | None:
    if principal is None:
        return None
    name = getattr(principal, "identity", None) or getattr(principal, "display_name", None)
    return str(name) if name is not None else None
