"""`Shield`: the whole stack, composed in the one correct order.

    errors -> transport -> limits -> headers -> cors -> ratelimit -> sessions -> auth -> csrf
           -> policy -> websocket -> application

Outermost first. The order is the design's, and each position has a reason:

* errors is outermost so nothing below, Bastion's own layers included, can leak a
  traceback;
* transport runs before anything reads the client address, scheme or host, so every
  later layer sees the values resolved through trusted proxies only, and a request
  for a host we do not serve is refused before any other work;
* limits runs before any layer or the application reads the body or parses headers;
* headers wraps everything that can answer (CORS preflights, the application), so
  every response carries the security headers and the CSP nonce exists before the
  application renders a template;
* cors answers preflights before the application sees them;
* sessions loads the session for every layer after it (authentication, CSRF) and
  the application, and saves it as the response starts;
* ratelimit refuses banned and over-limit clients before any store-backed work;
* auth resolves the principal (bearer JWT, API key, session user) for CSRF, the
  policy and the application;
* csrf runs after sessions, since its token fallback is bound to the session;
* policy (authorization) runs on the principal, before the application;
* websocket, innermost, guards the `websocket` scope: origin, handshake
  credentials, message size, rate and schema, connection caps, revocation.

The guard verifies a bearer token offered in `Sec-WebSocket-Protocol` (how a
browser's socket carries one) with the authentication layer's own JWT verifier, its
key cache and revocation list, so a socket's bearer is held to what an
`Authorization` bearer is (`_share_bearer_verifier`).

All layers share one store (`settings.store`, or the `store=` given, which must have
every method of the `Store` protocol: `check_store`) and one event emitter. With
bans on, one `Jail` is built before the layers: it learns of every layer's refusals
through the emitter, and the websocket guard asks it, so a ban closes live sockets too.

Layers whose section says `enabled=False` are left out of the chain entirely (no cost
at all), and that opt-out is logged at start-up with every other one. Lifespan and
unknown scope types go straight to the application, untouched.

HTTP requests take the fused path: the same layer instances, run as stages
(`bastion.stages`) in the order above by one runner, with one `send`, which
applies the errors layer's guard too, instead of eleven nested calls and wrappers.
The errors layer's catch-all is around all of it, Bastion's own stages included.
Responses, events and the request context are those of the chain.

WebSocket scopes take a fused path too: the layers that check a handshake
(transport, limits, ratelimit, sessions, auth, policy; headers, cors and csrf let
websockets through untouched) run as stages (`bastion.stages.enter_websocket`)
under the errors layer's catch-all, and then the guard (a middleware of its own)
or the application runs on the server's `receive` and on `send` behind the errors
layer's one wrapper. Once the handshake is decided, no other layer's code runs
per message and none of their frames is resumed with each one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from bastion.auditlog import AuditLogSink
from bastion.auth.middleware import AuthenticationMiddleware
from bastion.auth.policy import AuthorizationMiddleware
from bastion.cors import CORSMiddleware
from bastion.csrf import CSRFMiddleware
from bastion.errors import ErrorsMiddleware
from bastion.events import (
    KIND_SYS_STARTUP,
    EventEmitter,
    EventSink,
    LoggingSink,
    Redactor,
    SecurityEvent,
)
from bastion.exceptions import ConfigurationError
from bastion.headers import HeadersMiddleware
from bastion.limits import LimitsMiddleware
from bastion.ratelimit import Jail, JailSink, RateLimitMiddleware
from bastion.sessions import SessionMiddleware
from bastion.settings import Settings, log_opt_outs
from bastion.stages import Flow, Stage, run_stages, run_websocket_stages
from bastion.stores import Store
from bastion.stores.base import check_store
from bastion.transport import TransportMiddleware, hsts_header_value
from bastion.types import ASGIApp, Receive, Scope, Send
from bastion.websocket import WebSocketGuardMiddleware, WebSocketTickets, client_ban_check
from bastion.websocket.tickets import TICKETS_SCOPE_KEY

logger = logging.getLogger("bastion")


@dataclass(frozen=True, slots=True)
class Shared:
    """What every layer of one stack shares."""

    settings: Settings
    events: EventEmitter
    store: Store
    app: ASGIApp
    """The application the stack wraps (where a walk down the layers stops)."""
    jail: Jail | None = None
    """The stack's ban list, when the ratelimit layer and bans are on."""


LayerFactory = Callable[[ASGIApp, Shared], ASGIApp]

# The layers whose middleware runs its stage on a `websocket` scope; every other one
# (headers, cors, csrf) passes websockets through untouched, and so is no stage of
# the WebSocket path.
_WEBSOCKET_STAGES: Final = (
    TransportMiddleware,
    LimitsMiddleware,
    RateLimitMiddleware,
    SessionMiddleware,
    AuthenticationMiddleware,
    AuthorizationMiddleware,
)

_HSTS_NAME: Final = b"strict-transport-security"


def _edits_inside(layer: ASGIApp, shared: Shared, name: bytes) -> bool:
    """Whether a layer of the stack from `layer` down to the application may add or
    drop a response line of `name`. Of the layers, only the headers layer touches
    names its settings choose (`HeadersMiddleware.edited_names`); the others' lines
    are their own (cookies, `Vary`, `RateLimit`, CORS, `WWW-Authenticate`). The
    application's lines, whatever made them, are the lines sent."""
    while layer is not shared.app:
        if isinstance(layer, HeadersMiddleware) and name in layer.edited_names:
            return True
        layer = layer.app  # type: ignore[attr-defined]  # each layer keeps its `app`
    return False


# (section name, factory), outermost first.
LAYERS: Final[tuple[tuple[str, LayerFactory], ...]] = (
    (
        "errors",
        lambda app, x: ErrorsMiddleware(
            app,
            x.settings.errors,
            events=x.events,
            debug=x.settings.debug,
            hsts=hsts_header_value(x.settings.transport),
        ),
    ),
    (
        "transport",
        lambda app, x: TransportMiddleware(
            app,
            x.settings.transport,
            events=x.events,
            inner_edits_hsts=_edits_inside(app, x, _HSTS_NAME),
        ),
    ),
    ("limits", lambda app, x: LimitsMiddleware(app, x.settings.limits, events=x.events)),
    ("headers", lambda app, x: HeadersMiddleware(app, x.settings.headers, events=x.events)),
    ("cors", lambda app, x: CORSMiddleware(app, x.settings.cors, events=x.events)),
    (
        "ratelimit",
        lambda app, x: RateLimitMiddleware(
            app, x.settings.ratelimit, store=x.store, events=x.events, jail=x.jail
        ),
    ),
    (
        "sessions",
        lambda app, x: SessionMiddleware(
            app,
            x.settings.sessions,
            store=x.store,
            secret_keys=x.settings.secret_keys,
            events=x.events,
        ),
    ),
    (
        "auth",
        lambda app, x: AuthenticationMiddleware(
            app, x.settings.auth, store=x.store, events=x.events
        ),
    ),
    (
        "csrf",
        lambda app, x: CSRFMiddleware(
            app, x.settings.csrf, secret_keys=x.settings.secret_keys, events=x.events
        ),
    ),
    (
        "policy",
        lambda app, x: AuthorizationMiddleware(
            app, x.settings.policy, events=x.events, realm=x.settings.auth.realm
        ),
    ),
    (
        "websocket",
        lambda app, x: WebSocketGuardMiddleware(
            app,
            x.settings.websocket,
            store=x.store,
            secret_keys=x.settings.secret_keys,
            events=x.events,
            ban_checks=[client_ban_check(x.jail.is_banned)] if x.jail is not None else (),
        ),
    ),
)


def _share_bearer_verifier(stack: ASGIApp, app: ASGIApp) -> None:
    """Give the WebSocket guard, when it has no bearer verifier of its own, the
    authentication layer's JWT verifier (module docstring): one key cache, and the
    same checks as an `Authorization` bearer, size cap first. Without a JWT setting,
    or either layer, a bearer offered to the guard is refused as before.

    The verdict keeps what the header path has and a bare principal lost: the
    verifier's reason for a refusal (`jwt-revoked-jti`, ...) for the event, and, for
    an accepted token, when the verifier would start refusing it (`exp`, or `iat`
    plus `max_token_age_seconds`, whichever comes first, plus `leeway_seconds`) and
    its `jti`'s revocation key in the verifier's store, so the guard closes the
    socket when the token would no longer open it. A revocation store that fails
    raises StoreError, which the guard answers as the header path does (503).
    """
    from bastion.websocket.middleware import BearerVerdict

    auth: AuthenticationMiddleware | None = None
    guard: WebSocketGuardMiddleware | None = None
    layer = stack
    while layer is not app:
        if isinstance(layer, AuthenticationMiddleware):
            auth = layer
        elif isinstance(layer, WebSocketGuardMiddleware):
            guard = layer
        layer = layer.app  # type: ignore[attr-defined]  # each layer keeps its `app`
    if auth is None or guard is None or auth.jwt is None or guard.bearer_verifier is not None:
        return
    # Loaded already: `auth.jwt` is one of its verifiers.
    from bastion.auth.jwt import REASON_JWT_BAD_CLAIM, REASON_JWT_OVERSIZED, revoked_key

    verifier = auth.jwt
    settings = verifier.settings
    max_bytes = settings.max_token_bytes

    async def verify(untrusted_token: str) -> BearerVerdict:
        if len(untrusted_token) > max_bytes:  # before decoding anything, as for a header
            return BearerVerdict(None, REASON_JWT_OVERSIZED)
        verdict = await verifier.verify(untrusted_token)
        claims = verdict.claims
        if verdict.principal is None or claims is None:
            return BearerVerdict(None, verdict.reason)
        exp, iat, jti = claims.get("exp"), claims.get("iat"), claims.get("jti")
        # Numbers, and `jti` a short string when present: `check_claims` accepted them.
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            return BearerVerdict(None, REASON_JWT_BAD_CLAIM)
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            return BearerVerdict(None, REASON_JWT_BAD_CLAIM)
        return BearerVerdict(
            verdict.principal,
            expires_at=min(exp, iat + settings.max_token_age_seconds) + settings.leeway_seconds,
            revocation_key=revoked_key(jti) if isinstance(jti, str) else None,
            revocation_store=verifier.store,
        )

    guard.bearer_verifier = verify


def build_emitter(settings: Settings) -> EventEmitter:
    """The event stream: JSON lines to the logger, plus the audit file when configured."""
    sinks: list[EventSink] = [LoggingSink(settings.events.logger_name)]
    if settings.audit_log.path is not None:
        sinks.append(AuditLogSink.from_settings(settings.audit_log, settings.secret_keys))
    if settings.events.prometheus:
        from bastion.metrics import MetricsSink

        sinks.append(MetricsSink())
    return EventEmitter(
        sinks, redactor=Redactor(settings.events.redact_fields, settings.events.redact_pii)
    )


def resolve_settings(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    """`settings`, with `overrides` (top-level fields) applied and validated again."""
    if settings is None:
        return Settings(**overrides)
    if not overrides:
        return settings
    values = {name: getattr(settings, name) for name in settings.model_fields_set}
    return Settings(**(values | overrides))


class Shield:
    """Wrap an ASGI application in Bastion's full stack.

        app = Shield(app, Settings(...))            # as a wrapper
        app.add_middleware(Shield, settings=...)    # Starlette / FastAPI

    Keyword overrides are top-level `Settings` fields: `Shield(app, mode="development")`.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: Settings | None = None,
        *,
        events: EventEmitter | None = None,
        store: Store | None = None,
        **overrides: Any,
    ) -> None:
        self.app = app
        self.settings = resolve_settings(settings, overrides)
        self.events = events if events is not None else build_emitter(self.settings)
        self.store = store if store is not None else self.settings.store.create_store()
        # A store of the user's own lacking a method fails here, not on the request
        # that needs it (after the application answered).
        check_store(self.store)
        self.layers: tuple[str, ...] = tuple(
            name for name, _ in LAYERS if getattr(self.settings, name).enabled
        )
        limits = self.settings.ratelimit
        jail: Jail | None = None
        if "ratelimit" in self.layers and limits.ban_enabled:
            # Refusals from every layer, outer ones included, count toward a ban.
            jail = Jail(
                self.store, limits.ban_policy(), grouping=limits.grouping(), events=self.events
            )
            self.events.sinks = (*self.events.sinks, JailSink(jail))
        shared = Shared(self.settings, self.events, self.store, app, jail)
        stack: ASGIApp = app
        for name, build in reversed(LAYERS):
            if name in self.layers:
                stack = build(stack, shared)
        self._stack = stack
        _share_bearer_verifier(stack, app)
        self._http = self._fuse(stack)
        self._websocket = self._fuse_websocket(stack)
        self.opt_outs = log_opt_outs(self.settings)
        self.events.emit(
            SecurityEvent(
                kind=KIND_SYS_STARTUP,
                reason="startup",
                layer="shield",
                action="allowed",
                details={
                    "mode": self.settings.mode,
                    "layers": list(self.layers),
                    "opt_outs": self.opt_outs,
                },
            )
        )

    def _fuse(self, stack: ASGIApp) -> ASGIApp:
        """The HTTP path: the chain's layers as stages, in one callable (module doc)."""
        errors: ErrorsMiddleware | None = None
        stages: list[Stage] = []
        layer = stack
        while layer is not self.app:
            if isinstance(layer, ErrorsMiddleware):
                errors = layer
            elif isinstance(layer, WebSocketGuardMiddleware):
                if layer.tickets is not None:
                    stages.append(_TicketsStage(layer.tickets))
            else:
                stages.append(layer)  # type: ignore[arg-type]  # every other layer is a Stage
            layer = layer.app  # type: ignore[attr-defined]  # each layer keeps its `app`
        if errors is None:
            return functools.partial(run_stages, tuple(stages), self.app)
        # The errors layer's guard goes into the flow's one `send`, not around it.
        return functools.partial(errors.guard_stages, tuple(stages), self.app)

    def _fuse_websocket(self, stack: ASGIApp) -> ASGIApp:
        """The WebSocket path: the handshake's stages, then the guard (module doc)."""
        errors: ErrorsMiddleware | None = None
        stages: list[Stage] = []
        layer = stack
        while layer is not self.app and not isinstance(layer, WebSocketGuardMiddleware):
            if isinstance(layer, ErrorsMiddleware):
                errors = layer
            elif isinstance(layer, _WEBSOCKET_STAGES):
                stages.append(layer)
            layer = layer.app  # type: ignore[attr-defined]  # each layer keeps its `app`
        # `layer` is now the guard (which wraps the application) or the application.
        if errors is None:
            return functools.partial(run_websocket_stages, tuple(stages), layer)
        return functools.partial(errors.guard_websocket, tuple(stages), layer)

    def metrics_app(self) -> ASGIApp:
        """The Prometheus endpoint for this stack's counters (`events.prometheus`).

        Mount it where only operators reach it: behind a route policy that requires
        a role, or on a separate, private listener.
        """
        from bastion.metrics import MetricsSink, metrics_app

        for sink in self.events.sinks:
            if isinstance(sink, MetricsSink):
                return metrics_app(sink.registry)
        raise ConfigurationError("events.prometheus is off: there are no metrics to serve")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type == "http":
            await self._http(scope, receive, send)
        elif scope_type == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _TicketsStage:
    """What the WebSocket guard does for an HTTP request: hand the application the
    ticket issuer (`bastion.websocket.issue_ticket`), as the guard's middleware does."""

    __slots__ = ("tickets",)

    def __init__(self, tickets: WebSocketTickets) -> None:
        self.tickets = tickets

    def enter(self, flow: Flow) -> None:
        flow.scope[TICKETS_SCOPE_KEY] = self.tickets
