"""More shapes of `scope["session"]` for the no-credential path of `enter`, which
reads `user_id` directly off Bastion's own `Session` (and through `getattr` off
anything else): each must leave what the general path leaves. And the anonymous
caller's `AuthCredentials` is a new, empty, sorted list per request, as
`AuthCredentials(())` makes, never one shared between requests."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.auth.middleware import AuthenticationMiddleware
from bastion.auth.principal import AuthCredentials, set_principal
from bastion.sessions import Session
from bastion.stages import Flow
from tests.auth.harness import auth_settings, clock
from tests.auth.test_no_credential import SETTINGS, logged_in, scope_with, seen


class MySession(Session):
    """An application's subclass, whose `user_id` is its own property."""

    @property
    def user_id(self) -> str | None:  # type: ignore[override]
        return "carol"


def user_set(value: object) -> Session:
    session = Session()
    session.user_id = value  # type: ignore[assignment]  # what an application may do
    return session


SHAPES = [
    pytest.param({"session": MySession()}, id="authn-none-session-subclass"),
    pytest.param({"session": user_set("")}, id="authn-none-session-empty-user"),
    pytest.param({"session": user_set(5)}, id="authn-none-session-user-not-a-string"),
    pytest.param({"session": user_set("dave")}, id="authn-none-session-user-set"),
    pytest.param({"session": logged_in("erin", [])}, id="authn-none-session-no-roles"),
    pytest.param({"session": Session(user_id="x")}, id="authn-none-session-data-only"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("overrides", SETTINGS)
@pytest.mark.parametrize("extra", SHAPES)
async def test_no_credential_shapes_as_the_general_path(
    extra: dict[str, Any], overrides: dict[str, Any]
) -> None:
    layer = AuthenticationMiddleware(
        lambda *a: None,  # type: ignore[arg-type]  # never called
        auth_settings(**overrides),
        clock=clock,
    )
    fast = scope_with(extra, [])
    assert layer.enter(Flow(fast, None, None)) is None  # type: ignore[arg-type]  # not used
    general = scope_with(extra, [])
    set_principal(general, (await layer.authenticate(general)).principal)
    assert seen(fast) == seen(general)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: (), id="credentials-empty-tuple"),
        pytest.param(list, id="credentials-empty-list"),
        pytest.param(frozenset, id="credentials-empty-set"),
        pytest.param(lambda: iter(()), id="credentials-empty-iterator"),
        pytest.param(lambda: ("b", "a"), id="credentials-sorted"),
        pytest.param(lambda: iter(["z", "y"]), id="credentials-iterator"),
    ],
)
def test_credentials_are_sorted_lists(make: Any) -> None:
    scopes = AuthCredentials(make()).scopes
    assert scopes == sorted(make())
    assert type(scopes) is list


def test_anonymous_credentials_are_never_shared() -> None:
    """`authn-anonymous-credentials-fresh`: an application that appends to the
    anonymous caller's scopes changes its own request only."""
    layer = AuthenticationMiddleware(
        lambda *a: None,  # type: ignore[arg-type]  # never called
        auth_settings(),
        clock=clock,
    )
    first = scope_with({}, [])
    assert layer.enter(Flow(first, None, None)) is None  # type: ignore[arg-type]  # not used
    first["auth"].scopes.append("admin")
    second = scope_with({}, [])
    assert layer.enter(Flow(second, None, None)) is None  # type: ignore[arg-type]  # not used
    assert second["auth"].scopes == []
    assert type(second["auth"].scopes) is list
    assert AuthCredentials().scopes == []
    assert AuthCredentials().scopes is not AuthCredentials().scopes
