"""Named attacks on the transport layer, each beside the legitimate request that passes.

Every case runs against the raw ASGI, Starlette and FastAPI apps (`framework_app`)
through httpx in-process. The application is configured as a bank behind one
proxy network: `bank.example` and its subdomains, proxies in 10.0.0.0/8.
"""

from __future__ import annotations

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
    REASON_PROXY_HEADER_MALFORMED,
    TransportMiddleware,
    TransportSettings,
)
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.conftest import RecordingSink, asgi_client

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


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES)
async def test_attack(case: Case, framework_app: ASGIApp, sink: RecordingSink) -> None:
    settings = TransportSettings(
        allowed_hosts=("bank.example", "*.bank.example"),
        trusted_proxies=("10.0.0.0/8",),
        **case.settings,
    )
    app: ASGIApp = TransportMiddleware(framework_app, settings, events=EventEmitter([sink]))
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
