from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware

from bastion.auth.middleware import AuthenticationMiddleware
from bastion.auth.policy import AuthorizationMiddleware
from bastion.cors import CORSMiddleware
from bastion.csrf import CSRFMiddleware
from bastion.errors import ErrorsMiddleware
from bastion.headers import HeadersMiddleware
from bastion.limits import LimitsMiddleware
from bastion.ratelimit import RateLimitMiddleware
from bastion.sessions import SessionMiddleware
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.transport import TransportMiddleware
from bastion.types import Receive, Scope, Send
from bastion.websocket import WebSocketGuardMiddleware
from tests.conftest import RecordingSink, asgi_client
from tests.support.apps import make_app, starlette_app

pytestmark = pytest.mark.anyio


def chain(shield: Shield) -> list[type]:
    """The classes of the composed stack, outermost first, down to the app."""
    found: list[type] = []
    layer: Any = shield._stack
    while layer is not shield.app:
        found.append(type(layer))
        layer = layer.app
    return found


def test_stack_order_follows_the_design() -> None:
    shield = Shield(make_app("raw"), mode="development")
    assert chain(shield) == [
        ErrorsMiddleware,
        TransportMiddleware,
        LimitsMiddleware,
        HeadersMiddleware,
        CORSMiddleware,
        RateLimitMiddleware,
        SessionMiddleware,
        AuthenticationMiddleware,
        CSRFMiddleware,
        AuthorizationMiddleware,
        WebSocketGuardMiddleware,
    ]
    assert shield.layers == (
        "errors",
        "transport",
        "limits",
        "headers",
        "cors",
        "ratelimit",
        "sessions",
        "auth",
        "csrf",
        "policy",
        "websocket",
    )


def test_disabled_layers_leave_the_chain_and_are_reported() -> None:
    shield = Shield(
        make_app("raw"), mode="development", cors={"enabled": False}, limits={"enabled": False}
    )
    assert CORSMiddleware not in chain(shield)
    assert LimitsMiddleware not in chain(shield)
    assert "cors.enabled=false" in shield.opt_outs


def test_overrides_apply_on_top_of_settings() -> None:
    base = Settings(mode="development", transport={"allowed_hosts": ["a.example"]})
    shield = Shield(make_app("raw"), base, debug=True)
    assert shield.settings.debug is True
    assert shield.settings.transport.allowed_hosts == ("a.example",)


def test_startup_event_lists_layers_and_opt_outs() -> None:
    from bastion.events import EventEmitter

    sink = RecordingSink()
    Shield(make_app("raw"), mode="development", events=EventEmitter([sink]))
    (record,) = sink.records
    assert record["kind"] == "sys_startup"
    details = record["details"]
    assert isinstance(details, dict)
    assert details["opt_outs"] == [
        "transport.insecure_allow_http",
        "sessions.insecure_cookie_over_http",
    ]


async def test_lifespan_and_unknown_scopes_reach_the_app_untouched() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    shield = Shield(app, mode="development")
    lifespan: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}}
    custom: dict[str, Any] = {"type": "custom.thing"}
    await shield(lifespan, None, None)  # type: ignore[arg-type]
    await shield(custom, None, None)  # type: ignore[arg-type]
    assert seen == [{"type": "lifespan", "asgi": {"version": "3.0"}}, {"type": "custom.thing"}]


@pytest.mark.parametrize("framework", ["raw", "starlette", "fastapi"])
async def test_one_line_hardening(framework: str) -> None:
    app = Shield(make_app(framework), mode="development")
    async with asgi_client(app) as client:
        response = await client.get("/")
        boom = await client.get("/boom")
    assert response.status_code == 200
    assert response.text == "hello"
    assert boom.status_code == 500
    assert "kaboom" not in boom.text


async def test_works_through_starlette_add_middleware() -> None:
    app = starlette_app(debug=True)
    app.add_middleware(Shield, mode="development")
    async with asgi_client(app) as client:
        response = await client.get("/")
        boom = await client.get("/boom")
    assert response.text == "hello"
    assert boom.status_code == 500
    assert "Traceback" not in boom.text


async def test_works_as_starlette_middleware_list() -> None:
    app = Starlette(middleware=[Middleware(Shield, settings=Settings(mode="development"))])
    async with asgi_client(app) as client:
        assert (await client.get("/nothing")).status_code == 404


def test_one_jail_is_shared_by_the_rate_limit_layer_and_the_event_stream() -> None:
    from bastion.ratelimit import JailSink

    shield = Shield(make_app("raw"), mode="development")
    layer: Any = shield._stack
    while not isinstance(layer, RateLimitMiddleware):
        layer = layer.app
    (sink,) = [s for s in shield.events.sinks if isinstance(s, JailSink)]
    assert layer.jail is sink.jail
