"""Route policy on WebSocket handshakes: a handshake is an HTTP GET (RFC 6455 section
4.1), so the rule a user wrote for `GET /ws` holds for the socket at `/ws`, a
`WEBSOCKET` rule governs when it is the most specific, and the rule a socket met
before (a `WEBSOCKET` or method-less pattern) still holds.

Real ASGI calls: hand-built `websocket` scopes (offering the denial-response extension,
as uvicorn and hypercorn do) through the authentication and authorization layers to a
raw, Starlette or FastAPI app; the HTTP requests on the same paths are unchanged.
"""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bastion.auth import AuthenticationMiddleware, AuthorizationMiddleware, PolicySettings
from bastion.auth import policy as P
from bastion.auth.policy import decide, decide_handshake
from bastion.auth.principal import Principal, set_principal
from bastion.events import EventEmitter
from bastion.responses import WS_POLICY_VIOLATION
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.auth.apps import FRAMEWORKS, call
from tests.auth.harness import auth_settings, claims, clock, sign
from tests.auth.test_policy_unlisted import ROUTE_SETS as UNLISTED_ROUTE_SETS
from tests.conftest import RecordingSink
from tests.core.test_routes_prefixes import PATHS
from tests.support.websocket import ACCEPTED, answer_status, first_message, handshake_scope

pytestmark = pytest.mark.anyio

ADMIN_ONLY = "roles:admin"
# Typed as access tokens (RFC 9068 `at+jwt`), which every JWT setting accepts.
TOKENS = {
    "anonymous": None,
    "user": sign(claims(roles=["user"], jti="token-user"), typ="at+jwt"),
    "admin": sign(claims(jti="token-admin"), typ="at+jwt"),
}


def make_socket_app(framework: str, hits: list[str]) -> ASGIApp:
    """An app serving `/ws` and `/ws/{room}` both as sockets and as HTTP pages; each
    accepted socket is recorded in `hits`."""

    async def page(request: Request) -> Response:
        return PlainTextResponse("page")

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        hits.append(websocket.url.path)
        await websocket.send_text("hello")
        await websocket.close()

    if framework == "starlette":
        return Starlette(
            routes=[
                Route("/ws", page, methods=["GET", "POST"]),
                Route("/ws/{room}", page, methods=["GET", "POST"]),
                WebSocketRoute("/ws", socket),
                WebSocketRoute("/ws/{room}", socket),
            ]
        )
    if framework == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()
        for path in ("/ws", "/ws/{room}"):
            app.add_api_route(path, page, methods=["GET", "POST"])
            app.add_api_websocket_route(path, socket)
        fastapi_app: ASGIApp = app
        return fastapi_app

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            hits.append(scope["path"])
            await send({"type": "websocket.send", "text": "hello"})
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"page"})

    return raw


async def handshake(
    app: ASGIApp,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    denial_response: bool = True,
    query: bytes = b"",
    subprotocols: list[str] | None = None,
) -> int:
    """Open a socket with a hand-built `websocket` scope: `ACCEPTED` when the app
    accepted it, else the refusal's HTTP status (the close code when the server offers
    no denial response)."""
    scope = handshake_scope(
        path,
        headers=headers or (),
        query=query,
        subprotocols=subprotocols or (),
        denial_response=denial_response,
    )
    return answer_status(await first_message(app, scope))[0]


def _stack(framework: str, routes: dict[str, str], deny: bool, sink: RecordingSink) -> ASGIApp:
    hits: list[str] = []
    events = EventEmitter([sink])
    policy = PolicySettings(routes=routes, deny_by_default=deny)
    app = AuthorizationMiddleware(make_socket_app(framework, hits), policy, events=events)
    return AuthenticationMiddleware(app, auth_settings(), events=events, clock=clock)


def _bearer(caller: str) -> list[tuple[bytes, bytes]]:
    token = TOKENS[caller]
    return [(b"authorization", f"Bearer {token}".encode())] if token else []


# (routes, path, caller, status, reason): the same answer with and without
# `deny_by_default`, since every path here is named by a rule.
CASES = [
    # A GET rule holds for the socket at its path: the handshake is a GET.
    pytest.param(
        {"GET /ws": ADMIN_ONLY},
        "/ws",
        "anonymous",
        401,
        P.REASON_UNAUTHENTICATED,
        id="policy-ws-under-get-rule",
    ),
    pytest.param(
        {"GET /ws": ADMIN_ONLY},
        "/ws",
        "user",
        403,
        P.REASON_MISSING_ROLE,
        id="policy-ws-under-get-rule-missing-role",
    ),
    pytest.param(
        {"GET /ws": ADMIN_ONLY}, "/ws", "admin", ACCEPTED, "", id="policy-ws-under-get-rule-ok"
    ),
    pytest.param(
        {"get /ws": ADMIN_ONLY},
        "/ws",
        "user",
        403,
        P.REASON_MISSING_ROLE,
        id="policy-ws-under-lowercase-get-rule",
    ),
    pytest.param(
        {"GET,HEAD /ws": ADMIN_ONLY},
        "/ws",
        "user",
        403,
        P.REASON_MISSING_ROLE,
        id="policy-ws-under-get-head-rule",
    ),
    pytest.param(
        {"GET /ws/*": ADMIN_ONLY},
        "/ws/lobby",
        "user",
        403,
        P.REASON_MISSING_ROLE,
        id="policy-ws-under-get-prefix-rule",
    ),
    pytest.param(
        {"GET /ws/{room}": ADMIN_ONLY},
        "/ws/lobby",
        "user",
        403,
        P.REASON_MISSING_ROLE,
        id="policy-ws-under-get-param-rule",
    ),
    pytest.param(
        {"GET /ws/{room}": ADMIN_ONLY},
        "/ws/lobby",
        "admin",
        ACCEPTED,
        "",
        id="policy-ws-under-get-param-rule-ok",
    ),
    # The route table's method wildcard is a pattern without methods (`* /ws` is
    # refused by the parser); `GET *` is the GET rule for every path.
    pytest.param(
        {"GET *": "authenticated"},
        "/ws",
        "anonymous",
        401,
        P.REASON_UNAUTHENTICATED,
        id="policy-ws-under-wildcard-rule",
    ),
    pytest.param(
        {"GET *": "authenticated"}, "/ws", "user", ACCEPTED, "", id="policy-ws-under-wildcard-ok"
    ),
    # An explicit allow-all default does not open a socket the GET rule protects.
    pytest.param(
        {"GET /ws": ADMIN_ONLY, "*": "public"},
        "/ws",
        "anonymous",
        401,
        P.REASON_UNAUTHENTICATED,
        id="policy-ws-under-get-rule-public-catch-all",
    ),
    pytest.param(
        {"GET /ws": ADMIN_ONLY, "/*": "authenticated"},
        "/ws",
        "user",
        403,
        P.REASON_MISSING_ROLE,
        id="policy-ws-under-get-rule-broader-socket-rule",
    ),
    # A GET rule more specific than the socket's WEBSOCKET rule also holds.
    pytest.param(
        {"WEBSOCKET /ws/*": "public", "GET /ws/{room}": ADMIN_ONLY},
        "/ws/lobby",
        "anonymous",
        401,
        P.REASON_UNAUTHENTICATED,
        id="policy-ws-get-rule-beats-broader-websocket-rule",
    ),
    # Never less strict: the rule the socket met before still holds.
    pytest.param(
        {"/ws": ADMIN_ONLY, "GET /ws": "authenticated"},
        "/ws",
        "user",
        403,
        P.REASON_MISSING_ROLE,
        id="policy-ws-socket-rule-still-holds",
    ),
    pytest.param(
        {"/ws": ADMIN_ONLY}, "/ws", "user", 403, P.REASON_MISSING_ROLE, id="policy-ws-any-method"
    ),
    # A WEBSOCKET rule at least as specific as the GET rule governs the socket alone.
    pytest.param(
        {"GET /ws": ADMIN_ONLY, "WEBSOCKET /ws": "public"},
        "/ws",
        "anonymous",
        ACCEPTED,
        "",
        id="policy-ws-websocket-rule-governs",
    ),
    pytest.param(
        {"GET /ws": ADMIN_ONLY, "WEBSOCKET /ws": "authenticated"},
        "/ws",
        "user",
        ACCEPTED,
        "",
        id="policy-ws-websocket-rule-governs-ok",
    ),
    pytest.param(
        {"GET /ws": ADMIN_ONLY, "WEBSOCKET /ws": "authenticated"},
        "/ws",
        "anonymous",
        401,
        P.REASON_UNAUTHENTICATED,
        id="policy-ws-websocket-rule-governs-anonymous",
    ),
]


@pytest.mark.parametrize("deny", [False, True], ids=["open-unlisted", "deny-by-default"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("routes", "path", "caller", "status", "reason"), CASES)
async def test_websocket_handshake_meets_the_get_rule(
    routes: dict[str, str],
    path: str,
    caller: str,
    status: int,
    reason: str,
    framework: str,
    deny: bool,
) -> None:
    sink = RecordingSink()
    app = _stack(framework, routes, deny, sink)
    assert await handshake(app, path, _bearer(caller)) == status
    assert sink.reasons() == ([reason] if reason else [])


@pytest.mark.parametrize(
    ("deny", "status", "reason"),
    [
        pytest.param(False, ACCEPTED, "", id="policy-ws-get-rule-other-path-open"),
        pytest.param(True, 401, P.REASON_DENY_BY_DEFAULT, id="policy-ws-get-rule-other-path-deny"),
    ],
)
async def test_websocket_on_a_path_no_rule_names(deny: bool, status: int, reason: str) -> None:
    """`GET /ws` names `/ws` only: `/ws/lobby` is unlisted, open or denied by default."""
    sink = RecordingSink()
    app = _stack("starlette", {"GET /ws": ADMIN_ONLY}, deny, sink)
    assert await handshake(app, "/ws/lobby") == status
    assert sink.reasons() == ([reason] if reason else [])


async def test_post_rule_does_not_govern_the_handshake() -> None:
    """Only a GET rule describes the handshake: a POST rule leaves the socket open."""
    sink = RecordingSink()
    app = _stack("starlette", {"POST /ws": ADMIN_ONLY}, False, sink)
    assert await handshake(app, "/ws") == ACCEPTED
    assert sink.reasons() == []


async def test_refused_without_denial_response_closes_with_policy_violation() -> None:
    sink = RecordingSink()
    app = _stack("raw", {"GET /ws": ADMIN_ONLY}, False, sink)
    assert await handshake(app, "/ws", denial_response=False) == WS_POLICY_VIOLATION
    assert sink.reasons() == [P.REASON_UNAUTHENTICATED]
    assert await handshake(app, "/ws", _bearer("admin"), denial_response=False) == ACCEPTED


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_http_requests_unchanged(framework: str) -> None:
    """The HTTP GET at the socket's path meets the GET rule as before; POST is unnamed."""
    sink = RecordingSink()
    app = _stack(framework, {"GET /ws": ADMIN_ONLY, "WEBSOCKET /ws": "public"}, False, sink)
    assert (await call(app, "/ws"))[0] == 401
    assert (await call(app, "/ws", _bearer("user")))[0] == 403
    assert (await call(app, "/ws", _bearer("admin")))[0] == 200
    assert (await call(app, "/ws", method="HEAD"))[0] == 401
    assert (await call(app, "/ws", method="POST"))[0] == 200
    unauthenticated, missing_role = P.REASON_UNAUTHENTICATED, P.REASON_MISSING_ROLE
    assert sink.reasons() == [unauthenticated, missing_role, unauthenticated]


ROUTE_SETS = [
    *UNLISTED_ROUTE_SETS,
    pytest.param({"GET /admin": ADMIN_ONLY, "/admin/*": "public"}, id="policy-ws-sets-get"),
    pytest.param(
        {"GET,HEAD /api/*": "authenticated", "WEBSOCKET /api/items": "public", "*": "public"},
        id="policy-ws-sets-websocket-and-get",
    ),
    pytest.param(
        {"/users/{id}": ADMIN_ONLY, "GET /users/{id}": "scopes:read:x", "POST *": ADMIN_ONLY},
        id="policy-ws-sets-get-over-any-method",
    ),
]
CALLERS = [
    pytest.param(None, id="policy-ws-sets-anonymous"),
    pytest.param(Principal("bob", "jwt", scopes=frozenset({"read:x"})), id="policy-ws-sets-jwt"),
    pytest.param(
        Principal("root", "session", roles=frozenset({"admin"})), id="policy-ws-sets-admin"
    ),
]


@pytest.mark.parametrize("deny", [False, True], ids=["open-unlisted", "deny-by-default"])
@pytest.mark.parametrize("principal", CALLERS)
@pytest.mark.parametrize("routes", ROUTE_SETS)
async def test_handshakes_decided_as_the_core_says(
    routes: dict[str, str], principal: Principal | None, deny: bool
) -> None:
    """Over the path tricks: the middleware (with its shortcut for unlisted paths)
    answers as `decide_handshake` on the two tables, and never less strictly than the
    rule the socket met before."""
    sink = RecordingSink()
    hits: list[str] = []
    policy = AuthorizationMiddleware(
        make_socket_app("raw", hits),
        PolicySettings(routes=routes, deny_by_default=deny),
        events=EventEmitter([sink]),
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        set_principal(scope, principal)  # as the authentication layer outside would
        await policy(scope, receive, send)

    for path in PATHS:
        if not path.startswith("/"):
            continue  # an ASGI path is absolute
        socket_rule = policy.table._find("WEBSOCKET", path)
        expected = decide_handshake(
            policy.handshake_table._find("WEBSOCKET", path), socket_rule, principal, deny=deny
        )
        del sink.records[:]
        assert await handshake(app, path) == (expected.status or ACCEPTED), path
        assert sink.reasons() == ([expected.reason] if expected.status else [])
        if socket_rule is not None and decide(socket_rule, principal, deny=deny).status:
            assert expected.status, path


# --- credentials only the WebSocket guard reads ------------------------------------------
#
# A `?ticket=` or a bearer offered in `Sec-WebSocket-Protocol` is anonymous here. The
# policy hands the rules it could not decide to a guard only when that guard will
# authenticate the socket: directly inside the policy, enabled, and able to verify
# the credential offered. Anywhere else the policy refuses as it always did (the
# cases with a guard that decides are in tests/websocket/test_policy_deferral.py).

TICKET_KEYS = ["policy-websocket-ticket-key-not-for-production-0123"]


async def _verify_nothing(untrusted_token: str) -> object | None:
    return None


class _Wrapper:
    """Another layer between the policy and the guard."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _inner(layout: str, hits: list[str], events: EventEmitter | None = None) -> ASGIApp:
    from bastion.websocket import WebSocketGuardMiddleware, WebSocketSettings

    socket_app = make_socket_app("raw", hits)
    if layout == "no-guard":
        return socket_app
    guard = WebSocketGuardMiddleware(
        socket_app,
        WebSocketSettings(enabled=layout != "guard-disabled"),
        secret_keys=None if layout == "guard-without-keys" else TICKET_KEYS,
        bearer_verifier=None if layout == "guard-without-verifier" else _verify_nothing,
        events=events,
    )
    return _Wrapper(guard) if layout == "guard-not-directly-inside" else guard


def _ticket() -> bytes:
    from bastion.websocket import WebSocketTickets

    return b"ticket=" + WebSocketTickets(TICKET_KEYS, max_age_seconds=30).issue("bob").encode()


@pytest.mark.parametrize(
    ("layout", "credential", "status"),
    [
        pytest.param("guard", "ticket", ACCEPTED, id="policy-ws-ticket-guard-inside-ok"),
        pytest.param("no-guard", "ticket", 401, id="policy-ws-ticket-no-guard"),
        pytest.param("no-guard", "bearer", 401, id="policy-ws-subprotocol-bearer-no-guard"),
        pytest.param("guard-disabled", "ticket", 401, id="policy-ws-ticket-guard-disabled"),
        pytest.param(
            "guard-not-directly-inside", "ticket", 401, id="policy-ws-ticket-guard-not-inside"
        ),
        pytest.param("guard-without-keys", "ticket", 401, id="policy-ws-ticket-guard-no-keys"),
        pytest.param(
            "guard-without-verifier", "bearer", 401, id="policy-ws-bearer-guard-no-verifier"
        ),
    ],
)
async def test_deferred_only_to_a_guard_that_authenticates(
    layout: str, credential: str, status: int
) -> None:
    sink = RecordingSink()
    hits: list[str] = []
    app = AuthorizationMiddleware(
        _inner(layout, hits),
        PolicySettings(routes={"GET /ws/*": "authenticated"}),
        events=EventEmitter([sink]),
    )
    if credential == "ticket":
        answer = await handshake(app, "/ws/lobby", query=_ticket())
    else:
        answer = await handshake(app, "/ws/lobby", subprotocols=["bearer", "token-0123456789"])
    assert answer == status
    if status == ACCEPTED:
        assert hits == ["/ws/lobby"]
        assert sink.reasons() == []
    else:
        assert hits == []
        assert sink.reasons() == [P.REASON_UNAUTHENTICATED]


# A credential the authentication layer reads (an `Authorization` bearer, here) beside
# one the guard reads: the socket runs as the guard's caller, so a guard inside is
# handed the rules whatever they say of the header's caller, and decides them on its
# own (a ticket of the same user, which carries no roles: it was bound to no session).
# Without a guard inside, the policy decides on the header's caller, as before; a
# ticket naming another user is the guard's refusal (`credential-mismatch`).


@pytest.mark.parametrize(
    ("layout", "caller", "ticket_user", "status", "reasons"),
    [
        pytest.param(
            "guard",
            "admin",
            "alice",
            403,
            [P.REASON_MISSING_ROLE],
            id="policy-ws-authorization-admin-plus-ticket-without-role",
        ),
        pytest.param(
            "guard",
            "admin",
            "bob",
            403,
            ["credential-mismatch"],
            id="policy-ws-authorization-plus-ticket-of-other-user",
        ),
        pytest.param(
            "guard",
            "user",
            "alice",
            403,
            [P.REASON_MISSING_ROLE],
            id="policy-ws-authorization-user-plus-ticket-without-role",
        ),
        pytest.param(
            "no-guard", "admin", "bob", ACCEPTED, [], id="policy-ws-authorization-no-guard-ok"
        ),
        pytest.param(
            "no-guard",
            "user",
            "bob",
            403,
            [P.REASON_MISSING_ROLE],
            id="policy-ws-authorization-no-guard-missing-role",
        ),
        # Nothing deferred, but the guard still refuses a second caller.
        pytest.param(
            "guard-not-directly-inside",
            "admin",
            "bob",
            403,
            ["credential-mismatch"],
            id="policy-ws-authorization-plus-ticket-of-other-user-guard-not-inside",
        ),
        pytest.param(
            "guard-not-directly-inside",
            "admin",
            "alice",
            ACCEPTED,
            [],
            id="policy-ws-authorization-plus-ticket-guard-not-inside-ok",
        ),
    ],
)
async def test_an_authorization_caller_beside_a_guard_credential(
    layout: str, caller: str, ticket_user: str, status: int, reasons: list[str]
) -> None:
    from bastion.websocket import WebSocketTickets

    sink = RecordingSink()
    hits: list[str] = []
    events = EventEmitter([sink])
    policy = AuthorizationMiddleware(
        _inner(layout, hits, events),
        PolicySettings(routes={"GET /ws/*": ADMIN_ONLY}),
        events=events,
    )
    app = AuthenticationMiddleware(policy, auth_settings(), events=events, clock=clock)
    ticket = WebSocketTickets(TICKET_KEYS, max_age_seconds=30).issue(ticket_user)
    answer = await handshake(app, "/ws/lobby", _bearer(caller), query=b"ticket=" + ticket.encode())
    assert answer == status
    assert sink.reasons() == reasons
    assert hits == (["/ws/lobby"] if status == ACCEPTED else [])
