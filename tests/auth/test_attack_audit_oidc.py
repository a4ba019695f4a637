"""OIDC login over a session that already belongs to someone: nothing carries over.

The test provider (`tests.auth.oidc.provider`) runs in process behind httpx's ASGI
transport; the relying party is `OIDCLogin` inside Bastion's session and
authentication layers, and a local login route that grants session roles, as an
application does with `session.change_roles`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.auth import AuthenticationMiddleware, AuthSettings
from bastion.auth.oidc import OIDCLogin, OIDCSettings
from bastion.auth.principal import get_principal
from bastion.sessions import Session, SessionMiddleware, SessionSettings
from bastion.types import ASGIApp
from tests.auth.oidc.provider import TEST_USER
from tests.auth.oidc.provider import create_app as create_provider
from tests.conftest import asgi_client
from tests.support.secret_watch import never_logged

pytestmark = pytest.mark.anyio

OP = "http://op.test"
RP = "http://rp.test"
CLIENT_ID = "audit-rp"
CLIENT_SECRET = never_logged("audit-rp-secret-for-tests-only-0123")


def _relying_party(provider: ASGIApp) -> ASGIApp:
    oidc = OIDCLogin(
        OIDCSettings(
            issuer=OP,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uri=f"{RP}/auth/callback",
            insecure_allow_http=True,
        ),
        transport=httpx.ASGITransport(app=provider),
    )

    async def local_login(request: Request) -> Response:
        # The application's own login, for a user it makes an administrator.
        session = request.scope["session"]
        assert isinstance(session, Session)
        session.login(request.query_params["user"])
        session.change_roles(["admin"])
        session["theme"] = "dark"
        return PlainTextResponse("ok")

    async def remember(request: Request) -> Response:
        request.scope["session"]["theme"] = "dark"  # anonymous data, before any login
        return PlainTextResponse("ok")

    async def me(request: Request) -> Response:
        principal = get_principal(request.scope)
        if principal is None:
            return PlainTextResponse("anonymous")
        theme = request.scope["session"].get("theme")
        return PlainTextResponse(f"{principal.identity} {sorted(principal.roles)} {theme}")

    app = Starlette(
        routes=[
            Route("/auth/login", oidc.login),
            Route("/auth/callback", oidc.callback),
            Route("/local-login", local_login, methods=["POST"]),
            Route("/remember", remember, methods=["POST"]),
            Route("/me", me),
        ]
    )
    return SessionMiddleware(
        AuthenticationMiddleware(app, AuthSettings()),
        SessionSettings(insecure_cookie_over_http=True),
        secret_keys=["audit-rp-session-key-for-tests-only-0123456789"],
    )


async def _oidc_login(rp: httpx.AsyncClient, op: httpx.AsyncClient) -> None:
    login = await rp.get("/auth/login")
    assert login.status_code == 302, login.text
    approved = await op.get(login.headers["location"])
    assert approved.status_code == 302, approved.text
    callback = urlsplit(approved.headers["location"])
    done = await rp.get(f"{callback.path}?{callback.query}")
    assert done.status_code == 303, done.text


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(None, f"{TEST_USER} [] None", id="oidc-fresh-session-ok"),
        pytest.param("remember", f"{TEST_USER} [] dark", id="oidc-anonymous-data-kept-ok"),
        pytest.param(TEST_USER, f"{TEST_USER} ['admin'] dark", id="oidc-same-user-again-ok"),
        pytest.param("root", f"{TEST_USER} [] None", id="oidc-other-users-session"),
    ],
)
async def test_login_over_another_users_session(before: str | None, after: str) -> None:
    provider = create_provider()
    async with (
        asgi_client(provider, base_url=OP) as op,
        asgi_client(_relying_party(provider), base_url=RP) as rp,
    ):
        configured = await op.post(
            "/_test/configure",
            json={
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uri": f"{RP}/auth/callback",
                "next_token": "ok",
            },
        )
        configured.raise_for_status()
        if before == "remember":
            assert (await rp.post("/remember")).status_code == 200
        elif before is not None:
            assert (await rp.post("/local-login", params={"user": before})).status_code == 200
            assert (await rp.get("/me")).text == f"{before} ['admin'] dark"
        await _oidc_login(rp, op)
        # The previous user's roles (and data) never reach the user who logged in.
        assert (await rp.get("/me")).text == after
