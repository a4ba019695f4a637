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

Servers (`uvicorn --factory bench.stacks:app_from_environment`) build the stack
named by the `BENCH_STACK` environment variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

from bastion.events import EventEmitter
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.types import ASGIApp
from bastion.websocket import WebSocketGuardMiddleware
from bastion.websocket.settings import WebSocketSettings
from bench.apps import fastapi_app, raw_app, starlette_app
from bench.client import JWT_AUDIENCE, JWT_ISSUER, jwks

# A rate no benchmark run can reach (see the module docstring).
NEVER_TRIPPING_RATE: Final = "1000000/second"
NEVER_TRIPPING_MESSAGES: Final = 1_000_000
SECRET_KEYS: Final = ("bench-only-secret-key-not-for-production-0123456789",)
STACK_VARIABLE: Final = "BENCH_STACK"


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
