"""The route policy's handshake rules for sockets that only the guard authenticates.

Regression (0b43c76): the policy applies the `GET` rule for a path to the socket's
handshake, and runs before the WebSocket guard; a socket that authenticates with a
`?ticket=` or a bearer token in `Sec-WebSocket-Protocol` is anonymous there, so an
ordinary page rule (`"GET /app/*": "authenticated"`) refused a valid ticket socket
at `/app/live` before the ticket was read. Now the policy hands such a refusal to
the guard, which decides the same rules against the principal it establishes: the
socket opens when that principal meets them, and is refused exactly as the policy
refuses (close 1008 or the denial response, `authz_fail`, the policy's reason)
when it does not. A credential the guard refuses never opens a socket.

Everything runs through `Shield` (sessions, authentication, policy, guard) on its
memory store, with real ASGI calls: the logins and tickets are HTTP requests
(httpx over ASGI), the sockets come from a page on another origin that sends no
cookie, the case tickets exist for. `Shield` gives the guard the authentication
layer's own JWT verifier for a bearer offered in `Sec-WebSocket-Protocol`, so the
bearer cases are the stack as users get it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bastion.auth import policy as P
from bastion.events import KIND_AUTHN_FAIL, KIND_AUTHZ_FAIL, EventEmitter
from bastion.sessions import Session
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from bastion.websocket import WebSocketGuardMiddleware, WebSocketTickets, issue_ticket
from bastion.websocket import reasons as r
from tests.auth.harness import claims, jwt_settings, sign
from tests.conftest import RecordingSink, asgi_client
from tests.websocket.test_middleware import WAIT_SECONDS, Client, connected, echo_app, ws_scope

pytestmark = pytest.mark.anyio

SECRET_KEYS = ["policy-deferral-test-key-not-for-production-0123456789"]
PAGE = b"https://app.example"  # a page on another origin: no cookie reaches the socket


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo sockets; HTTP: `GET /login?user=NAME&roles=a,b` (signs in, with those
    session roles), `GET /ticket` (a ticket for the signed-in user), `GET
    /ticket-for?user=NAME` (a ticket the app mints for another user)."""
    if scope["type"] == "websocket":
        await echo_app(scope, receive, send)
        return
    if scope["type"] != "http":
        return
    session = scope["session"]
    assert isinstance(session, Session)
    query = dict(
        part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part
    )
    if scope["path"] == "/login":
        session.login(query["user"])
        if query.get("roles"):
            session["roles"] = query["roles"].split(",")
        await _answer(send, 200, b"ok")
    elif scope["path"] == "/ticket" and session.user_id is not None:
        await _answer(send, 200, issue_ticket(scope, session.user_id).encode())
    elif scope["path"] == "/ticket-for" and session.user_id is not None:
        await _answer(send, 200, issue_ticket(scope, query["user"]).encode())
    else:
        await _answer(send, 404, b"no")


def shield(
    sink: RecordingSink,
    policy_routes: dict[str, str],
    *,
    deny_by_default: bool = False,
    **websocket: Any,
) -> Shield:
    settings = Settings.model_validate(
        {
            "mode": "development",
            "secret_keys": SECRET_KEYS,
            "transport": {"allowed_hosts": ["testserver"]},
            "auth": {"jwt": jwt_settings()},
            "policy": {"routes": policy_routes, "deny_by_default": deny_by_default},
            "websocket": {"allowed_origins": ["https://app.example"], **websocket},
        }
    )
    return Shield(app, settings, events=EventEmitter([sink]))


async def ticket_of(target: ASGIApp, user: str, roles: str = "", path: str = "/ticket") -> str:
    """A ticket fetched by a signed-in user over HTTP, as a page would."""
    async with asgi_client(target) as client:
        assert (await client.get(f"/login?user={user}&roles={roles}")).status_code == 200
        answer = await client.get(path)
    assert answer.status_code == 200, answer.text
    return answer.text


def socket(path: str, ticket: str) -> Scope:
    return ws_scope(path=path, origin=PAGE, query=b"ticket=" + ticket.encode())


async def first_answer(target: ASGIApp, scope: Scope) -> Message:
    """The first message of the handshake: the accept, or the refusal (after which
    the client leaves)."""
    client = Client(target, scope)
    client.start()
    first = await client.next()
    if first["type"] == "websocket.accept":
        await client.finish()
    else:
        assert client.task is not None
        async with asyncio.timeout(WAIT_SECONDS):
            await client.task
    return first


def blocked(sink: RecordingSink) -> list[tuple[str, str]]:
    """The refusals that were enforced: (layer, reason)."""
    return [
        (str(rec["layer"]), str(rec["reason"]))
        for rec in sink.records
        if rec["action"] == "blocked"
    ]


def only_blocked(sink: RecordingSink) -> dict[str, object]:
    (record,) = [rec for rec in sink.records if rec["action"] == "blocked"]
    return record


AUTHENTICATED = {"GET /app/*": "authenticated"}
ADMIN_PAGES = {"GET /admin/*": "roles:admin"}
POLICY = "authorization"
GUARD = "websocket"

# (routes, socket path, user who fetches the ticket, their session roles, refusal):
# the refusal as (layer, reason), or None when the socket must open.
TICKET_CASES = [
    pytest.param(
        AUTHENTICATED,
        "/app/live",
        "bob",
        "",
        None,
        id="policy-ws-ticket-under-get-authenticated-rule-ok",
    ),
    pytest.param(
        ADMIN_PAGES,
        "/admin/live",
        "bob",
        "user",
        (POLICY, P.REASON_MISSING_ROLE),
        id="policy-ws-ticket-under-get-roles-rule",
    ),
    pytest.param(
        ADMIN_PAGES,
        "/admin/live",
        "alice",
        "admin,user",
        None,
        id="policy-ws-ticket-under-get-roles-rule-ok",
    ),
    pytest.param(
        ADMIN_PAGES,
        "/admin/live",
        "bob",
        "",
        (POLICY, P.REASON_MISSING_ROLE),
        id="policy-ws-ticket-under-get-roles-rule-no-roles",
    ),
    pytest.param(
        {"WEBSOCKET /admin/live": "roles:admin"},
        "/admin/live",
        "bob",
        "user",
        (POLICY, P.REASON_MISSING_ROLE),
        id="policy-ws-ticket-under-websocket-roles-rule",
    ),
    pytest.param(
        {"WEBSOCKET /admin/live": "roles:admin"},
        "/admin/live",
        "alice",
        "admin",
        None,
        id="policy-ws-ticket-under-websocket-roles-rule-ok",
    ),
    # Deferred, both rules still hold: the page rule and the socket's own.
    pytest.param(
        {"GET /app/*": "authenticated", "/app/*": "roles:admin"},
        "/app/live",
        "bob",
        "user",
        (POLICY, P.REASON_MISSING_ROLE),
        id="policy-ws-ticket-deferred-socket-rule-still-holds",
    ),
    pytest.param(
        {"GET /app/*": "authenticated", "/app/*": "roles:admin"},
        "/app/live",
        "alice",
        "admin",
        None,
        id="policy-ws-ticket-deferred-socket-rule-still-holds-ok",
    ),
    # A scopes rule: a ticket's user has roles from its session, never scopes.
    pytest.param(
        {"GET /app/*": "scopes:read:x"},
        "/app/live",
        "alice",
        "admin",
        (POLICY, P.REASON_MISSING_SCOPE),
        id="policy-ws-ticket-under-get-scopes-rule",
    ),
]


@pytest.mark.parametrize(("routes", "path", "user", "roles", "refusal"), TICKET_CASES)
async def test_a_ticket_socket_meets_the_policy_rules(
    sink: RecordingSink,
    routes: dict[str, str],
    path: str,
    user: str,
    roles: str,
    refusal: tuple[str, str] | None,
) -> None:
    target = shield(sink, routes)
    ticket = await ticket_of(target, user, roles)
    if refusal is None:
        async with connected(target, socket(path, ticket)) as client:
            await client.say('"hi"')
            assert (await client.next())["text"] == '"hi"'
        assert blocked(sink) == []
        return
    assert await first_answer(target, socket(path, ticket)) == {
        "type": "websocket.close",
        "code": 1008,
    }
    assert blocked(sink) == [refusal]
    record = only_blocked(sink)
    # Refused as the policy refuses a caller it knows: 403, naming the ticket's user.
    assert (record["kind"], record["status"], record["principal"]) == (KIND_AUTHZ_FAIL, 403, user)


async def test_a_ticket_minted_for_another_user_carries_no_roles(sink: RecordingSink) -> None:
    """policy-ws-ticket-for-another-user-no-roles: an app that mints a ticket for
    another user (support tooling, "act as") from an admin's session gives that user
    the admin's session binding, never the admin's roles."""
    target = shield(sink, ADMIN_PAGES)
    ticket = await ticket_of(target, "alice", "admin", path="/ticket-for?user=carol")
    answer = await first_answer(target, socket("/admin/live", ticket))
    assert answer == {"type": "websocket.close", "code": 1008}
    assert blocked(sink) == [(POLICY, P.REASON_MISSING_ROLE)]


def forged_ticket() -> str:
    """A ticket signed with a key the server does not hold."""
    return WebSocketTickets(["k" * 43], max_age_seconds=30).issue("alice")


# (routes, guard settings, ticket, refusals): a credential the guard refuses never
# opens the socket, whatever the guard's own route says and in monitor-only mode.
BOGUS_CASES = [
    pytest.param(
        AUTHENTICATED,
        {},
        "forged",
        [(GUARD, r.REASON_TICKET_INVALID)],
        id="policy-ws-bogus-ticket-under-get-rule",
    ),
    pytest.param(
        AUTHENTICATED,
        {},
        "junk",
        [(GUARD, r.REASON_TICKET_INVALID)],
        id="policy-ws-junk-ticket-under-get-rule",
    ),
    pytest.param(
        AUTHENTICATED,
        {},
        "two",
        [(GUARD, r.REASON_TICKET_INVALID)],
        id="policy-ws-two-tickets-under-get-rule",
    ),
    pytest.param(
        AUTHENTICATED,
        {"routes": {"/app/*": "public"}},
        "forged",
        [(GUARD, r.REASON_TICKET_INVALID)],
        id="policy-ws-bogus-ticket-guard-route-public",
    ),
    # The guard only reports its refusal: the deferred rule refuses the anonymous
    # caller as the policy would have.
    pytest.param(
        AUTHENTICATED,
        {"monitor_only": True},
        "forged",
        [(POLICY, P.REASON_UNAUTHENTICATED)],
        id="policy-ws-bogus-ticket-guard-monitor-only",
    ),
    pytest.param(
        AUTHENTICATED,
        {"monitor_only": True, "routes": {"/app/*": "public"}},
        "forged",
        [(POLICY, P.REASON_UNAUTHENTICATED)],
        id="policy-ws-bogus-ticket-guard-monitor-only-route-public",
    ),
    pytest.param(
        ADMIN_PAGES,
        {"routes": {"/admin/*": "public"}},
        "bob",
        [(POLICY, P.REASON_MISSING_ROLE)],
        id="policy-ws-ticket-guard-route-public-roles-rule",
    ),
    pytest.param(
        ADMIN_PAGES,
        {"monitor_only": True},
        "bob",
        [(POLICY, P.REASON_MISSING_ROLE)],
        id="policy-ws-ticket-guard-monitor-only-roles-rule",
    ),
]


@pytest.mark.parametrize(("routes", "guard_settings", "kind", "refusals"), BOGUS_CASES)
async def test_a_refused_or_insufficient_ticket_never_opens_the_socket(
    sink: RecordingSink,
    routes: dict[str, str],
    guard_settings: dict[str, Any],
    kind: str,
    refusals: list[tuple[str, str]],
) -> None:
    target = shield(sink, routes, **guard_settings)
    path = "/admin/live" if routes is ADMIN_PAGES else "/app/live"
    if kind == "bob":
        query = b"ticket=" + (await ticket_of(target, "bob", "user")).encode()
    elif kind == "forged":
        query = b"ticket=" + forged_ticket().encode()
    elif kind == "junk":
        query = b"ticket=not-a-ticket"
    else:  # two tickets, each valid: which one would a framework read?
        first, second = await ticket_of(target, "bob"), await ticket_of(target, "bob")
        query = f"ticket={first}&ticket={second}".encode()
    scope = ws_scope(path=path, origin=PAGE, query=query)
    assert await first_answer(target, scope) == {"type": "websocket.close", "code": 1008}
    assert blocked(sink) == refusals


async def test_a_ticket_opens_one_socket_only(sink: RecordingSink) -> None:
    """policy-ws-replayed-ticket-under-get-rule: the deferred rule does not spare the
    ticket's single use."""
    target = shield(sink, AUTHENTICATED)
    ticket = await ticket_of(target, "bob")
    async with connected(target, socket("/app/live", ticket)):
        pass
    answer = await first_answer(target, socket("/app/live", ticket))
    assert answer == {"type": "websocket.close", "code": 1008}
    assert blocked(sink) == [(GUARD, r.REASON_TICKET_REUSED)]
    assert only_blocked(sink)["kind"] == KIND_AUTHN_FAIL


@pytest.mark.parametrize(
    ("path", "refusal"),
    [
        pytest.param("/app/live", None, id="policy-ws-ticket-deny-by-default-listed-ok"),
        # No principal can meet deny-by-default: refused at the policy, not deferred.
        pytest.param(
            "/elsewhere",
            (POLICY, P.REASON_DENY_BY_DEFAULT),
            id="policy-ws-ticket-deny-by-default-unlisted",
        ),
    ],
)
async def test_deny_by_default(
    sink: RecordingSink, path: str, refusal: tuple[str, str] | None
) -> None:
    pages = {"GET /login": "public", "GET /ticket": "authenticated"}
    target = shield(sink, {**AUTHENTICATED, **pages}, deny_by_default=True)
    ticket = await ticket_of(target, "bob")
    answer = await first_answer(target, socket(path, ticket))
    if refusal is None:
        assert answer["type"] == "websocket.accept"
        assert blocked(sink) == []
    else:
        assert answer == {"type": "websocket.close", "code": 1008}
        assert blocked(sink) == [refusal]


async def test_no_credential_is_refused_by_the_policy_as_before(sink: RecordingSink) -> None:
    """policy-ws-no-credential-under-get-rule: nothing for the guard to read, nothing
    deferred: the policy refuses as it did."""
    target = shield(sink, AUTHENTICATED)
    answer = await first_answer(target, ws_scope(path="/app/live", origin=PAGE))
    assert answer == {"type": "websocket.close", "code": 1008}
    assert blocked(sink) == [(POLICY, P.REASON_UNAUTHENTICATED)]


# --- a bearer token in `Sec-WebSocket-Protocol` -----------------------------------------


def guard_of(target: Shield) -> WebSocketGuardMiddleware:
    layer: Any = target._stack
    while not isinstance(layer, WebSocketGuardMiddleware):
        layer = layer.app
    return layer


def token(**overrides: Any) -> str:
    """An access token valid now (signed when the test runs, never at collection):
    `Shield`'s authentication layer reads the real clock."""
    now = int(time.time())
    return sign(claims(iat=now - 10, exp=now + 300, **overrides), typ="at+jwt")


def bearer_socket(path: str, offered: str, *, denial_response: bool = False) -> Scope:
    scope = ws_scope(path=path, origin=None)  # a native client: no Origin, no cookie
    scope["subprotocols"] = ["bearer", offered]
    if denial_response:
        scope["extensions"] = {"websocket.http.response": {}}
    return scope


READ = {"GET /api/*": "scopes:read:x"}

BEARER_CASES = [
    pytest.param(READ, {"jti": "b-1"}, None, id="policy-ws-subprotocol-bearer-under-get-rule-ok"),
    pytest.param(
        READ,
        {"jti": "b-2", "scope": "write:x"},
        (POLICY, P.REASON_MISSING_SCOPE),
        id="policy-ws-subprotocol-bearer-under-get-rule-missing-scope",
    ),
    pytest.param(
        {"GET /api/*": "roles:admin"},
        {"jti": "b-3", "roles": ["user"]},
        (POLICY, P.REASON_MISSING_ROLE),
        id="policy-ws-subprotocol-bearer-under-get-rule-missing-role",
    ),
    pytest.param(
        {"GET /api/*": "roles:admin"},
        {"jti": "b-4"},
        None,
        id="policy-ws-subprotocol-bearer-under-get-roles-rule-ok",
    ),
    pytest.param(
        READ,
        {"jti": "b-5", "aud": "api://other"},
        (GUARD, r.REASON_BEARER_INVALID),
        id="policy-ws-subprotocol-bogus-bearer-under-get-rule",
    ),
    pytest.param(
        READ,
        {"jti": "b-7", "pad": "x" * 9000},
        (GUARD, r.REASON_BEARER_INVALID),
        id="policy-ws-subprotocol-oversized-bearer-under-get-rule",
    ),
    pytest.param({}, {"jti": "b-8"}, None, id="shield-ws-subprotocol-bearer-no-policy-rule-ok"),
]


@pytest.mark.parametrize(("routes", "token_claims", "refusal"), BEARER_CASES)
async def test_a_bearer_socket_meets_the_policy_rules(
    sink: RecordingSink,
    routes: dict[str, str],
    token_claims: dict[str, Any],
    refusal: tuple[str, str] | None,
) -> None:
    target = shield(sink, routes)
    answer = await first_answer(target, bearer_socket("/api/live", token(**token_claims)))
    if refusal is None:
        assert answer == {"type": "websocket.accept", "subprotocol": "bearer"}
        assert blocked(sink) == []
        return
    assert answer == {"type": "websocket.close", "code": 1008}
    assert blocked(sink) == [refusal]


async def test_a_deferred_refusal_answers_as_the_policy_does(sink: RecordingSink) -> None:
    """With the denial-response extension: the policy's 403 with its bearer challenge
    (RFC 6750 section 3.1, `insufficient_scope`), as for an `Authorization` bearer."""
    target = shield(sink, READ)
    scope = bearer_socket("/api/live", token(jti="b-6", scope="write:x"), denial_response=True)
    answer = await first_answer(target, scope)
    assert answer["type"] == "websocket.http.response.start"
    assert answer["status"] == 403
    assert (
        b"www-authenticate",
        b'Bearer realm="bastion", error="insufficient_scope"',
    ) in answer["headers"]
    assert blocked(sink) == [(POLICY, P.REASON_MISSING_SCOPE)]


async def test_a_verifier_that_returns_no_principal_grants_no_scope(sink: RecordingSink) -> None:
    """policy-ws-subprotocol-bearer-plain-verifier: a verifier returning its own object
    (a user name) authenticates the socket, and meets `authenticated`, but grants no
    role or scope."""
    target = shield(sink, {**READ, "GET /feed/*": "authenticated"})

    async def by_name(untrusted_token: str) -> object | None:
        return "carol" if untrusted_token == "token-for-carol-0123456789" else None

    guard_of(target).bearer_verifier = by_name
    feed = await first_answer(target, bearer_socket("/feed/live", "token-for-carol-0123456789"))
    assert feed["type"] == "websocket.accept"
    api = await first_answer(target, bearer_socket("/api/live", "token-for-carol-0123456789"))
    assert api == {"type": "websocket.close", "code": 1008}
    assert blocked(sink) == [(POLICY, P.REASON_MISSING_SCOPE)]


# --- what the guard reports it will authenticate --------------------------------------


@pytest.mark.parametrize(
    ("subprotocols", "query", "verifier", "keys", "expected"),
    [
        pytest.param([], b"", True, True, False, id="nothing-offered"),
        pytest.param([], b"room=1", True, True, False, id="other-parameters"),
        pytest.param([], b"ticket=x", True, True, True, id="ticket"),
        pytest.param([], b"%74icket=x", True, True, True, id="ticket-escaped-name"),
        pytest.param([], b"ticket=x", True, False, False, id="ticket-without-keys"),
        pytest.param(["bearer", "t"], b"", True, True, True, id="bearer"),
        pytest.param(["bearer", "t"], b"", False, True, False, id="bearer-without-verifier"),
        pytest.param(["bearer", "t"], b"ticket=x", False, True, False, id="bearer-decides"),
        pytest.param(["bearer"], b"ticket=x", True, True, False, id="bearer-malformed"),
        pytest.param(["chat"], b"", True, True, False, id="other-subprotocol"),
    ],
)
def test_will_authenticate(
    subprotocols: list[str], query: bytes, verifier: bool, keys: bool, expected: bool
) -> None:
    async def verify(untrusted_token: str) -> object | None:
        return None

    guard = WebSocketGuardMiddleware(
        echo_app,
        secret_keys=SECRET_KEYS if keys else None,
        bearer_verifier=verify if verifier else None,
    )
    scope = ws_scope(query=query)
    scope["subprotocols"] = subprotocols
    assert guard.will_authenticate(scope) is expected


async def test_the_app_never_sees_the_deferred_rules(sink: RecordingSink) -> None:
    seen: list[Scope] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await app(scope, receive, send)

    target = shield(sink, AUTHENTICATED)
    guard_of(target).app = recording
    async with connected(target, socket("/app/live", await ticket_of(target, "bob"))):
        pass
    websocket_scopes = [scope for scope in seen if scope["type"] == "websocket"]
    assert len(websocket_scopes) == 1
    assert not [key for key in websocket_scopes[0] if "deferred" in key]
