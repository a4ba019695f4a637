"""The headers layer's ASGI adapter.

Per HTTP request it does three things, all prepared in `__init__`:

1. Requests for the report endpoint are answered here and never reach the app:
   method, content type and size are checked before a byte is parsed, the body is
   read up to the limit and no further, and each violation becomes an event while
   the process's `ReportBudget` lasts (the endpoint sits outside rate limiting).
   One request writes at most one event when refused, and otherwise
   `csp_report_max_reports` violation events plus one `csp-report-too-many` and one
   `csp-report-rate-limited` event.
2. Otherwise it picks the route's `HeaderSet` (a compiled `RouteTable`), draws a
   fresh nonce when the route's policy has a nonce slot, and stores it in the
   request context (`scope["bastion"].csp_nonce`) for templates.
3. On `http.response.start` it strips `Server`/`X-Powered-By` from the app's
   headers and adds the route's headers (`merge_headers`): one list per response,
   in one pass, with the lines each set adds precomputed.

CSP goes on every response, not only on HTML: a JSON or SVG answer opened as a
document is rendered under its own CSP, and `frame-ancestors` protects every
response from framing (OWASP HTTP Headers Cheat Sheet recommends CSP on all
responses). A response whose type renders no page (`resource_types`: JSON, plain
text, CSS, fonts, downloads) gets the resource set instead: `default-src 'none'`
with the route's `frame-ancestors`, nosniff, CORP and X-Frame-Options, and none of
the headers that act on a page only (Referrer-Policy, Permissions-Policy, COOP,
Origin-Agent-Cluster, X-XSS-Protection), so an API answer carries four headers,
not ten. Both sets are precomputed; a page's cost is one nonce and one join.

WebSocket and lifespan scopes pass through untouched: a handshake answer renders no
document, so none of these headers would do anything.

Not covered: headers the server adds after the application, such as uvicorn's own
`server` header (run it with `server_header=False` / `--no-server-header`) or
hypercorn's (`include_server_header = False`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from types import MethodType
from typing import Final, Literal, TypeAlias

from bastion.context import SCOPE_KEY, get_context
from bastion.events import (
    KIND_CSP_VIOLATION,
    KIND_EXCESS_RATE,
    KIND_INPUT_VALIDATION,
    EventEmitter,
)
from bastion.headers.csp import new_nonce
from bastion.headers.policy import (
    HeaderSet,
    HeadersSettings,
    compile_header_sets,
    edited_names,
    merge_for_response,
)
from bastion.headers.reports import (
    REASON_CSP_VIOLATION,
    REASON_REPORT_RATE_LIMITED,
    REASON_REPORT_TOO_LARGE,
    REASON_REPORT_TOO_MANY,
    REASON_REPORT_WRONG_CONTENT_TYPE,
    REASON_REPORT_WRONG_METHOD,
    Allowance,
    ReportBudget,
    parse_reports,
    report_format,
)
from bastion.responses import Refuser, header_value
from bastion.routes import RouteTable
from bastion.stages import EDIT, Flow, Hook, run_stages
from bastion.types import ASGIApp, RawHeaders, Receive, Scope, Send

LAYER: Final = "headers"
# More digits than any length under our cap can have; also keeps `int()` away from
# attacker-sized digit strings.
_MAX_LENGTH_DIGITS: Final = 12

_ReadFailure = Literal["too-large", "disconnected"]


async def _read_capped(receive: Receive, max_bytes: int) -> bytes | _ReadFailure:
    """The request body, or why not: never holds more than `max_bytes` of it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return "disconnected"
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return "too-large"
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _declared_too_large(content_length: bytes | None, max_bytes: int) -> bool:
    """Whether a declared `Content-Length` already exceeds the cap (garbage is left
    to the streaming cap, which holds whatever the header says)."""
    if content_length is None:
        return False
    text = content_length.strip()
    if not text.isdigit():
        return False
    return len(text) > _MAX_LENGTH_DIGITS or int(text) > max_bytes


_Merge: TypeAlias = "partial[RawHeaders]"
"""`merge_for_response` with its header set and nonce bound: what is left to pass
is the request context and the response's lines."""
_Plan: TypeAlias = tuple[Hook | None, _Merge]
"""One header set as `HeadersMiddleware.enter` uses it: the response edit, built
once, when its CSP has no nonce slot (else None), and the set's `_Merge`, which
`enter` binds to the request's context (the nonce is read there)."""


def _plan(header_set: HeaderSet) -> _Plan:
    edit: Hook | None = None
    if header_set.lines is not None:
        edit = (EDIT, partial(merge_for_response, header_set, "", None))
    return edit, partial(merge_for_response, header_set, "")


class HeadersMiddleware:
    """Adds security headers and a per-request CSP nonce; receives CSP reports."""

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: HeadersSettings | None = None,
        *,
        events: EventEmitter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.settings = settings or HeadersSettings()
        default, routes = compile_header_sets(self.settings)
        self.edited_names = edited_names((default, *routes.values()))
        """The response header names this layer may add, keep out or strip."""
        self._enabled = self.settings.enabled
        # What `enter` needs of each set, looked up with the route (`_Plan`).
        self._default_plan = _plan(default)
        self._routes: RouteTable[_Plan] = RouteTable(
            {pattern: _plan(header_set) for pattern, header_set in routes.items()}
        )
        self._has_routes = bool(self._routes)
        self._report_path = self.settings.csp_report_path
        self._max_report_bytes = self.settings.csp_report_max_bytes
        self._max_reports = self.settings.csp_report_max_reports
        # The one piece of state shared by all requests, on purpose: a budget per
        # request would not bound what many requests write together.
        self._clock = clock
        self._report_budget = ReportBudget(self.settings.csp_report_max_events_per_minute, clock())
        # The report endpoint is ours, not the app's traffic: monitor-only mode
        # (report-only CSP) still answers it.
        self._refuse = Refuser(LAYER, events)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._enabled:
            await self.app(scope, receive, send)
            return
        await run_stages((self,), self.app, scope, receive, send)

    def enter(self, flow: Flow) -> Awaitable[bool] | None:
        """The request phase (`bastion.stages`): None when the request goes on, else
        the awaitable of the report endpoint's answer (True)."""
        scope = flow.scope
        path: str = scope["path"]
        if path == self._report_path:
            return self._answer_reports(flow)
        edit, merge = self._default_plan
        if self._has_routes:
            edit, merge = self._routes.lookup(scope["method"], path) or self._default_plan
        if edit is not None:  # no nonce slot: the set's edit is built
            flow.hooks.append(edit)
            return None
        context = scope.get(SCOPE_KEY) or get_context(scope)
        # The nonce is drawn when first read (a template, or a page's header): an
        # answer that gets the resource set needs none. An outer headers layer's
        # source is kept, so the header and the templates agree whichever layer's
        # CSP reaches the browser.
        if context.nonce_source is None:
            context.nonce_source = new_nonce
        # The set's merge bound to this request's context: a bound method is one small
        # object, where a partial made per request would copy all its arguments.
        flow.hooks.append((EDIT, MethodType(merge, context)))
        return None

    async def _answer_reports(self, flow: Flow) -> bool:
        await self._receive_reports(flow.scope, flow.receive, flow.send)
        return True

    async def _receive_reports(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await self._refuse(
                scope,
                send,
                status=405,
                kind=KIND_INPUT_VALIDATION,
                reason=REASON_REPORT_WRONG_METHOD,
                headers=[(b"allow", b"POST")],
            )
            return
        headers = scope["headers"]
        fmt = report_format(header_value(headers, b"content-type"))
        if fmt is None:
            await self._refuse(
                scope,
                send,
                status=415,
                kind=KIND_INPUT_VALIDATION,
                reason=REASON_REPORT_WRONG_CONTENT_TYPE,
            )
            return
        body: bytes | _ReadFailure = "too-large"
        if not _declared_too_large(
            header_value(headers, b"content-length"), self._max_report_bytes
        ):
            body = await _read_capped(receive, self._max_report_bytes)
        if body == "disconnected":
            return
        if isinstance(body, str):
            await self._refuse(
                scope, send, status=413, kind=KIND_INPUT_VALIDATION, reason=REASON_REPORT_TOO_LARGE
            )
            return
        batch = parse_reports(fmt, body, max_reports=self._max_reports)
        if batch.error:
            await self._refuse(
                scope, send, status=400, kind=KIND_INPUT_VALIDATION, reason=batch.error
            )
            return
        allowance = Allowance(0, 0)
        if batch.violations:
            allowance = self._report_budget.take(len(batch.violations), self._clock())
        for violation in batch.violations[: allowance.granted]:
            self._refuse.event(
                scope,
                kind=KIND_CSP_VIOLATION,
                reason=REASON_CSP_VIOLATION,
                # A report-only policy did not block anything; an enforced one did.
                action="monitored" if violation.disposition == "report" else "blocked",
                details=violation.details(),
            )
        if allowance.report_dropped:
            self._refuse.event(
                scope,
                kind=KIND_EXCESS_RATE,
                reason=REASON_REPORT_RATE_LIMITED,
                details={
                    "dropped": allowance.report_dropped,
                    "max_events_per_minute": self.settings.csp_report_max_events_per_minute,
                },
            )
        if batch.dropped:
            self._refuse.event(
                scope,
                kind=KIND_INPUT_VALIDATION,
                reason=REASON_REPORT_TOO_MANY,
                details={"kept": len(batch.violations), "dropped": batch.dropped},
            )
        # 204 without Content-Length (RFC 9110 section 8.6). Never 410: the Reporting
        # API takes 410 Gone as "remove this endpoint".
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
