"""One socket, one caller: the route policy's rules hold for the caller the socket runs as.

Gap (2713e30, 5fea1a4; medium): a handshake carrying both a credential the
authentication layer reads (an `Authorization` bearer, a session cookie) and one the
WebSocket guard reads (a `?ticket=`, a bearer in `Sec-WebSocket-Protocol`) was decided
by the route policy on the authentication layer's caller, and nothing was handed to
the guard; the guard then verified its own credential and made *that* caller the
socket's principal, never checked against the policy. An attacker whose own token
met the route, holding a victim's narrow token, got a socket running as the victim
on a route the victim cannot open; a cookie for alice (an admin) carried a ticket of
bob into a `roles:admin` socket. The same swap happened with an `Authorization`
bearer beside a session cookie of another user: the guard made the cookie's user the
socket's principal.

Now the policy hands its rules to the guard whenever the guard will authenticate the
handshake itself, whatever they say of the authentication layer's caller, and the
guard decides them on the caller it settles on. And a handshake whose credentials
name two users is refused (`credential-mismatch`): trust neither, as two
`Authorization` lines are refused, since the app would see one caller in
`scope["user"]` and Bastion's context would name the other. Credentials of one user
still open the socket, held to the rules through the guard's credential (a ticket's
roles are its session's at issue, a bearer's its claims).

Everything runs through `Shield` on its memory store, with real ASGI calls: logins and
tickets are HTTP requests (httpx over ASGI). Browser sockets come from the allowed
page origin with the session cookie; native ones send `Authorization` and no Origin.
"""

from __future__ import annotations

from typing import Any

import pytest

from bastion.auth import policy as P
from bastion.auth.principal import Principal
from bastion.context import get_context
from bastion.events import KIND_AUTHN_FAIL
from bastion.shield import Shield
from bastion.types import Receive, Scope, Send
from bastion.websocket import reasons as r
from tests.conftest import RecordingSink, asgi_client
from tests.websocket.test_middleware import ws_scope
from tests.websocket.test_policy_deferral import (
    GUARD,
    PAGE,
    POLICY,
    app,
    blocked,
    first_answer,
    guard_of,
    only_blocked,
    shield,
    ticket_of,
    token,
)

pytestmark = pytest.mark.anyio

ADMIN_PAGES = {"GET /admin/*": "roles:admin"}
WRITE = {"GET /api/*": "scopes:write:x"}


async def session_cookie(target: Shield, user: str, roles: str) -> bytes:
    """The `Cookie` line of a browser signed in as `user` with those session roles."""
    async with asgi_client(target) as client:
        assert (await client.get(f"/login?user={user}&roles={roles}")).status_code == 200
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items()).encode()


def browser_socket(path: str, cookie: bytes, ticket: str | None = None) -> Scope:
    """A socket from the app's own page: allowed origin, the session cookie."""
    query = b"ticket=" + ticket.encode() if ticket is not None else b""
    scope = ws_scope(path=path, origin=PAGE, query=query)
    scope["headers"].append((b"cookie", cookie))
    return scope


def native_socket(path: str, authorization: str, subprotocol_bearer: str | None) -> Scope:
    """A socket from a native client: `Authorization`, a bearer subprotocol, no Origin."""
    scope = ws_scope(path=path, origin=None)
    scope["headers"].append((b"authorization", b"Bearer " + authorization.encode()))
    if subprotocol_bearer is not None:
        scope["subprotocols"] = ["bearer", subprotocol_bearer]
    return scope


def recording(target: Shield) -> list[object]:
    """The principal each socket the app serves runs as (the context's)."""
    seen: list[object] = []

    async def spy(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            seen.append(get_context(scope).principal)
        await app(scope, receive, send)

    guard_of(target).app = spy
    return seen


# (routes, cookie user and roles, ticket user and roles, refusal, identity seen):
# the ticket's user fetches it in a session of their own, with those roles.
COOKIE_AND_TICKET = [
    pytest.param(
        ADMIN_PAGES,
        ("alice", "admin"),
        ("bob", "user"),
        (GUARD, r.REASON_CREDENTIAL_MISMATCH),
        None,
        id="policy-ws-cookie-plus-ticket-of-other-user",
    ),
    # The other way round: a cookie that cannot open the socket, a ticket that can.
    pytest.param(
        ADMIN_PAGES,
        ("bob", "user"),
        ("alice", "admin"),
        (GUARD, r.REASON_CREDENTIAL_MISMATCH),
        None,
        id="policy-ws-cookie-plus-admin-ticket-of-other-user",
    ),
    pytest.param(
        ADMIN_PAGES,
        ("alice", "admin"),
        ("alice", "admin"),
        None,
        "alice",
        id="policy-ws-cookie-plus-ticket-of-same-user-ok",
    ),
    # One user, but the ticket was issued from a session without the role: the socket
    # runs as the ticket's caller, so its roles decide (the cookie's would open it).
    pytest.param(
        ADMIN_PAGES,
        ("alice", "admin"),
        ("alice", "user"),
        (POLICY, P.REASON_MISSING_ROLE),
        None,
        id="policy-ws-cookie-plus-ticket-of-same-user-without-role",
    ),
    pytest.param(
        {"GET /app/*": "authenticated"},
        ("alice", ""),
        ("alice", ""),
        None,
        "alice",
        id="policy-ws-cookie-plus-ticket-under-authenticated-rule-ok",
    ),
]


@pytest.mark.parametrize(
    ("routes", "cookie_of", "ticket_of_", "refusal", "seen_as"), COOKIE_AND_TICKET
)
async def test_a_cookie_and_a_ticket(
    sink: RecordingSink,
    routes: dict[str, str],
    cookie_of: tuple[str, str],
    ticket_of_: tuple[str, str],
    refusal: tuple[str, str] | None,
    seen_as: str | None,
) -> None:
    target = shield(sink, routes)
    seen = recording(target)
    ticket = await ticket_of(target, *ticket_of_)
    cookie = await session_cookie(target, *cookie_of)
    path = "/admin/live" if routes is ADMIN_PAGES else "/app/live"
    answer = await first_answer(target, browser_socket(path, cookie, ticket))
    if refusal is None:
        assert answer["type"] == "websocket.accept"
        assert blocked(sink) == []
        assert [getattr(each, "identity", None) for each in seen] == [seen_as]
        return
    assert answer == {"type": "websocket.close", "code": 1008}
    assert blocked(sink) == [refusal]
    assert seen == []


# (routes, Authorization claims, subprotocol bearer claims, refusal): a native
# client's two bearers.
TWO_BEARERS = [
    pytest.param(
        ADMIN_PAGES,
        {"sub": "alice", "jti": "h-1"},
        {"sub": "bob", "jti": "s-1", "roles": ["user"]},
        (GUARD, r.REASON_CREDENTIAL_MISMATCH),
        id="policy-ws-authorization-plus-subprotocol-bearer-of-other-user",
    ),
    # The attacker's own token meets the route; the victim's, which they hold, does not.
    pytest.param(
        WRITE,
        {"sub": "mallory", "jti": "h-2", "roles": [], "scope": "write:x"},
        {"sub": "victim", "jti": "s-2", "roles": [], "scope": "read:x"},
        (GUARD, r.REASON_CREDENTIAL_MISMATCH),
        id="policy-ws-own-token-plus-victim-narrow-token",
    ),
    # One user's two tokens: the subprotocol bearer is the socket's, and its scopes decide.
    pytest.param(
        WRITE,
        {"sub": "alice", "jti": "h-3", "scope": "write:x"},
        {"sub": "alice", "jti": "s-3", "scope": "read:x"},
        (POLICY, P.REASON_MISSING_SCOPE),
        id="policy-ws-own-token-plus-own-narrow-subprotocol-token",
    ),
    pytest.param(
        WRITE,
        {"sub": "alice", "jti": "h-4", "scope": "write:x"},
        {"sub": "alice", "jti": "s-4", "scope": "write:x"},
        None,
        id="policy-ws-authorization-plus-subprotocol-bearer-of-same-user-ok",
    ),
    pytest.param(
        ADMIN_PAGES,
        {"sub": "alice", "jti": "h-5"},
        {"sub": "alice", "jti": "s-5"},
        None,
        id="policy-ws-authorization-plus-subprotocol-bearer-same-user-admin-ok",
    ),
]


@pytest.mark.parametrize(("routes", "header", "subprotocol", "refusal"), TWO_BEARERS)
async def test_an_authorization_bearer_and_a_subprotocol_bearer(
    sink: RecordingSink,
    routes: dict[str, str],
    header: dict[str, Any],
    subprotocol: dict[str, Any],
    refusal: tuple[str, str] | None,
) -> None:
    target = shield(sink, routes)
    seen = recording(target)
    path = "/admin/live" if routes is ADMIN_PAGES else "/api/live"
    scope = native_socket(path, token(**header), token(**subprotocol))
    answer = await first_answer(target, scope)
    if refusal is None:
        assert answer == {"type": "websocket.accept", "subprotocol": "bearer"}
        assert blocked(sink) == []
        (principal,) = seen
        assert isinstance(principal, Principal)
        assert principal.identity == subprotocol["sub"]
        return
    assert answer == {"type": "websocket.close", "code": 1008}
    assert blocked(sink) == [refusal]
    assert seen == []


@pytest.mark.parametrize(
    ("cookie_user", "refusal"),
    [
        # Without a ticket or subprotocol bearer, the guard made the cookie's user the
        # socket's caller, though the policy had checked the `Authorization` one.
        pytest.param(
            "bob",
            (GUARD, r.REASON_CREDENTIAL_MISMATCH),
            id="policy-ws-authorization-plus-cookie-of-other-user",
        ),
        pytest.param("alice", None, id="policy-ws-authorization-plus-cookie-of-same-user-ok"),
    ],
)
async def test_an_authorization_bearer_and_a_session_cookie(
    sink: RecordingSink, cookie_user: str, refusal: tuple[str, str] | None
) -> None:
    target = shield(sink, ADMIN_PAGES)
    seen = recording(target)
    cookie = await session_cookie(target, cookie_user, "user")
    scope = browser_socket("/admin/live", cookie)
    scope["headers"].append((b"authorization", b"Bearer " + token(jti="h-6").encode()))
    answer = await first_answer(target, scope)
    if refusal is None:
        assert answer["type"] == "websocket.accept"
        assert blocked(sink) == []
        # The authentication layer's caller (the admin token), as the policy checked.
        assert [getattr(each, "identity", None) for each in seen] == ["alice"]
        return
    assert answer == {"type": "websocket.close", "code": 1008}
    assert blocked(sink) == [refusal]
    record = only_blocked(sink)
    assert (record["kind"], record["status"]) == (KIND_AUTHN_FAIL, 403)
    assert seen == []


async def test_a_mismatch_refusal_is_generic(sink: RecordingSink) -> None:
    """With the denial-response extension: the guard's plain 403, naming neither user."""
    target = shield(sink, ADMIN_PAGES)
    scope = native_socket(
        "/admin/live", token(jti="h-7"), token(sub="bob", jti="s-7", roles=["user"])
    )
    scope["extensions"] = {"websocket.http.response": {}}
    answer = await first_answer(target, scope)
    assert answer["type"] == "websocket.http.response.start"
    assert answer["status"] == 403
    assert not [name for name, _ in answer["headers"] if name == b"www-authenticate"]
    assert blocked(sink) == [(GUARD, r.REASON_CREDENTIAL_MISMATCH)]
