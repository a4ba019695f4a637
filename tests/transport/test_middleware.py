"""The transport adapter: HSTS, redirects, monitor-only, scopes it must not touch."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette

from bastion.context import SCOPE_KEY, RequestContext
from bastion.events import EventEmitter
from bastion.transport import (
    REASON_HOST_NOT_ALLOWED,
    REASON_INSECURE_HTTP,
    REASON_INSECURE_WEBSOCKET,
    TransportMiddleware,
    TransportSettings,
)
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from tests.conftest import RecordingSink, asgi_client
from tests.support.apps import raw_app, starlette_app
from tests.transport.support import RecordingApp, make_scope, run

BANK: dict[str, Any] = {"allowed_hosts": ("bank.example",), "trusted_proxies": ("10.0.0.0/8",)}


def _wrap(app: ASGIApp, events: EventEmitter, **values: Any) -> TransportMiddleware:
    return TransportMiddleware(app, TransportSettings(**BANK | values), events=events)


# --- HSTS -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_hsts_only_on_https(events: EventEmitter) -> None:
    app = _wrap(raw_app, events, insecure_allow_http=True)
    async with asgi_client(app) as client:
        secure = await client.get("https://bank.example/")
        plain = await client.get("http://bank.example/")
    assert secure.status_code == plain.status_code == 200
    assert secure.headers.get_list("strict-transport-security") == [
        "max-age=31536000; includeSubDomains"
    ]
    assert "strict-transport-security" not in plain.headers


@pytest.mark.anyio
async def test_hsts_settings_shape_the_header(events: EventEmitter) -> None:
    app = _wrap(raw_app, events, hsts_max_age_seconds=63072000, hsts_preload=True)
    async with asgi_client(app) as client:
        response = await client.get("https://bank.example/")
    assert response.headers["strict-transport-security"] == (
        "max-age=63072000; includeSubDomains; preload"
    )


@pytest.mark.anyio
async def test_hsts_through_a_trusted_proxy(events: EventEmitter) -> None:
    app = _wrap(raw_app, events)
    async with asgi_client(app, client=("10.0.0.1", 1)) as client:
        response = await client.get("http://bank.example/", headers={"x-forwarded-proto": "https"})
    assert response.status_code == 200
    assert "strict-transport-security" in response.headers


class _SetsHeaders:
    """An app answering with one shared header list, as apps with constants do."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": b""})


@pytest.mark.anyio
async def test_hsts_keeps_the_apps_own_policy(events: EventEmitter) -> None:
    app = _wrap(_SetsHeaders([(b"Strict-Transport-Security", b"max-age=60")]), events)
    async with asgi_client(app) as client:
        response = await client.get("https://bank.example/")
    assert response.headers.get_list("strict-transport-security") == ["max-age=60"]


@pytest.mark.anyio
async def test_hsts_does_not_mutate_the_apps_header_list(events: EventEmitter) -> None:
    shared = [(b"content-type", b"text/plain")]
    app = _wrap(_SetsHeaders(shared), events)
    async with asgi_client(app) as client:
        for _ in range(2):
            response = await client.get("https://bank.example/")
            assert response.headers.get_list("strict-transport-security") == [
                "max-age=31536000; includeSubDomains"
            ]
    assert shared == [(b"content-type", b"text/plain")]


@pytest.mark.anyio
async def test_no_hsts_on_refusals(events: EventEmitter) -> None:
    async with asgi_client(_wrap(raw_app, events)) as client:
        response = await client.get("https://evil.example/")
    assert response.status_code == 400
    assert "strict-transport-security" not in response.headers


# --- HTTPS redirect -------------------------------------------------------------------


@pytest.mark.anyio
async def test_redirect_preserves_path_query_method_and_body(
    events: EventEmitter, sink: RecordingSink
) -> None:
    app = _wrap(starlette_app(), events)
    async with asgi_client(app) as client:
        redirect = await client.post("http://bank.example/submit?a=1&b=%20", content=b"12345")
        assert redirect.status_code == 308
        assert redirect.headers["location"] == "https://bank.example/submit?a=1&b=%20"
        followed = await client.post(
            "http://bank.example/submit?a=1", content=b"12345", follow_redirects=True
        )
    # 308 makes the client repeat the POST with its body at the HTTPS URL.
    assert followed.status_code == 200
    assert followed.text == "5"
    assert followed.url == "https://bank.example/submit?a=1"
    assert sink.reasons() == [REASON_INSECURE_HTTP, REASON_INSECURE_HTTP]


@pytest.mark.anyio
async def test_redirect_status_and_port_are_settings(events: EventEmitter) -> None:
    app = _wrap(raw_app, events, https_redirect_status=301, https_port=8443)
    async with asgi_client(app) as client:
        response = await client.get("http://bank.example:8000/json")
    assert response.status_code == 301
    assert response.headers["location"] == "https://bank.example:8443/json"


@pytest.mark.anyio
async def test_insecure_allow_http_serves_plain_http(
    events: EventEmitter, sink: RecordingSink
) -> None:
    app = _wrap(raw_app, events, insecure_allow_http=True)
    async with asgi_client(app) as client:
        response = await client.get("http://bank.example/context")
    assert response.status_code == 200
    assert response.json()["scheme"] == "http"
    assert response.json()["port"] == 80
    assert sink.records == []


@pytest.mark.anyio
async def test_standalone_layer_serves_local_hosts_only(events: EventEmitter) -> None:
    app = TransportMiddleware(raw_app, TransportSettings(), events=events)
    async with asgi_client(app, base_url="https://testserver") as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("https://localhost/")).status_code == 200
        assert (await client.get("https://[::1]:8443/")).status_code == 200
        assert (await client.get("https://bank.example/")).status_code == 400


# --- the scope and the context --------------------------------------------------------


@pytest.mark.anyio
async def test_resolved_client_and_scheme_reach_the_app_in_a_copied_scope(
    events: EventEmitter,
) -> None:
    inner = RecordingApp()
    app = _wrap(inner, events)
    scope = make_scope(
        scheme="http",
        client=("10.0.0.1", 4000),
        headers=[
            (b"host", b"bank.example"),
            (b"x-forwarded-for", b"198.51.100.7"),
            (b"x-forwarded-proto", b"https"),
        ],
    )
    sent = await run(app, scope)
    assert sent[0]["status"] == 200
    (seen,) = inner.scopes
    assert (seen["client"], seen["scheme"]) == (("198.51.100.7", 0), "https")
    # The server's scope keeps the peer it saw; the shared context has the answer.
    assert (scope["client"], scope["scheme"]) == (("10.0.0.1", 4000), "http")
    context: RequestContext = scope[SCOPE_KEY]
    assert seen[SCOPE_KEY] is context
    assert (context.client, context.scheme, context.host, context.port) == (
        ("198.51.100.7", 0),
        "https",
        "bank.example",
        443,
    )


@pytest.mark.anyio
async def test_scope_not_copied_when_nothing_changes(events: EventEmitter) -> None:
    inner = RecordingApp()
    scope = make_scope()
    await run(_wrap(inner, events), scope)
    assert inner.scopes == [scope]
    assert inner.scopes[0] is scope


XFH: dict[str, Any] = {
    "allowed_hosts": ("bank.example", "*.bank.example"),
    "proxy_headers": ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"),
}


@pytest.mark.anyio
async def test_forwarded_host_reaches_the_app_as_its_host_header(events: EventEmitter) -> None:
    inner = RecordingApp()
    headers = [
        (b"Host", b"backend:8000"),
        (b"x-forwarded-host", b"API.bank.example:8443"),
        (b"accept", b"*/*"),
    ]
    scope = make_scope(client=("10.0.0.1", 4000), headers=headers)
    sent = await run(_wrap(inner, events, **XFH), scope)
    assert sent[0]["status"] == 200
    (seen,) = inner.scopes
    assert seen["headers"] == [
        (b"host", b"api.bank.example:8443"),
        (b"x-forwarded-host", b"API.bank.example:8443"),
        (b"accept", b"*/*"),
    ]
    # The server's scope keeps the header it received.
    assert scope["headers"] == headers
    assert (scope[SCOPE_KEY].host, scope[SCOPE_KEY].port) == ("api.bank.example", 8443)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("client", "headers", "values"),
    [
        pytest.param(("203.0.113.9", 1), [(b"host", b"bank.example"),
                     (b"x-forwarded-host", b"api.bank.example")], XFH, id="untrusted-peer"),
        pytest.param(("10.0.0.1", 1), [(b"host", b"bank.example"),
                     (b"x-forwarded-host", b"api.bank.example")], {}, id="xfhost-not-configured"),
        pytest.param(("10.0.0.1", 1), [(b"host", b"bank.example")], XFH, id="xfhost-absent"),
        pytest.param(("10.0.0.1", 1), [(b"host", b"bank.example"),
                     (b"x-forwarded-host", b"bank.example")], XFH, id="xfhost-same-as-host"),
    ],
)  # fmt: skip
async def test_host_header_untouched_unless_a_trusted_proxy_named_the_host(
    events: EventEmitter,
    client: tuple[str, int],
    headers: list[tuple[bytes, bytes]],
    values: dict[str, Any],
) -> None:
    inner = RecordingApp()
    scope = make_scope(client=client, headers=headers)
    await run(_wrap(inner, events, **values), scope)
    (seen,) = inner.scopes
    assert scope["headers"] == headers
    if client[0] == "10.0.0.1":
        assert seen["headers"] is scope["headers"]
    else:  # the same `Host` line; an untrusted peer's proxy header is dropped
        assert seen["headers"] == [(b"host", b"bank.example")]


@pytest.mark.anyio
async def test_monitor_only_never_writes_a_refused_host(
    events: EventEmitter, sink: RecordingSink
) -> None:
    inner = RecordingApp()
    headers = [(b"host", b"bank.example"), (b"x-forwarded-host", b"evil.example")]
    scope = make_scope(client=("10.0.0.1", 1), headers=headers)
    await run(_wrap(inner, events, monitor_only=True, **XFH), scope)
    (seen,) = inner.scopes
    assert seen["headers"] == headers
    assert sink.reasons() == [REASON_HOST_NOT_ALLOWED]


@pytest.mark.anyio
async def test_events_name_the_resolved_client(events: EventEmitter, sink: RecordingSink) -> None:
    async with asgi_client(_wrap(raw_app, events), client=("10.0.0.1", 1)) as client:
        response = await client.get(
            "https://evil.example/", headers={"x-forwarded-for": "198.51.100.7"}
        )
    assert response.status_code == 400
    (record,) = sink.records
    assert record["client"] == "198.51.100.7"
    assert record["reason"] == REASON_HOST_NOT_ALLOWED
    assert record["details"] == {"untrusted_host": "evil.example"}


# --- monitor-only and disabled --------------------------------------------------------


@pytest.mark.anyio
async def test_monitor_only_reports_and_lets_through(
    events: EventEmitter, sink: RecordingSink
) -> None:
    app = _wrap(raw_app, events, monitor_only=True)
    async with asgi_client(app) as client:
        bad_host = await client.get("https://evil.example/context")
        plain = await client.get("http://bank.example/context")
        secure = await client.get("https://bank.example/context")
    assert bad_host.status_code == plain.status_code == secure.status_code == 200
    assert bad_host.json()["host"] is None  # never validated, so never recorded
    assert plain.json()["host"] == "bank.example"
    assert [(r["reason"], r["action"]) for r in sink.records] == [
        (REASON_HOST_NOT_ALLOWED, "monitored"),
        (REASON_INSECURE_HTTP, "monitored"),
    ]
    # Monitoring must not pin browsers to HTTPS for a year.
    assert "strict-transport-security" not in secure.headers


@pytest.mark.anyio
async def test_monitor_only_malformed_proxy_header_keeps_server_view(
    events: EventEmitter, sink: RecordingSink
) -> None:
    app = _wrap(raw_app, events, monitor_only=True)
    async with asgi_client(app, client=("10.0.0.1", 1)) as client:
        response = await client.get(
            "https://bank.example/context", headers={"x-forwarded-for": "garbage"}
        )
    assert response.status_code == 200
    assert response.json()["client"] == ["10.0.0.1", 1]
    assert sink.reasons() == ["proxy-header-malformed"]


@pytest.mark.anyio
async def test_disabled_is_a_pure_passthrough(events: EventEmitter, sink: RecordingSink) -> None:
    inner = RecordingApp()
    scope = make_scope(scheme="http", headers=[(b"host", b"evil.example")])
    sent = await run(_wrap(inner, events, enabled=False), scope)
    assert sent[0]["status"] == 200
    assert inner.scopes[0] is scope
    assert SCOPE_KEY not in scope
    assert sink.records == []


# --- scopes passed through untouched -----------------------------------------------------


@pytest.mark.anyio
async def test_lifespan_passes_through(events: EventEmitter) -> None:
    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}}
    sent = await run(
        _wrap(raw_app, events),
        scope,
        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
    )
    assert sent == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    assert scope == {"type": "lifespan", "asgi": {"version": "3.0"}}


@pytest.mark.anyio
async def test_unknown_scope_type_passes_through(events: EventEmitter) -> None:
    inner = RecordingApp()
    scope: dict[str, Any] = {"type": "webtransport", "headers": []}
    await run(_wrap(inner, events), scope)
    assert inner.scopes[0] is scope
    assert scope == {"type": "webtransport", "headers": []}


# --- WebSocket --------------------------------------------------------------------------

_WS_CONNECT: list[Message] = [{"type": "websocket.connect"}]


@pytest.mark.anyio
async def test_insecure_websocket_refused_with_close(
    events: EventEmitter, sink: RecordingSink
) -> None:
    inner = RecordingApp()
    sent = await run(_wrap(inner, events), make_scope("websocket", scheme="ws"), _WS_CONNECT)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert inner.scopes == []
    assert sink.reasons() == [REASON_INSECURE_WEBSOCKET]


@pytest.mark.anyio
async def test_insecure_websocket_refused_with_403_when_server_supports_it(
    events: EventEmitter,
) -> None:
    scope = make_scope("websocket", scheme="ws", extensions={"websocket.http.response": {}})
    sent = await run(_wrap(RecordingApp(), events), scope, _WS_CONNECT)
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 403


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("scheme", "client", "headers", "insecure_allow_http"),
    [
        pytest.param("wss", ("203.0.113.9", 1), [], False, id="wss"),
        pytest.param("ws", ("10.0.0.1", 1), [(b"x-forwarded-proto", b"https")], False,
                     id="ws-behind-tls-proxy"),
        pytest.param("ws", ("203.0.113.9", 1), [], True, id="ws-allowed-by-setting"),
    ],
)  # fmt: skip
async def test_secure_or_allowed_websocket_accepted(
    events: EventEmitter,
    scheme: str,
    client: tuple[str, int],
    headers: list[tuple[bytes, bytes]],
    insecure_allow_http: bool,
) -> None:
    inner = RecordingApp()
    scope = make_scope(
        "websocket", scheme=scheme, client=client, headers=[(b"host", b"bank.example"), *headers]
    )
    app = _wrap(inner, events, insecure_allow_http=insecure_allow_http)
    sent = await run(app, scope, _WS_CONNECT)
    assert sent == [{"type": "websocket.accept"}]
    (seen,) = inner.scopes
    assert seen["scheme"] == ("ws" if insecure_allow_http else "wss")


@pytest.mark.anyio
async def test_websocket_host_checked(events: EventEmitter, sink: RecordingSink) -> None:
    scope = make_scope("websocket", headers=[(b"host", b"evil.example")])
    sent = await run(_wrap(RecordingApp(), events), scope, _WS_CONNECT)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert sink.reasons() == [REASON_HOST_NOT_ALLOWED]


# --- integration ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_works_with_starlette_add_middleware(events: EventEmitter) -> None:
    app: Starlette = starlette_app()
    app.add_middleware(TransportMiddleware, settings=TransportSettings(**BANK), events=events)
    async with asgi_client(app) as client:
        assert (await client.get("https://bank.example/")).status_code == 200
        assert (await client.get("https://evil.example/")).status_code == 400
        assert (await client.get("http://bank.example/")).status_code == 308


@pytest.mark.anyio
async def test_refusal_answers_json_when_asked(events: EventEmitter) -> None:
    async with asgi_client(_wrap(raw_app, events)) as client:
        response = await client.get("https://evil.example/", headers={"accept": "application/json"})
    assert response.status_code == 400
    assert response.json()["status"] == 400
