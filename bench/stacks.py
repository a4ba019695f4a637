"""Every benchmarked stack by name, and the entry point servers load them through.

Bastion runs its full default stack (every layer on) in `development` mode (plain
HTTP on loopback hosts, which the HTTP benchmark needs), configured as a user would
for this app:

* one rate on every route that no run can reach, so the rate-limit layer does its
  full work (key, store step) on every request and never refuses one;
* `GET /api` requires an authenticated caller, who presents a bearer JWT checked
  against an inline JWKS (HS256, the same key the peers check with PyJWT);
* `WS /ws` is a public socket route with a message rate no run can reach: the guard
  still checks the origin, counts the connection, bounds and paces every message;
* no event sinks, so the layers are measured, not the logging of their events.

"raw ASGI + Bastion's lines" is no Bastion stack: the raw app, whose responses carry
the header lines Bastion's full stack adds to them (`bastion_lines`). Over HTTP, the
server parses and writes those lines too; the difference between this stack and the
raw app is that cost of the server's, which Bastion's own code does not pay.

Servers (`uvicorn --factory bench.stacks:app_from_environment`) build the stack
named by the `BENCH_STACK` environment variable.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from bastion.events import EventEmitter
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.types import ASGIApp, Message
from bastion.websocket import WebSocketGuardMiddleware
from bastion.websocket.settings import WebSocketSettings
from bench.apps import Header, fastapi_app, raw_app, raw_application, starlette_app
from bench.client import JWT_AUDIENCE, JWT_ISSUER, Request, bearer_token, build_requests, jwks

# A rate no benchmark run can reach (see the module docstring).
NEVER_TRIPPING_RATE: Final = "1000000/second"
NEVER_TRIPPING_MESSAGES: Final = 1_000_000
SECRET_KEYS: Final = ("bench-only-secret-key-not-for-production-0123456789",)
STACK_VARIABLE: Final = "BENCH_STACK"
LINES_STACK: Final = "raw ASGI + Bastion's lines"
# Where `bastion_lines` sends its requests: a server on loopback, as over HTTP. The
# port is uvicorn's default; no line Bastion adds names the host or the port.
CAPTURE_HOST: Final = "127.0.0.1"
CAPTURE_PORT: Final = 8000


def _quiet() -> EventEmitter:
    return EventEmitter([])


def _websocket_settings() -> dict[str, Any]:
    return {
        "routes": {"/ws": "public"},
        "messages_per_second": NEVER_TRIPPING_MESSAGES,
        "message_burst": NEVER_TRIPPING_MESSAGES,
    }


def bastion_settings(*, websocket_guard: bool = True) -> Settings:
    """The full default stack, configured for the benchmark app (module docstring)."""
    return Settings.model_validate(
        {
            "mode": "development",
            "secret_keys": list(SECRET_KEYS),
            "ratelimit": {"limits": {"*": [NEVER_TRIPPING_RATE]}},
            "auth": {
                "jwt": {
                    "issuer": JWT_ISSUER,
                    "audience": JWT_AUDIENCE,
                    "jwks": jwks(),
                    "algorithms": ["HS256"],
                }
            },
            "policy": {"routes": {"GET /api": "authenticated"}},
            "websocket": {**_websocket_settings(), "enabled": websocket_guard},
        }
    )


def shield(app: ASGIApp, *, websocket_guard: bool = True) -> ASGIApp:
    return Shield(app, bastion_settings(websocket_guard=websocket_guard), events=_quiet())


def websocket_guard_alone(app: ASGIApp) -> ASGIApp:
    return WebSocketGuardMiddleware(
        app,
        WebSocketSettings.model_validate(_websocket_settings()),
        secret_keys=SECRET_KEYS,
        events=_quiet(),
    )


def _capture_scope(request: Request) -> dict[str, Any]:
    """The scope uvicorn builds for `request` over plain HTTP to the capture address."""
    host = f"{CAPTURE_HOST}:{CAPTURE_PORT}".encode()
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": (CAPTURE_HOST, CAPTURE_PORT),
        "client": (CAPTURE_HOST, 50000),
        "scheme": "http",
        "method": request.method,
        "root_path": "",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": b"",
        "headers": [(b"host", host), (b"user-agent", b"bench"), *request.headers],
        "state": {},
    }


async def _response_lines(app: ASGIApp, request: Request) -> tuple[int, list[Header]]:
    """The status and header lines of `app`'s response to one `request`."""
    pending: list[Message] = [{"type": "http.request", "body": request.body, "more_body": False}]
    started: list[Message] = []

    async def receive() -> Message:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.append(message)

    await app(_capture_scope(request), receive, send)
    if not started:
        return 0, []
    return started[0]["status"], [(bytes(n), bytes(v)) for n, v in started[0]["headers"]]


async def _added_lines() -> dict[str, tuple[Header, ...]]:
    shielded = shield(raw_app)
    origin = f"http://{CAPTURE_HOST}:{CAPTURE_PORT}"
    added: dict[str, tuple[Header, ...]] = {}
    for request in build_requests(origin, bearer_token()):
        own_status, own = await _response_lines(raw_app, request)
        status, lines = await _response_lines(shielded, request)
        if (own_status, status) != (200, 200):
            raise RuntimeError(
                f"capturing Bastion's lines, {request.name}: the raw app answered "
                f"{own_status} and Bastion {status}, expected 200 from both"
            )
        # The lines of Bastion's response that are not the app's own, in Bastion's
        # order (a line the app sent twice is the app's own twice).
        for line in own:
            if line not in lines:
                raise RuntimeError(f"Bastion changed the raw app's line {line!r} on {request.name}")
            lines.remove(line)
        added[request.name] = tuple(lines)
    return added


def bastion_lines() -> dict[str, tuple[Header, ...]]:
    """Route name -> the response header lines Bastion's full stack (`shield`) adds to
    the raw app's on that route, over plain HTTP to 127.0.0.1.

    Taken by running `shield(raw_app)` once per route, in-process, on the scope
    uvicorn would build for the benchmark's request, and keeping the lines of its
    response that the raw app's own response lacks: whatever Bastion adds today,
    without a list to keep in step with it. A line whose value changes from request
    to request would be taken from this one response: a session cookie had Bastion
    set one, or the `RateLimit` lines had the rate come near its limit (it sets none
    on these routes, and the never-tripping rate stays far from its limit). The run
    happens in a thread of its own with its own event loop: servers build their stack
    from inside a running loop.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _added_lines()).result()


def raw_with_bastion_lines() -> ASGIApp:
    """The raw app, adding `bastion_lines` itself: "raw ASGI + Bastion's lines"."""
    return raw_application(bastion_lines())


def _starlette_peer() -> ASGIApp:
    from bench.peers import starlette_peer

    return starlette_peer()


def _fastapi_peer() -> ASGIApp:
    from bench.peers import fastapi_peer

    return fastapi_peer()


def _django() -> ASGIApp:
    from bench.django_app import django_app

    return django_app()


# Name -> factory, in table order. Peers and Django are imported only when built.
STACKS: Final[dict[str, Callable[[], ASGIApp]]] = {
    "raw ASGI": lambda: raw_app,
    LINES_STACK: raw_with_bastion_lines,
    "Starlette": starlette_app,
    "FastAPI": fastapi_app,
    "peer stack + Starlette": _starlette_peer,
    "peer stack + FastAPI": _fastapi_peer,
    "Django": _django,
    "Bastion + raw ASGI": lambda: shield(raw_app),
    "Bastion + Starlette": lambda: shield(starlette_app()),
    "Bastion + FastAPI": lambda: shield(fastapi_app()),
    "WebSocket guard alone + raw ASGI": lambda: websocket_guard_alone(raw_app),
    "Bastion, guard off + raw ASGI": lambda: shield(raw_app, websocket_guard=False),
}


def app_from_environment() -> ASGIApp:
    """The stack named by `BENCH_STACK`: the factory servers are started with."""
    name = os.environ.get(STACK_VARIABLE, "")
    if name not in STACKS:
        raise RuntimeError(f"{STACK_VARIABLE} must name a stack, one of {sorted(STACKS)}")
    return STACKS[name]()
