"""The peer stacks: today's libraries, assembled as a careful user would.

On Starlette (and the same on FastAPI), outermost first:

* Starlette's `TrustedHostMiddleware` (the hosts the site serves),
* Starlette's `CORSMiddleware` (one allowed origin, with credentials),
* `secure`'s `SecureASGIMiddleware` with its default headers (HSTS, CSP, COOP,
  Referrer-Policy, X-Content-Type-Options, X-Frame-Options, ...),
* slowapi's pure-ASGI middleware (`SlowAPIASGIMiddleware`, the faster of its two)
  with the in-memory storage of `limits` and one default rate on every route,
* Starlette's `SessionMiddleware` (signed cookie, `https_only`),
* starlette-csrf's double-submit `CSRFMiddleware`,
* Starlette's `AuthenticationMiddleware` with a PyJWT bearer backend (HS256, issuer
  and audience checked); `GET /api` requires an authenticated user (FastAPI: an
  `HTTPBearer` dependency checked with PyJWT).

Every choice is the library's documented usage. The rate never trips, so slowapi
does its full work (key, storage hit) on every request and refuses none.
"""

from __future__ import annotations

from typing import Any, Final

import jwt
from secure import Secure
from secure.middleware import SecureASGIMiddleware
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.middleware import SlowAPIASGIMiddleware
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
    SimpleUser,
    requires,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette_csrf.middleware import CSRFMiddleware

from bastion.types import ASGIApp
from bench.apps import echo, hello, submit
from bench.client import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, PEER_SECRET

NEVER_TRIPPING_RATE: Final = "1000000/second"
ALLOWED_HOSTS: Final = ("localhost", "127.0.0.1")
ALLOWED_ORIGINS: Final = ("https://localhost",)


def verify_bearer(authorization: str) -> dict[str, Any]:
    """PyJWT's check of `Authorization: Bearer <token>`; raises `jwt.InvalidTokenError`."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise jwt.InvalidTokenError("not a bearer token")
    claims: dict[str, Any] = jwt.decode(
        token,
        JWT_SECRET,
        algorithms=["HS256"],
        audience=JWT_AUDIENCE,
        issuer=JWT_ISSUER,
        options={"require": ["exp", "iat", "sub"]},
    )
    return claims


class JWTBackend(AuthenticationBackend):
    """Starlette's authentication backend over PyJWT."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        authorization = conn.headers.get("authorization")
        if authorization is None:
            return None
        try:
            claims = verify_bearer(authorization)
        except jwt.InvalidTokenError:
            raise AuthenticationError("invalid bearer token") from None
        return AuthCredentials(["authenticated"]), SimpleUser(str(claims["sub"]))


def _limiter() -> Limiter:
    return Limiter(
        key_func=get_remote_address, default_limits=[NEVER_TRIPPING_RATE], storage_uri="memory://"
    )


def _middleware(*, authentication: bool) -> list[Middleware]:
    stack = [
        Middleware(TrustedHostMiddleware, allowed_hosts=list(ALLOWED_HOSTS)),
        Middleware(
            CORSMiddleware,
            allow_origins=list(ALLOWED_ORIGINS),
            allow_credentials=True,
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "authorization", "x-csrftoken"],
        ),
        Middleware(SecureASGIMiddleware, secure=Secure.with_default_headers()),
        Middleware(SlowAPIASGIMiddleware),
        Middleware(SessionMiddleware, secret_key=PEER_SECRET, https_only=True, same_site="lax"),
        Middleware(CSRFMiddleware, secret=PEER_SECRET, cookie_secure=True),
    ]
    if authentication:
        stack.append(Middleware(AuthenticationMiddleware, backend=JWTBackend()))
    return stack


@requires("authenticated")
async def _api(request: Request) -> Response:
    return JSONResponse({"ok": True})


def starlette_peer() -> ASGIApp:
    routes = [
        Route("/hello", hello, methods=["GET"]),
        Route("/submit", submit, methods=["POST"]),
        Route("/api", _api, methods=["GET"]),
        WebSocketRoute("/ws", echo),
    ]
    app = Starlette(routes=routes, middleware=_middleware(authentication=True))
    app.state.limiter = _limiter()
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]  # slowapi's handler is typed for its own exception
    return app


def fastapi_peer() -> ASGIApp:
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer()

    async def current_user(
        credentials: HTTPAuthorizationCredentials = Depends(bearer),  # noqa: B008  # FastAPI's idiom
    ) -> str:
        try:
            claims = verify_bearer(f"Bearer {credentials.credentials}")
        except jwt.InvalidTokenError:
            raise HTTPException(status_code=401, detail="invalid bearer token") from None
        return str(claims["sub"])

    async def api(user: str = Depends(current_user)) -> dict[str, bool]:
        return {"ok": True}

    app = FastAPI(middleware=_middleware(authentication=False))
    app.add_api_route("/hello", hello, methods=["GET"])
    app.add_api_route("/submit", submit, methods=["POST"])
    app.add_api_route("/api", api, methods=["GET"])
    app.add_api_websocket_route("/ws", echo)
    app.state.limiter = _limiter()
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]  # as above
    return app
