"""Named CORS attacks, each beside the legitimate request that must still work.

Every case runs against the raw ASGI, Starlette and FastAPI test apps. Actual
(non-preflight) requests are never refused: the defence is that the response carries
no grant, so the browser keeps it from the attacker's page. Preflights that ask for
more than the policy allows are refused with 403 and a `malicious_cors` event.
"""

from __future__ import annotations

import pytest

from bastion.cors import CORSMiddleware, CORSSettings
from bastion.events import EventEmitter
from bastion.types import ASGIApp
from tests.conftest import RecordingSink, asgi_client

SETTINGS = CORSSettings(
    allow_origins=("https://app.example", "https://*.example.com", "http://localhost:3000"),
    allow_credentials=True,
    allow_methods=("GET", "POST", "PUT"),
    allow_headers=("content-type", "x-requested-with"),
    expose_headers=("x-request-id",),
)

# (request origin, the ACAO expected; None: no grant)
ACTUAL = [
    pytest.param(None, None, id="cors-no-origin-ok"),
    pytest.param("https://app.example", "https://app.example", id="cors-allowed-origin-ok"),
    pytest.param("http://localhost:3000", "http://localhost:3000", id="cors-dev-origin-ok"),
    pytest.param("https://api.example.com", "https://api.example.com", id="cors-pattern-ok"),
    pytest.param("https://a.b.example.com", "https://a.b.example.com", id="cors-pattern-deep-ok"),
    pytest.param("https://example.com.evil.net", None, id="cors-origin-suffix-trick"),
    pytest.param("https://evilexample.com", None, id="cors-origin-prefix-trick"),
    pytest.param("https://app.example.evil.net", None, id="cors-exact-suffix-trick"),
    pytest.param("https://example.com", None, id="cors-pattern-apex-not-listed"),
    pytest.param("null", None, id="cors-null-origin"),
    pytest.param("http://app.example", None, id="cors-scheme-downgrade"),
    pytest.param("http://api.example.com", None, id="cors-pattern-scheme-downgrade"),
    pytest.param("https://app.example:8443", None, id="cors-port-mismatch"),
    pytest.param("https://api.example.com:444", None, id="cors-pattern-port-mismatch"),
    pytest.param("https://evil.net", None, id="cors-arbitrary-origin"),
    pytest.param("https://app.example/path", None, id="cors-malformed-origin"),
    pytest.param("https://evil.net@app.example", None, id="cors-malformed-origin-userinfo"),
    pytest.param("https://app.example, https://evil.net", None, id="cors-origin-list"),
    pytest.param("ws://app.example", None, id="cors-origin-ws-scheme"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("origin", "expected_acao"), ACTUAL)
async def test_actual_request(
    framework_app: ASGIApp,
    events: EventEmitter,
    sink: RecordingSink,
    origin: str | None,
    expected_acao: str | None,
) -> None:
    app = CORSMiddleware(framework_app, SETTINGS, events=events)
    headers = {"origin": origin} if origin is not None else {}
    async with asgi_client(app) as client:
        response = await client.get("/", headers=headers)

    assert response.status_code == 200  # never refused: CSRF is another layer's job
    assert response.text == "hello"
    assert response.headers.get("access-control-allow-origin") == expected_acao
    assert "Origin" in response.headers.get_list("vary")
    if expected_acao is None:
        assert not any(name.startswith("access-control-") for name in response.headers)
    else:
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["access-control-expose-headers"] == "x-request-id"
    assert sink.records == []


# (origin, requested method, requested headers, extra request headers, refusal reason)
PREFLIGHT = [
    pytest.param("https://app.example", "PUT", "content-type", {}, None, id="cors-preflight-ok"),
    pytest.param(
        "https://api.example.com", "POST", "x-requested-with", {}, None, id="cors-preflight-pat-ok"
    ),
    pytest.param(
        "https://app.example", "GET", "accept-language", {}, None, id="cors-preflight-safelisted-ok"
    ),
    pytest.param(
        "https://example.com.evil.net",
        "PUT",
        None,
        {},
        "origin-not-allowed",
        id="cors-preflight-origin-suffix-trick",
    ),
    pytest.param(
        "https://evilexample.com",
        "PUT",
        None,
        {},
        "origin-not-allowed",
        id="cors-preflight-origin-prefix-trick",
    ),
    pytest.param(
        "https://evil.net", "GET", None, {}, "origin-not-allowed", id="cors-preflight-arbitrary"
    ),
    pytest.param("null", "GET", None, {}, "origin-null", id="cors-preflight-null-origin"),
    pytest.param(
        "http://app.example", "PUT", None, {}, "origin-not-allowed", id="cors-preflight-downgrade"
    ),
    pytest.param(
        "https://app.example:8443", "PUT", None, {}, "origin-not-allowed", id="cors-preflight-port"
    ),
    pytest.param(
        "https://app.example/", "PUT", None, {}, "origin-malformed", id="cors-preflight-malformed"
    ),
    pytest.param(
        "https://app.example",
        "DELETE",
        None,
        {},
        "method-not-allowed",
        id="cors-preflight-method-not-allowed",
    ),
    pytest.param(
        "https://app.example",
        "put",
        None,
        {},
        "method-not-allowed",
        id="cors-preflight-method-case",
    ),
    pytest.param(
        "https://app.example",
        "POST",
        "content-type, x-evil",
        {},
        "header-not-allowed",
        id="cors-preflight-header-not-allowed",
    ),
    pytest.param(
        "https://app.example",
        "POST",
        "authorization",
        {},
        "header-not-allowed",
        id="cors-preflight-authorization-not-allowed",
    ),
    pytest.param(
        "https://app.example",
        "GET",
        None,
        {"access-control-request-private-network": "true"},
        "private-network-not-allowed",
        id="cors-preflight-private-network",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("origin", "method", "requested", "extra", "reason"), PREFLIGHT)
async def test_preflight(
    framework_app: ASGIApp,
    events: EventEmitter,
    sink: RecordingSink,
    origin: str,
    method: str,
    requested: str | None,
    extra: dict[str, str],
    reason: str | None,
) -> None:
    app = CORSMiddleware(framework_app, SETTINGS, events=events)
    headers = {"origin": origin, "access-control-request-method": method, **extra}
    if requested is not None:
        headers["access-control-request-headers"] = requested
    async with asgi_client(app) as client:
        response = await client.options("/", headers=headers)

    vary = response.headers["vary"]
    assert vary.startswith("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    if reason is None:
        # Answered by the middleware: the apps have no OPTIONS route (they would say 405).
        assert response.status_code == 204
        assert response.content == b""
        assert response.headers["access-control-allow-origin"] == origin
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["access-control-allow-methods"] == "GET, POST, PUT"
        assert response.headers["access-control-allow-headers"] == (
            "accept, accept-language, content-language, content-type, x-requested-with"
        )
        assert response.headers["access-control-max-age"] == "600"
        assert "access-control-allow-private-network" not in response.headers
        assert sink.records == []
        return
    assert response.status_code == 403
    assert not any(name.startswith("access-control-") for name in response.headers)
    assert origin not in response.text  # generic body: nothing from the request
    assert response.headers["cache-control"] == "no-store"
    [record] = sink.records
    assert record["kind"] == "malicious_cors"
    assert record["reason"] == reason
    assert record["layer"] == "cors"
    assert record["action"] == "blocked"
    assert record["status"] == 403
    assert record["method"] == "OPTIONS"
    assert record["details"] == {
        "origin": origin,
        "requested_method": method,
        "requested_headers": requested,
    }


# (probe, the ACAO expected). A spelling variant of an allowed origin is granted in
# our canonical spelling, which the browser compares byte for byte with its own
# serialisation of the page's origin: it does not match, so nothing is granted.
REFLECTION_PROBES = [
    ("https://evil.net", None),
    ("https://attacker.example", None),
    ("http://localhost:3001", None),
    ("https://example.com.evil.net", None),
    ("https://EVIL.net", None),
    ("null", None),
    ("file://", None),
    ("https://app.example\tx", None),
    ("https://app.example.", "https://app.example"),
    ("HTTPS://APP.EXAMPLE:443", "https://app.example"),
    ("https://API.Example.com", "https://api.example.com"),
    ("https://api.example.com.", "https://api.example.com"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("probe", "expected_acao"), REFLECTION_PROBES)
async def test_request_origin_is_never_reflected(
    framework_app: ASGIApp, events: EventEmitter, probe: str, expected_acao: str | None
) -> None:
    """ACAO comes from the allowlist or the parsed origin, never from request bytes."""
    app = CORSMiddleware(framework_app, SETTINGS, events=events)
    async with asgi_client(app) as client:
        actual = await client.get("/json", headers={"origin": probe})
        preflight = await client.options(
            "/json", headers={"origin": probe, "access-control-request-method": "GET"}
        )
    for response in (actual, preflight):
        acao = response.headers.get("access-control-allow-origin")
        assert acao == expected_acao
        assert acao != probe
        assert "Origin" in response.headers["vary"]
    assert preflight.status_code == (403 if expected_acao is None else 204)


@pytest.mark.anyio
async def test_wildcard_mode_never_sends_credentials_or_null(
    framework_app: ASGIApp, events: EventEmitter, sink: RecordingSink
) -> None:
    app = CORSMiddleware(framework_app, CORSSettings(insecure_allow_any_origin=True), events=events)
    async with asgi_client(app) as client:
        granted = await client.get("/", headers={"origin": "https://anyone.example"})
        null = await client.get("/", headers={"origin": "null"})
        null_preflight = await client.options(
            "/", headers={"origin": "null", "access-control-request-method": "GET"}
        )
    assert granted.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in granted.headers
    assert "access-control-allow-origin" not in null.headers
    assert null_preflight.status_code == 403
    assert sink.reasons() == ["origin-null"]


@pytest.mark.anyio
async def test_default_settings_grant_nothing(
    framework_app: ASGIApp, events: EventEmitter, sink: RecordingSink
) -> None:
    app = CORSMiddleware(framework_app, events=events)
    async with asgi_client(app) as client:
        actual = await client.post(
            "/submit", content=b"abc", headers={"origin": "https://a.example"}
        )
        preflight = await client.options(
            "/submit",
            headers={"origin": "https://a.example", "access-control-request-method": "PUT"},
        )
    assert actual.status_code == 200
    assert actual.text == "3"
    assert "access-control-allow-origin" not in actual.headers
    assert "vary" not in actual.headers  # no response of this policy depends on Origin
    assert preflight.status_code == 403
    assert sink.reasons() == ["origin-not-allowed"]
