"""The seam between the bank and its protection: one small adapter per variant.

The bank's routes are written once. They ask a `Variant` who is calling, how to sign
a user in and out, which helpers templates get, and where to report a security
event; the two variants answer:

* `ProtectedVariant` (behind `Shield`): the caller is the principal Bastion's
  authentication layer resolved (session user or verified bearer JWT); signing in
  calls `Session.login`, which issues a new session id (the fixation defence), and
  stores the user's roles where the authentication layer reads them; signing out
  revokes the session server-side; templates get the masked CSRF token and the CSP
  nonce; events go to Bastion's emitter, which redacts them (e-mail addresses
  included) before any sink, the events page among them, sees them.
* `UnprotectedVariant`: the caller comes from the naive session or a bearer token
  checked for its signature only (`naive`); the same session id before and after
  login; `csrf_token()` renders nothing; events go nowhere.

Not covered: anything the routes themselves must get right in both variants
(object-level authorization, parameterised queries, sanitising notes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import jinja2
from starlette.requests import HTTPConnection

from bastion.auth.principal import Principal
from bastion.csrf import install_csrf_token
from bastion.demo.bank.db import User
from bastion.demo.bank.naive import SignatureOnlyBearer
from bastion.events import EventEmitter
from bastion.exceptions import ConfigurationError
from bastion.responses import Refuser
from bastion.sessions import Session
from bastion.templating import install_csp_nonce

Via = Literal["session", "token"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the routes need it."""

    name: str
    roles: frozenset[str]
    via: Via

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class Variant(Protocol):
    protected: bool

    def caller(self, conn: HTTPConnection) -> Caller | None: ...

    def sign_in(self, conn: HTTPConnection, user: User) -> None: ...

    def sign_out(self, conn: HTTPConnection) -> None: ...

    def install_template_globals(self, env: jinja2.Environment) -> None: ...

    def report(
        self, conn: HTTPConnection, *, kind: str, reason: str, status: int, details: dict[str, Any]
    ) -> None: ...


class ProtectedVariant:
    """The bank behind Bastion: identity, sessions, tokens and events are Bastion's."""

    protected = True

    def __init__(self, events: EventEmitter, *, roles_key: str) -> None:
        self.refuser = Refuser("bank", events)
        self.roles_key = roles_key

    def caller(self, conn: HTTPConnection) -> Caller | None:
        # The authentication layer's principal, as it left it in `scope["user"]`.
        principal = getattr(conn.scope.get("user"), "principal", None)
        if not isinstance(principal, Principal):
            return None
        via: Via = "session" if principal.source == "session" else "token"
        return Caller(principal.identity, principal.roles, via)

    def _session(self, conn: HTTPConnection) -> Session:
        session = conn.scope.get("session")
        if not isinstance(session, Session):
            raise ConfigurationError("the protected bank needs Bastion's session layer")
        return session

    def sign_in(self, conn: HTTPConnection, user: User) -> None:
        session = self._session(conn)
        session.login(user.username)  # a new session id: whatever id came before is dead
        session[self.roles_key] = [user.role]

    def sign_out(self, conn: HTTPConnection) -> None:
        self._session(conn).logout()

    def install_template_globals(self, env: jinja2.Environment) -> None:
        install_csrf_token(env)
        install_csp_nonce(env)

    def report(
        self, conn: HTTPConnection, *, kind: str, reason: str, status: int, details: dict[str, Any]
    ) -> None:
        self.refuser.event(conn.scope, kind=kind, reason=reason, status=status, details=details)


class UnprotectedVariant:
    """The same bank with no Bastion: the naive session and bearer check of `naive`."""

    protected = False

    def __init__(self, bearer: SignatureOnlyBearer) -> None:
        self.bearer = bearer

    def caller(self, conn: HTTPConnection) -> Caller | None:
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            claims = self.bearer.claims(token.strip())
            if claims is None or not isinstance(claims.get("sub"), str):
                return None
            roles = claims.get("roles")
            names = (
                frozenset(r for r in roles if isinstance(r, str))
                if isinstance(roles, list)
                else frozenset()
            )
            return Caller(claims["sub"], names, "token")
        session = conn.scope.get("session") or {}
        name = session.get("user")
        if not isinstance(name, str):
            return None
        return Caller(name, frozenset(session.get("roles", ())), "session")

    def sign_in(self, conn: HTTPConnection, user: User) -> None:
        session = conn.scope["session"]
        session["user"] = user.username  # same id as before login: session fixation
        session["roles"] = [user.role]

    def sign_out(self, conn: HTTPConnection) -> None:
        conn.scope["session"].clear()  # the id stays valid

    def install_template_globals(self, env: jinja2.Environment) -> None:
        env.globals["csrf_token"] = lambda: ""
        install_csp_nonce(env)  # renders "" without Bastion: there is no CSP to satisfy

    def report(
        self, conn: HTTPConnection, *, kind: str, reason: str, status: int, details: dict[str, Any]
    ) -> None:
        return  # no Bastion, no event stream
