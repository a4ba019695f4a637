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
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

from quart import Quart, Response, request
from quart.sessions import SessionInterface, SessionMixin

from bastion.auth.policy import Requirement, check_endpoint
from bastion.events import EventEmitter
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

        return wrapper  # type: ignore[return-value]  # same signature, by functools.wraps

    return decorate


def use_bastion_sessions(app: Quart) -> ASGIApp:
    """Install Bastion's sessions in `app`; returns it typed as a plain ASGI app.

    (Quart types its ASGI entry point with precise TypedDicts, which a generic ASGI
    middleware such as `Shield` cannot name; at run time it is the same callable.)
    """
    # Quart annotates the attribute with the type of its default interface.
    app.session_interface = BastionSessionInterface()  # type: ignore[assignment]
    return cast(ASGIApp, app)
