"""HeadersMiddleware against raw ASGI, Starlette and FastAPI, in process."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import jinja2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bastion.context import SCOPE_KEY
from bastion.headers import HeadersMiddleware, HeadersSettings, RouteHeadersSettings
from bastion.headers.csp import NONCE_VALUE
from bastion.templating import csp_nonce, csp_nonce_processor, install_csp_nonce
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio

EXPECTED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "x-frame-options": "DENY",
    "origin-agent-cluster": "?1",
    "x-xss-protection": "0",
    "reporting-endpoints": 'bastion-csp="/.bastion/csp-report"',
}
_NONCE_IN_HEADER = re.compile(r"'nonce-([^']+)'")


def _header_nonces(response: httpx.Response, name: str = "content-security-policy") -> list[str]:
    return _NONCE_IN_HEADER.findall(response.headers[name])


def _app_with_headers(headers: list[tuple[bytes, bytes]]) -> ASGIApp:
    """A raw ASGI app answering every request with `headers` and an HTML body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"<p>hi</p>"})

    return app


# The test apps answer text and JSON, which default settings answer with the resource
# set (tests/headers/test_resource_types.py); these tests look at the document set,
# so they send it everywhere.
PAGES_EVERYWHERE = HeadersSettings(resource_types=())


@pytest.mark.parametrize("path", ["/", "/json", "/missing"])
async def test_every_header_on_every_response(framework_app: ASGIApp, path: str) -> None:
    async with asgi_client(HeadersMiddleware(framework_app, PAGES_EVERYWHERE)) as client:
        response = await client.get(path)
    for name, value in EXPECTED.items():
        assert response.headers[name] == value
    assert "camera=()" in response.headers["permissions-policy"]
    policy = response.headers["content-security-policy"]
    assert policy.startswith("default-src 'self'; script-src 'nonce-")
    assert "report-uri /.bastion/csp-report; report-to bastion-csp" in policy


async def test_nonce_in_context_equals_nonce_in_header(framework_app: ASGIApp) -> None:
    async with asgi_client(HeadersMiddleware(framework_app, PAGES_EVERYWHERE)) as client:
        first = await client.get("/context")
        second = await client.get("/context")
    nonces = []
    for response in (first, second):
        in_context = response.json()["csp_nonce"]
        assert NONCE_VALUE.match(in_context)
        assert len(in_context) >= 22  # 128 bits of base64
        assert _header_nonces(response) == [in_context, in_context]
        nonces.append(in_context)
    assert nonces[0] != nonces[1]


async def test_server_and_powered_by_are_stripped() -> None:
    app = _app_with_headers(
        [
            (b"Server", b"Apache/2.2.3 (CentOS)"),
            (b"X-Powered-By", b"PHP/5.1.6"),
            (b"content-type", b"text/html"),
        ]
    )
    async with asgi_client(HeadersMiddleware(app)) as client:
        response = await client.get("/")
    assert "server" not in response.headers
    assert "x-powered-by" not in response.headers
    assert response.headers["content-type"] == "text/html"
    assert response.text == "<p>hi</p>"


async def test_starlette_endpoint_headers_are_stripped() -> None:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("x", headers={"server": "starlette", "x-powered-by": "py"})

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(HeadersMiddleware, settings=HeadersSettings())
    async with asgi_client(app) as client:
        response = await client.get("/")
    assert "server" not in response.headers
    assert "x-powered-by" not in response.headers
    assert response.headers["x-frame-options"] == "DENY"


async def test_app_set_headers_are_kept_by_default() -> None:
    app = _app_with_headers(
        [
            (b"content-security-policy", b"default-src 'none'"),
            (b"cross-origin-resource-policy", b"cross-origin"),
        ]
    )
    async with asgi_client(HeadersMiddleware(app)) as client:
        response = await client.get("/")
    assert response.headers.get_list("content-security-policy") == ["default-src 'none'"]
    assert response.headers.get_list("cross-origin-resource-policy") == ["cross-origin"]
    assert response.headers["x-frame-options"] == "DENY"


async def test_enforce_replaces_app_set_headers() -> None:
    app = _app_with_headers([(b"content-security-policy", b"default-src *")])
    async with asgi_client(HeadersMiddleware(app, HeadersSettings(enforce=True))) as client:
        response = await client.get("/")
    [policy] = response.headers.get_list("content-security-policy")
    assert policy.startswith("default-src 'self'")


async def test_report_only(framework_app: ASGIApp) -> None:
    settings = HeadersSettings(csp_report_only=True, resource_types=())
    async with asgi_client(HeadersMiddleware(framework_app, settings)) as client:
        response = await client.get("/context")
    assert "content-security-policy" not in response.headers
    nonces = _header_nonces(response, "content-security-policy-report-only")
    assert nonces == [response.json()["csp_nonce"]] * 2


ROUTES = HeadersSettings(
    resource_types=(),
    routes={
        "/json": RouteHeadersSettings(
            csp_directives={"frame-ancestors": ("https://partner.example",)},
            cross_origin_resource_policy="cross-origin",
        ),
        "/context": RouteHeadersSettings(insecure_disable_csp=True),
        "POST /echo": RouteHeadersSettings(referrer_policy="no-referrer"),
    },
)


async def test_per_route_overrides(framework_app: ASGIApp) -> None:
    async with asgi_client(HeadersMiddleware(framework_app, ROUTES)) as client:
        embed = await client.get("/json")
        plain = await client.get("/")
        echo = await client.post("/echo", content=b"x", headers={"content-type": "text/plain"})
    assert "frame-ancestors https://partner.example;" in embed.headers["content-security-policy"]
    assert embed.headers["cross-origin-resource-policy"] == "cross-origin"
    assert "x-frame-options" not in embed.headers
    assert "frame-ancestors 'none'" in plain.headers["content-security-policy"]
    assert plain.headers["cross-origin-resource-policy"] == "same-origin"
    assert echo.headers["referrer-policy"] == "no-referrer"
    assert plain.headers["referrer-policy"] == "strict-origin-when-cross-origin"


async def test_route_without_csp_draws_no_nonce(framework_app: ASGIApp) -> None:
    async with asgi_client(HeadersMiddleware(framework_app, ROUTES)) as client:
        response = await client.get("/context")
    assert "content-security-policy" not in response.headers
    assert "reporting-endpoints" not in response.headers
    assert response.json().get("csp_nonce", "") == ""
    assert response.headers["x-frame-options"] == "DENY"


async def test_disabled_layer_passes_through(framework_app: ASGIApp) -> None:
    settings = HeadersSettings(enabled=False)
    async with asgi_client(HeadersMiddleware(framework_app, settings)) as client:
        response = await client.get("/context")
        report = await client.post("/.bastion/csp-report", content=b"{}")
    assert "content-security-policy" not in response.headers
    assert "x-content-type-options" not in response.headers
    assert response.json() == {}  # the layer did not touch the scope
    assert report.status_code in (404, 405)  # the app's answer, not the layer's


# Jinja2: the template sees the nonce the header carries.

PAGE = '<script nonce="{{ csp_nonce() }}">go()</script>'


def _templated_app(templates: Jinja2Templates) -> Starlette:
    async def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "page.html")

    return Starlette(routes=[Route("/page", page)])


@pytest.mark.parametrize("style", ["install", "context-processor"])
async def test_jinja2_templates_render_the_header_nonce(tmp_path: Path, style: str) -> None:
    (tmp_path / "page.html").write_text(PAGE)
    if style == "install":
        templates = Jinja2Templates(directory=tmp_path)
        install_csp_nonce(templates)
    else:
        templates = Jinja2Templates(directory=tmp_path, context_processors=[csp_nonce_processor])
    async with asgi_client(HeadersMiddleware(_templated_app(templates))) as client:
        first = await client.get("/page")
        second = await client.get("/page")
    for response in (first, second):
        [nonce] = re.findall(r'nonce="([^"]+)"', response.text)
        assert _header_nonces(response) == [nonce, nonce]
    assert first.text != second.text


async def test_plain_jinja2_with_a_raw_asgi_scope() -> None:
    env = jinja2.Environment(autoescape=True)
    install_csp_nonce(env)
    template = env.from_string(PAGE)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = template.render(scope=scope).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async with asgi_client(HeadersMiddleware(app)) as client:
        response = await client.get("/")
    [nonce] = re.findall(r'nonce="([^"]+)"', response.text)
    assert _header_nonces(response) == [nonce, nonce]


def test_nonce_outside_a_request_is_empty() -> None:
    env = jinja2.Environment(autoescape=True)
    install_csp_nonce(env)
    assert env.from_string(PAGE).render() == '<script nonce="">go()</script>'
    assert csp_nonce({"type": "http"}) == ""
    assert csp_nonce(object()) == ""


def test_install_refuses_other_objects() -> None:
    with pytest.raises(TypeError):
        install_csp_nonce(object())


# Other scope types pass through untouched.


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan", "custom"])
async def test_other_scopes_pass_through_untouched(scope_type: str) -> None:
    seen: list[Message] = []
    scope: Scope = {"type": scope_type, "path": "/.bastion/csp-report", "headers": []}
    original = dict(scope)

    async def app(inner_scope: Scope, receive: Receive, send: Send) -> None:
        assert inner_scope is scope
        await send({"type": "websocket.accept", "headers": [(b"server", b"x")]})

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        seen.append(message)

    await HeadersMiddleware(app)(scope, receive, send)
    assert scope == original
    assert SCOPE_KEY not in scope
    assert seen == [{"type": "websocket.accept", "headers": [(b"server", b"x")]}]


async def test_streaming_body_passes_unchanged() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with asgi_client(HeadersMiddleware(app)) as client:
        response = await client.get("/")
    assert response.text == "abc"
    assert response.headers["x-content-type-options"] == "nosniff"
