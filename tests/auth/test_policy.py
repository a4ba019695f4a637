"""Route policy: the core table, path tricks per framework, decorator, FastAPI."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Security
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.auth import AuthenticationMiddleware, AuthorizationMiddleware, PolicySettings
from bastion.auth import policy as P
from bastion.auth.fastapi import API_KEY_SCHEME, BEARER_SCHEME, BastionPrincipal
from bastion.auth.policy import Requirement, decide, requires_bastion
from bastion.auth.principal import Principal
from bastion.events import EventEmitter
from bastion.exceptions import ConfigurationError
from bastion.types import ASGIApp
from tests.auth.apps import FRAMEWORKS, call, make_protected_app
from tests.auth.harness import auth_settings, claims, clock, sign
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio
ADMIN = Principal("root", "session", roles=frozenset({"admin"}))
USER = Principal("bob", "session", scopes=frozenset({"read:x"}))


@pytest.mark.parametrize(
    ("rule", "principal", "status", "reason"),
    [
        pytest.param("public", None, 0, "", id="policy-public-ok"),
        pytest.param(
            "authenticated", None, 401, P.REASON_UNAUTHENTICATED, id=P.REASON_UNAUTHENTICATED
        ),
        pytest.param("authenticated", USER, 0, "", id="policy-authenticated-ok"),
        pytest.param("roles:admin,ops", ADMIN, 0, "", id="policy-role-ok"),
        pytest.param("roles:admin,ops", USER, 403, P.REASON_MISSING_ROLE, id=P.REASON_MISSING_ROLE),
        pytest.param("scopes:read:x", USER, 0, "", id="policy-scope-ok"),
        pytest.param(
            "scopes:read:x,write:x", USER, 403, P.REASON_MISSING_SCOPE, id=P.REASON_MISSING_SCOPE
        ),
    ],
)
def test_decide(rule: str, principal: Principal | None, status: int, reason: str) -> None:
    assert decide(Requirement.parse(rule), principal, deny=False) == P.Decision(status, reason)


def test_deny_by_default() -> None:
    assert decide(None, None, deny=False).status == 0
    assert decide(None, None, deny=True) == P.Decision(401, P.REASON_DENY_BY_DEFAULT)
    assert decide(None, ADMIN, deny=True) == P.Decision(403, P.REASON_DENY_BY_DEFAULT)


@pytest.mark.parametrize("rule", ["admin", "roles:", "scopes:a b", "role:admin"])
def test_bad_rules_refused(rule: str) -> None:
    with pytest.raises(ValueError, match="policy rule"):
        PolicySettings(routes={"/x": rule})


def _stack(framework: str, hits: list[str], *, deny: bool = False) -> ASGIApp:
    policy = PolicySettings(
        routes={"/admin": "roles:admin", "/admin/*": "roles:admin", "/public": "public"},
        deny_by_default=deny,
    )
    events = EventEmitter([])
    app = AuthorizationMiddleware(make_protected_app(framework, hits), policy, events=events)
    return AuthenticationMiddleware(app, auth_settings(), events=events, clock=clock)


TRICKS = [
    pytest.param("/admin/", None, id="policy-trailing-slash"),
    pytest.param("//admin", None, id="policy-double-slash"),
    pytest.param("/admin", b"/%61dmin", id="policy-percent-encoding"),
    pytest.param("/ADMIN", None, id="policy-case"),
    pytest.param("/admin/../admin", None, id="policy-dot-segments"),
]


@pytest.mark.parametrize("deny", [False, True], ids=["explicit-rules", "deny-by-default"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("path", "raw_path"), TRICKS)
async def test_path_tricks_never_reach_admin(
    path: str, raw_path: bytes | None, framework: str, deny: bool
) -> None:
    hits: list[str] = []
    app = _stack(framework, hits, deny=deny)
    for token in (None, sign(claims(roles=["user"]))):
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        status, _, _ = await call(app, path, headers, raw_path=raw_path)
        # Either the policy refused, or the router did not dispatch to /admin.
        assert status in (401, 403) or not hits, (status, hits)
        assert not hits
        if deny or path == "/admin":
            assert status in (401, 403)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_admin_reaches_admin(framework: str) -> None:
    hits: list[str] = []
    token = sign(claims())
    async with asgi_client(_stack(framework, hits)) as client:
        ok = await client.get("/admin", headers={"authorization": f"Bearer {token}"})
        anonymous = await client.get("/admin")
    assert ok.status_code == 200
    assert hits == ["/admin"]
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="bastion"'


async def test_starlette_decorator(events: EventEmitter) -> None:
    @requires_bastion(roles=["admin"], events=events)
    async def admin(request: Request) -> Response:
        return PlainTextResponse("secret")

    app = AuthenticationMiddleware(
        Starlette(routes=[Route("/admin", admin)]), auth_settings(), events=events, clock=clock
    )
    async with asgi_client(app) as client:
        assert (await client.get("/admin")).status_code == 401
        user = sign(claims(roles=["user"]))
        forbidden = await client.get("/admin", headers={"authorization": f"Bearer {user}"})
        assert forbidden.status_code == 403
        assert "secret" not in forbidden.text
        ok = await client.get("/admin", headers={"authorization": f"Bearer {sign(claims())}"})
        assert ok.text == "secret"


def _fastapi(events: EventEmitter) -> tuple[FastAPI, ASGIApp]:
    api = FastAPI()
    principal_of = BastionPrincipal(events=events)

    @api.get("/reports")
    # A default, not `Annotated`: with postponed annotations FastAPI could not see
    # the local `principal_of`.
    async def reports(
        p: Principal = Security(principal_of, scopes=["read:x"]),  # noqa: B008
    ) -> dict[str, Any]:
        return {"who": p.identity}

    return api, AuthenticationMiddleware(api, auth_settings(), events=events, clock=clock)


async def test_fastapi_dependency(events: EventEmitter) -> None:
    _, app = _fastapi(events)
    async with asgi_client(app) as client:
        assert (await client.get("/reports")).status_code == 401
        weak = sign(claims(scope="other"))
        assert (
            await client.get("/reports", headers={"authorization": f"Bearer {weak}"})
        ).status_code == 403
        ok = await client.get("/reports", headers={"authorization": f"Bearer {sign(claims())}"})
        assert ok.json() == {"who": "alice"}


async def test_fastapi_openapi_lists_security_schemes(events: EventEmitter) -> None:
    api, _ = _fastapi(events)
    document = api.openapi()
    schemes = document["components"]["securitySchemes"]
    assert schemes[BEARER_SCHEME] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes[API_KEY_SCHEME] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    security = document["paths"]["/reports"]["get"]["security"]
    assert {BEARER_SCHEME: ["read:x"]} in security
    assert {API_KEY_SCHEME: ["read:x"]} in security


def test_policy_settings_invalid_pattern() -> None:
    with pytest.raises((ValueError, ConfigurationError)):
        PolicySettings(routes={"admin": "public"})
