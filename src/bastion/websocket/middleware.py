"""The ASGI adapter: `WebSocketGuardMiddleware`.

One connection, in order:

1. Handshake, before the application runs: route access, `Origin`
   (`core.check_origin`), the credential (bearer subprotocol, else `?ticket=`, else
   the session that `SessionMiddleware` loaded), ban predicates, then one slot in
   the client's and the principal's connection counters. Any refusal goes through
   `Refuser`, before `websocket.accept`: an HTTP 403/429 where the server supports
   the denial-response extension, else close 1008/1013.
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
   session still exists and that no ban predicate refuses, else closes with 1008:
   revocation costs one store read per connection per interval, never one per
   message, and reaches a live socket at most one interval late. The task starts
   at the first tick (a timer until then), so a socket shorter than a tick costs
   none.
   It also keeps the connection's slots alive: `incr` gives a counter its TTL on
   creation only, so without a refresh a socket that outlives
   `connection_count_ttl_seconds` would lose its slot and the caps would stop
   holding. Every third of that TTL (by the guard's clock) it `touch`es each held
   counter, and re-takes the slot if the counter vanished (evicted, store restart).
4. Whatever ends the connection (client close, abrupt disconnect, the app's close,
   the guard's close, an exception, cancellation), `finally` gives the slots back.

Connection observers (`ConnectionObserver`, such as the Prometheus sink in
`bastion.metrics`) are told when the app accepts a socket and, in the same
`finally`, when an accepted socket ends, by the route pattern from
`settings.routes` that matched it (`default` when none did): never the raw path or
the client, so an observer's label set stays bounded. Without `observers`, the
guard uses the sinks of its event emitter that are observers, so `Shield` needs no
wiring and the guard knows nothing of Prometheus.

A connection the guard closes gets `websocket.disconnect` from `receive`, and its
later sends are dropped, so the application winds down as if the client had left.

Per-connection state lives in `_Connection`, created in `__call__`; the middleware
itself holds only what was compiled at construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias, runtime_checkable
from urllib.parse import parse_qs

from pydantic import BaseModel, SecretStr, ValidationError

from bastion.context import get_context
from bastion.events import (
    KIND_AUTHN_FAIL,
    KIND_AUTHZ_FAIL,
    KIND_EXCESS_RATE,
    KIND_INPUT_VALIDATION,
    KIND_MALICIOUS_CSRF,
    KIND_SYS_AVAILABILITY,
    Action,
    EventEmitter,
    default_emitter,
)
from bastion.exceptions import StoreError
from bastion.hosts import Origin, parse_origin
from bastion.responses import Refuser
from bastion.routes import RouteTable
from bastion.stores.base import Store
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
from bastion.websocket.settings import WebSocketSettings
from bastion.websocket.tickets import TICKET_KEY_PREFIX, TICKETS_SCOPE_KEY, WebSocketTickets

LAYER: Final = "websocket"
# The observer label of a socket whose path matches no pattern in `settings.routes`.
DEFAULT_ROUTE_LABEL: Final = "default"
KIND_CLOSED: Final = "session_websocket_closed"  # vocabulary style: category, event
BearerVerifier = Callable[[str], Awaitable[object | None]]
"""Verifies a bearer token; returns the principal, or None to refuse."""
BanCheck = Callable[[str | None, str | None], Awaitable[bool]]
"""`(client_host, principal_identity) -> True if banned`, checked at the handshake
and every `revocation_check_seconds`. May raise `StoreError` (the guard fails closed)."""

CLIENT_COUNT_PREFIX: Final = "ws:conns:client:"
PRINCIPAL_COUNT_PREFIX: Final = "ws:conns:principal:"
PRINCIPAL_RATE_PREFIX: Final = "ws:principal:"
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


@runtime_checkable
class ConnectionObserver(Protocol):
    """Told when a guarded socket is accepted and when an accepted one ends, with the
    route pattern it matched (a bounded label). Must not raise, like an event sink."""

    def websocket_opened(self, route: str) -> None: ...

    def websocket_closed(self, route: str) -> None: ...


@dataclass(frozen=True, slots=True)
class WebSocketPrincipal:
    """Who a socket belongs to, when the session or a ticket authenticated it."""

    identity: str
    method: str  # "session" or "ticket"


def client_ban_check(is_banned: Callable[[str | None], Awaitable[bool]]) -> BanCheck:
    """A `BanCheck` from a per-client predicate, such as `Jail.is_banned` of the
    rate-limit layer's ban list (which bans networks, not principals)."""

    async def check(client: str | None, principal: str | None) -> bool:
        return await is_banned(client)

    return check


def _principal_identity(principal: object) -> str:
    name = getattr(principal, "identity", None) or getattr(principal, "user_id", None)
    return str(name if name is not None else principal)


def _origin_lines(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    return [value for key, value in headers if key.lower() == b"origin"]


def _host_line(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    hosts = [value for key, value in headers if key.lower() == b"host"]
    return hosts[0] if len(hosts) == 1 else None


class _Connection:
    """The live state of one guarded socket."""

    def __init__(
        self, guard: WebSocketGuardMiddleware, scope: Scope, send: Send, route: str
    ) -> None:
        self.guard = guard
        self.scope = scope
        self.route = route
        self._send = send
        self.lock = asyncio.Lock()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.accepted = False
        self.app_closed = False
        self.guard_closed = False
        self.client_gone = False  # the server's `websocket.disconnect` was read
        self.tat_us: int | None = None
        self.last_activity = time.monotonic()
        self.idle_timer: asyncio.TimerHandle | None = None
        # The task waiting in the server's `receive` for the app, and whether the
        # guard has asked it to stop waiting (see `wake`).
        self.receiver: asyncio.Task[object] | None = None
        self.waking = False

    async def send(self, message: Message) -> None:
        async with self.lock:
            if self.closed.done():
                return  # the guard closed the socket: the app's late sends go nowhere
            if message["type"] == "websocket.accept" and not self.accepted:
                # Counted before the send: `_serve`'s `finally` uncounts whatever
                # the send does next (raises, is cancelled).
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
            if self.closed.done() or self.app_closed:
                return
            self.closed.set_result(code)
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
        await self.send({"type": "websocket.send", "text": text})

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


class WebSocketGuardMiddleware:
    """Guards `websocket` scopes; `http` scopes only get the ticket issuer attached.

    `bearer_verifier` checks tokens offered as `Sec-WebSocket-Protocol: bearer,
    <token>` (without one, such handshakes are refused); `schemas` maps route
    patterns to the pydantic model each text message must validate against;
    `ban_checks` are async predicates over (client, principal); `observers` are
    told of accepted sockets (default: the event emitter's sinks that are
    `ConnectionObserver`s).
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
        self.schemas: RouteTable[type[BaseModel]] = RouteTable(schemas or {})
        allowed: set[Origin] = set()
        for text in s.allowed_origins:
            origin = parse_origin(text)
            if origin is not None:  # validated by the settings
                allowed.add(origin)
        self.origin_policy = OriginPolicy(frozenset(allowed), s.allow_same_origin)
        self.connection_limit = GCRALimit.from_seconds(
            1 / s.messages_per_second, (s.message_burst - 1) / s.messages_per_second
        )
        self._principal_interval = 1 / s.principal_messages_per_second
        self._principal_tolerance = (
            s.principal_message_burst - 1
        ) / s.principal_messages_per_second

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.tickets is not None:
            scope[TICKETS_SCOPE_KEY] = self.tickets
        if scope["type"] != "websocket" or not self.settings.enabled:
            await self.app(scope, receive, send)
            return
        handshake = await self._handshake(scope, send)
        if handshake is None:
            return
        app_scope, offer, principal_name = handshake
        held = await self._reserve(scope, send, principal_name)
        if held is None:
            return
        try:
            await self._serve(app_scope, receive, send, offer, principal_name, held)
        finally:
            await self._release(scope, held)

    # --- 1. the handshake ----------------------------------------------------------

    async def _refuse(self, scope: Scope, send: Send, status: int, kind: str, reason: str) -> bool:
        """Refuse (True: stop) or, in monitor-only mode, report and go on (False)."""
        return await self.refuser(scope, send, status=status, kind=kind, reason=reason)

    async def _handshake(
        self, scope: Scope, send: Send
    ) -> tuple[Scope, BearerOffer, str | None] | None:
        context = get_context(scope)
        headers = scope.get("headers", [])
        path = scope.get("path", "")
        access = self.access.lookup("WEBSOCKET", path) or self.settings.default_access
        session = scope.get("session")
        session_user = getattr(session, "user_id", None)
        origin_reason = check_origin(
            _origin_lines(headers),
            own_origin(context.scheme, context.host, context.port, _host_line(headers)),
            self.origin_policy,
            cookie_authenticated=session_user is not None,
        )
        if origin_reason and await self._refuse(
            scope, send, 403, KIND_MALICIOUS_CSRF, origin_reason
        ):
            return None
        offer = split_bearer(scope.get("subprotocols") or ())
        principal: object | None = None
        reason = offer.reason
        if not reason and offer.untrusted_token is not None:
            verified = (
                await self.bearer_verifier(offer.untrusted_token)
                if self.bearer_verifier is not None
                else None
            )
            if verified is None:
                reason = r.REASON_BEARER_INVALID
            principal = verified
        elif not reason:
            untrusted_tickets = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(
                "ticket"
            )
            if untrusted_tickets is not None:
                reason, principal = await self._check_ticket(untrusted_tickets)
            elif session_user is not None:
                # The authentication layer's principal for this session user (with
                # its roles) stays; the guard's own stands in when no such layer ran.
                known = context.principal
                principal = (
                    known
                    if known is not None and _principal_identity(known) == str(session_user)
                    else WebSocketPrincipal(str(session_user), "session")
                )
        if reason and await self._refuse(scope, send, 403, KIND_AUTHN_FAIL, reason):
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
        try:
            banned = await self._banned(context.client_host, principal_name)
        except StoreError:
            # A ban we cannot read fails closed, as the live check does.
            if await self._refuse(scope, send, 503, KIND_SYS_AVAILABILITY, r.REASON_STORE_DOWN):
                return None
            banned = False
        if banned and await self._refuse(scope, send, 403, KIND_AUTHZ_FAIL, r.REASON_BANNED):
            return None
        app_scope = scope
        if offer.untrusted_token is not None:
            # The app never sees the token among the subprotocols it may choose from.
            app_scope = dict(scope)
            app_scope["subprotocols"] = list(offer.subprotocols)
        return app_scope, offer, principal_name

    async def _check_ticket(self, untrusted: list[str]) -> tuple[str, object | None]:
        if self.tickets is None or len(untrusted) != 1:
            return r.REASON_TICKET_INVALID, None
        checked = self.tickets.check(untrusted[0])
        if checked.user_id is None:
            return checked.reason, None
        claim = hashed_key(TICKET_KEY_PREFIX, untrusted[0])
        try:
            first_use = await self.store.set_if_absent(
                claim, b"1", self.settings.ticket_max_age_seconds + 1
            )
        except StoreError:
            return r.REASON_STORE_DOWN, None  # authentication fails closed
        if not first_use:
            return r.REASON_TICKET_REUSED, None
        return "", WebSocketPrincipal(checked.user_id, "ticket")

    async def _banned(self, client: str | None, principal: str | None) -> bool:
        for check in self.ban_checks:
            if await check(client, principal):
                return True
        return False

    # --- connection caps -------------------------------------------------------------

    async def _reserve(self, scope: Scope, send: Send, principal: str | None) -> list[str] | None:
        """Take one slot per counter; None when full (and refused)."""
        client = get_context(scope).client_host or "unknown"
        s = self.settings
        wanted = [
            (
                hashed_key(CLIENT_COUNT_PREFIX, client),
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
        held: list[str],
    ) -> None:
        route = self._route_labels.lookup("WEBSOCKET", scope.get("path", ""))
        conn = _Connection(self, scope, send, route or DEFAULT_ROUTE_LABEL)
        loop = asyncio.get_running_loop()
        # Everything a message needs is looked up once, here, for the connection.
        s = self.settings
        schema = self.schemas.lookup("WEBSOCKET", scope.get("path", ""))
        monitor = s.monitor_only
        idle = s.idle_timeout_seconds
        max_bytes = s.max_message_bytes
        # A code point is 1 to 4 bytes in UTF-8 (a lone surrogate, passed through, 3):
        # text of up to this many characters cannot be too big, so is not encoded.
        short_text = max_bytes // 4
        connection_limit = self.connection_limit
        drop_error = _ERROR_RATE if s.on_rate_limit == "drop" else None
        invalid_error = _ERROR_INVALID if s.on_invalid_message == "error-frame" else None
        principal_rate_key = (
            hashed_key(PRINCIPAL_RATE_PREFIX, principal) if principal is not None else None
        )

        def on_idle() -> None:
            """The idle deadline, per connection: re-armed lazily, not per message."""
            conn.idle_timer = None
            if conn.closed.done() or conn.app_closed:
                return  # closing already: the server finishes the closing handshake
            left = conn.last_activity + idle - time.monotonic()
            if left > 0:
                conn.idle_timer = loop.call_later(left, on_idle)
            else:
                # Waiting for the client: wake the wait, which closes. Otherwise the
                # app is busy; its next `receive` finds the deadline passed.
                conn.wake()

        async def guarded_send(message: Message) -> None:
            if message["type"] == "websocket.accept":
                chosen = choose_subprotocol(message.get("subprotocol"), offer)
                message = {**message, "subprotocol": chosen}
            await conn.send(message)

        async def violate(code: int, kind: str, reason: str, error: str | None) -> bool:
            """Act on a message violation; True if the message is dropped."""
            if monitor:
                self.refuser.event(scope, kind=kind, reason=reason, details={"close_code": code})
                return False
            if error is not None:
                self.refuser.event(scope, kind=kind, reason=reason, details={"dropped": True})
                await conn.error_frame(error)
                return True
            await conn.close(code, kind, reason)
            return True

        # Each message violation as `violate` takes it: (code, kind, reason, error frame).
        too_big: _Violation = (
            r.CLOSE_MESSAGE_TOO_BIG,
            KIND_INPUT_VALIDATION,
            r.REASON_MESSAGE_TOO_BIG,
            None,
        )
        too_fast: _Violation = (
            r.CLOSE_POLICY_VIOLATION,
            KIND_EXCESS_RATE,
            r.REASON_CONNECTION_RATE,
            drop_error,
        )
        principal_too_fast: _Violation = (
            r.CLOSE_POLICY_VIOLATION,
            KIND_EXCESS_RATE,
            r.REASON_PRINCIPAL_RATE,
            drop_error,
        )
        invalid: _Violation = (
            r.CLOSE_INVALID_PAYLOAD,
            KIND_INPUT_VALIDATION,
            r.REASON_INVALID_MESSAGE,
            invalid_error,
        )
        later_checks_needed = principal_rate_key is not None or schema is not None

        def first_checks(data: str | bytes, now: float) -> _Violation | None:
            """Size and the connection's bucket: in memory, on every message."""
            if isinstance(data, str):
                if len(data) > short_text and (
                    len(data) > max_bytes or len(data.encode("utf-8", "surrogatepass")) > max_bytes
                ):
                    return too_big
            elif len(data) > max_bytes:
                return too_big
            allowed, conn.tat_us = take_token(
                conn.tat_us, round(now * MICROSECONDS), connection_limit
            )
            return None if allowed else too_fast

        async def later_checks(data: str | bytes) -> _Violation | None:
            """The principal's rate in the store and the route's schema, when set."""
            if principal_rate_key is not None:
                try:
                    result = await self.store.gcra(
                        principal_rate_key,
                        emission_interval_seconds=self._principal_interval,
                        burst_tolerance_seconds=self._principal_tolerance,
                    )
                except StoreError:
                    # Rate limits fail open (design): the per-connection bucket still holds.
                    self.refuser.event(
                        scope,
                        kind=KIND_SYS_AVAILABILITY,
                        reason=r.REASON_STORE_DOWN,
                        action="allowed",
                    )
                else:
                    if not result.allowed:
                        return principal_too_fast
            if schema is not None:
                try:
                    schema.model_validate_json(data)
                except ValidationError:
                    return invalid
            return None

        async def guarded_receive() -> Message:
            while True:
                if conn.closed.done():
                    return {"type": "websocket.disconnect", "code": conn.closed.result()}
                if conn.idle_timer is None and not conn.app_closed:
                    # The deadline passed while the app was busy (or never came).
                    left = conn.last_activity + idle - time.monotonic()
                    if left <= 0:
                        await conn.close(
                            r.CLOSE_GOING_AWAY, KIND_CLOSED, r.REASON_IDLE, action="allowed"
                        )
                        continue
                    conn.idle_timer = loop.call_later(left, on_idle)
                message = await conn.receive_from(receive)
                if message is None:  # woken: the guard closed, or the idle deadline
                    if not conn.closed.done() and not conn.app_closed:
                        await conn.close(
                            r.CLOSE_GOING_AWAY, KIND_CLOSED, r.REASON_IDLE, action="allowed"
                        )
                    continue
                now = conn.last_activity = time.monotonic()
                kind = message["type"]
                if kind == "websocket.receive":
                    if conn.closed.done():
                        continue  # sent before the client saw our close: dropped
                    data: str | bytes | None = message.get("text")
                    if data is None:
                        data = message.get("bytes") or b""
                    violation = first_checks(data, now)
                    if violation is None and later_checks_needed:
                        violation = await later_checks(data)
                    # The first violation decides (monitor-only passes the message on).
                    if violation is not None and await violate(*violation):
                        continue
                    return message
                if kind == "websocket.disconnect":
                    conn.client_gone = True
                    if conn.closed.done():
                        continue
                    self.refuser.event(
                        scope,
                        kind=KIND_CLOSED,
                        reason=r.REASON_CLOSED,
                        action="allowed",
                        details={"close_code": message.get("code", 1005)},
                    )
                    conn.closed.set_result(int(message.get("code", 1005)))
                    return message
                if conn.closed.done():
                    continue
                return message

        # The watcher's first tick is a timer: a task only for a socket that lives
        # that long (a short one costs no task), its checks due from then on.
        watcher: asyncio.Task[None] | None = None
        started = self.clock()

        def start_watcher() -> None:
            nonlocal watcher
            watcher = loop.create_task(self._watch(conn, principal, held, started))

        first_tick = self._watch_tick(scope, principal, held)
        watch_timer = loop.call_later(first_tick, start_watcher) if first_tick else None
        conn.idle_timer = loop.call_later(idle, on_idle)
        try:
            await self.app(scope, guarded_receive, guarded_send)
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
            if watch_timer is not None:
                watch_timer.cancel()
            if watcher is not None:
                watcher.cancel()
            if conn.idle_timer is not None:
                conn.idle_timer.cancel()
            if conn.accepted:
                for observer in self.observers:
                    observer.websocket_closed(conn.route)

    def _session_key(self, scope: Scope, principal: str | None) -> str | None:
        # The guard only needs the session's store key, to ask whether it still exists.
        session = scope.get("session")
        return getattr(session, "store_key", None) if principal is not None else None

    def _watch_tick(self, scope: Scope, principal: str | None, held: list[str]) -> float | None:
        """The watcher's tick, or None when it has nothing to watch.

        One tick is the shorter of `revocation_check_seconds` and the refresh
        interval, so a refresh is never more than a tick late; a tick with nothing
        due costs no store call.
        """
        revoking = self._session_key(scope, principal) is not None or bool(self.ban_checks)
        if not revoking and not held:
            return None
        refresh_seconds = self.settings.connection_count_ttl_seconds / _REFRESHES_PER_TTL
        return min(self.settings.revocation_check_seconds, refresh_seconds)

    async def _watch(
        self, conn: _Connection, principal: str | None, held: list[str], started: float
    ) -> None:
        """Close the socket once its session is gone or a ban applies, and keep its
        connection slots alive (bounded by the connection's life: cancelled when the
        app returns). Started one tick (`_watch_tick`) after the connection was, at
        `started` by the guard's clock; checks, then sleeps a tick.
        """
        session_key = self._session_key(conn.scope, principal)
        client = get_context(conn.scope).client_host
        revoking = session_key is not None or bool(self.ban_checks)
        refresh_seconds = self.settings.connection_count_ttl_seconds / _REFRESHES_PER_TTL
        tick = min(self.settings.revocation_check_seconds, refresh_seconds)
        last_refresh = started
        first = True
        while not conn.closed.done():
            if not first:
                await asyncio.sleep(tick)
            first = False
            if held and self.clock() - last_refresh >= refresh_seconds:
                last_refresh = self.clock()
                await self._refresh(conn.scope, held)
            if not revoking:
                continue
            try:
                if session_key is not None and await self.store.get(session_key) is None:
                    await conn.close(
                        r.CLOSE_POLICY_VIOLATION, KIND_AUTHN_FAIL, r.REASON_SESSION_REVOKED
                    )
                    return
                if await self._banned(client, principal):
                    await conn.close(r.CLOSE_POLICY_VIOLATION, KIND_AUTHZ_FAIL, r.REASON_BANNED)
                    return
            except StoreError:
                # Revocation fails closed (design): a socket we cannot vouch for ends.
                await conn.close(r.CLOSE_INTERNAL_ERROR, KIND_SYS_AVAILABILITY, r.REASON_STORE_DOWN)
                return
