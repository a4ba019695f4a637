"""Quart: make `quart.session` Bastion's server-side session.

Quart keeps its own session (a signed cookie holding the data). With
`use_bastion_sessions(app)`, Quart's `session` proxy is the `bastion.sessions.Session`
that Bastion's session layer loaded for the request, so data lives in Bastion's store
and `login()`, `rotate()` and `logout()` work as everywhere else. Quart's own saving
is turned off: Bastion saves the session when the response starts.

    app = Quart(__name__)
    asgi = Shield(use_bastion_sessions(app), settings)
"""

from __future__ import annotations

from typing import Any, cast

from quart import Quart
from quart.sessions import SessionInterface, SessionMixin

from bastion.sessions import Session
from bastion.types import ASGIApp


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


def use_bastion_sessions(app: Quart) -> ASGIApp:
    """Install Bastion's sessions in `app`; returns it typed as a plain ASGI app.

    (Quart types its ASGI entry point with precise TypedDicts, which a generic ASGI
    middleware such as `Shield` cannot name; at run time it is the same callable.)
    """
    # Quart annotates the attribute with the type of its default interface.
    app.session_interface = BastionSessionInterface()  # type: ignore[assignment]
    return cast(ASGIApp, app)
