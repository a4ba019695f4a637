"""The policy layer decides a path no rule can name without a lookup (when unlisted
paths are open): the same answers and events as the general path, `decide` on the
table's lookup, over the path tricks, for anonymous and authenticated callers."""

from __future__ import annotations

import pytest

from bastion.auth.policy import AuthorizationMiddleware, decide
from bastion.auth.principal import Principal, set_principal
from bastion.auth.settings import PolicySettings
from bastion.events import EventEmitter
from bastion.types import Receive, Scope, Send
from tests.auth.apps import call
from tests.conftest import RecordingSink
from tests.core.test_routes_prefixes import PATHS

pytestmark = pytest.mark.anyio

ROUTE_SETS = [
    pytest.param(
        {"/admin": "roles:admin", "/admin/*": "roles:admin", "/public": "public"},
        id="policy-unlisted-exact-and-prefix",
    ),
    pytest.param({"GET /api": "authenticated"}, id="policy-unlisted-method-exact"),
    pytest.param(
        {"/users/{id}": "scopes:read:x", "POST /items/{id}": "authenticated"},
        id="policy-unlisted-params",
    ),
    pytest.param({"*": "authenticated", "/login": "public"}, id="policy-unlisted-any"),
    pytest.param({}, id="policy-unlisted-no-rules"),
]
CALLERS = [
    pytest.param(None, id="policy-unlisted-anonymous"),
    pytest.param(Principal("bob", "jwt", scopes=frozenset({"read:x"})), id="policy-unlisted-jwt"),
    pytest.param(
        Principal("root", "session", roles=frozenset({"admin"})), id="policy-unlisted-admin"
    ),
]


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("deny", [False, True], ids=["open-unlisted", "deny-by-default"])
@pytest.mark.parametrize("principal", CALLERS)
@pytest.mark.parametrize("routes", ROUTE_SETS)
async def test_unlisted_paths_decided_as_the_general_path(
    routes: dict[str, str], principal: Principal | None, deny: bool
) -> None:
    sink = RecordingSink()
    policy = AuthorizationMiddleware(
        _ok, PolicySettings(routes=routes, deny_by_default=deny), events=EventEmitter([sink])
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        set_principal(scope, principal)  # as the authentication layer outside would
        await policy(scope, receive, send)

    for method in ("GET", "HEAD", "POST"):
        for path in PATHS:
            if not path.startswith("/"):
                continue  # an ASGI path is absolute
            expected = decide(policy.table._find(method, path), principal, deny=deny)
            del sink.records[:]
            status, _, _ = await call(app, path, method=method)
            assert status == (expected.status or 200), (method, path)
            assert sink.reasons() == ([expected.reason] if expected.status else [])
