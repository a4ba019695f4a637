"""Proxy headers from a peer that is no trusted proxy never reach the app.

Bastion reads `X-Forwarded-*` and `Forwarded` only from `trusted_proxies`; these
cases check that the app does not get them either (`strip_untrusted_proxy_headers`),
since a framework or an app that reads them would believe a client's own claim:
Django's `SECURE_PROXY_SSL_HEADER` a forged `X-Forwarded-Proto: https`, a router that
honours `X-Original-URL` a path no layer checked, an allow list a forged client
address. Each attack is beside the legitimate request: a trusted proxy's lines pass
untouched, and so does every other line of the request, in order.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.wsgi import WsgiToAsgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.transport import (
    FORWARDING_HEADERS,
    FORWARDING_SPELLINGS,
    TransportMiddleware,
    TransportSettings,
)
from bastion.types import Scope
from tests.conftest import asgi_client
from tests.transport.support import RecordingApp, make_scope, run

pytestmark = pytest.mark.anyio

PROXY = "10.0.0.1"
CLIENT = "203.0.113.9"
HOST = (b"host", b"bank.example")
OTHER = [(b"accept", b"text/html"), (b"user-agent", b"attack-test"), (b"cookie", b"a=b")]

ATTACKS = [
    pytest.param([(b"x-forwarded-for", b"10.9.9.9")], id="proxy-xff-spoofed-client"),
    pytest.param([(b"x-forwarded-proto", b"https")], id="proxy-xfproto-spoofed-https"),
    pytest.param([(b"x-forwarded-host", b"evil.example")], id="proxy-xfhost-spoofed"),
    pytest.param([(b"forwarded", b"for=10.9.9.9;proto=https")], id="proxy-forwarded-spoofed"),
    pytest.param([(b"x-real-ip", b"127.0.0.1")], id="proxy-x-real-ip-spoofed"),
    pytest.param([(b"x-original-url", b"/admin/delete")], id="proxy-x-original-url-path"),
    pytest.param([(b"x-rewrite-url", b"/admin")], id="proxy-x-rewrite-url-path"),
    pytest.param([(b"true-client-ip", b"10.9.9.9")], id="proxy-true-client-ip-spoofed"),
    pytest.param(
        [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"10.9.9.9")],
        id="proxy-xff-repeated",
    ),
    pytest.param([(b"X-Forwarded-Proto", b"https")], id="proxy-xfproto-upper-case-name"),
    pytest.param([(b"x_forwarded_proto", b"https")], id="proxy-xfproto-underscores"),
    pytest.param([(b"X_Forwarded-Host", b"evil.example")], id="proxy-xfhost-mixed-separators"),
    pytest.param([(b"x_real_ip", b"127.0.0.1")], id="proxy-x-real-ip-underscores"),
    pytest.param([(b"x_original_url", b"/admin")], id="proxy-x-original-url-underscores"),
    pytest.param(
        [(b"x-forwarded-ssl", b"on"), (b"front-end-https", b"on"), (b"x-url-scheme", b"https")],
        id="proxy-other-https-claims",
    ),
]


def _names(scope: Scope) -> list[bytes]:
    return [name.lower() for name, _ in scope["headers"]]


def _layer(app: RecordingApp, **settings: Any) -> TransportMiddleware:
    return TransportMiddleware(app, TransportSettings(allowed_hosts=("bank.example",), **settings))


async def _seen(layer: TransportMiddleware, app: RecordingApp, scope: Scope) -> Scope:
    sent = await run(layer, scope)
    assert sent[0]["type"] in ("http.response.start", "websocket.accept"), sent
    if sent[0]["type"] == "http.response.start":
        assert sent[0]["status"] == 200
    return app.scopes[-1]


@pytest.mark.parametrize("claims", ATTACKS)
@pytest.mark.parametrize("trusted", [False, True], ids=["no-proxy-trusted", "peer-not-trusted"])
async def test_claims_of_an_untrusted_peer_are_stripped(
    claims: list[tuple[bytes, bytes]], trusted: bool
) -> None:
    app = RecordingApp()
    layer = _layer(app, trusted_proxies=(PROXY,) if trusted else ())
    headers = [HOST, *claims, *OTHER]
    # Twice: the second request with this `Host` line takes the remembered path.
    for _ in range(2):
        seen = await _seen(layer, app, make_scope(headers=headers, client=(CLIENT, 5000)))
        assert not FORWARDING_SPELLINGS.intersection(_names(seen))
        assert seen["headers"] == [HOST, *OTHER]  # everything else, in order
        assert seen["client"] == (CLIENT, 5000)


@pytest.mark.parametrize("claims", ATTACKS[:3])
async def test_claims_on_a_websocket_handshake_are_stripped(
    claims: list[tuple[bytes, bytes]],
) -> None:
    app = RecordingApp()
    layer = _layer(app)
    for _ in range(2):
        scope = make_scope("websocket", headers=[HOST, *claims], client=(CLIENT, 5000))
        seen = await _seen(layer, app, scope)
        assert seen["headers"] == [HOST]


async def test_a_trusted_proxy_keeps_every_line() -> None:
    app = RecordingApp()
    layer = _layer(app, trusted_proxies=(PROXY,))
    lines = [
        HOST,
        (b"x-forwarded-for", b"198.51.100.7"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-port", b"443"),
        (b"x-real-ip", b"198.51.100.7"),
        *OTHER,
    ]
    seen = await _seen(layer, app, make_scope(headers=lines, scheme="http", client=(PROXY, 80)))
    assert seen["headers"] == lines
    assert seen["client"] == ("198.51.100.7", 0)
    assert seen["scheme"] == "https"


async def test_a_request_without_claims_is_passed_as_it_is() -> None:
    app = RecordingApp()
    layer = _layer(app)
    scope = make_scope(headers=[HOST, *OTHER], client=(CLIENT, 5000))
    for _ in range(2):
        seen = await _seen(layer, app, scope)
        assert seen is scope  # no copy made when nothing is stripped


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"strip_untrusted_proxy_headers": False}, id="switched-off"),
        pytest.param({"monitor_only": True}, id="monitor-only-changes-nothing"),
    ],
)
async def test_kept_when_stripping_is_off(settings: dict[str, Any]) -> None:
    app = RecordingApp()
    layer = _layer(app, **settings)
    lines = [HOST, (b"x-forwarded-proto", b"https"), *OTHER]
    seen = await _seen(layer, app, make_scope(headers=lines, client=(CLIENT, 5000)))
    assert seen["headers"] == lines


async def test_other_underscore_names_are_kept() -> None:
    """Only the spellings of proxy headers go: a name of the app's own with `_` stays."""
    app = RecordingApp()
    layer = _layer(app)
    lines = [HOST, (b"x_api_version", b"2"), (b"x-forwarded", b"not-a-proxy-header"), *OTHER]
    seen = await _seen(layer, app, make_scope(headers=lines, client=(CLIENT, 5000)))
    assert seen["headers"] == lines


# asgiref's own adapter warns about how it calls itself back (asgiref 3.13).
@pytest.mark.filterwarnings("ignore:async_to_sync was passed a non-async-marked callable")
async def test_a_wsgi_app_sees_no_underscore_claim() -> None:
    """asgiref's `WsgiToAsgi` maps `X_Forwarded_Proto` to `HTTP_X_FORWARDED_PROTO`, the
    name werkzeug's `ProxyFix` and Flask read: stripped, it never gets there."""
    environs: list[dict[str, Any]] = []

    def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environs.append(environ)
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"ok"]

    app = TransportMiddleware(
        WsgiToAsgi(wsgi),  # type: ignore[no-untyped-call]  # asgiref ships no annotations here
        TransportSettings(allowed_hosts=("bank.example",), insecure_allow_http=True),
    )
    async with asgi_client(app, base_url="http://bank.example", client=(CLIENT, 5000)) as client:
        forged = await client.get(
            "/", headers={"X_Forwarded_Proto": "https", "X_Forwarded_For": "6.6.6.6"}
        )
    assert forged.status_code == 200
    (environ,) = environs
    assert "HTTP_X_FORWARDED_PROTO" not in environ
    assert "HTTP_X_FORWARDED_FOR" not in environ
    assert environ["wsgi.url_scheme"] == "http"


def test_every_spelling_is_known() -> None:
    assert b"x_forwarded_for" in FORWARDING_SPELLINGS
    assert b"x-forwarded_proto" in FORWARDING_SPELLINGS
    assert b"x_cluster_client_ip" in FORWARDING_SPELLINGS
    assert FORWARDING_HEADERS <= FORWARDING_SPELLINGS
    assert all(name.replace(b"_", b"-") in FORWARDING_HEADERS for name in FORWARDING_SPELLINGS)


def test_switching_it_off_is_a_weakening() -> None:
    assert (
        "strip_untrusted_proxy_headers=false"
        in TransportSettings(strip_untrusted_proxy_headers=False).weakenings()
    )
    assert not TransportSettings().weakenings()


async def _headers(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "headers": sorted(request.headers),
            "url": str(request.url),
            "client": request.client.host if request.client else None,
        }
    )


async def test_starlette_sees_no_forged_claim() -> None:
    """Through httpx to Starlette: the request, its URL and its client are the real ones."""
    app = TransportMiddleware(
        Starlette(routes=[Route("/headers", _headers)]),
        TransportSettings(allowed_hosts=("bank.example",), insecure_allow_http=True),
    )
    async with asgi_client(app, base_url="http://bank.example", client=(CLIENT, 5000)) as client:
        forged = await client.get(
            "/headers",
            headers={"X-Forwarded-Proto": "https", "X-Original-URL": "/admin", "Accept": "a/b"},
        )
    assert forged.status_code == 200
    seen = forged.json()
    assert "x-forwarded-proto" not in seen["headers"]
    assert "x-original-url" not in seen["headers"]
    assert "accept" in seen["headers"]
    assert seen["url"] == "http://bank.example/headers"
    assert seen["client"] == CLIENT
