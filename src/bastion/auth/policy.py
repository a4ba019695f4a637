"""Authorization: route policy in settings, and the same rules inside the application.

Threat: a caller reaching a route they have no right to, because a route was
forgotten, or because a path spelt differently (`/admin/`, `//admin`, `/%61dmin`,
`/ADMIN`) or a method spelt differently (`post`, which Django and Quart dispatch as
`POST`) slipped past a rule that a router would still dispatch to the endpoint.
Defence: rules are `bastion.routes` patterns matched against `scope["path"]`, the
decoded path the router dispatches on, exactly as it is. A spelling the router sends
to the protected endpoint is the path the rule names, so the rule applies; a
spelling the rule does not name is a path the router does not send there (Starlette
redirects `/admin/` to `/admin` and answers 404 to `//admin` and `/ADMIN`). With
`deny_by_default`, no unlisted path is reachable at all, which also covers routers
that normalise more than Starlette does (protect `/admin` and `/admin/*` together).
Methods are case-folded before the lookup (RFC 9110 section 9.1 makes them
case-sensitive, but frameworks fold them, so a rule must hold for every spelling).
The table is compiled once; a lookup is a dictionary probe plus a short scan.

A WebSocket handshake is an HTTP GET (RFC 6455 section 4.1), so a rule for `GET /ws`
must hold for the socket at `/ws` too: looked up under `WEBSOCKET` alone, it did not,
and the socket stayed open (or, with `deny_by_default`, closed to everyone). A
`websocket` scope meets two rules, each the most specific of its kind: the
*handshake* rule, over the patterns naming `WEBSOCKET` or `GET` or no method (a
`WEBSOCKET` pattern wins a tie with a `GET` one), and the *socket* rule, over those
naming `WEBSOCKET` or no method (the rule it met before). The caller must satisfy
both, so covering the handshake never makes a socket easier to open; when the
handshake rule is a `WEBSOCKET` pattern it is the socket rule too, and governs alone
(write `WEBSOCKET /ws` to give a socket its own rule). The handshake table is
compiled beside the main one (`RouteTable.for_websocket_handshake`, which the
rate-limit layer uses too); an http request never looks at it.

Some sockets are authenticated by the WebSocket guard, inside this layer: a signed
`?ticket=` or a bearer token offered in `Sec-WebSocket-Protocol`. This layer cannot
read them: alone, such a socket is anonymous here, so a rule it would meet
(`"GET /app/*": "authenticated"` for the socket at `/app/live`) would refuse it
unread; beside a credential the authentication layer reads (an `Authorization`
bearer, an API key, a session cookie), this layer would decide on that caller while
the socket runs as the guard's, who was never checked (a principal swap: a
`roles:admin` socket opened by an admin's cookie and run as a user's ticket). So
when the guard sits directly inside this layer (`Shield` puts it there) and the
handshake carries a credential the guard will verify (`will_authenticate`), the
rules are handed to the guard (`WebSocketGuardMiddleware.defer_authorization`),
whatever they say of the caller known here: once it has settled the socket's caller,
the guard asks this layer to decide the same two rules against it
(`_enforce_deferred`), and the refusal, if any, is this layer's own (status, close
code, `WWW-Authenticate`, `authz_fail` event). The guard enforces it before anything
else it decides, whatever its own `routes` say; a credential it refuses opens
nothing, and one naming another user than the caller known here is refused
(`credential-mismatch`). With the guard in monitor-only mode, the deferred rules
hold for the caller the socket then runs as (anonymous, when no one else is known).
A handshake refused by deny-by-default is refused here (no caller can meet it);
without a guard inside, nothing is deferred, and this layer decides on the caller it
knows, as before.

Answers: 401 with a `WWW-Authenticate` challenge when no one is authenticated (RFC
6750 section 3.1: no error code when no credentials were sent); 403 for an
authenticated caller without the right (`error="insufficient_scope"` for bearer
tokens). Both emit `authz_fail` with the precise reason.

The endpoint decorator (`requires_bastion`) and the FastAPI dependencies
(`bastion.auth.fastapi`) evaluate the same `Requirement` against the same principal.

Not covered: object-level authorization (may this user read *this* invoice); that
is the application's, with the principal as input.

References: OWASP Authorization Cheat Sheet (deny by default, check on every
request); RFC 6750 section 3.1; RFC 9110 sections 15.5.2 and 15.5.4; RFC 6455
section 4.1 (the opening handshake is a GET) https://www.rfc-editor.org/rfc/rfc6455#section-4.1.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from bastion.auth.middleware import bearer_challenge
from bastion.auth.principal import Principal, get_principal
from bastion.auth.settings import POLICY_AUTHENTICATED, POLICY_PUBLIC, PolicySettings, check_rule
from bastion.context import get_context
from bastion.events import KIND_AUTHZ_FAIL, EventEmitter
from bastion.responses import Refuser, generic_body, wants_json
from bastion.routes import RouteTable
from bastion.stages import Flow, run_stages
from bastion.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from bastion.websocket.middleware import WebSocketGuardMiddleware

REASON_UNAUTHENTICATED: Final = "policy-unauthenticated"
REASON_MISSING_ROLE: Final = "policy-missing-role"
REASON_MISSING_SCOPE: Final = "policy-missing-scope"
REASON_DENY_BY_DEFAULT: Final = "policy-deny-by-default"


@dataclass(frozen=True, slots=True)
class Requirement:
    """`kind` is public, authenticated, roles (any of) or scopes (all of)."""

    kind: str
    names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, rule: str) -> Requirement:
        kind, names = check_rule(rule)
        return cls(kind, names)

    @classmethod
    def of(cls, *, roles: Iterable[str] = (), scopes: Iterable[str] = ()) -> list[Requirement]:
        """The requirements a decorator or dependency states (authenticated if none)."""
        found = [cls("roles", frozenset(roles))] if roles else []
        if scopes:
            found.append(cls("scopes", frozenset(scopes)))
        return found or [cls(POLICY_AUTHENTICATED)]


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # 0 when allowed, else 401 or 403
    reason: str = ""


ALLOW: Final = Decision(0)


def decide(requirement: Requirement | None, principal: Principal | None, *, deny: bool) -> Decision:
    """The verdict for one caller on one route (`requirement` None: no rule matched)."""
    if requirement is None:
        if not deny:
            return ALLOW
        return Decision(401 if principal is None else 403, REASON_DENY_BY_DEFAULT)
    if requirement.kind == POLICY_PUBLIC:
        return ALLOW
    if principal is None:
        return Decision(401, REASON_UNAUTHENTICATED)
    if requirement.kind == "roles" and not principal.has_any_role(requirement.names):
        return Decision(403, REASON_MISSING_ROLE)
    if requirement.kind == "scopes" and not principal.has_scopes(requirement.names):
        return Decision(403, REASON_MISSING_SCOPE)
    return ALLOW


def decide_handshake(
    handshake: Requirement | None,
    socket: Requirement | None,
    principal: Principal | None,
    *,
    deny: bool,
) -> Decision:
    """The verdict on a WebSocket handshake: the caller must meet both the handshake
    rule and the socket rule (module docstring). `socket` is None or the handshake
    rule whenever `handshake` is None (its patterns are among the handshake's)."""
    decision = decide(handshake, principal, deny=deny)
    if decision.status or socket is None or socket is handshake:
        return decision
    return decide(socket, principal, deny=deny)


def decide_all(requirements: Iterable[Requirement], principal: Principal | None) -> Decision:
    for requirement in requirements:
        decision = decide(requirement, principal, deny=True)
        if decision.status:
            return decision
    return ALLOW


def build_policy(settings: PolicySettings) -> RouteTable[Requirement]:
    return RouteTable({p: Requirement.parse(rule) for p, rule in settings.routes.items()})


def challenge_headers(
    decision: Decision, principal: Principal | None, realm: str
) -> list[tuple[bytes, bytes]]:
    if decision.status == 401:
        return [(b"www-authenticate", bearer_challenge(realm))]
    if principal is not None and principal.source == "jwt":
        return [(b"www-authenticate", bearer_challenge(realm, "insufficient_scope"))]
    return []


class AuthorizationMiddleware:
    """Applies the route policy to the principal the authentication layer resolved."""

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: PolicySettings | None = None,
        *,
        events: EventEmitter | None = None,
        realm: str = "bastion",
    ) -> None:
        self.app = app
        self.settings = settings or PolicySettings()
        self.table = build_policy(self.settings)
        self.handshake_table = self.table.for_websocket_handshake()
        self.realm = realm
        self.refuse = Refuser("authorization", events, monitor_only=self.settings.monitor_only)
        # A path no rule can match is allowed unless unlisted paths are denied: with
        # these, `enter` decides it by one C call (`decide(None, ..., deny=False)`).
        self._rule_prefixes = self.table.path_prefixes
        self._allows_unlisted = not self.settings.deny_by_default
        self._guard = _guard_inside(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.settings.enabled:
            await self.app(scope, receive, send)
            return
        await run_stages((self,), self.app, scope, receive, send)

    def enter(self, flow: Flow) -> Awaitable[bool] | None:
        """The request phase (`bastion.stages`): None when allowed, else the awaitable
        of the refusal (True when refused)."""
        scope = flow.scope
        if self._allows_unlisted and not scope["path"].startswith(self._rule_prefixes):
            return None  # no rule names this path, and unlisted paths are open
        principal = get_principal(scope)
        if scope["type"] == "http":
            # Upper-cased: servers pass the method as sent (uvicorn's h11 passes `post`),
            # and Django and Quart (werkzeug) upper-case it before dispatching, so `post`
            # reaches the POST handler and must meet the rule for POST.
            requirement = self.table.lookup(scope["method"].upper(), scope["path"])
            decision = decide(requirement, principal, deny=self.settings.deny_by_default)
        else:  # a handshake is a GET: it meets the GET rule too (module docstring)
            handshake = self.handshake_table.lookup("WEBSOCKET", scope["path"])
            socket = self.table.lookup("WEBSOCKET", scope["path"])
            decision = decide_handshake(
                handshake, socket, principal, deny=self.settings.deny_by_default
            )
            if (
                decision.reason != REASON_DENY_BY_DEFAULT
                and self._guard is not None
                and self._guard.will_authenticate(scope)
            ):
                # The guard will authenticate this socket itself, and it will run as the
                # caller the guard settles on, not as `principal`: that caller is the
                # subject of these rules, whatever they say of this one (module
                # docstring). Deny-by-default refuses every caller: decided here.
                self._guard.defer_authorization(
                    scope, functools.partial(self._enforce_deferred, handshake, socket)
                )
                return None
        if not decision.status:
            return None
        return self.refuse(
            scope,
            flow.send,
            status=decision.status,
            kind=KIND_AUTHZ_FAIL,
            reason=decision.reason,
            headers=challenge_headers(decision, principal, self.realm),
        )

    async def _enforce_deferred(
        self,
        handshake: Requirement | None,
        socket: Requirement | None,
        scope: Scope,
        send: Send,
        principal: Principal | None,
    ) -> bool:
        """The handshake rules `enter` handed to the guard, decided against the
        principal the guard established: True when refused (as `enter` refuses)."""
        decision = decide_handshake(
            handshake, socket, principal, deny=self.settings.deny_by_default
        )
        if not decision.status:
            return False
        return await self.refuse(
            scope,
            send,
            status=decision.status,
            kind=KIND_AUTHZ_FAIL,
            reason=decision.reason,
            headers=challenge_headers(decision, principal, self.realm),
        )


def _guard_inside(app: ASGIApp) -> WebSocketGuardMiddleware | None:
    """The WebSocket guard this layer wraps directly, when it guards sockets (it is
    enabled): the one that will see every handshake this layer lets through, and so
    can be handed the rules `enter` cannot decide. None otherwise (no guard, another
    layer between, a disabled guard, which passes sockets through unguarded)."""
    # Imported here: the guard's module imports this package's principal.
    from bastion.websocket.middleware import WebSocketGuardMiddleware

    if isinstance(app, WebSocketGuardMiddleware) and app.settings.enabled:
        return app
    return None


# --- application level: a decorator for Starlette endpoints --------------------------

Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True, slots=True)
class Refusal:
    """A decorator's refusal, ready for any framework's response class."""

    status: int
    body: bytes
    media_type: str
    headers: dict[str, str]


def check_endpoint(
    scope: Scope,
    requirements: Iterable[Requirement],
    refuser: Refuser,
    realm: str,
) -> Refusal | None:
    """Decide for an endpoint decorator; None to serve, else the generic refusal."""
    principal = get_principal(scope)
    decision = decide_all(requirements, principal)
    if not decision.status:
        return None
    refuser.event(scope, kind=KIND_AUTHZ_FAIL, reason=decision.reason, status=decision.status)
    request_id = get_context(scope).request_id
    body, content_type = generic_body(
        decision.status, request_id, as_json=wants_json(scope["headers"])
    )
    headers = {k.decode(): v.decode() for k, v in challenge_headers(decision, principal, realm)}
    headers["cache-control"] = "no-store"
    return Refusal(decision.status, body, content_type.decode(), headers)


def requires_bastion(
    *,
    roles: Iterable[str] = (),
    scopes: Iterable[str] = (),
    events: EventEmitter | None = None,
    realm: str = "bastion",
) -> Callable[[Endpoint], Endpoint]:
    """Protect a Starlette (or any `request`-first) endpoint with the route rules.

        @requires_bastion(roles=["admin"])
        async def admin(request: Request) -> Response: ...

    `roles` means any of them, `scopes` all of them; with neither, any authenticated
    caller. Refusals are the same generic 401/403 and events as the middleware's.
    """
    requirements = Requirement.of(roles=roles, scopes=scopes)
    refuser = Refuser("authorization", events)

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = kwargs.get("request", args[-1] if args else None)
            scope: Scope = request.scope  # type: ignore[union-attr]  # a Request by contract
            refusal = check_endpoint(scope, requirements, refuser, realm)
            if refusal is None:
                return await endpoint(*args, **kwargs)
            from starlette.responses import Response

            return Response(
                refusal.body, refusal.status, headers=refusal.headers, media_type=refusal.media_type
            )

        return wrapper  # type: ignore[return-value]  # same signature, by functools.wraps

    return decorate
