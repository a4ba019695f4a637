"""Stages: each layer's per-request work, run alone or fused into one ASGI callable.

Threat: none of its own. This module is plumbing, and its danger is a plumbing
one: a fused stack that behaves differently from the chain of middlewares it
replaces (a header missed on one path, a refusal that skips a layer's response
edits, a counter never released). So there is one implementation of each layer's
work, its stage, and two ways to run it: alone (the layer's middleware class) and
fused (`Shield`, every HTTP layer in one callable).
Defence: the runner reproduces the nesting of a middleware chain exactly, with
per-request lists instead of nested closures:

* a stage's `enter(flow)` is its request phase: it reads and fills the scope and
  the request context, and either lets the request through or answers it (the
  stages inside it and the application do not run). It returns None to let the
  request through without awaiting anything (the common case: no coroutine is
  created), or an awaitable of a bool, True when it answered; a stage that always
  needs I/O (a store) is simply an `async def enter` returning the bool;
* the request's header lines are read once, as the flow starts, into
  `flow.headers` (lower-cased name to its lines, in order), so the stages look
  names up instead of each scanning `scope["headers"]` again; a stage that
  replaces the scope's headers calls `flow.index_headers()`;
* to edit the response head, a stage registers a hook (`flow.hooks`); hooks run
  innermost first on `http.response.start`, as nested `send` wrappers would, and a
  response sent by a stage (a refusal, a preflight answer) passes through the hooks
  of the stages outside it only, as in the chain;
* a hook that only edits the header lines says so (`HeaderOp`: append fixed lines,
  append a line unless its header is set, or a function of the lines), and the
  flow applies it to one list of its own per response: the application's message
  and list are copied once, not once per hook, and the fixed edits cost no call;
  the edits are plain calls, so a response head whose hooks need no I/O makes no
  coroutine (an I/O hook that must wait hands the rest to one);
* `flow.sender(level)` sends through the hooks below `level` only, for a stage
  that answers while the application runs (the limits layer's streaming refusal,
  the session layer's 503 when the store fails as the response starts);
* to act after the inner stages and the application (release a counter, record a
  login's outcome, absorb the exception of an application whose body was cut
  off), a stage registers an exit (`flow.exits`); exits unwind innermost first,
  on every way out, with the exception in flight (or None), as `try` blocks would;
  an exit that awaits nothing is a plain function (`Exit`);
* a stage that wraps `receive` replaces `flow.receive` (only when it must);
* the errors layer's response guard (`bastion.errors`), outermost, is no `send`
  wrapper of its own: the flow's `send` applies its check to every message that
  leaves the flow (`Flow.guard`), one branch per message while nothing is held,
  and `run_stages` hands what escapes the run to it (`ResponseGuard.failed`);
  `Flow.send` is a plain function returning the server's `send`'s awaitable, so
  the usual message makes no coroutine of the flow's.

* a `websocket` scope runs the same stages (`enter_websocket`), and then the
  application gets the server's `send` and the flow's `receive` themselves: the
  stages decide the handshake (no stage registers a hook or an exit on a websocket
  scope; there is no response head to edit), so once it is decided no stage has
  anything to do per message, and no wrapper or frame of theirs runs per message.

Not covered: lifespan scopes (never staged), and the WebSocket guard, which keeps
its own middleware.

References: ASGI specification, "Middleware"
https://asgi.readthedocs.io/en/latest/specs/main.html#middleware
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal, Protocol, TypeAlias

from bastion.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

StartHook = Callable[[Message], Message]
"""Edits (or replaces) an `http.response.start` message; returns the message to send."""

AsyncStartHook = Callable[[Message], Message | Awaitable[Message | None]]
"""As `StartHook`, for a hook that may need I/O: it returns the message when it
decided without any (no coroutine is made), else an awaitable of it, or of None when
the stage answered instead (see `Flow.sender`)."""

HeaderEdit = Callable[[RawHeaders], RawHeaders]
"""Returns the response's header lines edited, as a new list (the one it gets may
be the application's, never to be changed in place), or the very list it got when
there is nothing to change."""


class HeaderOp(enum.Enum):
    """What a header-only hook does to the response's header lines (`Hook`)."""

    EXTEND = "extend"
    """Append the hook's lines, as they are."""
    DEFAULT = "default"
    """Append the hook's one line unless a header of its (lower-case) name is set."""
    UNLESS_SENT = "unless-sent"
    """`DEFAULT`, checked against the lines the run was handed (the application's,
    or those of the stage that answered) rather than the lines as the inner hooks
    left them: the same answer, scanning fewer lines, for a name that no stage
    inside the hook's may add or drop (the transport layer's HSTS line, `Shield`)."""
    EDIT = "edit"
    """Replace the lines with what the hook's `HeaderEdit` returns."""


EXTEND: Final = HeaderOp.EXTEND
DEFAULT: Final = HeaderOp.DEFAULT
EDIT: Final = HeaderOp.EDIT
UNLESS_SENT: Final = HeaderOp.UNLESS_SENT

Hook: TypeAlias = (
    tuple[StartHook, None]
    | tuple[None, AsyncStartHook]
    | tuple[Literal[HeaderOp.EXTEND], Sequence[tuple[bytes, bytes]]]
    | tuple[Literal[HeaderOp.DEFAULT, HeaderOp.UNLESS_SENT], tuple[bytes, bytes]]
    | tuple[Literal[HeaderOp.EDIT], HeaderEdit]
)
"""One entry of `Flow.hooks`: a message hook, sync or async, or a header edit."""

Exit = Callable[[BaseException | None], BaseException | Awaitable[BaseException | None] | None]
"""Runs once the inner stages and the application are done; gets the exception in
flight (None when none) and returns the one to propagate (None to absorb it), or,
for an exit that must await something, an awaitable of it: an exit with nothing
to await is a plain function, and makes no coroutine."""

_START: Final = "http.response.start"
_BODY: Final = "http.response.body"


async def _sent_nothing() -> None:
    """What `Flow.send` returns for a message it drops or holds back without I/O: a
    coroutine, as what a `send` returns is (an application may hand it to
    `asyncio.create_task`, or anyio's `start_soon` the `send` itself)."""


class Stage(Protocol):
    """One layer's request phase (see the module docstring)."""

    def enter(self, flow: Flow) -> Awaitable[bool] | None: ...


class ResponseGuard(Protocol):
    """The errors layer's per-request state, as `Flow` uses it (`bastion.errors`).

    A response start with a 5xx status, or 422 when `hold_validation`, is kept back
    (`held_start`), and from then on every message goes to `hold`; otherwise
    messages go to the server, and `started` and `completed` record how far the
    response got.
    """

    held_start: Message | None
    started: bool
    completed: bool
    hold_validation: bool

    def hold(self, message: Message) -> Awaitable[None]: ...

    def failed(self, exc: Exception) -> Awaitable[None]:
        """Answer an exception that escaped the stages and the application (log it,
        and send the generic 500 unless the response had started)."""
        ...

    def finish(self) -> Awaitable[None]:
        """The run is over with a response start still held: answer it (a 500)."""
        ...


class Flow:
    """One request on its way through the stages: what the stages share.

    `scope` and `receive` are what the next stage and the application get (a stage
    may replace either); `send` is the one `send` wrapper of the whole run.

    Stages register with plain list appends, which cost no Python call on the hot
    path: `flow.hooks.append((hook, None))` or `((None, async_hook))`, a header
    edit as `((EXTEND, lines))`, `((DEFAULT, line))`, `((UNLESS_SENT, line))` or
    `((EDIT, edit))`, and `flow.exits.append(exit)`. `len(flow.hooks)` is a stage's
    level for `sender`.
    """

    __slots__ = (
        "__weakref__",  # a new session's save waits for its first change (`bastion.sessions`)
        "_send",
        "dropped",
        "exits",
        "guard",
        "headers",
        "headers_lowercase",
        "hooks",
        "receive",
        "scope",
        "started",
    )

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, guard: ResponseGuard | None = None
    ) -> None:
        self.scope = scope
        self.receive = receive
        self._send = send
        self.guard = guard
        """The errors layer's guard, between the flow and the server's `send`."""
        self.headers: dict[bytes, list[bytes]] = {}
        """Lower-cased header name to all its lines, in order: `scope["headers"]` read once."""
        self.headers_lowercase = True
        """Whether every name came lower-cased, as ASGI servers send them. A stage
        that matched names exactly (without lower-casing) scans the raw list
        itself when this is False, so it sees exactly what it saw before."""
        self.index_headers()
        self.hooks: list[Hook] = []
        self.exits: list[Exit] = []
        self.dropped = False
        """Set by a stage that answered while the application ran: from then on,
        whatever the application sends is dropped."""
        self.started = False
        """Whether a response start has gone out of the flow (to the errors guard
        or the server)."""

    def index_headers(self) -> None:
        """Read `scope["headers"]` into `headers` (again, after a stage replaced them)."""
        raw: RawHeaders = self.scope["headers"]
        index: dict[bytes, list[bytes]] = {}
        for name, value in raw:  # a loop, not a comprehension: no frame of its own
            index[name] = [value]
        if len(index) != len(raw):  # a name repeated: all its lines, in order
            index = {}
            for name, value in raw:
                lines = index.get(name)
                if lines is None:
                    index[name] = [value]
                else:
                    lines.append(value)
        names = b"".join(index)  # every distinct name, checked for case in one C call
        if names.lower() == names:
            self.headers = index
            self.headers_lowercase = True
            return
        # A name with upper-case letters (no ASGI server sends one): merged under its
        # lower-cased name, as `http.Headers` would be looked up.
        lowered: dict[bytes, list[bytes]] = {}
        for name, value in raw:
            lowered.setdefault(name.lower(), []).append(value)
        self.headers = lowered
        self.headers_lowercase = False

    def header(self, name: bytes) -> bytes | None:
        """All lines of one header, comma-joined (RFC 9110 section 5.3), or None:
        `bastion.responses.header_value` on the index."""
        lines = self.headers.get(name)
        if lines is None:
            return None
        return lines[0] if len(lines) == 1 else b", ".join(lines)

    def send(self, message: Message) -> Awaitable[None]:
        """The flow's `send`: a plain function returning what is to be awaited, the
        server's `send`'s own awaitable in the usual case, so a message costs no
        coroutine of the flow's; a coroutine when the server's `send` makes one (as
        ASGI servers' do), whatever the message, so it can be handed to
        `asyncio.create_task`. The hooks run as `send` is called, not as its result
        is awaited (an application awaits it at once)."""
        if self.dropped:
            return _sent_nothing()
        message_type = message["type"]
        if message_type == _START:
            if self.hooks:
                edited = self._edit_start(message, len(self.hooks))
                if edited.__class__ is not dict and not isinstance(edited, Mapping):
                    return self._send_when_edited(edited)  # a hook needed I/O
                message = edited  # a Message, by the test
            self.started = True
        guard = self.guard
        if guard is None:
            return self._send(message)
        # The errors guard, inlined (`_guarded_send`): this runs on every message.
        if guard.held_start is None:
            if message_type == _START:
                status = message["status"]
                if status >= 500 or (status == 422 and guard.hold_validation):
                    guard.held_start = message
                    return _sent_nothing()
                guard.started = True
            elif message_type == _BODY and not message.get("more_body"):
                guard.completed = True
            return self._send(message)
        return guard.hold(message)

    async def _send_when_edited(self, edited: Awaitable[Message | None]) -> None:
        """`send`'s rest for a response start whose hooks needed I/O."""
        message = await edited
        if message is None:
            return  # the hook's stage answered instead
        self.started = True
        await self._guarded_send(message)

    def _guarded_send(self, message: Message) -> Awaitable[None]:
        """A message that left the flow, through the errors guard when there is one."""
        guard = self.guard
        if guard is None:
            return self._send(message)
        if guard.held_start is not None:
            return guard.hold(message)
        message_type = message["type"]
        if message_type == _START:
            status = message["status"]
            if status >= 500 or (status == 422 and guard.hold_validation):
                guard.held_start = message
                return _sent_nothing()
            guard.started = True
        elif message_type == _BODY and not message.get("more_body"):
            guard.completed = True
        return self._send(message)

    def sender(self, level: int) -> Send:
        """A `send` through the hooks below `level` only, and never dropped: what a
        stage at `level` answers with while the application runs."""

        async def send_from_level(message: Message) -> None:
            if message["type"] == _START:
                if level:
                    edited = self._edit_start(message, level)
                    if edited.__class__ is dict or isinstance(edited, Mapping):
                        message = edited  # as in `send`
                    else:
                        answered = await edited
                        if answered is None:
                            return
                        message = answered
                self.started = True
            await self._guarded_send(message)

        return send_from_level

    def _edit_start(self, message: Message, level: int) -> Message | Awaitable[Message | None]:
        """Run the hooks below `level`, innermost first, as nested wrappers would: the
        message to send, or, once a hook needs I/O, an awaitable of it (of None when a
        stage answered instead), so the usual response makes no coroutine.

        Header edits work on one list, `headers`, copied from the application's at the
        first edit that changes it (`owned`), and put into a message of the run's own
        only when a message hook is next or the run ends: the application's message
        and list stay as sent, and consecutive edits make no message in between.
        """
        hooks = self.hooks
        # Each entry unpacked as it comes (cheaper than indexing it per test): typed
        # loosely here, since no checker ties an entry's `arg` to its `op`.
        entries: Iterator[tuple[Any, Any]] = (
            reversed(hooks) if level == len(hooks) else reversed(hooks[:level])
        )
        current = message.get("headers", ())  # the lines `message` carries
        if current.__class__ is not list and current.__class__ is not tuple:
            # Any other iterable of pairs (ASGI allows one, a generator say) is read
            # once, here: every hook below may read the lines, and a second reading
            # of a generator would find it empty.
            current = [*current]
            message = {**message, "headers": current}
        sent = current  # the lines the run was handed (`UNLESS_SENT`)
        headers = current  # the lines as edited so far
        owned = False  # whether `headers` is a list of the run's own
        for op, arg in entries:
            if op is EDIT:  # the common ops first
                edited = arg(headers)
                if edited is not headers:
                    headers, owned = edited, True  # a new list (`HeaderEdit`)
            elif op is EXTEND:
                if arg:  # no lines (a place kept: `bastion.sessions`) change nothing
                    if not owned:
                        headers, owned = list(headers), True
                    headers.extend(arg)
            elif op is UNLESS_SENT:
                if not _is_set(sent, arg[0]):
                    if not owned:
                        headers, owned = list(headers), True
                    headers.append(arg)
            elif op is DEFAULT:
                if not _is_set(headers, arg[0]):
                    if not owned:
                        headers, owned = list(headers), True
                    headers.append(arg)
            else:  # a message hook: it gets the message as edited so far
                if headers is not current:
                    message = {**message, "headers": headers}
                    current = headers
                if op is None:
                    decided: Message | Awaitable[Message | None] = arg(message)
                    if decided.__class__ is not dict and not isinstance(decided, Mapping):
                        # The hooks left to run are those the iterator has not reached:
                        # as many as it has left (the current one's index).
                        return self._edit_start_after(decided, operator.length_hint(entries))
                    message = decided  # a Message, by the test
                else:
                    message = op(message)
                current = headers = message.get("headers", ())
                owned = False  # the hook's list: copied before the next change
        if headers is not current:
            message = {**message, "headers": headers}
        return message

    async def _edit_start_after(
        self, pending: Awaitable[Message | None], index: int
    ) -> Message | None:
        """`_edit_start`, from the async hook at `index` on: its message (None: the
        stage answered), then the hooks below it."""
        message = await pending
        if message is None or not index:
            return message
        edited = self._edit_start(message, index)
        return edited if isinstance(edited, Mapping) else await edited


def _is_set(headers: RawHeaders, name: bytes) -> bool:
    """Whether `headers` has a line of `name` (lower-case), in any case: only a name
    of the same length is lower-cased."""
    size = len(name)
    for present, _ in headers:  # noqa: SIM110 - a loop, not a generator
        if len(present) == size and present.lower() == name:
            return True
    return False


_CHAIN_WALK_LIMIT: Final = 100


def _chain(exc: BaseException, error: BaseException | None) -> None:
    """Make `error`, the exception an exit was handed, the context of `exc`, the one
    it raised, as a `finally` block that raised would: unless `exc` already has one,
    or is in `error`'s own chain (an exit raising an earlier exception again), which
    would make the chain a cycle. The walk is bounded: past the limit, the chain is
    left as it is."""
    if error is None or exc.__context__ is not None:
        return
    link: BaseException | None = error
    for _ in range(_CHAIN_WALK_LIMIT):
        if link is None:
            exc.__context__ = error
            return
        if link is exc:
            return
        link = link.__context__


async def run_stages(
    stages: Sequence[Stage],
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    guard: ResponseGuard | None = None,
) -> None:
    """Run `stages` in order, then `app`, as the equivalent middleware chain would;
    under the errors layer's `guard` when given, which answers what escapes
    (`ResponseGuard.failed`) and a response start still held at the end, as the
    errors middleware around the chain would (one coroutine for both)."""
    error: BaseException | None = None
    try:
        flow = Flow(scope, receive, send, guard)
        exits = flow.exits
        try:
            for stage in stages:
                pending = stage.enter(flow)
                if pending is not None and await pending:
                    break
            else:
                await app(flow.scope, flow.receive, flow.send)
        except BaseException as exc:  # handed to the exits below, then re-raised
            if not exits:
                raise
            error = exc
        # The exits unwind innermost first, as the `try` blocks of a chain would: an
        # exit that raises (a store call cancelled as the client leaves) hands its
        # exception to the exits outside it, as a `finally` that raised would, and
        # never skips them (the limits layer's in-flight count is one of them).
        while exits:
            try:
                outcome = exits.pop()(error)
                if outcome is None or isinstance(outcome, BaseException):
                    error = outcome
                else:
                    error = await outcome
            except BaseException as exc:  # handed on, and re-raised below
                _chain(exc, error)
                error = exc
            outcome = None  # the error it handed back: kept by `error` alone (no cycle below)
        # The stages' hooks and wrappers refer back to the flow (a closure over it, a
        # `receive` wrapper that keeps it): unhooked now, the request's objects are
        # freed as it ends instead of waiting, in reference cycles, for the garbage
        # collector.
        flow.hooks.clear()
        flow.receive = receive
        if error is not None:
            try:
                raise error
            finally:
                error = None  # the traceback keeps this frame: no cycle through it
    except Exception as exc:  # the errors layer exists to catch everything
        if guard is None:
            raise
        await guard.failed(exc)
        return
    if guard is not None and guard.held_start is not None:
        await guard.finish()


async def enter_websocket(
    stages: Sequence[Stage], scope: Scope, receive: Receive, send: Send
) -> Flow | None:
    """The stages' handshake phase on a `websocket` scope: the flow, whose `scope`
    and `receive` the application gets (with `send` itself), or None when a stage
    answered (refused the handshake).

    Returns before the application runs, so none of this is on the stack, or in the
    path of `send`, while messages flow (module docstring).
    """
    flow = Flow(scope, receive, send)
    answered = False
    for stage in stages:
        pending = stage.enter(flow)
        if pending is not None and await pending:
            answered = True
            break
    if flow.exits:
        # Only `run_stages` unwinds exits: one registered here would never run. A
        # hook is harmless (it edits `http.response.start`, which a websocket never
        # sends), an exit is a bug to surface, not to skip quietly.
        raise RuntimeError("a stage registered an exit on a websocket scope")
    return None if answered else flow


async def run_websocket_stages(
    stages: Sequence[Stage], app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    """`run_stages` for a `websocket` scope: `enter_websocket`, then `app` on the
    server's own `send`, so no stage's code runs per message."""
    flow = await enter_websocket(stages, scope, receive, send)
    if flow is not None:
        await app(flow.scope, flow.receive, send)
