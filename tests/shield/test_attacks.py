"""The whole stack at once: each refusal, by name, beside the request that must pass.

Every case runs through `Shield` around a raw ASGI app, a Starlette app and a FastAPI
app, so the layers are shown to work together (and in order), not only alone.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from bastion.events import EventEmitter
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.types import ASGIApp
from tests.conftest import RecordingSink, asgi_client

pytestmark = pytest.mark.anyio

SETTINGS = Settings(
    mode="development",
    transport={"allowed_hosts": ["testserver", "*.bank.example"], "insecure_allow_http": False},
    limits={
        "max_body_bytes": 1024,
        "max_json_depth": 20,
        "max_form_files": 2,
        "routes": {"POST /echo": {"allowed_content_types": ["application/json", "text/plain"]}},
    },
    websocket={"routes": {"/ws": "public"}},
    cors={
        "allow_origins": ["https://app.bank.example"],
        "allow_credentials": True,
        "allow_headers": ["content-type"],
    },
)
HTTPS = "https://testserver"
# What a browser adds to a same-origin form post or fetch; every case sends it unless
# it says otherwise (None removes it).
SAME = {"sec-fetch-site": "same-origin"}
APP_ORIGIN = "https://app.bank.example"


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def multipart(files: int) -> bytes:
    parts = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="f%d"; filename="f%d.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nx\r\n" % (i, i)
        for i in range(files)
    )
    return parts + b"--b--\r\n"


CASES = [
    # (id, method, url, headers, body, status, reason or None)
    ("shield-get-ok", "GET", f"{HTTPS}/", {}, None, 200, None),
    ("shield-subdomain-host-ok", "GET", "https://app.bank.example/", {}, None, 200, None),
    (
        "shield-host-not-allowed",
        "GET",
        f"{HTTPS}/",
        {"host": "evil.example"},
        None,
        400,
        "host-not-allowed",
    ),
    (
        "shield-host-suffix-trick",
        "GET",
        f"{HTTPS}/",
        {"host": "bank.example.evil.net"},
        None,
        400,
        "host-not-allowed",
    ),
    (
        "shield-host-path-chars",
        "GET",
        f"{HTTPS}/",
        {"host": "x/health?"},
        None,
        400,
        "host-malformed",
    ),
    (
        "shield-plain-http-redirected",
        "POST",
        "http://testserver/submit?a=1",
        {},
        b"x",
        308,
        "insecure-http",
    ),
    ("shield-body-ok", "POST", f"{HTTPS}/submit", {}, b"x" * 1024, 200, None),
    (
        "shield-csrf-cross-site",
        "POST",
        f"{HTTPS}/submit",
        {"sec-fetch-site": "cross-site", "origin": "https://evil.example"},
        b"x",
        403,
        "cross-site",
    ),
    (
        "shield-csrf-no-metadata-no-token",
        "POST",
        f"{HTTPS}/submit",
        {"sec-fetch-site": None},
        b"x",
        403,
        "token-missing",
    ),
    (
        "shield-csrf-origin-matches-ok",
        "POST",
        f"{HTTPS}/submit",
        {"sec-fetch-site": None, "origin": HTTPS},
        b"x",
        200,
        None,
    ),
    (
        "shield-body-too-large",
        "POST",
        f"{HTTPS}/submit",
        {},
        b"x" * 1025,
        413,
        "content-length-too-large",
    ),
    (
        "shield-json-ok",
        "POST",
        f"{HTTPS}/submit",
        {"content-type": "application/json"},
        deep_json(20),
        200,
        None,
    ),
    (
        "shield-json-too-deep",
        "POST",
        f"{HTTPS}/submit",
        {"content-type": "application/json"},
        deep_json(21),
        400,
        "json-too-deep",
    ),
    (
        "shield-headers-too-many",
        "GET",
        f"{HTTPS}/",
        {f"x-h{i}": "v" for i in range(120)},
        None,
        431,
        "headers-too-many",
    ),
    (
        "shield-preflight-ok",
        "OPTIONS",
        f"{HTTPS}/json",
        {
            "origin": APP_ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
        None,
        204,
        None,
    ),
    (
        "shield-preflight-evil-origin",
        "OPTIONS",
        f"{HTTPS}/json",
        {"origin": "https://evil.example", "access-control-request-method": "POST"},
        None,
        403,
        "origin-not-allowed",
    ),
    (
        "shield-preflight-null-origin",
        "OPTIONS",
        f"{HTTPS}/json",
        {"origin": "null", "access-control-request-method": "POST"},
        None,
        403,
        "origin-null",
    ),
    ("shield-exception", "GET", f"{HTTPS}/boom", {}, None, 500, "unhandled-exception"),
    (
        "shield-content-type-ok",
        "POST",
        f"{HTTPS}/echo",
        {"content-type": "text/plain"},
        b"hi",
        200,
        None,
    ),
    (
        "shield-content-type-not-allowed",
        "POST",
        f"{HTTPS}/echo",
        {"content-type": "application/xml"},
        b"<a/>",
        415,
        "content-type-not-allowed",
    ),
    (
        "shield-multipart-ok",
        "POST",
        f"{HTTPS}/submit",
        {"content-type": "multipart/form-data; boundary=b"},
        multipart(2),
        200,
        None,
    ),
    (
        "shield-multipart-too-many-files",
        "POST",
        f"{HTTPS}/submit",
        {"content-type": "multipart/form-data; boundary=b"},
        multipart(3),
        400,
        "form-too-many-files",
    ),
]


@pytest.fixture
def shielded(framework_app: ASGIApp) -> tuple[ASGIApp, RecordingSink]:
    sink = RecordingSink()
    return Shield(framework_app, SETTINGS, events=EventEmitter([sink])), sink


@pytest.mark.parametrize(
    ("method", "url", "headers", "body", "status", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
async def test_whole_stack(
    shielded: tuple[ASGIApp, RecordingSink],
    method: str,
    url: str,
    headers: dict[str, str | None],
    body: bytes | None,
    status: int,
    reason: str | None,
) -> None:
    app, sink = shielded
    sent = {k: v for k, v in {**SAME, **headers}.items() if v is not None}
    async with asgi_client(app) as client:
        response = await client.request(method, url, headers=sent, content=body)
    assert response.status_code == status, response.text
    refusals = [r["reason"] for r in sink.records if r["kind"] != "sys_startup"]
    if reason is None:
        assert refusals == []
    else:
        assert refusals == [reason]
        assert "kaboom" not in response.text
        # Every refusal, even from layers outside the headers layer, is locked down.
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" in response.headers


async def test_legitimate_response_carries_every_protection(
    shielded: tuple[ASGIApp, RecordingSink],
) -> None:
    app, _ = shielded
    async with asgi_client(app) as client:
        response = await client.get(f"{HTTPS}/context", headers={"origin": APP_ORIGIN})
        page = await client.get(f"{HTTPS}/page", headers={"origin": APP_ORIGIN})
    assert response.status_code == page.status_code == 200
    headers = response.headers
    [nonce] = re.findall(r'nonce="([^"]+)"', page.text)
    assert f"'nonce-{nonce}'" in page.headers["content-security-policy"]
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["access-control-allow-origin"] == APP_ORIGIN
    assert headers["access-control-allow-credentials"] == "true"
    assert "origin" in headers["vary"].lower()
    assert response.json()["scheme"] == "https"


async def test_redirect_keeps_path_and_query_on_the_validated_host(
    shielded: tuple[ASGIApp, RecordingSink],
) -> None:
    app, _ = shielded
    async with asgi_client(app) as client:
        response = await client.post(
            "http://testserver//evil.example/x?a=1&b=2", content=b"x", headers=SAME
        )
    assert response.status_code == 308
    assert response.headers["location"] == "https://testserver//evil.example/x?a=1&b=2"


async def test_nonces_differ_between_requests(shielded: tuple[ASGIApp, RecordingSink]) -> None:
    app, _ = shielded
    async with asgi_client(app) as client:
        first = (await client.get(f"{HTTPS}/context")).json()["csp_nonce"]
        second = (await client.get(f"{HTTPS}/context")).json()["csp_nonce"]
    assert first
    assert second
    assert first != second


async def test_csp_report_reaches_the_event_stream(
    shielded: tuple[ASGIApp, RecordingSink],
) -> None:
    app, sink = shielded
    report: dict[str, Any] = {
        "csp-report": {
            "document-uri": "https://testserver/page?token=secret",
            "violated-directive": "script-src-elem",
            "effective-directive": "script-src-elem",
            "blocked-uri": "inline",
        }
    }
    async with asgi_client(app) as client:
        response = await client.post(
            f"{HTTPS}/.bastion/csp-report",
            content=json.dumps(report),
            headers={"content-type": "application/csp-report"},
        )
    assert response.status_code == 204
    (violation,) = [r for r in sink.records if r["reason"] == "csp-violation"]
    assert "secret" not in json.dumps(violation)


async def test_monitor_only_everywhere_lets_attacks_through_but_reports_them() -> None:
    from tests.support.apps import make_app

    sink = RecordingSink()
    settings = Settings(
        mode="development",
        transport={"monitor_only": True},
        limits={"monitor_only": True, "max_body_bytes": 10},
    )
    app = Shield(make_app("raw"), settings, events=EventEmitter([sink]))
    async with asgi_client(app) as client:
        response = await client.post(
            "http://testserver/submit",
            headers={"host": "evil.example", **SAME},
            content=b"x" * 100,
        )
    assert response.status_code == 200
    monitored = [(r["reason"], r["action"]) for r in sink.records if r["kind"] != "sys_startup"]
    assert ("host-not-allowed", "monitored") in monitored
    assert ("content-length-too-large", "monitored") in monitored
    startup = sink.records[0]["details"]
    assert isinstance(startup, dict)
    assert "transport.monitor_only=true" in startup["opt_outs"]


async def _websocket_through(app: ASGIApp, scheme: str, host: str) -> list[dict[str, Any]]:
    """Drive one WebSocket handshake through `app`; return what it sent back."""
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop() if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "websocket",
        "scheme": scheme,
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": [(b"host", host.encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 443),
        "subprotocols": [],
        "asgi": {"version": "3.0"},
    }
    await app(scope, receive, send)
    return sent


async def _accepting_ws(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})


@pytest.mark.parametrize(
    ("scheme", "host", "first"),
    [
        pytest.param("wss", "testserver", "websocket.accept", id="shield-websocket-ok"),
        pytest.param("ws", "testserver", "websocket.close", id="shield-websocket-insecure"),
        pytest.param(
            "wss", "evil.example", "websocket.close", id="shield-websocket-host-not-allowed"
        ),
    ],
)
async def test_websocket_through_the_whole_stack(scheme: str, host: str, first: str) -> None:
    sink = RecordingSink()
    app = Shield(_accepting_ws, SETTINGS, events=EventEmitter([sink]))
    sent = await _websocket_through(app, scheme, host)
    assert sent[0]["type"] == first
    if first == "websocket.close":
        assert sent[0]["code"] == 1008
        assert [r["reason"] for r in sink.records if r["kind"] != "sys_startup"]


@pytest.mark.parametrize(
    ("method", "status"),
    [
        pytest.param("GET", 401, id="policy-get-rule-anonymous"),
        pytest.param("HEAD", 401, id="policy-get-rule-via-head"),
    ],
)
@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_a_get_policy_rule_holds_for_head(framework: str, method: str, status: int) -> None:
    from tests.support.apps import make_app

    settings = Settings(mode="development", policy={"routes": {"GET /json": "roles:admin"}})
    app = Shield(make_app(framework), settings, events=EventEmitter([]))
    async with asgi_client(app) as client:
        response = await client.request(method, "/json")
        public = await client.request(method, "/")
    assert response.status_code == status
    assert public.status_code == 200
