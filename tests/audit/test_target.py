"""Targets (in-process ASGI driver, live URL) and route discovery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from bastion.audit.discovery import (
    LoginRecipe,
    fill_parameters,
    parse_route,
    routes_from_app,
    routes_from_openapi,
    sample_value,
)
from bastion.audit.discovery import Route as AuditRoute
from bastion.audit.target import (
    MAX_BODY_BYTES,
    CookieJar,
    HTTPResponse,
    InProcessTarget,
    TargetError,
    URLTarget,
    default_host,
    load_app,
    owns,
    parse_set_cookie,
    unwrap,
)
from bastion.types import Receive, Scope, Send
from tests.audit import weak_apps

pytestmark = pytest.mark.anyio


def recording_app(events: list[str]) -> Any:
    """A raw app that records lifespan and echoes what it saw of each request."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["ready"] = True
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await receive()
            path = scope["path"]
            if path == "/accept":
                await send({"type": "websocket.accept"})
            elif path == "/close":
                await send({"type": "websocket.close", "code": 1008})
            elif path == "/deny":
                await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
                await send({"type": "websocket.http.response.body", "body": b"no"})
            else:
                raise RuntimeError("ws failed")
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/raise":
            raise RuntimeError("secret detail")
        if scope["path"] == "/big":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(3):
                await send(
                    {"type": "http.response.body", "body": b"x" * MAX_BODY_BYTES, "more_body": True}
                )
            await send({"type": "http.response.body", "body": b""})
            return
        seen = {
            "method": scope["method"],
            "scheme": scope["scheme"],
            "host": dict(scope["headers"]).get(b"host", b"").decode(),
            "body_bytes": len(body),
            "ready": scope["state"].get("ready"),
        }
        status = 302 if scope["path"] == "/redirect" else 200
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"location", b"/elsewhere"), (b"Set-Cookie", b"a=1; Secure")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(seen).encode()})

    return app


async def test_in_process_runs_lifespan_and_sends_exactly_what_was_asked() -> None:
    events: list[str] = []
    target = InProcessTarget(recording_app(events), host="bank.example")
    async with target:
        assert events == ["lifespan.startup"]
        seen = json.loads(
            (
                await target.request(
                    "TRACE", "/", headers=(("host", "evil.example"),), scheme="http"
                )
            ).body
        )
        assert seen == {
            "method": "TRACE",
            "scheme": "http",
            "host": "evil.example",
            "body_bytes": 0,
            "ready": True,
        }
        default = json.loads((await target.request("POST", "/", body=b"abc")).body)
        assert (default["scheme"], default["host"], default["body_bytes"]) == (
            "https",
            "bank.example",
            3,
        )
        redirect = await target.request("GET", "/redirect")
        assert redirect.status == 302
        assert redirect.header("location") == "/elsewhere"
        assert redirect.header("set-cookie") == "a=1; Secure"  # names lower-cased

        async def stream() -> Any:
            for _ in range(4):
                yield b"y" * 1000

        streamed = json.loads((await target.request("POST", "/", body=stream())).body)
        assert streamed["body_bytes"] == 4000
        big = await target.request("GET", "/big")
        assert len(big.body) == MAX_BODY_BYTES
        crashed = await target.request("GET", "/raise")
        assert crashed.status == 500
        assert b"secret" not in crashed.body
    assert events == ["lifespan.startup", "lifespan.shutdown"]


@pytest.mark.parametrize(
    ("path", "accepted", "status", "close_code"),
    [
        pytest.param("/accept", True, None, None, id="ws-accepted"),
        pytest.param("/close", False, 403, 1008, id="ws-closed-before-accept"),
        pytest.param("/deny", False, 403, None, id="ws-denial-response"),
        pytest.param("/raise", False, 500, None, id="ws-app-raised"),
    ],
)
async def test_in_process_websocket_handshakes(
    path: str, accepted: bool, status: int | None, close_code: int | None
) -> None:
    async with InProcessTarget(recording_app([])) as target:
        result = await target.websocket(path, headers=(("origin", "https://evil.example"),))
    assert (result.accepted, result.status, result.close_code) == (accepted, status, close_code)


async def test_failed_startup_is_a_clear_error() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database down"})

    with pytest.raises(TargetError, match="failed to start: database down"):
        async with InProcessTarget(app):
            pass


async def test_app_without_lifespan_support_still_runs() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan here")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with InProcessTarget(app) as target:
        assert (await target.request("GET", "/")).status == 204


def test_load_app_calls_factories_only() -> None:
    app = load_app("tests.audit.weak_apps:weak_starlette_app")
    assert isinstance(app, Starlette)
    raw = load_app("tests.support.apps:raw_app")
    assert getattr(raw, "__name__", "") == "raw_app"  # a function, not called
    for spec in ("tests.audit.weak_apps", "no_such_module_x:app", "tests.audit.weak_apps:nope"):
        with pytest.raises(TargetError):
            load_app(spec)


@pytest.mark.parametrize(
    ("spec", "message", "secret"),
    [
        pytest.param(
            "tests.audit.broken_import:app",
            "importing 'tests.audit.broken_import' raised KeyError",
            "secret-abc",
            id="target-import-raises",
        ),
        pytest.param(
            "tests.audit.broken_apps:failing_factory",
            "the factory 'tests.audit.broken_apps:failing_factory' raised RuntimeError",
            "secret-xyz",
            id="target-factory-raises",
        ),
        pytest.param(
            "no_such_module_x:app",
            "cannot import 'no_such_module_x': no module 'no_such_module_x'",
            "",
            id="target-no-such-module",
        ),
    ],
)
def test_load_app_names_only_the_exception_type(spec: str, message: str, secret: str) -> None:
    with pytest.raises(TargetError) as raised:
        load_app(spec)
    assert str(raised.value) == message
    assert raised.value.__cause__ is None  # the original (and its message) is dropped
    assert raised.value.__suppress_context__
    if secret:
        assert secret not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "label"),
    [
        pytest.param(
            "http://user:hunter2@127.0.0.1:8000/app?token=t0ps3cret#x",
            "http://127.0.0.1:8000/app",
            id="target-url-credentials-and-query-hidden",
        ),
        pytest.param("https://bank.example/", "https://bank.example/", id="target-url-plain-ok"),
    ],
)
def test_url_target_hides_credentials(url: str, label: str) -> None:
    target = URLTarget(url)
    assert target.label == label
    assert target.host == label.split("/")[2]  # never `user:password@` in `Host`
    assert target.is_live


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://user:hunter2@/", id="target-url-no-host-credentials-hidden"),
        pytest.param("ftp://user:hunter2@bank.example/", id="target-url-bad-scheme-hidden"),
        pytest.param("http://user:hunter2@bad host/?k=hunter2", id="target-url-bad-host-hidden"),
    ],
)
def test_url_target_errors_hide_credentials(url: str) -> None:
    with pytest.raises(TargetError) as raised:
        URLTarget(url)
    assert "hunter2" not in str(raised.value)


def test_default_host_comes_from_the_shield() -> None:
    assert default_host(weak_apps.hardened_app()) == weak_apps.HARDENED_HOST
    assert default_host(weak_apps.weak_starlette_app()) == "testserver"
    from bastion.shield import Shield

    app = Starlette()
    app.add_middleware(Shield, settings=weak_apps.hardened_settings())
    assert default_host(app) == weak_apps.HARDENED_HOST


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        pytest.param("/next", ("https", "/next"), id="redirect-relative-ok"),
        pytest.param("https://bank.example/a?b=1", ("https", "/a?b=1"), id="redirect-same-host-ok"),
        pytest.param("http://bank.example/", ("http", "/"), id="redirect-other-scheme-ok"),
        pytest.param("https://evil.example/", None, id="redirect-other-host"),
        pytest.param("//evil.example/", None, id="redirect-protocol-relative"),
        pytest.param("https://bank.example:8443/", None, id="redirect-other-port"),
        pytest.param("javascript:alert(1)", None, id="redirect-javascript"),
        pytest.param("https://bank.example@evil.example/", None, id="redirect-userinfo"),
    ],
)
def test_redirects_followed_only_on_own_host(
    location: str, expected: tuple[str, str] | None
) -> None:
    target = InProcessTarget(recording_app([]), host="bank.example")
    assert owns(target, location, "https://bank.example/") == expected


def test_set_cookie_parsing_and_jar() -> None:
    cookie = parse_set_cookie("__Host-s=abc; Path=/; Secure; HttpOnly; SameSite=Lax")
    assert cookie is not None
    assert (cookie.secure, cookie.http_only, cookie.same_site) == (True, True, "lax")
    assert "abc" not in repr(cookie)
    assert "abc" not in cookie.describe()
    assert parse_set_cookie("no-equals-sign") is None
    jar = CookieJar()
    jar.update(HTTPResponse(200, (("set-cookie", "a=1"), ("set-cookie", "b=2")), b""))
    assert jar.header() == (("cookie", "a=1; b=2"),)
    jar.update(HTTPResponse(200, (("set-cookie", "a=; Max-Age=0"),), b""))
    assert jar.names() == ["b"]
    assert "2" not in repr(jar)


def test_url_target_speaks_the_other_scheme_only_on_default_ports() -> None:
    assert URLTarget("https://bank.example").supports("http")
    on_port = URLTarget("http://127.0.0.1:8000")
    assert on_port.supports("http")
    assert not on_port.supports("https")
    with pytest.raises(TargetError):
        URLTarget("ftp://bank.example")


# ---------------------------------------------------------------------------
# Discovery


@pytest.mark.parametrize(
    ("text", "route"),
    [
        pytest.param("GET /", AuditRoute("GET", "/"), id="route-get"),
        pytest.param("post /transfer", AuditRoute("POST", "/transfer"), id="route-lower-case"),
        pytest.param("WS /ws", AuditRoute("WS", "/ws"), id="route-websocket"),
        pytest.param("/bare", AuditRoute("GET", "/bare"), id="route-bare-path"),
    ],
)
def test_parse_route(text: str, route: AuditRoute) -> None:
    assert parse_route(text) == route


@pytest.mark.parametrize("text", ["FETCH /", "GET nopath", ""])
def test_parse_route_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="METHOD"):
        parse_route(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("GET /a b", id="route-option-space"),
        pytest.param("GET /a\tb", id="route-option-tab"),
        pytest.param("POST /a\x07", id="route-option-control-char"),
        pytest.param("GET /a\x7f", id="route-option-del"),
        pytest.param("GET /a\ud800", id="route-option-lone-surrogate"),
    ],
)
def test_parse_route_refuses_a_path_no_request_can_carry(text: str) -> None:
    with pytest.raises(ValueError, match="cannot hold a space, a control character"):
        parse_route(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("GET /a%20b", id="route-option-encoded-space-ok"),
        pytest.param("GET /caf\u00e9", id="route-option-accented-ok"),
    ],
)
def test_parse_route_takes_an_encoded_or_unicode_path(text: str) -> None:
    assert parse_route(text).path == text.split(" ", 1)[1]


def test_routes_from_routing_through_shield_and_mounts() -> None:
    async def page(request: Request) -> Response:
        return PlainTextResponse("")

    async def ws(websocket: WebSocket) -> None:
        await websocket.close()

    inner = Starlette(
        routes=[
            Route("/", page),
            Route("/items/{item_id:int}", page, methods=["GET", "DELETE"]),
            Mount("/api", routes=[Route("/send", page, methods=["POST"])]),
            WebSocketRoute("/ws", ws),
        ]
    )
    from bastion.shield import Shield

    shielded = Shield(inner, weak_apps.hardened_settings())
    assert [str(r) for r in routes_from_app(shielded)] == [
        "GET /",
        "DELETE /items/1",
        "GET /items/1",
        "POST /api/send",
        "WS /ws",
    ]


def test_routes_from_openapi_with_sample_bodies() -> None:
    app = weak_apps.weak_fastapi_app()
    routes = {str(r): r for r in routes_from_openapi(app.openapi())}
    assert "POST /transfer" in routes
    assert "GET /api/me" in routes
    transfer = routes["POST /transfer"]
    assert transfer.content_type == "application/x-www-form-urlencoded"
    assert transfer.body == b"to=audit&amount=audit"
    assert routes["POST /api/echo"].content_type == "application/json"
    assert fill_parameters("/u/{id}/f/{p:path}") == "/u/1/f/1"


@pytest.mark.parametrize(
    ("schema", "sample"),
    [
        pytest.param({"type": "string", "example": "one"}, "one", id="sample-example"),
        pytest.param(
            {"type": "string", "examples": ["two", "x"]}, "two", id="sample-examples-list"
        ),
        pytest.param({"type": "integer", "examples": []}, 1, id="sample-examples-empty"),
        pytest.param({"type": "string", "examples": "bad"}, "audit", id="sample-examples-not-list"),
        pytest.param(
            {"type": "string", "default": "d", "examples": ["e"]}, "d", id="sample-default-first"
        ),
    ],
)
def test_sample_value_takes_the_schemas_own_values(schema: dict[str, Any], sample: Any) -> None:
    assert sample_value(schema, {}) == sample


def test_the_demo_transfer_sample_is_a_transfer_alice_can_make(tmp_path: Path) -> None:
    """The bank's transfer form names a valid transfer as its examples, so an audit's
    sample request reaches the money-moving code (the CSRF probe needs a baseline
    the bank accepts: `tests/audit/test_demo_audit.py` sees it refused cross-site)."""
    from bastion.demo import create_app
    from bastion.demo.settings import DemoSettings

    demo = create_app(demo=DemoSettings(data_dir=tmp_path, https_port=443, http_port=None))
    bank = next(layer for layer in unwrap(demo) if hasattr(layer, "openapi"))
    routes = {str(r): r for r in routes_from_openapi(bank.openapi())}
    assert routes["POST /transfer"].body == b"from_account=1&to_user=bob&amount=1.00"


@pytest.mark.parametrize(
    ("route", "writable"),
    [
        pytest.param(AuditRoute("POST", "/transfer"), True, id="writes-transfer"),
        pytest.param(AuditRoute("POST", "/logout"), False, id="writes-never-logout"),
        pytest.param(AuditRoute("DELETE", "/items/1"), False, id="writes-never-delete"),
        pytest.param(AuditRoute("POST", "/account/remove"), False, id="writes-never-remove"),
        pytest.param(AuditRoute("GET", "/"), False, id="writes-get-is-not-a-write"),
    ],
)
def test_state_changing_probes_avoid_harm(route: AuditRoute, writable: bool) -> None:
    assert route.may_be_probed_with_writes is writable


def test_login_recipe_hides_the_password() -> None:
    recipe = LoginRecipe("/login", "alice", "s3cret-pw", encoding="json")
    assert "s3cret-pw" not in repr(recipe)
    body, content_type = recipe.body(password="wrong")
    assert content_type == "application/json"
    assert json.loads(body) == {"username": "alice", "password": "wrong"}
