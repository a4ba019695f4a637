"""The error shield: no exception, traceback or echoed secret ever reaches a client.

Threats:

* Information disclosure through errors (CWE-209): an unhandled exception, or a
  framework debug page (`Starlette(debug=True)`, Werkzeug's debugger, Django's
  technical 500), hands an attacker source paths, library versions, settings and
  sometimes secrets.
* Reflection of secrets through validation errors: FastAPI answers a bad request with
  a 422 whose body repeats the submitted value (`input`) and sometimes derived values
  (`ctx`), so a password or token sent in a malformed request comes straight back,
  into logs, caches and browser history.

Defence, as the outermost layer:

1. Any exception below becomes a generic 500 (JSON or HTML by `Accept`) carrying only
   an incident id, the request id that the log record also carries. The traceback goes
   to the `bastion.errors` logger, never to the client.
2. A 5xx that the application itself produced is held back (up to
   `max_inspected_bytes`) and replaced by the generic 500 if it carries a traceback or
   a known debug page. A 5xx without one (a deliberate 503 with a JSON reason) passes.
   When the generic page replaces a response the application is still sending, the
   rest of that response is dropped: nothing follows a complete response.
3. A 422 JSON body loses every `input` and `ctx` member before it is sent.
4. An exception after the response has started cannot become a 500 any more: the
   layer stops sending, so the server closes the connection with the response
   visibly incomplete (no final chunk, or fewer bytes than `Content-Length`). A
   truncated body that looked complete would be worse.
5. The generic page carries its own locked-down lines (`GENERIC_HEADERS`), and, in
   `Shield`, the transport layer's HSTS line on a secure request (`hsts`): the
   layers inside, whose hooks would add it, are bypassed by a page sent from out
   here, and an HTTPS answer without HSTS is a downgrade window.

Not covered: what the application deliberately puts in a 2xx/4xx body.

References: OWASP Error Handling Cheat Sheet
https://cheatsheetseries.owasp.org/cheatsheets/Error_Handling_Cheat_Sheet.html ;
CWE-209 https://cwe.mitre.org/data/definitions/209.html
"""

from __future__ import annotations

import html
import json
import logging
import traceback
from collections.abc import Awaitable, Sequence
from typing import Final

from pydantic import Field

from bastion.context import get_context
from bastion.events import KIND_SYS_CRASH, EventEmitter, scrub_text
from bastion.responses import (
    GENERIC_HEADERS,
    WS_INTERNAL_ERROR,
    Refuser,
    generic_body,
    wants_json,
)
from bastion.sections import LayerSettings
from bastion.stages import Stage, enter_websocket, run_stages
from bastion.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

logger = logging.getLogger("bastion.errors")

REASON_UNHANDLED_EXCEPTION: Final = "unhandled-exception"
REASON_DEBUG_PAGE: Final = "debug-page-suppressed"
REASON_EXCEPTION_AFTER_START: Final = "exception-after-response-start"

# Markers of a traceback or a framework debug page in a response body. Matched as
# bytes in the held-back 5xx body; each is specific enough not to occur in a normal
# error message.
LEAK_MARKERS: Final = (
    b"Traceback (most recent call last)",  # CPython, and Starlette's plain-text debug
    b'File "/',  # a frame line of any traceback rendering
    b"Starlette Debugger",  # Starlette's HTML debug page
    b"Werkzeug Debugger",  # Werkzeug / Flask / Quart debugger
    b"__traceback_hide__",
    b"You're seeing this error because you have <code>DEBUG = True</code>",  # Django
)
# Django quotes the marker with HTML-escaped apostrophe in some versions.
_ESCAPED_MARKERS: Final = tuple(html.escape(m.decode()).encode() for m in LEAK_MARKERS)
# Frames in a JSON body (an error handler answering `traceback.format_tb(...)`, which
# has no "Traceback" line) arrive with their quotes escaped: `File \"/app/main.py\"`.
_JSON_MARKERS: Final = tuple(json.dumps(m.decode())[1:-1].encode() for m in LEAK_MARKERS)
_ALL_MARKERS: Final = tuple(dict.fromkeys(LEAK_MARKERS + _ESCAPED_MARKERS + _JSON_MARKERS))

# A debug page is a few tens of KiB; Starlette's is about 10 KiB. Holding back 256 KiB
# at most bounds memory per failing request.
DEFAULT_MAX_INSPECTED_BYTES: Final = 256 * 1024
_VALIDATION_KEYS_DROPPED: Final = ("input", "ctx")
# The messages after which a websocket's server takes no close of ours: the close
# itself, or the last chunk of a handshake denied with a response (ASGI "Websocket
# Denial Response" extension).
_WS_FINAL: Final = ("websocket.close", "websocket.http.response.body")
# What `held_start` becomes once a held response was replaced by the generic page
# while the application was still sending it: every later message of the
# application goes to `hold`, which drops it (the server has a complete response).
_REPLACED: Final[Message] = {"type": "http.response.start", "status": 500, "headers": []}
# The body of Starlette's (and so FastAPI's) ServerErrorMiddleware outside debug mode.
FRAMEWORK_DEFAULT_500: Final = b"Internal Server Error"


class ErrorSettings(LayerSettings):
    """The error shield (outermost layer)."""

    max_inspected_bytes: int = Field(default=DEFAULT_MAX_INSPECTED_BYTES, ge=1024, le=16 << 20)
    """How much of an application 5xx or 422 body is held back to inspect it."""

    insecure_pass_validation_input: bool = False
    """Let 422 bodies echo submitted values (`input`, `ctx`) back to the client."""


def body_leaks_internals(body: bytes) -> bool:
    """True if a response body carries a traceback or a framework debug page."""
    return any(marker in body for marker in _ALL_MARKERS)


def scrub_validation_body(body: bytes) -> bytes | None:
    """Remove `input` and `ctx` from every error of a 422 JSON body.

    Returns the new body, or None if the body is not JSON in the shape FastAPI and
    pydantic produce (a `detail` list of objects), in which case it is sent as is.
    """
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("detail"), list):
        return None
    changed = False
    for item in document["detail"]:
        if isinstance(item, dict):
            for key in _VALIDATION_KEYS_DROPPED:
                if key in item:
                    del item[key]
                    changed = True
    return json.dumps(document, separators=(",", ":")).encode() if changed else body


def render_error_page(
    status: int, request_id: str, *, as_json: bool, details: str | None = None
) -> tuple[bytes, bytes]:
    """The generic error body; `details` only in development with `debug`."""
    if as_json:
        body, content_type = generic_body(status, request_id, as_json=True)
        if details is None:
            return body, content_type
        data = json.loads(body)
        data["debug"] = details
        return json.dumps(data).encode(), content_type
    extra = f"<pre>{html.escape(details)}</pre>" if details is not None else ""
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>Server error</title></head>"
        f"<body><h1>Something went wrong</h1><p>Incident id: <code>{request_id}</code></p>"
        f"{extra}</body></html>"
    )
    return page.encode(), b"text/html; charset=utf-8"


MAX_LOGGED_TRACEBACK_CHARS: Final = 64 * 1024
"""The most of a traceback one log line carries (its end: `log_exception`)."""


def log_exception(request_id: str, exc: BaseException) -> None:
    """Log an exception under its incident id, as one JSON line.

    The traceback quotes exception messages, which often carry request data: it is
    JSON-encoded (so CR, LF and escapes cannot forge log lines) and scrubbed of
    secret-looking values (`password=...`, bearer tokens, JWTs).
    """
    text = "".join(traceback.format_exception(exc))
    if len(text) > MAX_LOGGED_TRACEBACK_CHARS:
        # An exception message may quote a request whole: its end (the innermost
        # frames, the message) is kept, within a bound on the log and on the scrub.
        # Scrubbed before the cut, over a wider window: a secret across the cut
        # would lose the prefix the scrubber knows it by (`Bearer`, `eyJ`).
        window = scrub_text(text[-4 * MAX_LOGGED_TRACEBACK_CHARS :])
        scrubbed = "[truncated] ..." + window[-MAX_LOGGED_TRACEBACK_CHARS:]
    else:
        scrubbed = scrub_text(text)
    record = {
        "incident": request_id,
        "exception": type(exc).__name__,
        "traceback": scrubbed,
    }
    logger.error(json.dumps(record, ensure_ascii=True))


def _is_framework_default_500(guard: _ResponseGuard) -> bool:
    start = guard.held_start
    return (
        start is not None
        and start["status"] == 500
        and guard.held_size == len(FRAMEWORK_DEFAULT_500)
        and b"".join(guard.held_body or ()) == FRAMEWORK_DEFAULT_500
    )


def _is_encoded(headers: RawHeaders) -> bool:
    for name, value in headers:
        if name.lower() == b"content-encoding" and value.strip().lower() != b"identity":
            return True
    return False


def _with_length(headers: RawHeaders, length: int) -> RawHeaders:
    kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    kept.append((b"content-length", str(length).encode()))
    return kept


class _ResponseGuard:
    """Per-request state: what has been sent, and what is held back for inspection.

    The fused stack's flow applies it to every message itself
    (`bastion.stages.ResponseGuard`): it holds back a 5xx, or a 422 when
    `hold_validation`, and hands every later message to `hold`.

    One is made for every request, so it has no `__init__` (a Python call each
    time): its state starts from the class's defaults, and the layer binds `send`,
    `layer` and `scope` as it makes one (`ErrorsMiddleware.guard_stages`).
    """

    send: Send
    layer: ErrorsMiddleware
    scope: Scope
    hold_validation = True
    started = False  # the server has received http.response.start
    completed = False  # ...and the final body message
    held_start: Message | None = None
    held_body: list[bytes] | None = None  # made by the first held chunk
    held_size = 0

    def hold(self, message: Message) -> Awaitable[None]:
        return self.layer.hold(self.scope, self, message)

    def failed(self, exc: Exception) -> Awaitable[None]:
        return self.layer._on_exception(self.scope, self, exc)

    def finish(self) -> Awaitable[None]:
        return self.layer._finish(self.scope, self)


class _PassValidationGuard(_ResponseGuard):
    """The guard of a layer that lets 422 bodies through as they are
    (`ErrorSettings.insecure_pass_validation_input`)."""

    hold_validation = False


class ErrorsMiddleware:
    """Catches everything below it; see the module docstring for the guarantees."""

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: ErrorSettings | None = None,
        *,
        events: EventEmitter | None = None,
        debug: bool = False,
        hsts: str = "",
    ) -> None:
        """`hsts`: the `Strict-Transport-Security` value the generic page carries on a
        secure request ("" for none: `bastion.transport.hsts_header_value`)."""
        self.app = app
        self.settings = settings or ErrorSettings()
        self.debug = debug
        self._hsts: RawHeaders = (
            [(b"strict-transport-security", hsts.encode("ascii"))] if hsts else []
        )
        self._refuse = Refuser("errors", events, monitor_only=self.settings.monitor_only)
        self._limit = self.settings.max_inspected_bytes
        self.scrub_validation = not self.settings.insecure_pass_validation_input
        self._guard_type = _ResponseGuard if self.scrub_validation else _PassValidationGuard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.settings.enabled or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        await self.guard_http(self.app, scope, receive, send)

    async def guard_http(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run `app` on an HTTP request under this layer's guarantees: `Shield` runs
        its fused stack (every other layer, and the application) through this."""
        guard = self._guard_type()
        guard.send, guard.layer, guard.scope = send, self, scope

        async def send_wrapper(message: Message) -> None:
            if guard.held_start is not None:
                await self.hold(scope, guard, message)
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 500 or (status == 422 and self.scrub_validation):
                    guard.held_start = message
                    return
                guard.started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                guard.completed = True
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        except Exception as exc:  # this layer exists to catch everything
            await self._on_exception(scope, guard, exc)
            return
        await self._finish(scope, guard)

    def guard_stages(
        self, stages: Sequence[Stage], app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        """`guard_http` around `run_stages(stages, app)`, with no `send` wrapper and no
        coroutine of its own: the flow applies the guard to each message itself, and
        `run_stages` hands what escapes to the guard (`failed`, `finish`). `Shield`'s
        HTTP path."""
        guard = self._guard_type()
        guard.send, guard.layer, guard.scope = send, self, scope
        return run_stages(stages, app, scope, receive, send, guard)

    async def _finish(self, scope: Scope, guard: _ResponseGuard) -> None:
        if guard.held_start is not None and guard.held_start is not _REPLACED:
            # Still held when the application returned: a response it never finished
            # (never to be completed as if it were whole), or the framework's default
            # 500 page, which says nothing and gives the user no incident id.
            guard.held_start, guard.held_body = None, None
            await self._send_generic(scope, guard, 500)

    async def hold(self, scope: Scope, guard: _ResponseGuard, message: Message) -> None:
        """Collect a held-back 5xx or 422 until its last chunk, or until it is too large.

        The decision is made on the final chunk, not when the application returns,
        so a response followed by a background task is not delayed.
        """
        if guard.held_start is _REPLACED:
            return  # the rest of a response the generic page replaced
        if message["type"] != "http.response.body":
            await guard.send(message)
            return
        chunk = message.get("body", b"")
        if guard.held_body is None:
            guard.held_body = [chunk]
        else:
            guard.held_body.append(chunk)
        guard.held_size += len(chunk)
        more = bool(message.get("more_body"))
        if not more and _is_framework_default_500(guard):
            # Starlette's error middleware sends this body and re-raises at once: keep
            # it, so the exception is answered with an incident id (see __call__).
            return
        if not more or guard.held_size > self._limit:
            await self._release(scope, guard, more=more)

    async def _release(self, scope: Scope, guard: _ResponseGuard, *, more: bool) -> None:
        """Inspect the held response, then send it, cleaned, or the generic page."""
        start = guard.held_start
        if start is None or start is _REPLACED:
            return
        body = b"".join(guard.held_body or ())
        guard.held_start, guard.held_body, guard.held_size = None, None, 0
        status = start["status"]
        headers = list(start.get("headers", []))
        if _is_encoded(headers):
            # A compressed body cannot be inspected (a gzipped 422 would still echo
            # the password): answer with the generic body of the same status.
            await self._replace(scope, guard, status, more=more)
            return
        if status == 422:
            scrubbed = None if more else scrub_validation_body(body)
            if scrubbed is None and more:
                # Too large to inspect: never risk echoing what was submitted.
                await self._replace(scope, guard, 422, more=more)
                return
            body = scrubbed if scrubbed is not None else body
        elif body_leaks_internals(body):
            self._refuse.event(scope, kind=KIND_SYS_CRASH, reason=REASON_DEBUG_PAGE, status=status)
            if not self._refuse.monitor_only:
                await self._replace(scope, guard, 500, more=more)
                return
        if not more:
            headers = _with_length(headers, len(body))
        guard.started = True
        await guard.send({**start, "headers": headers})
        guard.completed = not more
        await guard.send({"type": "http.response.body", "body": body, "more_body": more})

    async def _replace(
        self, scope: Scope, guard: _ResponseGuard, status: int, *, more: bool
    ) -> None:
        """Send the generic page instead of the held response; when the application
        is still sending that response (`more`), drop the rest of it (`_REPLACED`):
        after a complete response, its chunks (the rest of a traceback, say) must
        reach no server, whose connection may already carry the next response."""
        await self._send_generic(scope, guard, status)
        if more:
            guard.held_start = _REPLACED

    async def _send_generic(
        self, scope: Scope, guard: _ResponseGuard, status: int, details: str | None = None
    ) -> None:
        context = get_context(scope)
        body, content_type = render_error_page(
            status, context.request_id, as_json=wants_json(scope["headers"]), details=details
        )
        length = len(body)
        if scope.get("method") == "HEAD":
            body = b""  # RFC 9110 section 9.3.2: the same headers, no content
        guard.started = guard.completed = True
        await guard.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *GENERIC_HEADERS,
                    *(self._hsts if context.is_secure else ()),
                    (b"content-type", content_type),
                    (b"content-length", str(length).encode()),
                ],
            }
        )
        await guard.send({"type": "http.response.body", "body": body})

    async def _on_exception(self, scope: Scope, guard: _ResponseGuard, exc: Exception) -> None:
        request_id = get_context(scope).request_id
        log_exception(request_id, exc)
        truncated = guard.started and not guard.completed
        self._refuse.event(
            scope,
            kind=KIND_SYS_CRASH,
            reason=REASON_EXCEPTION_AFTER_START if truncated else REASON_UNHANDLED_EXCEPTION,
            status=500,
            action="blocked",
            details={"exception": type(exc).__name__},
        )
        if guard.started:
            # The status line is gone. If the body is incomplete, stop sending so the
            # client sees a truncated response and the server closes the connection.
            return
        guard.held_start, guard.held_body = None, None
        details = "".join(traceback.format_exception(exc)) if self.debug else None
        await self._send_generic(scope, guard, 500, details)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.guard_websocket((), self.app, scope, receive, send)

    async def guard_websocket(
        self, stages: Sequence[Stage], app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Run `stages` (`bastion.stages.enter_websocket`), then `app`, on a websocket
        scope, under this layer's catch-all: `Shield`'s WebSocket path.

        An exception anywhere (a stage, the application, before or after accept)
        is logged and answered with a close, code 1011, unless the socket was
        already closed (or its handshake denied with a response): before accept,
        the server turns that close into a 403 refusal of the handshake. The one
        `send` wrapper only notes whether a final message went out; it is the only
        code of Bastion's (with the guard's) that runs per message.
        """
        closed = False

        async def send_wrapper(message: Message) -> None:
            nonlocal closed
            if message["type"] in _WS_FINAL:
                closed = True
            await send(message)

        try:
            if not stages:
                await app(scope, receive, send_wrapper)
                return
            flow = await enter_websocket(stages, scope, receive, send_wrapper)
            if flow is not None:
                await app(flow.scope, flow.receive, send_wrapper)
        except Exception as exc:  # this layer exists to catch everything
            log_exception(get_context(scope).request_id, exc)
            self._refuse.event(
                scope,
                kind=KIND_SYS_CRASH,
                reason=REASON_UNHANDLED_EXCEPTION,
                status=None,
                action="blocked",
                details={"exception": type(exc).__name__, "close_code": WS_INTERNAL_ERROR},
            )
            if not closed:
                await _close_quietly(send)


async def _close_quietly(send: Send) -> None:
    """Close with 1011; the peer may already be gone, which is no error of ours."""
    try:
        await send({"type": "websocket.close", "code": WS_INTERNAL_ERROR})
    except OSError as exc:  # the transport went away: nothing left to protect
        logger.debug("websocket already closed: %s", exc)
