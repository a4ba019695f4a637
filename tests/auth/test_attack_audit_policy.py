"""Route policy against a method spelt in lower case, which some frameworks fold.

HTTP methods are case-sensitive (RFC 9110 section 9.1), and uvicorn's h11 protocol
passes `get` or `post` to the application as sent. Django and Quart (werkzeug)
upper-case the method before dispatching, so `post /admin/delete` runs the POST
handler: a rule for `POST /admin/delete` must hold for it too.
"""

from __future__ import annotations

import socket
from typing import cast

import pytest
from quart import Quart

from bastion.auth import AuthenticationMiddleware, AuthorizationMiddleware, PolicySettings
from bastion.auth import policy as P
from bastion.events import EventEmitter
from bastion.shield import Shield
from bastion.types import ASGIApp
from tests.auth import apps
from tests.auth.harness import auth_settings, claims, clock, sign
from tests.conftest import RecordingSink
from tests.support.servers import serve

pytestmark = pytest.mark.anyio

RULES = {"GET /admin": "roles:admin", "POST /admin/delete": "roles:admin"}
SECRET = b"admin-secret"
DELETED = b"deleted-everything"


def _leaks(body: bytes) -> bool:
    return SECRET in body or DELETED in body


def create_quart_app() -> ASGIApp:
    """A Quart app whose admin routes are protected by method-scoped rules only."""
    app = Quart(__name__)

    @app.get("/admin")
    async def admin() -> bytes:
        return SECRET

    @app.post("/admin/delete")
    async def delete() -> bytes:
        return DELETED

    # Quart types its entry point with precise TypedDicts; at run time it is the same
    # ASGI callable (as `bastion.integrations.quart.use_bastion_sessions` says).
    return cast(ASGIApp, app)


def create_shielded_quart_app() -> ASGIApp:
    """For `serve`: the Quart app in Bastion's full stack (development mode: HTTP)."""
    return Shield(create_quart_app(), mode="development", policy={"routes": RULES})


async def call(
    app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]] | None = None, *, method: str
) -> tuple[int, bytes]:
    """`tests.auth.apps.call`, status and body."""
    status, _, body = await apps.call(app, path, headers, method=method)
    return status, body


def _stack(events: EventEmitter | None = None) -> ASGIApp:
    events = events or EventEmitter([])
    app = AuthorizationMiddleware(create_quart_app(), PolicySettings(routes=RULES), events=events)
    return AuthenticationMiddleware(app, auth_settings(), events=events, clock=clock)


METHODS = [
    pytest.param("GET", "/admin", id="policy-method-exact-get"),
    pytest.param("get", "/admin", id="policy-method-lowercase-get"),
    pytest.param("Get", "/admin", id="policy-method-mixed-case-get"),
    pytest.param("head", "/admin", id="policy-method-lowercase-head"),
    pytest.param("POST", "/admin/delete", id="policy-method-exact-post"),
    pytest.param("post", "/admin/delete", id="policy-method-lowercase-post"),
]


@pytest.mark.parametrize(("method", "path"), METHODS)
async def test_method_case_never_reaches_admin(
    method: str, path: str, events: EventEmitter, sink: RecordingSink
) -> None:
    app = _stack(events)
    user = sign(claims(roles=["user"]))
    anonymous = await call(app, path, method=method)
    assert anonymous[0] == 401
    assert not _leaks(anonymous[1])
    forbidden = await call(
        app, path, [(b"authorization", f"Bearer {user}".encode())], method=method
    )
    assert forbidden[0] == 403
    assert not _leaks(forbidden[1])
    # The rule for the folded method decided, not "no rule names this request".
    assert sink.reasons() == [P.REASON_UNAUTHENTICATED, P.REASON_MISSING_ROLE]


@pytest.mark.parametrize(("method", "path"), METHODS)
async def test_method_case_admin_still_served(method: str, path: str) -> None:
    admin = sign(claims(roles=["admin"]))
    status, body = await call(
        _stack(), path, [(b"authorization", f"Bearer {admin}".encode())], method=method
    )
    assert status == 200
    assert body in (SECRET, DELETED, b"")  # HEAD: no body


def _raw_request(host: str, port: int, request_line: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(
            request_line + b" HTTP/1.1\r\nHost: localhost\r\nSec-Fetch-Site: same-origin\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_method_case_through_uvicorn_h11() -> None:
    """A real server that passes the method as sent, with Bastion's whole stack."""
    with serve(
        "tests.auth.test_attack_audit_policy:create_shielded_quart_app",
        extra_args=("--http", "h11"),
    ) as server:
        answers = {
            line: _raw_request(server.host, server.port, line)
            for line in (b"GET /admin", b"get /admin", b"POST /admin/delete", b"post /admin/delete")
        }
    for line, answer in answers.items():
        assert answer.startswith(b"HTTP/1.1 401 "), (line, answer[:200])
        assert not _leaks(answer), line
