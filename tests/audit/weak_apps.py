"""Deliberately weak apps for the auditor to find out, and the same routes hardened.

Every weak app (raw ASGI, Starlette, FastAPI) has the same routes and the same
weaknesses, listed in `WEAKNESSES` with the check id that must report each:

* `GET /`         HTML, no security headers; sets `sid` (no flags) on first visit;
                  links to an absolute URL built from the `Host` header;
* `GET /next`     302 to an absolute URL built from `X-Forwarded-Host` or `Host`;
* `GET /boom`     raises; the app shows the traceback (debug);
* `POST /login`   form `username`/`password`; keeps the `sid` it had (fixation);
                  no limit on failures;
* `POST /transfer` form; needs a logged-in session; no CSRF defence;
* `POST /api/echo` JSON parsed by hand: malformed JSON raises (traceback), and so
                  does a body over `MAX_ECHO_BYTES`, read whole before the check;
* `POST /token`   (Starlette only) an access token for the form credentials;
* `GET /api/me`   bearer JWT decoded without any verification (alg none, any
                  signature, expired: all accepted); 401 without a token;
* `WS /ws`        accepts any origin, without authentication;
* no route        a debug 404 / 405 page naming the framework and Python versions;
* every answer    reflects `Origin` with credentials (CORS); TRACE echoes; a
                  `Server` (raw) or `X-Powered-By` (Starlette, FastAPI) banner
                  with a version.

`hardened_app()` serves the same routes, written as Bastion's README says, behind
`Shield` in production mode. Factories (`create_*`) serve them under uvicorn.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import secrets
import traceback
from typing import Any, Final
from urllib.parse import parse_qsl

import starlette
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bastion.sessions import Session
from bastion.types import ASGIApp, Receive, Scope, Send

USERNAME: Final = "alice"
PASSWORD: Final = "correct horse battery staple"
ROUTES: Final = (
    "GET /",
    "GET /next",
    "GET /boom",
    "POST /login",
    "POST /api/echo",
    "POST /transfer",
    "GET /api/me",
    "WS /ws",
)

# (weakness id, check id): each weak app must fail each check.
WEAKNESSES: Final = (
    ("headers-csp", "headers.content-security-policy"),
    ("headers-nosniff", "headers.x-content-type-options"),
    ("headers-frame-options", "headers.x-frame-options"),
    ("cookie-secure", "cookies.secure"),
    ("cookie-httponly", "cookies.httponly"),
    ("cookie-samesite", "cookies.samesite"),
    ("cookie-host-prefix", "cookies.host-prefix"),
    ("session-fixation", "sessions.fixation"),
    ("csrf-cross-site-origin", "csrf.cross-site-origin"),
    ("csrf-null-origin", "csrf.null-origin"),
    ("csrf-sec-fetch-site", "csrf.sec-fetch-site"),
    ("cors-reflect", "cors.reflect-origin"),
    ("cors-null", "cors.null-origin"),
    ("host-header", "hosts.host-header"),
    ("forwarded-host", "hosts.forwarded-host"),
    ("unknown-host", "hosts.unknown-host"),
    ("https-redirect", "transport.https-redirect"),
    ("hsts", "transport.hsts"),
    ("trace", "transport.trace"),
    ("debug-traceback", "leakage.error-page"),
    ("malformed-json", "leakage.malformed-json"),
    ("oversized-body", "leakage.oversized-body"),
    ("debug-not-found", "leakage.not-found"),
    ("debug-method-not-allowed", "leakage.method-not-allowed"),
    ("server-banner", "leakage.server-banner"),
    ("login-unlimited", "ratelimit.login"),
    ("ws-foreign-origin", "websocket.foreign-origin"),
    ("ws-no-auth", "websocket.no-auth"),
    ("jwt-alg-none", "jwt.alg-none"),
    ("jwt-bad-signature", "jwt.bad-signature"),
    ("jwt-expired", "jwt.expired"),
)

# The weak echo's own limit, checked only after reading the whole body, by raising:
# the crash (and its traceback) is the weakness. 1 MiB, under the probe's 3 MiB.
MAX_ECHO_BYTES: Final = 1024 * 1024
# The banner each shape sends on every answer it builds: a version, the weakness.
PYTHON_BANNER: Final = f"Python/{platform.python_version()}"
RAW_SERVER: Final = f"WeakASGI/1.0 {PYTHON_BANNER}"

# ---------------------------------------------------------------------------
# The weak logic, shared by the three shapes (pure functions over plain data)


class WeakState:
    """Sessions of one weak app: `sid` -> user (None before login)."""

    def __init__(self) -> None:
        self.sessions: dict[str, str | None] = {}

    def session_of(self, cookie_header: str) -> tuple[str, bool]:
        """The request's `sid` (made up when absent), and whether it is new."""
        for pair in cookie_header.split(";"):
            name, _, value = pair.strip().partition("=")
            if name == "sid" and value in self.sessions:
                return value, False
        sid = secrets.token_urlsafe(16)
        self.sessions[sid] = None
        return sid, True


def unverified_sub(authorization: str) -> str | None:
    """The weakness itself: the JWT's claims read without checking anything."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) else None


def cors_headers(origin: str | None) -> dict[str, str]:
    """The weakness: any origin, `null` included, granted with credentials."""
    if origin is None:
        return {}
    return {"access-control-allow-origin": origin, "access-control-allow-credentials": "true"}


def page(host: str) -> str:
    return f'<!doctype html><title>Weak</title><a href="http://{host}/next">next</a>'


def form(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode("latin-1")))


def echoed(body: bytes) -> bytes:
    """The weakness: a limit that raises (after reading it all), JSON that raises."""
    if len(body) > MAX_ECHO_BYTES:
        raise ValueError(f"request body of {len(body)} bytes is over {MAX_ECHO_BYTES}")
    return json.dumps(json.loads(body)).encode()


def debug_error_page(status: int, method: str, path: str, signature: str) -> str:
    """The weakness: a debug 404 / 405 page signed with the framework and Python."""
    return (
        f"<!doctype html><title>{status}</title><h1>{status}: {html.escape(method)} "
        f"{html.escape(path)}</h1><p>No route matched (debug mode).</p>"
        f"<hr><address>{signature}</address>"
    )


# ---------------------------------------------------------------------------
# Raw ASGI


_RAW_PATHS: Final = frozenset(route.split(" ", 1)[1] for route in ROUTES)


def weak_raw_app() -> ASGIApp:
    state = WeakState()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        sid, new = state.session_of(headers.get("cookie", ""))
        out: dict[str, str] = {"content-type": "text/plain", "server": RAW_SERVER}
        out |= cors_headers(headers.get("origin"))
        if new:
            out["set-cookie"] = f"sid={sid}; Path=/"
        method, path, host = scope["method"], scope["path"], headers.get("host", "")
        status, payload = 200, b""
        try:
            if method == "TRACE":
                payload = "\n".join(f"{k}: {v}" for k, v in headers.items()).encode()
                out["content-type"] = "message/http"
            elif method == "OPTIONS":
                status = 204
            elif path == "/" and method == "GET":
                payload, out["content-type"] = page(host).encode(), "text/html"
            elif path == "/next":
                status = 302
                out["location"] = f"http://{headers.get('x-forwarded-host', host)}/"
            elif path == "/boom":
                raise RuntimeError("kaboom")
            elif path == "/login" and method == "POST":
                fields = form(body)
                if fields.get("username") == USERNAME and fields.get("password") == PASSWORD:
                    state.sessions[sid] = USERNAME
                    status, out["location"] = 303, "/"
                else:
                    status, payload = 401, b"bad credentials"
            elif path == "/transfer" and method == "POST":
                if state.sessions.get(sid) is None:
                    status, payload = 401, b"log in"
                else:
                    payload = b"sent " + form(body).get("amount", "0").encode()
            elif path == "/api/echo" and method == "POST":
                payload = echoed(body)
            elif path == "/api/me":
                user = unverified_sub(headers.get("authorization", ""))
                status, payload = (200, user.encode()) if user else (401, b"token needed")
            else:
                status = 405 if path in _RAW_PATHS else 404
                payload = debug_error_page(status, method, path, RAW_SERVER).encode()
                out["content-type"] = "text/html"
        except Exception:
            status, payload = 500, traceback.format_exc().encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in out.items()],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


# ---------------------------------------------------------------------------
# Starlette and FastAPI


def _handlers(state: WeakState, powered_by: str) -> dict[str, Any]:
    def finish(request: Request, response: Response, sid: str, new: bool) -> Response:
        response.headers.update(cors_headers(request.headers.get("origin")))
        response.headers["x-powered-by"] = powered_by
        if new:
            response.headers.append("set-cookie", f"sid={sid}; Path=/")
        return response

    def session(request: Request) -> tuple[str, bool]:
        return state.session_of(request.headers.get("cookie", ""))

    async def home(request: Request) -> Response:
        sid, new = session(request)
        if request.method == "TRACE":
            echoed = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
            return finish(request, PlainTextResponse(echoed, media_type="message/http"), sid, new)
        return finish(request, HTMLResponse(page(request.headers.get("host", ""))), sid, new)

    async def next_page(request: Request) -> Response:
        host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
        response = Response(status_code=302, headers={"location": f"http://{host}/"})
        return finish(request, response, *session(request))

    async def boom(request: Request) -> Response:
        raise RuntimeError("kaboom")

    async def login(request: Request) -> Response:
        sid, new = session(request)
        fields = await request.form()
        if fields.get("username") == USERNAME and fields.get("password") == PASSWORD:
            state.sessions[sid] = USERNAME
            return finish(request, Response(status_code=303, headers={"location": "/"}), sid, new)
        return finish(request, PlainTextResponse("bad credentials", 401), sid, new)

    async def transfer(request: Request) -> Response:
        sid, new = session(request)
        if state.sessions.get(sid) is None:
            return finish(request, PlainTextResponse("log in", 401), sid, new)
        amount = (await request.form()).get("amount", "0")
        return finish(request, PlainTextResponse(f"sent {amount}"), sid, new)

    async def echo(request: Request) -> Response:
        response = Response(echoed(await request.body()), media_type="application/json")
        return finish(request, response, *session(request))

    async def me(request: Request) -> Response:
        user = unverified_sub(request.headers.get("authorization", ""))
        response = PlainTextResponse(user) if user else PlainTextResponse("token needed", 401)
        return finish(request, response, *session(request))

    async def token(request: Request) -> Response:
        fields = await request.form()
        if fields.get("username") != USERNAME or fields.get("password") != PASSWORD:
            return PlainTextResponse("bad credentials", 401)
        header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        claims = base64.urlsafe_b64encode(json.dumps({"sub": USERNAME}).encode()).rstrip(b"=")
        # A signature nobody checks: the weakness is in `me`, not here.
        value = b".".join([header, claims, b"c2lnbmF0dXJl"]).decode()
        return JSONResponse({"access_token": value, "token_type": "bearer"})

    async def preflight(request: Request) -> Response:
        return finish(request, Response(status_code=204), *session(request))

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    async def no_route(request: Request, exc: Exception) -> Response:
        # Preflights are answered here, not by an OPTIONS catch-all route: such a
        # route matches every path, so a missing page would answer 405, never 404.
        if request.method == "OPTIONS":
            return await preflight(request)
        assert isinstance(exc, HTTPException)
        signature = f"{powered_by} {PYTHON_BANNER}"
        body = debug_error_page(exc.status_code, request.method, request.url.path, signature)
        response = HTMLResponse(body, exc.status_code, headers=exc.headers)
        return finish(request, response, *session(request))

    return {
        "home": home,
        "next": next_page,
        "boom": boom,
        "login": login,
        "transfer": transfer,
        "echo": echo,
        "me": me,
        "token": token,
        "ws": ws,
        "no-route": no_route,
    }


def weak_starlette_app() -> Starlette:
    h = _handlers(WeakState(), f"Starlette/{starlette.__version__}")
    return Starlette(
        debug=True,
        exception_handlers={404: h["no-route"], 405: h["no-route"]},
        routes=[
            Route("/", h["home"], methods=["GET", "TRACE"]),
            Route("/next", h["next"]),
            Route("/boom", h["boom"]),
            Route("/login", h["login"], methods=["POST"]),
            Route("/api/echo", h["echo"], methods=["POST"]),
            Route("/transfer", h["transfer"], methods=["POST"]),
            Route("/api/me", h["me"]),
            Route("/token", h["token"], methods=["POST"]),
            WebSocketRoute("/ws", h["ws"]),
        ],
    )


def weak_fastapi_app() -> Any:
    import fastapi

    h = _handlers(WeakState(), f"FastAPI/{fastapi.__version__}")
    app = fastapi.FastAPI(debug=True, exception_handlers={404: h["no-route"], 405: h["no-route"]})
    app.add_api_route("/", h["home"], methods=["GET"])
    app.add_api_route("/", h["home"], methods=["TRACE"], operation_id="trace_home")
    app.add_api_route("/next", h["next"])
    app.add_api_route("/boom", h["boom"])
    app.add_api_route(
        "/login",
        h["login"],
        methods=["POST"],
        openapi_extra={"requestBody": _form_schema("username", "password")},
    )
    app.add_api_route(
        "/api/echo",
        h["echo"],
        methods=["POST"],
        openapi_extra={
            "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}
        },
    )
    app.add_api_route(
        "/transfer",
        h["transfer"],
        methods=["POST"],
        openapi_extra={"requestBody": _form_schema("to", "amount")},
    )
    app.add_api_route("/api/me", h["me"])
    app.add_api_websocket_route("/ws", h["ws"])
    return app


def _form_schema(*names: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {n: {"type": "string"} for n in names}}
    return {"content": {"application/x-www-form-urlencoded": {"schema": schema}}}


# ---------------------------------------------------------------------------
# Hardened: the same routes, written as the README says, behind Shield

HARDENED_HOST: Final = "bank.example"
SECRET_KEY: Final = "audit-test-key-" + "abcdefghijklmnopqrstuvwxyz0123456789"
JWT_KEY: Final = ECKey.generate_key("P-256", {"kid": "audit-1"}, private=True)


def hardened_settings(**overrides: Any) -> Any:
    from bastion.settings import Settings

    values: dict[str, Any] = {
        "secret_keys": [SECRET_KEY],
        "transport": {"allowed_hosts": [HARDENED_HOST]},
        "ratelimit": {"login_routes": ["POST /login"]},
        "auth": {
            "jwt": {
                "issuer": "https://id.example",
                "audience": "api://bank",
                "jwks": {"keys": [JWT_KEY.as_dict(private=False)]},
                "algorithms": ["ES256"],
            }
        },
        "policy": {"routes": {"/transfer": "authenticated", "/api/me": "authenticated"}},
    }
    return Settings(**(values | overrides))


def hardened_starlette() -> Starlette:
    async def home(request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>Bank</title><a href='/next'>next</a>")

    async def next_page(request: Request) -> Response:
        return Response(status_code=302, headers={"location": "/"})

    async def boom(request: Request) -> Response:
        raise RuntimeError("kaboom")

    async def login(request: Request) -> Response:
        fields = await request.form()
        if fields.get("username") == USERNAME and fields.get("password") == PASSWORD:
            session = request.scope["session"]
            assert isinstance(session, Session)
            session.login(USERNAME)
            return Response(status_code=303, headers={"location": "/"})
        return PlainTextResponse("bad credentials", 401)

    async def transfer(request: Request) -> Response:
        amount = (await request.form()).get("amount", "0")
        return PlainTextResponse(f"sent {amount}")

    async def echo(request: Request) -> Response:
        try:
            return JSONResponse(json.loads(await request.body()))
        except ValueError:
            return PlainTextResponse("malformed JSON", 400)

    async def me(request: Request) -> Response:
        return PlainTextResponse(str(request.scope["bastion"].principal.identity))

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    return Starlette(
        routes=[
            Route("/", home),
            Route("/next", next_page),
            Route("/boom", boom),
            Route("/login", login, methods=["POST"]),
            Route("/api/echo", echo, methods=["POST"]),
            Route("/transfer", transfer, methods=["POST"]),
            Route("/api/me", me),
            WebSocketRoute("/ws", ws),
        ]
    )


def hardened_app(**overrides: Any) -> ASGIApp:
    from bastion.shield import Shield

    return Shield(hardened_starlette(), hardened_settings(**overrides))


# ---------------------------------------------------------------------------
# Factories for a real server (`tests.support.servers.serve`)


def create_weak_starlette() -> ASGIApp:
    return weak_starlette_app()


def create_hardened_development() -> ASGIApp:
    """Hardened, in development mode: plain HTTP on 127.0.0.1 for a live server."""
    return hardened_app(mode="development", transport={"allowed_hosts": ["127.0.0.1"]})
