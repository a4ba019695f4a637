"""`LimitsMiddleware`: the thin ASGI adapter around the limits checks.

Order for an HTTP request, cheapest first: shed when too many requests are in
flight (503), header count and size (431), the method (TRACE and TRACK, 405: they
echo the request, credentials included, back to a script), `Content-Length` and,
for a request that declares a body, its content type and multipart boundary
(400/413/415); then the
application runs with a wrapped `receive` that feeds each body chunk to `BodyCheck`
and times each wait for the next chunk (408) before the chunk is handed over.

When a check trips while the body streams (the guarantee):

* the chunk that crossed the limit, and everything after it, never reaches the
  application: from then on its `receive` returns `http.disconnect`, the ASGI way of
  saying "the body is not coming". Frameworks abort on it (Starlette raises
  `ClientDisconnect`, Django `RequestAborted`), so no handler runs on a truncated
  body as if it were whole;
* if the application has not started its response, the refusal is sent at once,
  from inside `receive`, and whatever the application sends or raises afterwards is
  dropped: its reaction to the cut-off body (a 500 from `ServerErrorMiddleware`, a
  `ClientDisconnect` traceback) is a consequence of our refusal, not news;
* if the application had already started its response (a handler that streams while
  it reads), the status can no longer change. The layer reports the event, drops the
  rest of the response and returns without completing it: the server closes the
  connection, and the client sees a truncated response, never a complete-looking
  answer to a request whose body the application did not get. (Raising instead would
  log a traceback in the server; a truncated response carries the same signal.)

Bytes the application never asks for are never read: the server reads nothing the
application did not ask for either, and closes or drains the connection itself.

In monitor-only mode a streaming check reports once ("monitored") and stops checking
that request's body; the application gets every chunk.

Timeouts use `asyncio.timeout`, so the layer needs an asyncio event loop (uvicorn,
hypercorn's asyncio worker, granian); it is measured only while the application
waits inside `receive` for the client, never while the application works.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Final

from bastion.events import EventEmitter
from bastion.limits.checks import (
    HEADER_LINE_OVERHEAD_BYTES,
    REFUSED_METHODS,
    UNLABELLED_HEAD,
    BodyCheck,
    BodyPlan,
    check_declared_body,
    check_header_size,
    plan_body,
    read_head_index,
)
from bastion.limits.reasons import (
    REASON_BODY_TIMEOUT,
    REASON_METHOD_NOT_ALLOWED,
    REASON_OVERLOADED,
    STATUS_BY_REASON,
    kind_of,
)
from bastion.limits.settings import BodyLimits, LimitsSettings, compile_routes, resolve_limits
from bastion.responses import Refuser
from bastion.stages import Flow, run_stages
from bastion.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

LAYER: Final = "limits"
_DISCONNECT: Final = {"type": "http.disconnect"}


class _InFlight:
    """The number of requests one middleware instance is serving now.

    Shared by every request of the instance on purpose (it is the thing being
    limited). One event loop runs the middleware, so the check and the increment,
    with no `await` between them, are atomic.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    async def leave(self, error: BaseException | None) -> BaseException | None:
        self.count -= 1
        return error


class _Exchange:
    """Per-request state of one HTTP request: the wrapped `receive`, and what the
    response has done so far.

    `level` is the layer's place among the flow's response hooks: a refusal sent
    while the application runs goes through the hooks of the layers outside this
    one only, as the `send` this layer was given would.

    The `BodyCheck` is built when the application first asks for the body: many
    requests are answered without reading one.
    """

    __slots__ = (
        "_check",
        "_checking",
        "_declared_length",
        "_flow",
        "_in_flight",
        "_level",
        "_limits",
        "_plan",
        "_real_receive",
        "_refuser",
        "_scope",
        "_waited_seconds",
        "body_done",
        "tripped",
    )

    def __init__(
        self,
        flow: Flow,
        limits: BodyLimits,
        plan: BodyPlan,
        declared_length: int | None,
        refuser: Refuser,
        in_flight: _InFlight,
    ) -> None:
        self._scope = flow.scope
        self._real_receive = flow.receive
        self._flow = flow
        self._level = len(flow.hooks)
        self._in_flight = in_flight
        self._limits = limits
        self._plan = plan
        self._declared_length = declared_length
        self._check: BodyCheck | None = None
        self._checking = True  # until a violation was reported
        self._refuser = refuser
        self._waited_seconds = 0.0
        self.body_done = False
        self.tripped = False  # enforcing, and a limit was crossed

    async def receive(self) -> Message:
        if self.tripped:
            return dict(_DISCONNECT)
        if self.body_done or not self._checking:
            return await self._real_receive()
        message = await self._timed_receive()
        if message is None:
            if await self._trip(REASON_BODY_TIMEOUT):
                return dict(_DISCONNECT)
            message = await self._real_receive()  # monitor-only: wait as long as it takes
        if message["type"] != "http.request":
            self.body_done = True  # http.disconnect: the client is gone
            return message
        more_body = bool(message.get("more_body", False))
        if not more_body:
            self.body_done = True
        if self._checking:
            check = self._check
            if check is None:
                check = self._check = BodyCheck(self._limits, self._plan, self._declared_length)
            reason = check.feed(message.get("body", b""), more_body=more_body)
            if reason and await self._trip(reason):
                return dict(_DISCONNECT)
        return message

    async def on_exit(self, error: BaseException | None) -> BaseException | None:
        """Leave the in-flight count; absorb the application's failure on a body we
        cut off (already answered)."""
        self._in_flight.count -= 1
        if isinstance(error, Exception) and self.tripped:
            return None  # the application failed on the body we cut off: already answered
        return error

    async def _timed_receive(self) -> Message | None:
        """The next message, or None when the client took too long to send it."""
        limits = self._limits
        budget = min(
            limits.body_idle_timeout_seconds, limits.body_timeout_seconds - self._waited_seconds
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(max(budget, 0.0)) as deadline:
                return await self._real_receive()
        except TimeoutError:
            if not deadline.expired():
                raise  # not ours: the server's receive raised it
            return None
        finally:
            self._waited_seconds += loop.time() - started

    async def _trip(self, reason: str) -> bool:
        """Act on a violation found while streaming; True when enforcing."""
        self._checking = False  # report once; in monitor-only mode, stop checking
        status = STATUS_BY_REASON[reason]
        refuser, scope = self._refuser, self._scope
        response_started = self._flow.started
        if refuser.monitor_only or response_started:
            refuser.event(
                scope,
                kind=kind_of(reason),
                reason=reason,
                status=status,
                details={"response_started": response_started},
            )
            # The refusal was sent, or the response is being cut short: drop the rest.
            self.tripped = self._flow.dropped = not refuser.monitor_only
            return self.tripped
        # Set before the first await: a concurrent send from the app is dropped.
        self.tripped = self._flow.dropped = True
        # A client already gone makes some servers' send raise; nobody is left to answer.
        with contextlib.suppress(OSError):
            await refuser(
                scope,
                self._flow.sender(self._level),
                status=status,
                kind=kind_of(reason),
                reason=reason,
            )
        return True


class LimitsMiddleware:
    """Refuses requests whose head, body, pace or number exceed the configured limits.

    Works as a wrapper (`LimitsMiddleware(app, settings)`) and with Starlette's
    `app.add_middleware(LimitsMiddleware, settings=...)`. WebSocket handshakes get
    the header checks only; lifespan and unknown scopes pass through untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: LimitsSettings | None = None,
        *,
        events: EventEmitter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or LimitsSettings()
        self._refuser = Refuser(LAYER, events, monitor_only=self.settings.monitor_only)
        self._default_limits = resolve_limits(self.settings)
        self._routes = compile_routes(self.settings)
        self._in_flight = _InFlight()
        # Each route's body plan for a request that declares nothing about a body:
        # `plan_body` is pure, and the routes' limits are fixed (a key per route).
        self._unlabelled_plans: dict[BodyLimits, BodyPlan] = {}
        self._retry_after = [
            (b"retry-after", str(self.settings.overload_retry_after_seconds).encode())
        ]

    @property
    def in_flight(self) -> int:
        """HTTP requests this instance is serving now."""
        return self._in_flight.count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.settings.enabled or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await run_stages((self,), self.app, scope, receive, send)

    def enter(self, flow: Flow) -> Awaitable[bool] | None:
        """The request phase (`bastion.stages`): None when the request goes on, else
        the awaitable of the refusal (True when the request was refused).

        In monitor-only mode the first violation is reported and the request is not
        checked any further, exactly as far as enforcement would have gone.
        """
        scope = flow.scope
        headers = flow.headers
        settings = self.settings
        count = len(scope["headers"])
        reason = check_header_size(
            count,
            flow.header_bytes + HEADER_LINE_OVERHEAD_BYTES * count,
            max_count=settings.max_header_count,
            max_bytes=settings.max_header_bytes,
        )
        if scope["type"] == "websocket":
            return self._refuse(scope, flow.send, reason) if reason else None
        in_flight = self._in_flight
        if in_flight.count >= settings.max_concurrent_requests:
            # Load shedding: answer at once, before any other work, rather than queue.
            return self._shed(flow)
        in_flight.count += 1
        method: str = scope["method"]
        limits = self._routes.lookup(method, scope["path"]) or self._default_limits
        declared_length: int | None = None
        if not reason and method.upper() in REFUSED_METHODS:
            reason = REASON_METHOD_NOT_ALLOWED
        if (
            b"content-length" in headers
            or b"content-type" in headers
            or (b"transfer-encoding" in headers)
        ):
            head = read_head_index(headers, count, flow.header_bytes)
            plan = plan_body(head, limits)
            reason = reason or check_declared_body(head, limits, plan)
            declared_length = head.content_length
        else:
            # Nothing else `read_head_index` reads is there: the head is
            # `UNLABELLED_HEAD` (with its sizes, checked above), its plan the route's.
            plan = self._unlabelled_plans.get(limits) or self._unlabelled_plan(limits)
        if reason:
            flow.exits.append(in_flight.leave)
            return self._refuse(scope, flow.send, reason)
        exchange = _Exchange(flow, limits, plan, declared_length, self._refuser, in_flight)
        flow.receive = exchange.receive
        flow.exits.append(exchange.on_exit)
        return None

    def _unlabelled_plan(self, limits: BodyLimits) -> BodyPlan:
        """`plan_body` for a head without body fields, remembered per route."""
        plan = self._unlabelled_plans.get(limits)
        if plan is None:
            plan = self._unlabelled_plans[limits] = plan_body(UNLABELLED_HEAD, limits)
        return plan

    async def _shed(self, flow: Flow) -> bool:
        """Too many requests in flight: refuse (True), or report and go on unchecked
        (monitor-only: enforcement would have stopped here)."""
        if await self._refuse(flow.scope, flow.send, REASON_OVERLOADED, self._retry_after):
            return True
        in_flight = self._in_flight
        in_flight.count += 1
        flow.exits.append(in_flight.leave)
        return False

    async def _refuse(
        self, scope: Scope, send: Send, reason: str, headers: RawHeaders | None = None
    ) -> bool:
        return await self._refuser(
            scope,
            send,
            status=STATUS_BY_REASON[reason],
            kind=kind_of(reason),
            reason=reason,
            headers=headers or (),
        )
