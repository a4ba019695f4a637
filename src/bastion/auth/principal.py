"""The principal: who the authentication layer decided is calling.

One frozen value, `Principal`, is stored in `scope["bastion"].principal`; the
authorization layer, the endpoint decorator and the FastAPI dependencies all read
that one value, so infrastructure and application policy can never disagree about
who the caller is. For Starlette compatibility the layer also sets `scope["user"]`
(`is_authenticated`, `display_name`, `identity`) and `scope["auth"]` (`scopes`), the
shapes `starlette.authentication.requires` reads.

Not covered: where roles come from. JWT roles come from a claim the issuer signed,
API key roles and scopes from the key's stored record, session roles from what the
application stored in the session at login.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from bastion.context import SCOPE_KEY, get_context
from bastion.types import Scope

Source = Literal["jwt", "apikey", "session"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `identity` is the subject (`sub`, key owner, user id)."""

    identity: str
    source: Source
    roles: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)

    def has_any_role(self, roles: Iterable[str]) -> bool:
        return not self.roles.isdisjoint(roles)

    def has_scopes(self, scopes: Iterable[str]) -> bool:
        return self.scopes.issuperset(scopes)


class AuthenticatedUser:
    """`scope["user"]` for an authenticated caller (Starlette's `BaseUser` shape)."""

    __slots__ = ("principal",)

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.principal.identity

    @property
    def identity(self) -> str:
        return self.principal.identity


class AnonymousUser:
    """`scope["user"]` when no credentials were presented."""

    __slots__ = ()
    principal: Principal | None = None

    @property
    def is_authenticated(self) -> bool:
        return False

    @property
    def display_name(self) -> str:
        return ""

    @property
    def identity(self) -> str:
        return ""


_NO_SCOPES: Final[tuple[str, ...]] = ()


class AuthCredentials:
    """`scope["auth"]` (Starlette's `AuthCredentials` shape): the granted scopes."""

    __slots__ = ("scopes",)

    def __init__(self, scopes: Iterable[str] = _NO_SCOPES) -> None:
        # A new empty list for the anonymous caller (every request without
        # credentials), as `sorted(())` gives, without the call.
        self.scopes: list[str] = [] if scopes is _NO_SCOPES else sorted(scopes)


ANONYMOUS: Final = AnonymousUser()


def set_principal(scope: Scope, principal: Principal | None) -> None:
    """Record the caller in every place frameworks look for it."""
    (scope.get(SCOPE_KEY) or get_context(scope)).principal = principal
    if principal is None:
        scope["user"] = ANONYMOUS  # stateless: one for every request
        scope["auth"] = AuthCredentials()
    else:
        scope["user"] = AuthenticatedUser(principal)
        scope["auth"] = AuthCredentials(principal.scopes)


def get_principal(scope: Scope) -> Principal | None:
    """The caller the authentication layer resolved, or None (anonymous)."""
    principal = (scope.get(SCOPE_KEY) or get_context(scope)).principal
    return principal if isinstance(principal, Principal) else None
