"""A request that presents no credential is decided in `enter`, without awaiting:
the session's user, or anonymous. It must leave exactly what the general path
(`authenticate`, then `set_principal`) leaves: `scope["user"]`, `scope["auth"]` and
the context's principal, for every shape `scope["session"]` can take."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.auth.middleware import AuthenticationMiddleware
from bastion.auth.principal import set_principal
from bastion.context import get_context
from bastion.sessions import Session, SessionManager, SessionSettings
from bastion.stages import Flow
from bastion.stores import MemoryStore
from tests.auth.harness import auth_settings, clock


class UserOnly:
    """A session-like object that is not a dict (a framework's own)."""

    def __init__(self, user_id: object) -> None:
        self.user_id = user_id


def logged_in(user_id: str, roles: object = None) -> Session:
    session = SessionManager(MemoryStore(), SessionSettings(), secret_keys=["k"]).new_session()
    session.login(user_id)
    if roles is not None:
        session["roles"] = roles
    return session


SESSIONS = [
    pytest.param({}, id="authn-none-no-session"),
    pytest.param({"session": None}, id="authn-none-session-none"),
    pytest.param({"session": Session()}, id="authn-none-new-session"),
    pytest.param({"session": logged_in("alice")}, id="authn-none-session-user"),
    pytest.param(
        {"session": logged_in("alice", ["admin", 7, "ops"])}, id="authn-none-session-roles"
    ),
    pytest.param({"session": logged_in("alice", "admin")}, id="authn-none-roles-not-a-list"),
    pytest.param({"session": {"user_id": "mallory"}}, id="authn-none-plain-dict"),
    pytest.param({"session": UserOnly("bob")}, id="authn-none-not-a-dict"),
    pytest.param({"session": UserOnly("")}, id="authn-none-empty-user"),
    pytest.param({"session": UserOnly(42)}, id="authn-none-user-not-a-string"),
]
SETTINGS = [
    pytest.param({}, id="jwt-and-keys"),
    pytest.param({"session": False}, id="no-session-source"),
    pytest.param({"session_roles_key": "groups"}, id="other-roles-key"),
    pytest.param({"jwt": None, "api_keys": None}, id="session-only"),
]
HEADERS = [
    pytest.param([], id="no-headers"),
    pytest.param([(b"cookie", b"a=b"), (b"x-api-keyx", b"k")], id="other-headers"),
]


def scope_with(extra: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/", "headers": headers, **extra}


def seen(scope: dict[str, Any]) -> tuple[object, ...]:
    user, auth = scope["user"], scope["auth"]
    principal = get_context(scope).principal
    return (type(user), user.is_authenticated, user.identity, auth.scopes, principal)


@pytest.mark.anyio
@pytest.mark.parametrize("headers", HEADERS)
@pytest.mark.parametrize("overrides", SETTINGS)
@pytest.mark.parametrize("extra", SESSIONS)
async def test_no_credential_as_the_general_path(
    extra: dict[str, Any], overrides: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    layer = AuthenticationMiddleware(
        lambda *a: None,  # type: ignore[arg-type]  # never called
        auth_settings(**overrides),
        clock=clock,
    )
    fast = scope_with(extra, list(headers))
    assert layer.enter(Flow(fast, None, None)) is None  # type: ignore[arg-type]  # not used
    general = scope_with(extra, list(headers))
    set_principal(general, (await layer.authenticate(general)).principal)
    assert seen(fast) == seen(general)
    assert fast["auth"] is not general["auth"]  # one `AuthCredentials` per request
