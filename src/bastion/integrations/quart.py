"""Quart: make `quart.session` Bastion's server-side session.

Quart keeps its own session (a signed cookie holding the data). With
`use_bastion_sessions(app)`, Quart's `session` proxy is the `bastion.sessions.Session`
that Bastion's session layer loaded for the request, so data lives in Bastion's store
and `login()`, `rotate()` and `logout()` work as everywhere else. Quart's own saving
is turned off: Bastion saves the session when the response starts.

    app = Quart(__name__)
    asgi = Shield(use_bastion_sessions(app), settings)

    @app.get("/admin")
    @requires_bastion_quart(roles=["admin"])
    async def admin() -> str: ...

`requires_bastion_quart` applies the same requirements, events and generic 401/403
as the Starlette decorator and the route policy, to the principal Bastion resolved.

Threat: the decorator written above `@app.get` instead of below it. The route is then
registered with the bare view before the decorator wraps it, and serves everyone.
Defence: the decorator remembers the views it wrapped, and `use_bastion_sessions`
refuses to start serving (Quart's `before_serving`) an app that routes to one of
them without its guard, naming the endpoint.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar, cast

from quart import Quart, Response, current_app, request
from quart.sessions import SessionInterface, SessionMixin

from bastion.auth.policy import Requirement, check_endpoint
from bastion.events import EventEmitter
from bastion.exceptions import ConfigurationError
from bastion.responses import Refuser
from bastion.sessions import Session
from bastion.types import ASGIApp, Scope


class BastionSessionInterface(SessionInterface):
    """Hands Quart the session Bastion's layer put in the scope; saves nothing itself."""

    async def open_session(self, app: Quart, request: Any) -> SessionMixin | None:
        session = request.scope.get("session")
        if not isinstance(session, Session):
            return None  # no Bastion session layer in front: Quart's null session
        return _as_mixin(session)

    async def save_session(self, app: Quart, session: SessionMixin, response: Any) -> None:
        return None


def _as_mixin(session: Session) -> SessionMixin:
    # SessionMixin is a mixin for dict-like sessions; ours is a dict with the same
    # `modified` attribute, which is all Quart reads.
    return session  # type: ignore[return-value]  # structurally a SessionMixin


QuartView = TypeVar("QuartView", bound=Callable[..., Awaitable[Any]])

# What `requires_bastion_quart` was handed (and whatever that wraps), and the guards it
# returned: a route to the first that reaches none of the second is unguarded.
_GUARDED_VIEWS: Final[weakref.WeakSet[Callable[..., Any]]] = weakref.WeakSet()
_GUARDS: Final[weakref.WeakSet[Callable[..., Any]]] = weakref.WeakSet()


def _unwrapped(view: Callable[..., Any]) -> list[Callable[..., Any]]:
    """`view` and every function it wraps (`functools.wraps` chains), outermost first
    (at most 64: a hand-set `__wrapped__` may loop)."""
    chain = [view]
    while (inner := getattr(chain[-1], "__wrapped__", None)) is not None and len(chain) < 64:
        chain.append(inner)
    return chain


def requires_bastion_quart(
    *,
    roles: Iterable[str] = (),
    scopes: Iterable[str] = (),
    events: EventEmitter | None = None,
    realm: str = "bastion",
) -> Callable[[QuartView], QuartView]:
    """Protect a Quart view: `roles` means any of them, `scopes` all of them."""
    requirements = Requirement.of(roles=roles, scopes=scopes)
    refuser = Refuser("authorization", events)

    def decorate(view: QuartView) -> QuartView:
        _GUARDED_VIEWS.update(_unwrapped(view))

        @functools.wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            # Quart types its scope as a TypedDict; at run time it is the ASGI scope.
            scope = cast(Scope, request.scope)
            refusal = check_endpoint(scope, requirements, refuser, realm)
            if refusal is None:
                return await view(*args, **kwargs)
            return Response(
                refusal.body,
                status=refusal.status,
                headers=refusal.headers,
                mimetype=refusal.media_type,
            )

        _GUARDS.add(wrapper)
        return wrapper  # type: ignore[return-value]  # same signature, by functools.wraps

    return decorate


def _unguarded_endpoints(app: Quart) -> list[str]:
    """Endpoints of `app` routed to a view `requires_bastion_quart` wrapped, whose
    guard no route of `app` reaches: the decorator was applied after the route was
    registered. (A view guarded on one route and served bare on another, on purpose,
    has its guard routed.)"""
    chains = {endpoint: _unwrapped(view) for endpoint, view in app.view_functions.items()}
    routed_guards = {f for chain in chains.values() for f in chain if f in _GUARDS}
    covered = {id(f) for guard in routed_guards for f in _unwrapped(guard)}
    return sorted(
        endpoint
        for endpoint, chain in chains.items()
        if any(f in _GUARDED_VIEWS and id(f) not in covered for f in chain)
    )


async def _refuse_unguarded_routes() -> None:
    unguarded = _unguarded_endpoints(current_app)
    if unguarded:
        raise ConfigurationError(
            f"quart endpoint {unguarded[0]!r} serves its view without its "
            f"@requires_bastion_quart guard: write the decorator below @app.route"
        )


def use_bastion_sessions(app: Quart) -> ASGIApp:
    """Install Bastion's sessions in `app`; returns it typed as a plain ASGI app.

    The app also refuses to start serving while a route reaches a view decorated with
    `requires_bastion_quart` without the decorator's guard (module doc).

    (Quart types its ASGI entry point with precise TypedDicts, which a generic ASGI
    middleware such as `Shield` cannot name; at run time it is the same callable.)
    """
    # Quart annotates the attribute with the type of its default interface.
    app.session_interface = BastionSessionInterface()  # type: ignore[assignment]
    app.before_serving(_refuse_unguarded_routes)
    return cast(ASGIApp, app)
