"""The ASGI adapter: `WebSocketGuardMiddleware`.

One connection, in order:

1. Handshake, before the application runs: route access, `Origin`
   (`core.check_origin`), the credential (bearer subprotocol, else `?ticket=`, else
   the session that `SessionMiddleware` loaded; a ticket bound to a session is
   refused once that session has ended), one caller per socket (a credential that
   names another user than the caller the handshake already names is refused,
   `credential-mismatch`), the route policy's rules that it handed over for the
   socket's principal (`defer_authorization`), ban predicates, then one slot in the
   client's and the principal's connection counters. Any refusal goes
   through `Refuser`, before `websocket.accept`: an HTTP 403/429 where the server
   supports the denial-response extension, else close 1008/1013.
2. Messages, in the application's `receive`: size (1009), per-connection bucket
   in memory and per-principal GCRA in the store (1008, or dropped with an error
   frame), the route's pydantic model (1007, or an error frame), and the idle
   timeout (1001). Each runs on every message, at the cost of a few attribute
   reads: what a message needs (limits, reasons, the principal's rate key) is
   looked up once per connection; text is only encoded to measure it when it has
   more than a quarter of `max_message_bytes` characters (UTF-8 spends at most 4
   bytes per code point, so shorter text cannot be too big); the app awaits the
   server's `receive` directly, with no task or timeout per message. The idle
   timeout is one timer per connection, re-armed lazily: a message only records
   its arrival time, and the timer, when it fires, moves itself to the new
   deadline or closes. The guard interrupts a wait in `receive` (idle deadline,
   a close from the watcher) by cancelling the waiting task, as `asyncio.timeout`
   does, and counts that cancellation back (`Task.uncancel`), so an outer
   cancellation still propagates; the app then gets `websocket.disconnect`.
3. A watcher task per connection checks every `revocation_check_seconds` that the
   session is still alive (the one a ticket is bound to, for a ticket socket; else the
   session the handshake carried, for an authenticated socket): in the session
   layer's store and within its idle and absolute timeouts, since the store keeps an
   expired record a few minutes longer (`bastion.sessions.session_alive`); for a
   subprotocol bearer whose verifier says so (`BearerVerdict`), that the token has
   not expired (the tick wakes at its expiry when that comes first) and that its
   revocation key is not set; and that no ban predicate refuses, else closes with 1008
   (1011 when the check itself fails: the store, or a predicate that raises):
   revocation costs one store read per connection per interval, never one per
   message, and reaches a live socket at most one interval late. The task starts
   at the first tick, so a socket shorter than a tick costs none; the idle timer
   fires first at that tick and starts it (one timer per connection, not two),
   unless the idle timeout is the shorter, when the tick has a timer of its own.
   It also keeps the connection's slots alive: `incr` gives a counter its TTL on
   creation only, so without a refresh a socket that outlives
   `connection_count_ttl_seconds` would lose its slot and the caps would stop
   holding. Every third of that TTL (by the guard's clock) it `touch`es each held
   counter, and re-takes the slot if the counter vanished (evicted, store restart).
4. Whatever ends the connection (client close, abrupt disconnect, the app's close,
   the guard's close, an exception, cancellation), `finally` gives the slots back.

What the handshake costs is paid by every connection, so the repeatable parts are
remembered in bounded memos, each emptied when full so that a spray of distinct
values only churns it: the origin verdict by exactly the facts that decide it
(`ORIGIN_MEMO_ENTRIES`), and a client address's counter key (`CLIENT_MEMO_ENTRIES`).
The `Origin` and `Host` lines are found with C-level scans of the header names when
they all came lower-cased (as ASGI servers send them), so a browser's dozen header
lines cost no Python loop.

Connection observers (`ConnectionObserver`, such as the Prometheus sink in
`bastion.metrics`) are told when the app accepts a socket and, in the same
`finally`, when an accepted socket ends, by the route pattern from
`settings.routes` that matched it (`default` when none did): never the raw path or
the client, so an observer's label set stays bounded. Without `observers`, the
guard uses the sinks of its event emitter that are observers, so `Shield` needs no
wiring and the guard knows nothing of Prometheus.

A connection the guard closes gets `websocket.disconnect` from `receive`, and its
later sends are dropped, so the application winds down as if the client had left.

Per-connection state lives in `_Connection`, created in `_serve`, whose methods are
the `receive` and `send` the application gets; the middleware itself holds only what
was compiled at construction and the memos.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import operator
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias, runtime_checkable
from urllib.parse import parse_qs

from pydantic import BaseModel, SecretStr, ValidationError

from bastion.auth.principal import Principal
from bastion.context import RequestContext, get_context
from bastion.errors import log_exception
from bastion.events import (
    KIND_AUTHN_FAIL,
    KIND_AUTHZ_FAIL,
    KIND_EXCESS_RATE,
    KIND_INPUT_VALIDATION,
    KIND_MALICIOUS_CSRF,
    KIND_SYS_AVAILABILITY,
    KIND_SYS_CRASH,
    Action,
    EventEmitter,
    default_emitter,
)
from bastion.exceptions import ConfigurationError, StoreError
from bastion.hosts import Origin, parse_origin
from bastion.responses import Refuser
from bastion.routes import RouteTable
from bastion.sessions import SessionManager, session_alive, session_manager_of
from bastion.stores.base import Store, check_store
from bastion.stores.gcra import MICROSECONDS, GCRALimit
from bastion.stores.memory import MemoryStore
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from bastion.websocket import reasons as r
from bastion.websocket.core import (
    BearerOffer,
    OriginPolicy,
    check_origin,
    choose_subprotocol,
    hashed_key,
    own_origin,
    split_bearer,
    take_token,
)
from bastion.websocket.settings import WebSocketSettings, parse_websocket_route
from bastion.websocket.tickets import TICKET_KEY_PREFIX, TICKETS_SCOPE_KEY, WebSocketTickets

LAYER: Final = "websocket"
# The observer label of a socket whose path matches no pattern in `settings.routes`.
DEFAULT_ROUTE_LABEL: Final = "default"
KIND_CLOSED: Final = "session_websocket_closed"  # vocabulary style: category, event
BearerVerifier = Callable[[str], Awaitable[object | None]]
"""Verifies a bearer token; returns the principal, a `BearerVerdict`, or None to
refuse. May raise `StoreError` (the handshake is refused, 503)."""
BanCheck = Callable[[str | None, str | None], Awaitable[bool]]
"""`(client_host, principal_identity) -> True if banned`, checked at the handshake
and every `revocation_check_seconds`. May raise `StoreError` (the guard fails closed)."""
DeferredAuthorization = Callable[[Scope, Send, Principal | None], Awaitable[bool]]
"""The route policy's handshake rules, handed to the guard (`defer_authorization`):
`(scope, send, principal) -> True when refused` (the policy has answered)."""
# Where the policy leaves its deferred rules for this handshake; the guard takes them
# out before anything else, so the application never sees them.
_DEFERRED_AUTHORIZATION_KEY: Final = "bastion.websocket.deferred-authorization"

CLIENT_COUNT_PREFIX: Final = "ws:conns:client:"
PRINCIPAL_COUNT_PREFIX: Final = "ws:conns:principal:"
PRINCIPAL_RATE_PREFIX: Final = "ws:principal:"
# Distinct origin verdicts remembered: a site's pages open sockets from a handful of
# origins, under a handful of its own names; anything beyond is a spray, which
# empties the memo (as the transport layer's `Host` memo, of the same size).
ORIGIN_MEMO_ENTRIES: Final = 256
# Longest `Origin` or `Host` line whose verdict is remembered: a serialised origin is
# a scheme, a host of at most 253 characters (RFC 1035) or an IPv6 literal, and a
# port, well under this. Longer lines are decided afresh, so an entry holds at most
# two lines of this size, however long the lines a client sends.
ORIGIN_MEMO_MAX_LINE_BYTES: Final = 320
# Client addresses whose counter key (a SHA-256) is remembered: the active clients of
# one process, as the rate-limit layer's client memo (`CLIENT_MEMO_ENTRIES` there).
CLIENT_MEMO_ENTRIES: Final = 4096
# Longest client remembered: an IPv6 address with a zone id is shorter; a longer
# client (no IP address is) is hashed each time, so the memo's size stays bounded.
_CLIENT_MEMO_MAX_CHARS: Final = 64
# After the guard closes, how long and how many messages it reads while the client's
# close reply arrives: RFC 6455 section 7.1.1 has the server wait for it; a peer
# that keeps flooding is cut off at either bound.
_DRAIN_SECONDS: Final = 2.0
_DRAIN_MESSAGES: Final = 1000
# Refreshes per counter TTL: a refresh due at a third of the TTL, seen within one
# watcher tick (at most another third), leaves a third of the TTL for a slow store.
_REFRESHES_PER_TTL: Final = 3
_ERROR_RATE: Final = json.dumps({"error": "rate-limited"})
_ERROR_INVALID: Final = json.dumps({"error": "invalid-message"})
_Violation: TypeAlias = tuple[int, str, str, str | None]
"""A message violation: close code, event kind, reason, and the error frame that
answers it instead of a close (None: close)."""
_OriginMemoKey: TypeAlias = tuple[
    tuple[bytes, ...], bytes | None, str, str | None, int | None, bool
]
"""What decides a handshake's origin verdict (`_check_origin`): the `Origin` lines,
the one `Host` line (None when the host was validated, or not one line), the
request's scheme, validated host and port, and whether a session authenticates it."""
_header_name: Final = operator.itemgetter(0)


@runtime_checkable
class ConnectionObserver(Protocol):
    """Told when a guarded socket is accepted and when an accepted one ends, with the
    route pattern it matched (a bounded label). Must not raise, like an event sink."""

    def websocket_opened(self, route: str) -> None: ...

    def websocket_closed(self, route: str) -> None: ...


@dataclass(frozen=True, slots=True)
class BearerVerdict:
    """What a `BearerVerifier` may return instead of a bare principal.

    `principal` None refuses the token (`bearer-invalid`), and `reason` (the
    verifier's own, such as `jwt-revoked-jti`) goes to the event's details. An
    accepted token may bound the socket's life as it bounds the token's: past
    `expires_at` (by the guard's clock, leeway included; a finite time, NaN or
    infinity refuses the token) the watcher closes the socket (`bearer-expired`), and
    once `revocation_key` is set in `revocation_store` (None: the guard's store) it
    closes it too
    (`bearer-revoked`), read once per watcher tick. Without either, a bearer socket
    lives as long as its session, bans and idle timeout allow, as before. `Shield`
    fills them in from the authentication layer's JWT verifier."""

    principal: object | None
    reason: str = ""
    expires_at: float | None = None
    revocation_key: str | None = None
    revocation_store: Store | None = None


@dataclass(frozen=True, slots=True)
class WebSocketPrincipal:
    """Who a socket belongs to, when the session or a ticket authenticated it (and,
    for a ticket, the roles its session had: `bastion.websocket.tickets`)."""

    identity: str
    method: str  # "session" or "ticket"
    roles: frozenset[str] = frozenset()


def client_ban_check(is_banned: Callable[[str | None], Awaitable[bool]]) -> BanCheck:
    """A `BanCheck` from a per-client predicate, such as `Jail.is_banned` of the
    rate-limit layer's ban list (which bans networks, not principals)."""

    async def check(client: str | None, principal: str | None) -> bool:
        return await is_banned(client)

    return check


def _principal_identity(principal: object) -> str:
    name = getattr(principal, "identity", None) or getattr(principal, "user_id", None)
    return str(name if name is not None else principal)


def _other_caller(known: object | None, session_user: object | None) -> str | None:
    """Who the handshake names apart from the guard's own credential: the caller the
    authentication layer resolved, else the session's user (None: no one)."""
    if known is not None:
        return _principal_identity(known)
    return str(session_user) if session_user is not None else None


def _authorization_principal(principal: object) -> Principal | None:
    """The socket's principal as the route policy reads one, for its deferred rules.

    A `Principal` (the authentication layer's, or a bearer verifier's that returns
    one) is taken as it is, roles and scopes. A ticket's user is the word of the
    session it is bound to (its roles: the session's); any other object a bearer
    verifier returns names a caller with no roles and no scopes, answered as a bearer
    token is (`insufficient_scope`)."""
    if principal is None or isinstance(principal, Principal):
        return principal
    if isinstance(principal, WebSocketPrincipal):
        return Principal(principal.identity, "session", roles=principal.roles)
    return Principal(_principal_identity(principal), "jwt")


def _lower_names(headers: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """The header names, lower-cased, in order.

    ASGI servers send names lower-cased (the spec asks them to), so the usual list is
    taken as it is, after one C-level check that no name has an upper-case letter;
    only a list where one does is lower-cased name by name.
    """
    names: list[bytes] = list(map(_header_name, headers))
    try:
        joined = b"\n".join(names)
    except TypeError:  # a name that is not bytes (against the ASGI spec): one by one
        return [name.lower() for name in names]
    if joined.lower() == joined:
        return names
    return [name.lower() for name in names]


def _lines(
    headers: Sequence[tuple[bytes, bytes]], names: list[bytes], name: bytes
) -> tuple[bytes, ...]:
    """The values of the header lines called `name`, in order, from the lower-cased
    `names` of `headers` (`_lower_names`): C-level scans when it appears at most once."""
    count = names.count(name)
    if count == 0:
        return ()
    if count == 1:
        return (headers[names.index(name)][1],)
    return tuple(line[1] for line, each in zip(headers, names, strict=True) if each == name)


def _ticket_params(query_string: bytes) -> list[str] | None:
    """The `ticket` parameters of the handshake's query string, as `parse_qs` reads
    them, or None when it has none.

    `parse_qs` turns `+` into a space and un-escapes `%XX` in each name, and does
    nothing else to it; so a query in which neither `ticket` nor `%` appears has no
    parameter of that name, and is not parsed (most sockets carry no query, or only
    the app's own parameters). `find`, not `in`: CPython 3.11's `bytes in bytes`
    first tries the operand as an integer and raises and clears a TypeError.
    """
    if query_string.find(b"ticket") < 0 and query_string.find(b"%") < 0:
        return None
    return parse_qs(query_string.decode("latin-1")).get("ticket")


@dataclass(frozen=True, slots=True)
class _MessageRules:
    """What every message of every connection is held to, compiled from the settings
    once, when the guard is built: each connection reads it through one attribute."""

    monitor_only: bool
    idle_seconds: float
    max_bytes: int
    # A code point is 1 to 4 bytes in UTF-8 (a lone surrogate, passed through, 3):
    # text of up to this many characters cannot be too big, so is not encoded.
    short_text: int
    connection_limit: GCRALimit
    # Each message violation as `_Connection.violate` takes it.
    too_big: _Violation
    too_fast: _Violation
    principal_too_fast: _Violation
    invalid: _Violation

    @classmethod
    def from_settings(cls, s: WebSocketSettings) -> _MessageRules:
        drop_error = _ERROR_RATE if s.on_rate_limit == "drop" else None
        invalid_error = _ERROR_INVALID if s.on_invalid_message == "error-frame" else None
        return cls(
            monitor_only=s.monitor_only,
            idle_seconds=s.idle_timeout_seconds,
            max_bytes=s.max_message_bytes,
            short_text=s.max_message_bytes // 4,
            connection_limit=GCRALimit.from_seconds(
                1 / s.messages_per_second, (s.message_burst - 1) / s.messages_per_second
            ),
            too_big=(
                r.CLOSE_MESSAGE_TOO_BIG,
                KIND_INPUT_VALIDATION,
                r.REASON_MESSAGE_TOO_BIG,
                None,
            ),
            too_fast=(
                r.CLOSE_POLICY_VIOLATION,
                KIND_EXCESS_RATE,
                r.REASON_CONNECTION_RATE,
                drop_error,
            ),
            principal_too_fast=(
                r.CLOSE_POLICY_VIOLATION,
                KIND_EXCESS_RATE,
                r.REASON_PRINCIPAL_RATE,
                drop_error,
            ),
            invalid=(
                r.CLOSE_INVALID_PAYLOAD,
                KIND_INPUT_VALIDATION,
                r.REASON_INVALID_MESSAGE,
                invalid_error,
            ),
        )


class _Connection:
    """One guarded socket: its live state, and the `receive` and `send` the app gets.

    The app's `receive` and `send` are this object's bound methods rather than
    closures made per connection: closures whose cells held the connection, reachable
    again from the connection (its timer holds the callback), would put every
    connection in reference cycles that only the cyclic garbage collector frees, and
    traverses until then. Nothing refers back to a connection once `finish` has
    dropped its timers, so reference counting frees it when it ends.
    """

    __slots__ = (
        "_receive",
        "_send",
        "accepted",
        "app_closed",
        "bearer",
        "client_gone",
        "close_code",
        "guard",
        "guard_closed",
        "held",
        "idle_timer",
        "last_activity",
        "later_checks_needed",
        "lock",
        "loop",
        "offer",
        "principal",
        "principal_rate_key",
        "receiver",
        "route",
        "rules",
        "schema",
        "scope",
        "session_key",
        "sessions",
        "started",
        "tat_us",
        "waking",
        "watch_timer",
        "watcher",
        "watcher_due",
    )

    def __init__(
        self,
        guard: WebSocketGuardMiddleware,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        route: str,
        offer: BearerOffer,
        principal: str | None,
        session_key: str | None,
        sessions: SessionManager | None,
        bearer: BearerVerdict | None,
        held: list[str],
        schema: type[BaseModel] | None,
    ) -> None:
        self.guard = guard
        self.rules = guard.message_rules
        self.scope = scope
        self.route = route
        self.offer = offer
        self.principal = principal
        # The store key of the session whose end closes the socket (the watcher's), and
        # the session layer that keeps it (None: none ran; `_session_lives`).
        self.session_key = session_key
        self.sessions = sessions
        # The subprotocol bearer's expiry and revocation key, when its verifier gave
        # them (the watcher's; None: nothing to watch of the token).
        self.bearer = bearer
        self.held = held
        self.schema = schema
        self.principal_rate_key = (
            hashed_key(PRINCIPAL_RATE_PREFIX, principal) if principal is not None else None
        )
        self.later_checks_needed = self.principal_rate_key is not None or schema is not None
        self._receive = receive
        self._send = send
        self.loop = asyncio.get_running_loop()
        self.lock = asyncio.Lock()
        # The close code once the socket is closing (by the guard or the client).
        self.close_code: int | None = None
        self.accepted = False
        self.app_closed = False
        self.guard_closed = False
        self.client_gone = False  # the server's `websocket.disconnect` was read
        self.tat_us: int | None = None
        self.last_activity = time.monotonic()
        self.idle_timer: asyncio.TimerHandle | None = None
        # The watcher (section 3 of the module docstring): when it is due to start,
        # by `time.monotonic` (None: not due from the idle timer), the timer that
        # starts it when the idle timer cannot, and the task once started.
        self.watcher_due: float | None = None
        self.watch_timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.started = guard.clock()  # the watcher's refreshes count from here
        # The task waiting in the server's `receive` for the app, and whether the
        # guard has asked it to stop waiting (see `wake`).
        self.receiver: asyncio.Task[object] | None = None
        self.waking = False

    # --- timers ----------------------------------------------------------------------

    def start_timers(self, first_tick: float | None) -> None:
        """Arm the idle timer and have the watcher start at `first_tick` (None: no
        watcher): from the idle timer's first firing when the tick comes no later
        than the idle deadline can (the usual settings), else from a timer of its own."""
        idle = self.rules.idle_seconds
        if first_tick is None:
            self.idle_timer = self.loop.call_later(idle, self.on_idle)
        elif first_tick <= idle:
            self.watcher_due = self.last_activity + first_tick
            self.idle_timer = self.loop.call_later(first_tick, self.on_idle)
        else:
            self.watch_timer = self.loop.call_later(first_tick, self.start_watcher)
            self.idle_timer = self.loop.call_later(idle, self.on_idle)

    def start_watcher(self) -> None:
        self.watch_timer = None
        self.watcher = self.loop.create_task(self.guard._watch(self))

    def on_idle(self) -> None:
        """The idle deadline, per connection: re-armed lazily, not per message; its
        first firing may be the watcher's first tick (`start_timers`)."""
        self.idle_timer = None
        now = time.monotonic()
        due = self.watcher_due
        if due is not None:
            if now < due:  # early by the loop clock's resolution: not yet due
                self.idle_timer = self.loop.call_later(due - now, self.on_idle)
                return
            self.watcher_due = None
            if self.close_code is None:
                self.start_watcher()
        if self.close_code is not None or self.app_closed:
            return  # closing already: the server finishes the closing handshake
        left = self.last_activity + self.rules.idle_seconds - now
        if left > 0:
            self.idle_timer = self.loop.call_later(left, self.on_idle)
        else:
            # Waiting for the client: wake the wait, which closes. Otherwise the
            # app is busy; its next `receive` finds the deadline passed.
            self.wake()

    def finish(self) -> None:
        """Stop the timers and the watcher; tell the observers an accepted socket ended."""
        if self.watch_timer is not None:
            self.watch_timer.cancel()
            self.watch_timer = None
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self.accepted:
            for observer in self.guard.observers:
                observer.websocket_closed(self.route)

    # --- the app's send, and the guard's close ---------------------------------------

    async def send(self, message: Message) -> None:
        """The app's `send`: the accept echoes no token; nothing goes out after a close."""
        if message["type"] == "websocket.accept":
            message = {
                **message,
                "subprotocol": choose_subprotocol(message.get("subprotocol"), self.offer),
            }
        await self.send_now(message)

    async def send_now(self, message: Message) -> None:
        async with self.lock:
            if self.close_code is not None:
                return  # the guard closed the socket: the app's late sends go nowhere
            if message["type"] == "websocket.accept" and not self.accepted:
                # Counted before the send: `finish` uncounts whatever the send does
                # next (raises, is cancelled).
                self.accepted = True
                for observer in self.guard.observers:
                    observer.websocket_opened(self.route)
            elif message["type"] in ("websocket.close", "websocket.http.response.start"):
                self.app_closed = True
            await self._send(message)

    async def close(
        self, code: int, kind: str, reason: str, *, action: Action | None = None
    ) -> None:
        """Close from the guard (once), emit the event, and wake the app's receive."""
        async with self.lock:
            if self.close_code is not None or self.app_closed:
                return
            self.close_code = code
            self.guard_closed = True
            self.wake()
            self.guard.refuser.event(
                self.scope,
                kind=kind,
                reason=reason,
                action=action,
                details={"close_code": code},
            )
            with contextlib.suppress(OSError, RuntimeError):  # the client is already gone
                await self._send({"type": "websocket.close", "code": code})

    async def error_frame(self, text: str) -> None:
        await self.send_now({"type": "websocket.send", "text": text})

    # --- the app's receive -----------------------------------------------------------

    def wake(self) -> None:
        """Interrupt the app's wait for the client's next message, if it is waiting.

        The interruption is a cancellation of the task awaiting the server's
        `receive` (as `asyncio.timeout` interrupts a wait), caught and counted back
        by `receive_from` alone, which then answers for the guard.
        """
        if self.receiver is not None and not self.waking:
            self.waking = True
            self.receiver.cancel()

    async def receive_from(self, receive: Receive) -> Message | None:
        """The server's next message, or None when `wake` interrupted the wait."""
        task = asyncio.current_task()
        self.receiver = task
        try:
            message = await receive()
        except asyncio.CancelledError:
            self.receiver = None
            if not self.waking or task is None:
                raise
            self.waking = False
            if task.uncancel() > 0:
                raise  # cancelled by someone else as well: that cancellation stands
            return None
        finally:
            self.receiver = None
        if self.waking:  # a `receive` that swallowed the cancellation
            self.waking = False
            if task is not None:
                task.uncancel()
            return None
        return message

    async def receive(self) -> Message:
        """The app's `receive`: the client's messages that pass, or the disconnect."""
        while True:
            if self.close_code is not None:
                return {"type": "websocket.disconnect", "code": self.close_code}
            if self.idle_timer is None and not self.app_closed:
                # The deadline passed while the app was busy (or never came).
                left = self.last_activity + self.rules.idle_seconds - time.monotonic()
                if left <= 0:
                    await self.close(
                        r.CLOSE_GOING_AWAY, KIND_CLOSED, r.REASON_IDLE, action="allowed"
                    )
                    continue
                self.idle_timer = self.loop.call_later(left, self.on_idle)
            message = await self.receive_from(self._receive)
            if message is None:  # woken: the guard closed, or the idle deadline
                if self.close_code is None and not self.app_closed:
                    await self.close(
                        r.CLOSE_GOING_AWAY, KIND_CLOSED, r.REASON_IDLE, action="allowed"
                    )
                continue
            now = self.last_activity = time.monotonic()
            kind = message["type"]
            if kind == "websocket.receive":
                if self.close_code is not None:
                    continue  # sent before the client saw our close: dropped
                data: str | bytes | None = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                violation = self.first_checks(data, now)
                if violation is None and self.later_checks_needed:
                    violation = await self.later_checks(data)
                # The first violation decides (monitor-only passes the message on).
                if violation is not None and await self.violate(*violation):
                    continue
                return message
            if kind == "websocket.disconnect":
                self.client_gone = True
                if self.close_code is not None:
                    continue
                self.guard.refuser.event(
                    self.scope,
                    kind=KIND_CLOSED,
                    reason=r.REASON_CLOSED,
                    action="allowed",
                    details={"close_code": message.get("code", 1005)},
                )
                self.close_code = int(message.get("code", 1005))
                return message
            if self.close_code is not None:
                continue
            return message

    def first_checks(self, data: str | bytes, now: float) -> _Violation | None:
        """Size and the connection's bucket: in memory, on every message."""
        rules = self.rules
        if isinstance(data, str):
            if len(data) > rules.short_text and (
                len(data) > rules.max_bytes
                or len(data.encode("utf-8", "surrogatepass")) > rules.max_bytes
            ):
                return rules.too_big
        elif len(data) > rules.max_bytes:
            return rules.too_big
        allowed, self.tat_us = take_token(
            self.tat_us, round(now * MICROSECONDS), rules.connection_limit
        )
        return None if allowed else rules.too_fast

    async def later_checks(self, data: str | bytes) -> _Violation | None:
        """The principal's rate in the store and the route's schema, when set."""
        guard = self.guard
        if self.principal_rate_key is not None:
            try:
                result = await guard.store.gcra(
                    self.principal_rate_key,
                    emission_interval_seconds=guard._principal_interval,
                    burst_tolerance_seconds=guard._principal_tolerance,
                )
            except StoreError:
                # Rate limits fail open (design): the per-connection bucket still holds.
                guard.refuser.event(
                    self.scope,
                    kind=KIND_SYS_AVAILABILITY,
                    reason=r.REASON_STORE_DOWN,
                    action="allowed",
                )
            else:
                if not result.allowed:
                    return self.rules.principal_too_fast
        if self.schema is not None:
            try:
                self.schema.model_validate_json(data)
            except ValidationError:
                return self.rules.invalid
        return None

    async def violate(self, code: int, kind: str, reason: str, error: str | None) -> bool:
        """Act on a message violation; True if the message is dropped."""
        refuser = self.guard.refuser
        if self.rules.monitor_only:
            refuser.event(self.scope, kind=kind, reason=reason, details={"close_code": code})
            return False
        if error is not None:
            refuser.event(self.scope, kind=kind, reason=reason, details={"dropped": True})
            await self.error_frame(error)
            return True
        await self.close(code, kind, reason)
        return True


def _socket_schemas(
    schemas: Mapping[str, type[BaseModel]],
) -> Mapping[str, type[BaseModel]]:
    """`schemas`, once every pattern is one a socket can match: a schema under
    `GET /ws` would validate no message at all (`bastion.websocket.settings`)."""
    for pattern in schemas:
        try:
            parse_websocket_route(pattern)
        except ValueError as exc:
            raise ConfigurationError(f"websocket schemas: {exc}") from None
    return schemas


class WebSocketGuardMiddleware:
    """Guards `websocket` scopes; `http` scopes only get the ticket issuer attached.

    `bearer_verifier` checks tokens offered as `Sec-WebSocket-Protocol: bearer,
    <token>` (without one, such handshakes are refused); `schemas` maps route
    patterns to the pydantic model each text message must validate against;
    `ban_checks` are async predicates over (client, principal); `observers` are
    told of accepted sockets (default: the event emitter's sinks that are
    `ConnectionObserver`s). A `schemas` pattern names no method or `WEBSOCKET`, as
    `settings.routes` does (`parse_websocket_route`); any other raises
    ConfigurationError.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: WebSocketSettings | None = None,
        *,
        store: Store | None = None,
        secret_keys: Sequence[SecretStr | str] | None = None,
        events: EventEmitter | None = None,
        clock: Callable[[], float] = time.time,
        bearer_verifier: BearerVerifier | None = None,
        schemas: Mapping[str, type[BaseModel]] | None = None,
        ban_checks: Sequence[BanCheck] = (),
        observers: Sequence[ConnectionObserver] | None = None,
    ) -> None:
        self.app = app
        self.settings = s = settings or WebSocketSettings()
        self.clock = clock
        self.store = store if store is not None else MemoryStore(clock=clock)
        check_store(self.store)
        self.events = events or default_emitter()
        self.refuser = Refuser(LAYER, self.events, monitor_only=s.monitor_only)
        self.observers: tuple[ConnectionObserver, ...] = (
            tuple(observers)
            if observers is not None
            else tuple(sink for sink in self.events.sinks if isinstance(sink, ConnectionObserver))
        )
        # Each pattern is its own label: bounded by the settings, never by clients.
        self._route_labels: RouteTable[str] = RouteTable({p: p for p in s.routes})
        self.tickets = (
            WebSocketTickets(secret_keys, max_age_seconds=s.ticket_max_age_seconds, clock=clock)
            if secret_keys is not None
            else None
        )
        self.bearer_verifier = bearer_verifier
        self.ban_checks = tuple(ban_checks)
        self.access = RouteTable(s.routes)
        self.schemas: RouteTable[type[BaseModel]] = RouteTable(_socket_schemas(schemas or {}))
        allowed: set[Origin] = set()
        for text in s.allowed_origins:
            origin = parse_origin(text)
            if origin is not None:  # validated by the settings
                allowed.add(origin)
        # Process-wide memos of pure functions, not connection state (module docstring).
        self._origin_memo: dict[_OriginMemoKey, str] = {}
        self._client_keys: dict[str, str] = {}
        self.origin_policy = OriginPolicy(frozenset(allowed), s.allow_same_origin)
        self.message_rules = _MessageRules.from_settings(s)
        self._principal_interval = 1 / s.principal_messages_per_second
        self._principal_tolerance = (
            s.principal_message_burst - 1
        ) / s.principal_messages_per_second
        # The watcher's tick: the shorter of `revocation_check_seconds` and the refresh
        # interval, so a refresh is never more than a tick late.
        self._refresh_seconds = s.connection_count_ttl_seconds / _REFRESHES_PER_TTL
        self._tick = min(s.revocation_check_seconds, self._refresh_seconds)

    @property
    def origin_policy(self) -> OriginPolicy:
        """The origins a handshake may come from (the settings' allowlist, and
        whether the request's own origin is allowed)."""
        return self._origin_policy

    @origin_policy.setter
    def origin_policy(self, policy: OriginPolicy) -> None:
        # The remembered verdicts were decided under the policy being replaced.
        self._origin_policy = policy
        self._origin_memo.clear()

    @property
    def connection_limit(self) -> GCRALimit:
        """Each connection's message rate (`message_rules`)."""
        return self.message_rules.connection_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.tickets is not None:
            scope[TICKETS_SCOPE_KEY] = self.tickets
        if scope["type"] != "websocket" or not self.settings.enabled:
            await self.app(scope, receive, send)
            return
        context = get_context(scope)
        handshake = await self._handshake(scope, send, context)
        if handshake is None:
            return
        app_scope, offer, principal_name, session_key, sessions, bearer = handshake
        held = await self._reserve(scope, send, context, principal_name)
        if held is None:
            return
        try:
            await self._serve(
                app_scope, receive, send, offer, principal_name, session_key, sessions, bearer, held
            )
        finally:
            await self._release(scope, held)

    # --- the route policy's deferred rules (`bastion.auth.policy`) ------------------

    def will_authenticate(self, scope: Scope) -> bool:
        """Whether this handshake carries a credential this guard verifies itself, as
        `_handshake` reads it: a well-formed bearer offer in `Sec-WebSocket-Protocol`
        (with a `bearer_verifier`), else a `ticket` parameter (with `secret_keys`).

        Asked by the route policy outside on every handshake one of its rules names
        (the socket will run as the caller this guard settles on, so the rules are
        handed over); the same parsers as the handshake's, on the same scope, and no
        store call."""
        offer = split_bearer(scope.get("subprotocols") or ())
        if offer.reason:
            return False  # refused as malformed, whatever else it carries
        if offer.untrusted_token is not None:
            return self.bearer_verifier is not None  # the bearer decides, not a ticket
        return (
            self.tickets is not None and _ticket_params(scope.get("query_string", b"")) is not None
        )

    def defer_authorization(self, scope: Scope, check: DeferredAuthorization) -> None:
        """Take the route policy's rules for this handshake: `_handshake` runs `check`
        on the caller the socket will run as (the principal it establishes), right
        after the credential, and stops if it refuses. Whatever this guard's own
        `routes` say: a deferred rule always holds, and a refused credential leaves
        the caller anonymous (or, monitor-only, the authentication layer's)."""
        scope[_DEFERRED_AUTHORIZATION_KEY] = check

    # --- 1. the handshake ----------------------------------------------------------

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        status: int,
        kind: str,
        reason: str,
        details: dict[str, object] | None = None,
    ) -> bool:
        """Refuse (True: stop) or, in monitor-only mode, report and go on (False)."""
        return await self.refuser(
            scope, send, status=status, kind=kind, reason=reason, details=details
        )

    async def _handshake(
        self, scope: Scope, send: Send, context: RequestContext
    ) -> (
        tuple[
            Scope, BearerOffer, str | None, str | None, SessionManager | None, BearerVerdict | None
        ]
        | None
    ):
        """The scope the app gets, the bearer offer, the principal's name, the store key
        of the session the watcher keeps checking, the session layer that keeps it, and
        the accepted bearer's verdict when it bounds the socket's life; None when
        refused.

        One caller per socket: when the authentication layer outside already resolved
        a caller (an `Authorization` bearer, an API key, the session), or else the
        session has a user, a ticket or subprotocol bearer naming another user is
        refused (`credential-mismatch`), and so is a session user other than the
        authentication layer's caller. Trust neither, as the authentication layer
        refuses two `Authorization` lines: the socket would run as the guard's caller
        while `scope["user"]` names the other, and the route policy could vouch for
        only one of them."""
        # Taken out first, so the app never sees it, and run on every path that goes
        # on (in monitor-only mode too): every return before it is a refusal.
        deferred: DeferredAuthorization | None = scope.pop(_DEFERRED_AUTHORIZATION_KEY, None)
        path = scope.get("path", "")
        access = self.access.lookup("WEBSOCKET", path) or self.settings.default_access
        session = scope.get("session")
        session_user = getattr(session, "user_id", None)
        sessions = session_manager_of(session)
        origin_reason = self._check_origin(
            scope.get("headers", []), context, cookie_authenticated=session_user is not None
        )
        if origin_reason and await self._refuse(
            scope, send, 403, KIND_MALICIOUS_CSRF, origin_reason
        ):
            return None
        offer = split_bearer(scope.get("subprotocols") or ())
        # The caller the authentication layer resolved (None: none, or no such layer).
        known = context.principal
        principal: object | None = None
        ticket_session: str | None = None
        bearer: BearerVerdict | None = None
        reason = offer.reason
        if not reason and offer.untrusted_token is not None:
            try:
                reason, principal, bearer = await self._check_bearer(offer.untrusted_token)
            except StoreError:
                # The verifier's revocation list cannot be read: fail closed, answered as
                # the authentication layer answers an `Authorization` bearer (503).
                if await self._refuse(scope, send, 503, KIND_SYS_AVAILABILITY, r.REASON_STORE_DOWN):
                    return None
        elif not reason:
            untrusted_tickets = _ticket_params(scope.get("query_string", b""))
            if untrusted_tickets is not None:
                reason, principal, ticket_session = await self._check_ticket(
                    untrusted_tickets, sessions
                )
                if reason == r.REASON_STORE_DOWN:
                    # The store cannot vouch for the ticket: fail closed, answered as an
                    # outage (503, or 1013), as for a bearer, not as the caller's fault.
                    if await self._refuse(
                        scope, send, 503, KIND_SYS_AVAILABILITY, r.REASON_STORE_DOWN
                    ):
                        return None
                    reason = ""  # monitor-only: reported, and the socket has no caller
            elif session_user is not None:
                # The authentication layer's principal for this session user (with
                # its roles) stays; the guard's own stands in when no such layer ran.
                principal = (
                    known
                    if known is not None and _principal_identity(known) == str(session_user)
                    else WebSocketPrincipal(str(session_user), "session")
                )
        if not reason and principal is not None:
            other = _other_caller(known, session_user)
            if other is not None and other != _principal_identity(principal):
                reason = r.REASON_CREDENTIAL_MISMATCH
        details: dict[str, object] | None = None
        if bearer is not None and bearer.reason:
            details = {"bearer_reason": bearer.reason}  # the verifier's word, for the log
        if reason and await self._refuse(scope, send, 403, KIND_AUTHN_FAIL, reason, details):
            return None
        if (
            principal is None
            and access == "authenticated"
            and await self._refuse(scope, send, 403, KIND_AUTHN_FAIL, r.REASON_UNAUTHENTICATED)
        ):
            return None
        principal_name = _principal_identity(principal) if principal is not None else None
        if principal is not None:
            context.principal = principal
        # The socket runs as the caller now in the context (the guard's, else, when
        # monitor-only let a refused credential through, the authentication layer's):
        # that caller is the subject of the policy's rules.
        if deferred is not None and await deferred(
            scope, send, _authorization_principal(context.principal)
        ):
            return None
        if self.ban_checks:
            try:
                banned = await self._banned(context.client_host, principal_name)
            except StoreError:
                # A ban we cannot read fails closed, as the live check does.
                if await self._refuse(scope, send, 503, KIND_SYS_AVAILABILITY, r.REASON_STORE_DOWN):
                    return None
                banned = False
            if banned and await self._refuse(scope, send, 403, KIND_AUTHZ_FAIL, r.REASON_BANNED):
                return None
        # The session whose end closes the socket: the one its ticket is bound to;
        # else, for an authenticated socket, the session the handshake carried
        # (a ticket bound to no session, or a bearer token, with a cookie beside it).
        session_key = ticket_session
        if session_key is None and principal_name is not None:
            session_key = getattr(session, "store_key", None)
        app_scope = scope
        if offer.untrusted_token is not None:
            # The app never sees the token among the subprotocols it may choose from.
            app_scope = dict(scope)
            app_scope["subprotocols"] = list(offer.subprotocols)
        if bearer is not None and (principal is None or bearer.principal is not principal):
            bearer = None  # refused (monitor-only went on): nothing of it to watch
        return app_scope, offer, principal_name, session_key, sessions, bearer

    async def _check_bearer(
        self, untrusted_token: str
    ) -> tuple[str, object | None, BearerVerdict | None]:
        """The refusal reason ("" to accept), the principal, and the verifier's
        `BearerVerdict` when it gave one. Raises StoreError (the verifier's)."""
        if self.bearer_verifier is None:
            return r.REASON_BEARER_INVALID, None, None
        verified = await self.bearer_verifier(untrusted_token)
        if isinstance(verified, BearerVerdict):
            if verified.principal is None:
                return r.REASON_BEARER_INVALID, None, verified
            if verified.expires_at is not None and not math.isfinite(verified.expires_at):
                # NaN would never compare past the clock, so the socket would never
                # expire: a verifier's bug is refused, not trusted for ever.
                return r.REASON_BEARER_INVALID, None, verified
            return "", verified.principal, verified
        if verified is None:
            return r.REASON_BEARER_INVALID, None, None
        return "", verified, None

    def _check_origin(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        context: RequestContext,
        *,
        cookie_authenticated: bool,
    ) -> str:
        """`check_origin` on this handshake's facts (`own_origin` from the validated
        host, else the one `Host` line), remembered: a site's sockets come from the
        same few origins all day.

        The verdict is a pure function of the memo's key (`_OriginMemoKey`) and of
        the origin policy, whose assignment empties the memo, so a remembered verdict
        is the verdict. A
        memo entry holds at most two lines of `ORIGIN_MEMO_MAX_LINE_BYTES` (longer
        ones are decided afresh), and the memo at most `ORIGIN_MEMO_ENTRIES` of them.
        """
        if headers.__class__ is not list and headers.__class__ is not tuple:
            headers = list(headers)  # scanned twice, and indexed
        names = _lower_names(headers)
        origins = _lines(headers, names, b"origin")
        untrusted_host: bytes | None = None
        if context.host is None:  # else `own_origin` never reads the `Host` line
            hosts = _lines(headers, names, b"host")
            untrusted_host = hosts[0] if len(hosts) == 1 else None
        memo_key: _OriginMemoKey = (
            origins,
            untrusted_host,
            context.scheme,
            context.host,
            context.port,
            cookie_authenticated,
        )
        memo = self._origin_memo
        try:
            reason = memo.get(memo_key)
        except TypeError:  # a line that is not `bytes` (against the ASGI spec): unhashable
            return self._decide_origin(origins, untrusted_host, context, cookie_authenticated)
        if reason is None:
            reason = self._decide_origin(origins, untrusted_host, context, cookie_authenticated)
            if len(origins) <= 1 and (
                max(map(len, origins), default=0) <= ORIGIN_MEMO_MAX_LINE_BYTES
                and len(untrusted_host or b"") <= ORIGIN_MEMO_MAX_LINE_BYTES
            ):
                if len(memo) >= ORIGIN_MEMO_ENTRIES:
                    memo.clear()  # a spray churns the memo, never grows it
                memo[memo_key] = reason
        return reason

    def _decide_origin(
        self,
        origins: tuple[bytes, ...],
        untrusted_host: bytes | None,
        context: RequestContext,
        cookie_authenticated: bool,
    ) -> str:
        """`check_origin` on the facts `_check_origin` gathered, afresh."""
        own = own_origin(context.scheme, context.host, context.port, untrusted_host)
        return check_origin(
            origins, own, self._origin_policy, cookie_authenticated=cookie_authenticated
        )

    async def _check_ticket(
        self, untrusted: list[str], sessions: SessionManager | None
    ) -> tuple[str, object | None, str | None]:
        """The refusal reason ("" to accept), the principal, and the store key of the
        session the ticket is bound to (None: bound to none).

        A bound ticket is refused once its session has ended (a logout, `revoke_user`,
        a rotation, expiry: `_session_lives`): within its lifetime it would otherwise
        open a socket for a user who has signed out. Checked before the ticket is
        claimed: a refused ticket never becomes valid again, since a session's key
        never comes back, nor does an expired session come back to life.
        """
        if self.tickets is None or len(untrusted) != 1:
            return r.REASON_TICKET_INVALID, None, None
        checked = self.tickets.check(untrusted[0])
        if checked.user_id is None:
            return checked.reason, None, None
        claim = hashed_key(TICKET_KEY_PREFIX, untrusted[0])
        try:
            if checked.session_key is not None and not await self._session_lives(
                checked.session_key, sessions
            ):
                return r.REASON_SESSION_REVOKED, None, None
            first_use = await self.store.set_if_absent(
                claim, b"1", self.settings.ticket_max_age_seconds + 1
            )
        except StoreError:
            return r.REASON_STORE_DOWN, None, None  # authentication fails closed
        if not first_use:
            return r.REASON_TICKET_REUSED, None, None
        principal = WebSocketPrincipal(checked.user_id, "ticket", checked.roles)
        return "", principal, checked.session_key

    async def _session_lives(self, key: str, sessions: SessionManager | None) -> bool:
        """Whether the session stored under `key` is alive: read where the session
        layer of this scope keeps it (its store, which may not be this guard's when
        the two were built apart), within its idle and absolute timeouts
        (`session_alive`: the store keeps an expired record a grace period longer).
        With no session layer on the scope, the record's presence in this guard's
        store is all there is to go by. Raises StoreError."""
        if sessions is None:
            return await self.store.get(key) is not None
        return session_alive(await sessions.store.get(key), sessions.settings, sessions.clock())

    async def _banned(self, client: str | None, principal: str | None) -> bool:
        for check in self.ban_checks:
            if await check(client, principal):
                return True
        return False

    # --- connection caps -------------------------------------------------------------

    def _client_count_key(self, client: str) -> str:
        """The client's counter key, remembered (`CLIENT_MEMO_ENTRIES`): `hashed_key`."""
        key = self._client_keys.get(client)
        if key is None:
            key = hashed_key(CLIENT_COUNT_PREFIX, client)
            if len(client) <= _CLIENT_MEMO_MAX_CHARS:
                memo = self._client_keys
                if len(memo) >= CLIENT_MEMO_ENTRIES:
                    memo.clear()  # a spray churns the memo, never grows it
                memo[client] = key
        return key

    async def _reserve(
        self, scope: Scope, send: Send, context: RequestContext, principal: str | None
    ) -> list[str] | None:
        """Take one slot per counter; None when full (and refused)."""
        s = self.settings
        wanted = [
            (
                self._client_count_key(context.client_host or "unknown"),
                s.max_connections_per_client,
                r.REASON_CLIENT_CONNECTIONS,
            )
        ]
        if principal is not None:
            wanted.append(
                (
                    hashed_key(PRINCIPAL_COUNT_PREFIX, principal),
                    s.max_connections_per_principal,
                    r.REASON_PRINCIPAL_CONNECTIONS,
                )
            )
        held: list[str] = []
        for key, cap, reason in wanted:
            try:
                count = await self.store.incr(key, 1, ttl_seconds=s.connection_count_ttl_seconds)
            except StoreError:
                # Caps fail open, like rate limits: an outage of the counter store must
                # not take every socket down; the event says so.
                self.refuser.event(
                    scope, kind=KIND_SYS_AVAILABILITY, reason=r.REASON_STORE_DOWN, action="allowed"
                )
                continue
            held.append(key)
            if count > cap and await self._refuse(scope, send, 429, KIND_EXCESS_RATE, reason):
                await self._release(scope, held)
                return None
        return held

    async def _refresh(self, scope: Scope, held: list[str]) -> None:
        """Extend each held counter's TTL; re-take the slot if the counter is gone."""
        ttl = self.settings.connection_count_ttl_seconds
        for key in held:
            try:
                if not await self.store.touch(key, ttl):
                    await self.store.incr(key, 1, ttl_seconds=ttl)
            except StoreError:
                # Caps fail open (as in `_reserve`); the next refresh tries again.
                self.refuser.event(
                    scope, kind=KIND_SYS_AVAILABILITY, reason=r.REASON_STORE_DOWN, action="allowed"
                )

    async def _release(self, scope: Scope, held: list[str]) -> None:
        for key in held:
            try:
                count = await self.store.incr(
                    key, -1, ttl_seconds=self.settings.connection_count_ttl_seconds
                )
                if count < 0:
                    # The counter expired under live connections (its TTL is the
                    # safety net): never let it go negative, or the cap would grow.
                    await self.store.incr(
                        key, -count, ttl_seconds=self.settings.connection_count_ttl_seconds
                    )
            except StoreError:
                self.refuser.event(
                    scope, kind=KIND_SYS_AVAILABILITY, reason=r.REASON_STORE_DOWN, action="allowed"
                )

    # --- 2. messages, 3. the watcher -------------------------------------------------

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        offer: BearerOffer,
        principal: str | None,
        session_key: str | None,
        sessions: SessionManager | None,
        bearer: BearerVerdict | None,
        held: list[str],
    ) -> None:
        path = scope.get("path", "")
        conn = _Connection(
            self,
            scope,
            receive,
            send,
            route=self._route_labels.lookup("WEBSOCKET", path) or DEFAULT_ROUTE_LABEL,
            offer=offer,
            principal=principal,
            session_key=session_key,
            sessions=sessions,
            bearer=bearer,
            held=held,
            schema=self.schemas.lookup("WEBSOCKET", path) if self.schemas else None,
        )
        conn.start_timers(self._watch_tick(session_key, held, bearer))
        try:
            await self.app(scope, conn.receive, conn.send)
            if conn.guard_closed and not conn.client_gone:
                # Read what the client sent before it saw our close, until its
                # disconnect: a server whose inbound queue is full (hypercorn's is
                # bounded) cannot finish the closing handshake otherwise.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_DRAIN_SECONDS):
                        for _ in range(_DRAIN_MESSAGES):
                            if (await receive())["type"] == "websocket.disconnect":
                                break
        finally:
            conn.finish()

    def _watch_tick(
        self, session_key: str | None, held: list[str], bearer: BearerVerdict | None
    ) -> float | None:
        """The watcher's first tick (`_tick`, or sooner when the bearer expires
        sooner: `_until_next_check`), or None when it has nothing to watch; a tick with
        nothing due costs no store call."""
        if held or self.ban_checks or session_key is not None or bearer is not None:
            return self._until_next_check(bearer)
        return None

    def _until_next_check(self, bearer: BearerVerdict | None) -> float:
        """Seconds to the watcher's next check: a tick, or the bearer's expiry when
        that comes first, so an expired token's socket closes on time, not up to a
        tick later."""
        if bearer is None or bearer.expires_at is None:
            return self._tick
        return max(0.0, min(self._tick, bearer.expires_at - self.clock()))

    async def _watch(self, conn: _Connection) -> None:
        """Close the socket once its session has ended (`_session_lives`: gone, or past
        its idle or absolute timeout), its bearer has expired or been revoked
        (`BearerVerdict`), or a ban applies, and keep its
        connection slots alive (bounded by the connection's life: cancelled when the
        app returns). Started one tick (`_watch_tick`) after the connection was, at
        `conn.started` by the guard's clock; checks, then sleeps a tick (less when the
        bearer expires sooner: `_until_next_check`). The bearer's expiry costs a clock
        read; its revocation key, one store read per check, as the session's.
        """
        principal, held, session_key = conn.principal, conn.held, conn.session_key
        bearer = conn.bearer
        expires_at = bearer.expires_at if bearer is not None else None
        revocation_key = bearer.revocation_key if bearer is not None else None
        revocation_store = self.store
        if bearer is not None and bearer.revocation_store is not None:
            revocation_store = bearer.revocation_store
        client = get_context(conn.scope).client_host
        revoking = session_key is not None or bool(self.ban_checks) or revocation_key is not None
        refresh_seconds = self._refresh_seconds
        last_refresh = conn.started
        first = True
        while conn.close_code is None:
            if not first:
                await asyncio.sleep(self._until_next_check(bearer))
            first = False
            if expires_at is not None and self.clock() >= expires_at:
                # The token would be refused now, as an `Authorization` bearer is.
                await conn.close(r.CLOSE_POLICY_VIOLATION, KIND_AUTHN_FAIL, r.REASON_BEARER_EXPIRED)
                return
            if held and self.clock() - last_refresh >= refresh_seconds:
                last_refresh = self.clock()
                await self._refresh(conn.scope, held)
            if not revoking:
                continue
            try:
                if session_key is not None and not await self._session_lives(
                    session_key, conn.sessions
                ):
                    await conn.close(
                        r.CLOSE_POLICY_VIOLATION, KIND_AUTHN_FAIL, r.REASON_SESSION_REVOKED
                    )
                    return
                if (
                    revocation_key is not None
                    and await revocation_store.get(revocation_key) is not None
                ):
                    await conn.close(
                        r.CLOSE_POLICY_VIOLATION, KIND_AUTHN_FAIL, r.REASON_BEARER_REVOKED
                    )
                    return
                if await self._banned(client, principal):
                    await conn.close(r.CLOSE_POLICY_VIOLATION, KIND_AUTHZ_FAIL, r.REASON_BANNED)
                    return
            except StoreError:
                # Revocation fails closed (design): a socket we cannot vouch for ends.
                await conn.close(r.CLOSE_INTERNAL_ERROR, KIND_SYS_AVAILABILITY, r.REASON_STORE_DOWN)
                return
            except Exception as exc:  # a ban predicate's own failure
                # Closed too, as the same failure at the handshake refuses it: left to
                # end this task, it would stop every later check of the socket, silently.
                log_exception(get_context(conn.scope).request_id, exc)
                await conn.close(r.CLOSE_INTERNAL_ERROR, KIND_SYS_CRASH, r.REASON_CHECK_FAILED)
                return
