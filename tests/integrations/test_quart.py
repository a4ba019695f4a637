"""Bastion's sessions behind Quart's own `session` proxy."""

from __future__ import annotations

import httpx
import pytest
from quart import Quart, session

from bastion.integrations.quart import use_bastion_sessions
from bastion.sessions import Session
from bastion.shield import Shield
from bastion.types import ASGIApp
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio
SAME_ORIGIN = {"sec-fetch-site": "same-origin"}


def quart_app() -> ASGIApp:
    app = Quart(__name__)

    @app.post("/login")
    async def login() -> dict[str, object]:
        current = session._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
        assert isinstance(current, Session)
        current.login("alice")
        session["theme"] = "dark"
        return {"ok": True}

    @app.get("/me")
    async def me() -> dict[str, object]:
        current = session._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
        return {"user": getattr(current, "user_id", None), "theme": session.get("theme")}

    return use_bastion_sessions(app)


async def test_quart_session_is_bastions() -> None:
    app = Shield(quart_app(), mode="development")
    async with asgi_client(app) as client:
        login = await client.post("/login", headers=SAME_ORIGIN)
        assert login.status_code == 200
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("session=")
        me = await client.get("/me")
    assert me.json() == {"user": "alice", "theme": "dark"}


async def test_quart_without_bastion_session_layer_gets_quarts_null_session() -> None:
    transport = httpx.ASGITransport(app=quart_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/me")
    # Quart falls back to its null session: readable, empty, never Bastion's.
    assert response.status_code == 200
    assert response.json() == {"user": None, "theme": None}


def guarded_quart_app() -> ASGIApp:
    from bastion.integrations.quart import requires_bastion_quart

    app = Quart(__name__)

    @app.post("/login")
    async def login() -> dict[str, object]:
        current = session._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
        current.login(request_user())
        session["roles"] = ["admin"] if request_user() == "root" else []
        return {"ok": True}

    @app.get("/admin")
    @requires_bastion_quart(roles=["admin"])
    async def admin() -> dict[str, object]:
        return {"admin": True}

    return use_bastion_sessions(app)


def request_user() -> str:
    from quart import request

    return str(request.args.get("u", "alice"))


@pytest.mark.parametrize(
    ("user", "status"),
    [
        pytest.param(None, 401, id="quart-requires-anonymous"),
        pytest.param("alice", 403, id="quart-requires-wrong-role"),
        pytest.param("root", 200, id="quart-requires-admin-ok"),
    ],
)
async def test_quart_decorator_applies_the_policy(user: str | None, status: int) -> None:
    app = Shield(guarded_quart_app(), mode="development")
    async with asgi_client(app) as client:
        if user is not None:
            login = await client.post(f"/login?u={user}", headers=SAME_ORIGIN)
            assert login.status_code == 200
        response = await client.get("/admin")
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
