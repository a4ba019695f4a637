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

Every HTTP request gets the wrapped `receive`, a head that declares no body too.
An HTTP/1 server frames a request without `Content-Length` or `Transfer-Encoding`
with an empty body (RFC 9112 section 6.3; h11, httptools and hyper do), but what
reaches the layer as ASGI messages may come through a lenient server or an outer
middleware that rewrote the head (one that decompresses a body drops its
`Content-Length`): bytes under such a head are checked as every body is. The
wrapper is cheap to make for that reason: the `BodyCheck` and the timer's state
(`_Pace`) are made only when a body needs them.

In monitor-only mode a streaming check reports once ("monitored") and stops checking
that request's body; the application gets every chunk.

Timeouts need an asyncio event loop (uvicorn, hypercorn's asyncio worker, granian);
they are measured only while the application waits inside `receive` for the client,
never while the application works. A body message the server already holds (a
small body comes in the packet of the head) is handed over without waiting, and
without a timer: the server's `receive` is stepped once, and only when it suspends
does the wait get a deadline. The deadline's timer is one per request, armed at the
first wait and kept: a wait that begins later moves the deadline, and the timer,
when it fires early, re-arms itself for the rest instead of being cancelled and
made again per message (the pattern of `asyncio.Timeout.reschedule`, made lazy).
The step is `next` on a generator that awaits the server's `receive` into the
`_Exchange` (`_Exchange._fetch`): it returns None, so a message the server had
costs no `StopIteration`, as stepping the server's coroutine itself would.
It cancels the waiting task as `asyncio.timeout` does, and a `TimeoutError` that
the server's `receive` raises is never taken for ours.

Speed: the work per request is what the request needs. A layer without per-route
rules looks no route up; the refused methods are matched in every spelling at once
(`REFUSED_METHOD_SPELLINGS`); a one-line `Content-Length` is parsed without the
general list parse. A whole body in one message (what a browser's form or a small
JSON post is) goes first to `whole_body_fits`, which passes the common url-encoded
form with a few counts in C; only a body it does not pass (a violation, or one it
cannot settle at a glance) builds the `BodyCheck` and its inspector, which decides
exactly as it would have without the shortcut. The per-request state (`_Exchange`)
is made without a Python call, and a request that makes no timer and is not cut
off leaves through the layer's one bound `_InFlight.leave`, made once.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, Final

from bastion.events import EventEmitter
from bastion.limits.checks import (
    HEADER_LINE_OVERHEAD_BYTES,
    REFUSED_METHOD_SPELLINGS,
    UNLABELLED_HEAD,
    BodyCheck,
    BodyPlan,
    check_header_size,
    plan_body,
    read_declared_body,
    whole_body_fits,
)
from bastion.limits.reasons import (
    REASON_BODY_TIMEOUT,
    REASON_METHOD_NOT_ALLOWED,
    REASON_OVERLOADED,
    STATUS_BY_REASON,
    kind_of,
)
from bastion.limits.settings import BodyLimits, LimitsSettings, resolve_limits
from bastion.responses import Refuser
from bastion.routes import RouteTable
from bastion.stages import Flow, run_stages
from bastion.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

LAYER: Final = "limits"
_DISCONNECT: Final = {"type": "http.disconnect"}
_COROUTINE: Final = types.CoroutineType
_READY: Final = object()  # `next`'s default: the generator stepped returned


@types.coroutine
def _resume(suspended: Generator[Any, Any, None], yielded: Any) -> Generator[Any, Any, None]:
    """Finish awaiting `suspended`, a generator already stepped once, which yielded
    `yielded`: what `await` would have done from there (PEP 380's `yield from`,
    spelt out because its first value was already taken)."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            suspended.close()
            raise
        except BaseException as exc:  # a cancellation: delivered where it waits
            try:
                yielded = suspended.throw(exc)
            except StopIteration:
                return
        else:
            try:
                yielded = suspended.send(sent)
            except StopIteration:
                return


# What an `_Exchange` checks a body against: the route's limits, the body's plan and
# its declared length, as `BodyCheck` takes them.
_Body = tuple[BodyLimits, BodyPlan, int | None]

# `_Exchange._state`: what `receive` does with the next message.
_WATCHING: Final = 0  # check it
_PASSING: Final = 1  # hand it over: the body ended, or (monitor-only) a violation was reported
_TRIPPED: Final = 2  # enforcing, and a limit was crossed: the body is not coming


class _Route:
    """One route's limits, and what is worked out from them once for every request."""

    __slots__ = ("limits", "plans", "unlabelled", "unlabelled_body")

    def __init__(self, limits: BodyLimits) -> None:
        self.limits = limits
        self.unlabelled = plan_body(UNLABELLED_HEAD, limits)
        """The plan of a request that declares nothing about a body (`UNLABELLED_HEAD`)."""
        self.unlabelled_body: _Body = (limits, self.unlabelled, None)
        """The `_Exchange._body` of such a request, made once."""
        self.plans: dict[bytes | None, BodyPlan] = {}
        """Plans by `Content-Type` value, bounded (`checks.read_declared_body`)."""


class _InFlight:
    """The number of requests one middleware instance is serving now.

    Shared by every request of the instance on purpose (it is the thing being
    limited). One event loop runs the middleware, so the check and the increment,
    with no `await` between them, are atomic.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def leave(self, error: BaseException | None) -> BaseException | None:
        """The exit of a request without an `_Exchange`: refused, or shed in
        monitor-only mode."""
        self.count -= 1
        return error


class _Pace:
    """The timed waits of one request's body for the client (the module docstring's
    lazy deadline): made at the first wait that suspends, which most requests never
    have (their body came with the head)."""

    __slots__ = (
        "_deadline",
        "_expired",
        "_limits",
        "_timer",
        "_timer_when",
        "_waited_seconds",
        "_waiter",
    )

    def __init__(self, limits: BodyLimits) -> None:
        self._limits = limits
        self._waited_seconds = 0.0
        # The one timer, the time it is armed for, the deadline of the wait in
        # progress, and the task waiting (None between waits).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._deadline = 0.0
        self._waiter: asyncio.Task[Any] | None = None
        self._expired = False  # the timer cancelled the waiter: that cancel is ours

    def stop(self) -> None:
        """The request is over: no timer outlives it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def wait(self, pending: Awaitable[Message]) -> Message | None:
        """`pending` (the rest of a wait for the next message) within the time left:
        the idle timeout, or what remains of the whole-body one. None when the
        client took too long."""
        if self._waiter is not None:
            # Another task is waiting for the body too (no framework does that): it
            # gets a deadline of its own, as every wait did before the lazy timer.
            return await self._wait_apart(pending)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = self._deadline = started + self._budget()
        timer = self._timer
        if timer is None or deadline < self._timer_when:
            # Deadlines only move later (a wait's budget is what the earlier waits
            # left), so this re-arms only the first time or after the timer fired.
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)
            self._timer_when = deadline
        task = self._waiter = asyncio.current_task()
        assert task is not None  # `receive` is awaited in a task
        cancelling = task.cancelling()
        try:
            return await pending
        except asyncio.CancelledError:
            if not self._expired:
                raise  # not ours
            self._expired = False
            if task.uncancel() > cancelling:
                raise  # the task was cancelled from elsewhere too: that goes on
            return None
        finally:
            self._waiter = None
            self._waited_seconds += loop.time() - started
            if self._expired:  # the wait ended before our cancellation reached it
                self._expired = False
                task.uncancel()

    def _budget(self) -> float:
        """The seconds the next wait may take: the idle timeout, or what remains of
        the whole-body one."""
        limits = self._limits
        budget = min(
            limits.body_idle_timeout_seconds, limits.body_timeout_seconds - self._waited_seconds
        )
        return max(budget, 0.0)

    def _on_timer(self) -> None:
        """The deadline timer fired: cancel the wait whose deadline it is, re-arm for
        a later deadline, or, between waits, stand down until the next wait."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or self._expired:
            return
        if self._deadline > self._timer_when:
            # The wait in progress began after the one this timer was armed for.
            self._timer = asyncio.get_running_loop().call_at(self._deadline, self._on_timer)
            self._timer_when = self._deadline
            return
        self._expired = True
        waiter.cancel()

    async def _wait_apart(self, pending: Awaitable[Message]) -> Message | None:
        """`wait` with a timeout of its own, for a wait that overlaps another."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self._budget()) as deadline:
                return await pending
        except TimeoutError:
            if not deadline.expired():
                raise  # not ours: the server's receive raised it
            return None
        finally:
            self._waited_seconds += loop.time() - started


class _Exchange:
    """Per-request state of one HTTP request whose body is checked: the wrapped
    `receive`, and what it has done so far.

    `_level` is the layer's place among the flow's response hooks: a refusal sent
    while the application runs goes through the hooks of the layers outside this
    one only, as the `send` this layer was given would.

    Made for every HTTP request, so it holds only what every one needs, and costs
    no Python call to make: it has no `__init__`, and `LimitsMiddleware.enter` sets
    its fields as it makes one (`_body` is the route's own tuple when the head
    declares nothing). The `BodyCheck` is built when a body needs more than
    `whole_body_fits`, the `_Pace` at the first wait that suspends. Its exit is the
    layer's plain `_InFlight.leave` until the request has something of its own to
    release or absorb (a timer, a body cut off): then `on_exit` takes its place
    (`_own_exit`).
    """

    __slots__ = (
        "_body",
        "_check",
        "_flow",
        "_layer",
        "_level",
        "_message",
        "_pace",
        "_real_receive",
        "_state",
    )

    _layer: LimitsMiddleware
    _flow: Flow
    _real_receive: Receive  # the `receive` of the flow as this layer got it
    _level: int
    _message: Message  # the last message `_fetch` got (kept until the next one)
    _body: _Body
    _check: BodyCheck | None
    _pace: _Pace | None
    _state: int  # `_WATCHING`, `_PASSING` or `_TRIPPED`

    async def receive(self) -> Message:
        state = self._state
        if state:
            if state == _TRIPPED:
                return dict(_DISCONNECT)
            return await self._real_receive()
        pending = self._real_receive()
        message: Message | None
        if type(pending) is _COROUTINE:
            fetch = self._fetch(pending)
            yielded = next(fetch, _READY)
            if yielded is _READY:
                message = self._message  # the server had it: no wait, nothing to time
            else:
                message = await self._wait(self._fetch_rest(fetch, yielded))
        else:  # another awaitable (a server's own type): awaited whole, timed
            message = await self._wait(pending)
        if message is None:
            if await self._trip(REASON_BODY_TIMEOUT):
                return dict(_DISCONNECT)
            # Monitor-only: wait as long as it takes; the trip ended the checking.
            return await self._real_receive()
        if message["type"] != "http.request":
            self._state = _PASSING  # http.disconnect: the client is gone
            return message
        body = message.get("body", b"")
        check = self._check
        if message.get("more_body"):
            if check is None:
                check = self._check = BodyCheck(*self._body)
            reason = check.feed(body, more_body=True)
        else:
            self._state = _PASSING  # the last message of the body
            if check is None:
                limits, plan, declared_length = self._body
                if whole_body_fits(body, plan, limits, declared_length):
                    return message  # the whole body, in one message, and within every limit
                check = self._check = BodyCheck(limits, plan, declared_length)
            reason = check.feed(body, more_body=False)
        if reason and await self._trip(reason):
            return dict(_DISCONNECT)
        return message

    @types.coroutine
    def _fetch(self, pending: Coroutine[Any, Any, Message]) -> Generator[Any, Any, None]:
        """Await `pending`, a coroutine of the server's `receive`, into `_message`.

        Stepped by `receive` with `next`, which tells a server that had the message
        (the generator returned) from one that waits (it yielded) without the
        `StopIteration` that stepping `pending` itself raises to hand its value
        over: a generator that returns None ends without one.
        """
        self._message = yield from pending

    async def _fetch_rest(self, fetch: Generator[Any, Any, None], yielded: Any) -> Message:
        """The rest of a `_fetch` that yielded `yielded`: the message it fetched."""
        await _resume(fetch, yielded)
        return self._message

    def on_exit(self, error: BaseException | None) -> BaseException | None:
        """Leave the in-flight count; stop the timer; absorb the application's
        failure on a body we cut off (already answered). The exit of a request that
        made a timer or was cut off (`_own_exit`); every other one leaves with
        `_InFlight.leave`, which is this without the two."""
        self._layer._in_flight.count -= 1
        if self._pace is not None:
            self._pace.stop()
        if self._state == _TRIPPED and isinstance(error, Exception):
            return None  # the application failed on the body we cut off: already answered
        return error

    def _own_exit(self) -> None:
        """Put `on_exit` in the place of the layer's plain `leave` among the flow's
        exits (the same place: the exits unwind in order), once the request has a
        timer to stop or a failure to absorb. Past the exits (they ran, the request
        is over) there is nothing to replace, as `on_exit` would have run already."""
        exits = self._flow.exits
        leave = self._layer._leave
        for index, registered in enumerate(exits):
            if registered is leave:  # one per flow: the layer registers one exit
                exits[index] = self.on_exit
                return

    async def _wait(self, pending: Awaitable[Message]) -> Message | None:
        """`_Pace.wait`, the pace made at the first wait."""
        pace = self._pace
        if pace is None:
            pace = self._pace = _Pace(self._body[0])
            self._own_exit()
        return await pace.wait(pending)

    async def _trip(self, reason: str) -> bool:
        """Act on a violation found while streaming; True when enforcing."""
        self._state = _PASSING  # report once; in monitor-only mode, stop checking
        status = STATUS_BY_REASON[reason]
        refuser, flow = self._layer._refuser, self._flow
        scope = flow.scope
        response_started = flow.started
        if refuser.monitor_only or response_started:
            refuser.event(
                scope,
                kind=kind_of(reason),
                reason=reason,
                status=status,
                details={"response_started": response_started},
            )
            # The refusal was sent, or the response is being cut short: drop the rest.
            tripped = flow.dropped = not refuser.monitor_only
            if tripped:
                self._state = _TRIPPED
                self._own_exit()
            return tripped
        # Set before the first await: a concurrent send from the app is dropped.
        self._state, flow.dropped = _TRIPPED, True
        self._own_exit()
        # A client already gone makes some servers' send raise; nobody is left to answer.
        with contextlib.suppress(OSError):
            await refuser(
                scope,
                flow.sender(self._level),
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
        # `settings.compile_routes`, each route's limits with its plans beside them.
        self._default_route = _Route(resolve_limits(self.settings))
        # None without per-route rules: every request takes the default route.
        self._routes = (
            RouteTable(
                {
                    pattern: _Route(resolve_limits(self.settings, rule))
                    for pattern, rule in self.settings.routes.items()
                }
            )
            if self.settings.routes
            else None
        )
        self._in_flight = _InFlight()
        # The exit of every request that has nothing else to release, bound once.
        self._leave = self._in_flight.leave
        # The settings `enter` reads on every request, as plain attributes (a
        # pydantic model's attribute read takes the slow path of `__getattr__`).
        self._max_header_count = self.settings.max_header_count
        self._max_header_bytes = self.settings.max_header_bytes
        self._max_in_flight = self.settings.max_concurrent_requests
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
        raw = scope["headers"]
        count = len(raw)
        max_count, max_bytes = self._max_header_count, self._max_header_bytes
        # The bytes of every name and value, summed in a loop: fewer instructions
        # than the length of them joined (`b"".join` of `chain.from_iterable`
        # makes an iterator per line), though more bytecodes. Past `max_count` the
        # count alone decides (`check_header_size`), so the loop is bounded by it.
        size = HEADER_LINE_OVERHEAD_BYTES * count
        if count <= max_count:
            for name, value in raw:
                size += len(name) + len(value)
        reason = (
            check_header_size(count, size, max_count=max_count, max_bytes=max_bytes)
            if count > max_count or size > max_bytes
            else ""
        )
        if scope["type"] == "websocket":
            return self._refuse(scope, flow.send, reason) if reason else None
        in_flight = self._in_flight
        if in_flight.count >= self._max_in_flight:
            # Load shedding: answer at once, before any other work, rather than queue.
            return self._shed(flow)
        in_flight.count += 1
        method: str = scope["method"]
        routes = self._routes
        route = self._default_route
        if routes is not None:
            route = routes.lookup(method, scope["path"]) or route
        if method in REFUSED_METHOD_SPELLINGS and not reason:
            reason = REASON_METHOD_NOT_ALLOWED
        body: _Body
        if (
            b"content-length" in headers
            or b"content-type" in headers
            or (b"transfer-encoding" in headers)
        ):
            limits = route.limits
            declared, plan, declared_length = read_declared_body(headers, limits, route.plans)
            reason = reason or declared
            body = (limits, plan, declared_length)
        else:
            # Nothing else `read_head_index` reads is there: the head is
            # `UNLABELLED_HEAD` (with its sizes, checked above), its plan the route's.
            # Its body is still checked, should one come: see `_Exchange`.
            body = route.unlabelled_body
        if reason:
            flow.exits.append(self._leave)
            return self._refuse(scope, flow.send, reason)
        # An `_Exchange`, its fields set here (it has no `__init__`: see its docstring).
        exchange = _Exchange()
        exchange._layer, exchange._flow, exchange._body = self, flow, body
        exchange._real_receive, exchange._level = flow.receive, len(flow.hooks)
        exchange._check = exchange._pace = None
        exchange._state = _WATCHING
        flow.receive = exchange.receive
        flow.exits.append(self._leave)
        return None

    async def _shed(self, flow: Flow) -> bool:
        """Too many requests in flight: refuse (True), or report and go on unchecked
        (monitor-only: enforcement would have stopped here)."""
        if await self._refuse(flow.scope, flow.send, REASON_OVERLOADED, self._retry_after):
            return True
        self._in_flight.count += 1
        flow.exits.append(self._leave)
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
