"""Named attacks on the transport layer, each beside the legitimate request that passes.

Every case runs against the raw ASGI, Starlette and FastAPI apps: `CASES` through
httpx in-process (`framework_app`); `URL_CASES` and `WEBSOCKET_CASES` against
`url_app`, which answers with the URLs the framework builds, the first through
httpx, the second by driving the ASGI WebSocket protocol directly (httpx speaks no
WebSocket). The application is configured as a bank behind one proxy network:
`bank.example` and its subdomains, proxies in 10.0.0.0/8.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from bastion.events import EventEmitter
from bastion.transport import (
    REASON_HOST_MALFORMED,
    REASON_HOST_MISSING,
    REASON_HOST_MULTIPLE,
    REASON_HOST_NOT_ALLOWED,
    REASON_INSECURE_HTTP,
    REASON_INSECURE_WEBSOCKET,
    REASON_PROXY_HEADER_MALFORMED,
    TransportMiddleware,
    TransportSettings,
)
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.conftest import RecordingSink, asgi_client
from tests.support.apps import FRAMEWORKS
from tests.transport.support import make_scope, run, url_app

PROXY = "10.0.0.1"
CLIENT = "203.0.113.9"
HSTS = "max-age=31536000; includeSubDomains"


@dataclass(frozen=True)
class Case:
    url: str = "https://bank.example/context"
    headers: tuple[tuple[str, str], ...] = ()
    peer: str = CLIENT
    method: str = "GET"
    raw_path: bytes | None = None
    drop_host: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    # Expectations: a refusal names its reason; a pass may check the context.
    status: int = 200
    reason: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    location: str | None = None


def _h(*pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return pairs


XFH = {"proxy_headers": ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")}
FWD = {"proxy_headers": ("forwarded",)}

CASES = [
    # Host header
    pytest.param(Case(context={"host": "bank.example", "port": 443}), id="host-ok"),
    pytest.param(Case(headers=_h(("host", "api.bank.example:8443")),
                      context={"host": "api.bank.example", "port": 8443}), id="host-subdomain-ok"),
    pytest.param(Case(drop_host=True, status=400, reason=REASON_HOST_MISSING), id="host-missing"),
    pytest.param(Case(headers=_h(("host", "bank.example/health?")), status=400,
                      reason=REASON_HOST_MALFORMED), id="host-malformed-path-chars"),
    pytest.param(Case(headers=_h(("host", "evil.example@bank.example")), status=400,
                      reason=REASON_HOST_MALFORMED), id="host-malformed-userinfo"),
    pytest.param(Case(headers=_h(("host", "bank.example:99999")), status=400,
                      reason=REASON_HOST_MALFORMED), id="host-malformed-port"),
    pytest.param(Case(headers=_h(("host", "bank.example"), ("host", "evil.example")), status=400,
                      reason=REASON_HOST_MULTIPLE), id="host-multiple"),
    pytest.param(Case(headers=_h(("host", "evil.example")), status=400,
                      reason=REASON_HOST_NOT_ALLOWED), id="host-not-allowed"),
    pytest.param(Case(headers=_h(("host", "evilbank.example")), status=400,
                      reason=REASON_HOST_NOT_ALLOWED), id="host-not-allowed-suffix"),
    pytest.param(Case(headers=_h(("host", "bank.example.evil.net")), status=400,
                      reason=REASON_HOST_NOT_ALLOWED), id="host-not-allowed-prefix"),
    # X-Forwarded-For
    pytest.param(Case(headers=_h(("x-forwarded-for", "198.51.100.7")),
                      context={"client": [CLIENT, 5000]}), id="xff-from-untrusted-peer"),
    pytest.param(Case(peer=PROXY, headers=_h(("x-forwarded-for", "198.51.100.7")),
                      context={"client": ["198.51.100.7", 0]}), id="xff-from-trusted-proxy-ok"),
    pytest.param(Case(peer=PROXY, headers=_h(("x-forwarded-for", "10.0.0.5, 198.51.100.7")),
                      context={"client": ["198.51.100.7", 0]}), id="xff-spoof-internal-address"),
    pytest.param(Case(peer=PROXY, headers=_h(("x-forwarded-for", "1.1.1.1"),
                                             ("x-forwarded-for", "198.51.100.7")),
                      context={"client": ["198.51.100.7", 0]}), id="xff-spoof-extra-line"),
    pytest.param(Case(peer=PROXY, headers=_h(("x-forwarded-for", "garbage, 198.51.100.7")),
                      context={"client": ["198.51.100.7", 0]}), id="xff-garbage-left-of-client"),
    pytest.param(Case(peer=PROXY, headers=_h(("x-forwarded-for", "198.51.100.7, garbage")),
                      status=400, reason=REASON_PROXY_HEADER_MALFORMED),
                 id="proxy-header-malformed-xff"),
    # X-Forwarded-Proto
    pytest.param(Case(url="http://bank.example/context",
                      headers=_h(("x-forwarded-proto", "https")), status=308,
                      reason=REASON_INSECURE_HTTP, location="https://bank.example/context"),
                 id="xfproto-from-untrusted-peer"),
    pytest.param(Case(url="http://bank.example/context", peer=PROXY,
                      headers=_h(("x-forwarded-proto", "https")),
                      context={"scheme": "https", "port": 443}),
                 id="xfproto-from-trusted-proxy-ok"),
    pytest.param(Case(peer=PROXY, headers=_h(("x-forwarded-proto", "javascript")), status=400,
                      reason=REASON_PROXY_HEADER_MALFORMED), id="proxy-header-malformed-xfproto"),
    # X-Forwarded-Host (opt-in)
    pytest.param(Case(headers=_h(("x-forwarded-host", "evil.example")), settings=XFH,
                      context={"host": "bank.example"}), id="xfhost-from-untrusted-peer"),
    pytest.param(Case(peer=PROXY, headers=_h(("x-forwarded-host", "evil.example")),
                      context={"host": "bank.example"}), id="xfhost-not-configured"),
    pytest.param(Case(peer=PROXY, headers=_h(("x-forwarded-host", "api.bank.example")),
                      settings=XFH, context={"host": "api.bank.example"}),
                 id="xfhost-from-trusted-proxy-ok"),
    pytest.param(Case(peer=PROXY, headers=_h(("x-forwarded-host", "evil.example")), settings=XFH,
                      status=400, reason=REASON_HOST_NOT_ALLOWED),
                 id="xfhost-not-allowed-from-trusted-proxy"),
    # Forwarded (opt-in)
    pytest.param(Case(headers=_h(("forwarded", "for=198.51.100.7;proto=https")), settings=FWD,
                      context={"client": [CLIENT, 5000]}), id="forwarded-from-untrusted-peer"),
    pytest.param(Case(url="http://bank.example/context", peer=PROXY, settings=FWD,
                      headers=_h(("forwarded", 'for="[2001:db8::7]:4711";proto=https')),
                      context={"client": ["2001:db8::7", 4711], "scheme": "https"}),
                 id="forwarded-from-trusted-proxy-ok"),
    pytest.param(Case(peer=PROXY, settings=FWD, headers=_h(("forwarded", "for=_hidden")),
                      context={"client": ["_hidden", 0]}), id="forwarded-obfuscated-client"),
    pytest.param(Case(peer=PROXY, settings=FWD,
                      headers=_h(("forwarded", 'for="1.1.1.1'), ("forwarded", "for=198.51.100.7")),
                      status=400, reason=REASON_PROXY_HEADER_MALFORMED),
                 id="proxy-header-malformed-forwarded-quote"),
    # HTTPS redirect
    pytest.param(Case(url="http://bank.example/a/b?x=1&y=%2F", status=308,
                      reason=REASON_INSECURE_HTTP, location="https://bank.example/a/b?x=1&y=%2F"),
                 id="insecure-http-redirect"),
    pytest.param(Case(url="http://bank.example/submit", method="POST", status=308,
                      reason=REASON_INSECURE_HTTP, location="https://bank.example/submit"),
                 id="redirect-post-keeps-method"),
    pytest.param(Case(url="http://bank.example/", headers=_h(("host", "evil.example")),
                      status=400, reason=REASON_HOST_NOT_ALLOWED), id="redirect-open-host"),
    pytest.param(Case(url="http://bank.example/", raw_path=b"//evil.example/x", status=308,
                      reason=REASON_INSECURE_HTTP, location="https://bank.example//evil.example/x"),
                 id="redirect-protocol-relative-path"),
    pytest.param(Case(url="http://bank.example/", raw_path=b"/\\evil.example", status=308,
                      reason=REASON_INSECURE_HTTP, location="https://bank.example/%5Cevil.example"),
                 id="redirect-backslash-path"),
    pytest.param(Case(url="http://bank.example/", raw_path=b"/a%0d%0aSet-Cookie:%20x=1",
                      status=308, reason=REASON_INSECURE_HTTP,
                      location="https://bank.example/a%0d%0aSet-Cookie:%20x=1"),
                 id="redirect-header-injection"),
]  # fmt: skip


def _drop_host(app: ASGIApp) -> ASGIApp:
    """A server delivering a request without `Host` (HTTP/1.0, a hand-made request)."""

    async def without_host(scope: Scope, receive: Receive, send: Send) -> None:
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"host"]
        await app(scope, receive, send)

    return without_host


def _bank(app: ASGIApp, sink: RecordingSink, settings: dict[str, Any]) -> ASGIApp:
    return TransportMiddleware(
        app,
        TransportSettings(
            allowed_hosts=("bank.example", "*.bank.example"),
            trusted_proxies=("10.0.0.0/8",),
            **settings,
        ),
        events=EventEmitter([sink]),
    )


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES)
async def test_attack(case: Case, framework_app: ASGIApp, sink: RecordingSink) -> None:
    app = _bank(framework_app, sink, case.settings)
    if case.drop_host:
        app = _drop_host(app)
    url = httpx.URL(case.url)
    if case.raw_path is not None:
        url = url.copy_with(raw_path=case.raw_path)
    async with asgi_client(app, client=(case.peer, 5000)) as client:
        response = await client.request(case.method, url, headers=list(case.headers))

    assert response.status_code == case.status
    if case.reason is None:
        assert sink.records == []
        view = response.json()
        assert {key: view[key] for key in case.context} == case.context
        assert (response.headers.get("strict-transport-security") == HSTS) is (
            view["scheme"] == "https"
        )
        return
    assert sink.reasons() == [case.reason]
    assert sink.records[0]["action"] == "blocked"
    assert sink.records[0]["layer"] == "transport"
    assert response.headers.get("location") == case.location
    assert "strict-transport-security" not in response.headers
    # One generic answer: nothing from the request is echoed back.
    assert "evil" not in response.text
    assert "garbage" not in response.text
    assert response.text.startswith(f"{case.status} ")


@pytest.fixture(params=FRAMEWORKS)
def url_framework_app(request: pytest.FixtureRequest) -> ASGIApp:
    """`url_app` as a raw ASGI callable, a Starlette app and a FastAPI app."""
    return url_app(str(request.param))


# --- the Host the app builds its URLs from --------------------------------------------
#
# A trusted proxy's X-Forwarded-Host (or Forwarded host=) is what gets validated; the
# app must build its URLs from that host, never from the raw Host header, which the
# proxy does not vouch for (it may be the backend's name, or the attacker's).

URL_CASES = [
    pytest.param(CLIENT, (("host", "bank.example"),), {}, "https://bank.example/where",
                 id="url-from-host-header-ok"),
    pytest.param(PROXY, (("host", "evil.example"), ("x-forwarded-host", "bank.example")), XFH,
                 "https://bank.example/where", id="xfhost-replaces-raw-host-header"),
    pytest.param(PROXY, (("host", "backend:8000"), ("x-forwarded-host", "api.bank.example:8443")),
                 XFH, "https://api.bank.example:8443/where", id="xfhost-port-kept"),
    pytest.param(PROXY, (("host", "evil.example"),
                         ("forwarded", "for=198.51.100.7;proto=https;host=bank.example")), FWD,
                 "https://bank.example/where", id="forwarded-host-replaces-raw-host-header"),
    pytest.param(CLIENT, (("host", "api.bank.example"), ("x-forwarded-host", "evil.example")), XFH,
                 "https://api.bank.example/where", id="xfhost-from-untrusted-peer-host-unchanged"),
    pytest.param(PROXY, (("host", "api.bank.example"), ("x-forwarded-host", "evil.example")), {},
                 "https://api.bank.example/where", id="xfhost-not-configured-host-unchanged"),
    pytest.param(PROXY, (("host", "api.bank.example"),), XFH, "https://api.bank.example/where",
                 id="xfhost-absent-host-unchanged"),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("peer", "headers", "settings", "expected"), URL_CASES)
async def test_app_builds_urls_from_the_validated_host(
    peer: str,
    headers: tuple[tuple[str, str], ...],
    settings: dict[str, Any],
    expected: str,
    url_framework_app: ASGIApp,
    sink: RecordingSink,
) -> None:
    app = _bank(url_framework_app, sink, settings)
    scheme = "http" if "forwarded" in dict(headers) else "https"
    async with asgi_client(app, client=(peer, 5000)) as client:
        response = await client.get(f"{scheme}://bank.example/where", headers=list(headers))
    assert response.status_code == 200
    assert sink.records == []
    assert response.json() == {"url": expected, "url_for": expected}


# --- WebSocket handshakes -----------------------------------------------------------------


@dataclass(frozen=True)
class WebSocketCase:
    scheme: str = "wss"
    headers: tuple[tuple[bytes, bytes], ...] = ((b"host", b"bank.example"),)
    peer: str = CLIENT
    denial_response: bool = False  # the server offers "websocket.http.response"
    settings: dict[str, Any] = field(default_factory=dict)
    # Expectations: a refusal names its reason and status; a pass the URL the app saw.
    reason: str | None = None
    status: int = 403
    url: str = "wss://bank.example/ws"


_WS_PROTO = (b"x-forwarded-proto", b"https")
_WS_EVIL = (b"host", b"evil.example")

WEBSOCKET_CASES = [
    pytest.param(WebSocketCase(), id="websocket-secure-ok"),
    pytest.param(WebSocketCase(scheme="ws", peer=PROXY,
                               headers=((b"host", b"bank.example"), _WS_PROTO)),
                 id="websocket-behind-tls-proxy-ok"),
    pytest.param(WebSocketCase(scheme="ws", settings={"insecure_allow_http": True},
                               url="ws://bank.example/ws"), id="websocket-plain-allowed-ok"),
    pytest.param(WebSocketCase(scheme="ws", reason=REASON_INSECURE_WEBSOCKET),
                 id="insecure-websocket"),
    pytest.param(WebSocketCase(scheme="ws", denial_response=True, reason=REASON_INSECURE_WEBSOCKET),
                 id="insecure-websocket-denial-response"),
    pytest.param(WebSocketCase(scheme="ws", headers=((b"host", b"bank.example"), _WS_PROTO),
                               reason=REASON_INSECURE_WEBSOCKET),
                 id="insecure-websocket-spoofed-proto"),
    pytest.param(WebSocketCase(headers=(_WS_EVIL,), reason=REASON_HOST_NOT_ALLOWED, status=400),
                 id="websocket-host-not-allowed"),
    pytest.param(WebSocketCase(peer=PROXY, settings=XFH,
                               headers=(_WS_EVIL, (b"x-forwarded-host", b"bank.example"))),
                 id="websocket-xfhost-replaces-raw-host-header"),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize("case", WEBSOCKET_CASES)
async def test_websocket_attack(
    case: WebSocketCase, url_framework_app: ASGIApp, sink: RecordingSink
) -> None:
    app = _bank(url_framework_app, sink, case.settings)
    scope = make_scope(
        "websocket",
        scheme=case.scheme,
        client=(case.peer, 5000),
        headers=case.headers,
        path="/ws",
        extensions={"websocket.http.response": {}} if case.denial_response else {},
    )
    sent = await run(app, scope, [{"type": "websocket.connect"}])

    if case.reason is None:
        assert sink.records == []
        assert [m["type"] for m in sent] == [
            "websocket.accept",
            "websocket.send",
            "websocket.close",
        ]
        assert json.loads(sent[1]["text"]) == {"url": case.url, "url_for": case.url}
        return
    assert sink.reasons() == [case.reason]
    assert sink.records[0]["action"] == "blocked"
    # The app never ran: nothing was accepted.
    if case.denial_response:
        assert [m["type"] for m in sent] == [
            "websocket.http.response.start",
            "websocket.http.response.body",
        ]
        assert sent[0]["status"] == case.status
        assert "evil" not in sent[1]["body"].decode()
    else:
        assert sent == [{"type": "websocket.close", "code": 1008}]
