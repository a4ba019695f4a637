"""The ASGI adapter: passthrough, Vary, app-set CORS headers, modes."""

from __future__ import annotations

import anyio
import pytest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware as StarletteCORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion.cors import CORSMiddleware, CORSSettings
from bastion.events import EventEmitter
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from tests.conftest import RecordingSink, asgi_client

SETTINGS = CORSSettings(
    allow_origins=("https://app.example",),
    allow_methods=("GET", "PUT"),
    allow_headers=("content-type",),
)
ALLOWED = {"origin": "https://app.example"}
EVIL = {"origin": "https://evil.net"}
PREFLIGHT_EVIL = {"origin": "https://evil.net", "access-control-request-method": "PUT"}


class RecordingApp:
    """A raw app that answers with the given headers and remembers what it saw."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.headers = headers or []
        self.calls: list[tuple[Scope, Receive, Send]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append((scope, receive, send))
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"ok"})


# --- Scopes that are not HTTP, and the off switch -----------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("scope_type", ["websocket", "lifespan", "something-new"])
async def test_other_scopes_pass_through_untouched(scope_type: str, events: EventEmitter) -> None:
    inner = RecordingApp()
    app = CORSMiddleware(inner, SETTINGS, events=events)
    scope: Scope = {"type": scope_type, "headers": [(b"origin", b"https://evil.net")]}

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        raise AssertionError("the middleware must not send")

    await app(scope, receive, send)
    [(seen_scope, seen_receive, seen_send)] = inner.calls
    assert seen_scope is scope
    assert seen_receive is receive
    assert seen_send is send
    assert "bastion" not in scope


@pytest.mark.anyio
async def test_disabled_layer_passes_everything_through(
    events: EventEmitter, sink: RecordingSink
) -> None:
    inner = RecordingApp([(b"access-control-allow-origin", b"*")])
    settings = SETTINGS.model_copy(update={"enabled": False})
    app = CORSMiddleware(inner, settings, events=events)
    async with asgi_client(app) as client:
        actual = await client.get("/", headers=EVIL)
        preflight = await client.options("/", headers=PREFLIGHT_EVIL)
    assert actual.headers["access-control-allow-origin"] == "*"
    assert "vary" not in actual.headers
    assert preflight.status_code == 200  # the app answered
    assert len(inner.calls) == 2
    assert sink.records == []


# --- Vary ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [{}, EVIL, {"origin": "null"}, {"origin": "https://app.example"}],
    ids=["no-origin", "evil-origin", "null-origin", "would-be-allowed"],
)
@pytest.mark.parametrize(
    ("app_headers", "expected"),
    [
        pytest.param([], [], id="cors-grants-nothing-adds-nothing"),
        pytest.param(
            [(b"vary", b"Accept-Encoding"), (b"x-a", b"1")],
            [(b"vary", b"Accept-Encoding"), (b"x-a", b"1")],
            id="cors-grants-nothing-app-vary-untouched",
        ),
        pytest.param(
            [
                (b"Access-Control-Allow-Origin", b"*"),
                (b"content-type", b"text/plain"),
                (b"access-control-allow-credentials", b"true"),
            ],
            [(b"content-type", b"text/plain")],
            id="cors-grants-nothing-app-grant-stripped",
        ),
    ],
)
async def test_a_policy_granting_nothing_never_varies_on_origin(
    events: EventEmitter,
    headers: dict[str, str],
    app_headers: list[tuple[bytes, bytes]],
    expected: list[tuple[bytes, bytes]],
) -> None:
    """The default policy grants no origin: no response depends on `Origin`, so none
    says it varies on it, and the application's own grants are still removed."""
    app = CORSMiddleware(RecordingApp(app_headers), CORSSettings(), events=events)
    async with asgi_client(app) as client:
        response = await client.get("/", headers=headers)
    sent = [(name, value) for name, value in response.headers.raw if name != b"content-length"]
    assert sent == [(name.lower(), value) for name, value in expected]


@pytest.mark.anyio
async def test_a_policy_granting_nothing_in_monitor_only_keeps_the_apps_lines_and_vary(
    events: EventEmitter,
) -> None:
    """cors-monitor-app-reflects-origin: in monitor-only mode the application's own
    CORS lines stay, and they may reflect the `Origin` (the app's CORS still running
    during a rollout): the response must still say it varies on it, or a shared
    cache could hand one origin's grant to another."""
    app_headers = [(b"access-control-allow-origin", b"https://evil.net"), (b"vary", b"Cookie")]
    settings = CORSSettings(monitor_only=True)
    app = CORSMiddleware(RecordingApp(app_headers), settings, events=events)
    async with asgi_client(app) as client:
        response = await client.get("/", headers=EVIL)
    assert response.headers["access-control-allow-origin"] == "https://evil.net"
    assert response.headers.get_list("vary") == ["Cookie, Origin"]


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [{}, ALLOWED, EVIL, {"origin": "null"}])
@pytest.mark.parametrize(
    ("app_vary", "expected"),
    [
        ([], ["Origin"]),
        ([(b"vary", b"Accept-Encoding")], ["Accept-Encoding, Origin"]),
        ([(b"vary", b"Origin")], ["Origin"]),
        ([(b"vary", b"Accept-Encoding, origin")], ["Accept-Encoding, origin"]),
        ([(b"vary", b"*")], ["*"]),
    ],
)
async def test_vary_origin_on_every_response(
    events: EventEmitter,
    headers: dict[str, str],
    app_vary: list[tuple[bytes, bytes]],
    expected: list[str],
) -> None:
    app = CORSMiddleware(RecordingApp(app_vary), SETTINGS, events=events)
    async with asgi_client(app) as client:
        response = await client.get("/", headers=headers)
    assert response.headers.get_list("vary") == expected


@pytest.mark.anyio
async def test_app_header_list_is_not_mutated(events: EventEmitter) -> None:
    shared = [(b"content-type", b"text/plain"), (b"access-control-allow-origin", b"*")]
    app = CORSMiddleware(RecordingApp(shared), SETTINGS, events=events)
    async with asgi_client(app) as client:
        await client.get("/", headers=EVIL)
    assert shared == [(b"content-type", b"text/plain"), (b"access-control-allow-origin", b"*")]


# --- App-set CORS headers ------------------------------------------------------------

APP_CORS = [
    (b"Access-Control-Allow-Origin", b"https://evil.net"),
    (b"access-control-allow-credentials", b"true"),
    (b"access-control-expose-headers", b"x-secret"),
    (b"x-kept", b"1"),
]


@pytest.mark.anyio
async def test_app_cors_headers_are_removed(events: EventEmitter) -> None:
    app = CORSMiddleware(RecordingApp(APP_CORS), SETTINGS, events=events)
    async with asgi_client(app) as client:
        evil = await client.get("/", headers=EVIL)
        allowed = await client.get("/", headers=ALLOWED)
        no_origin = await client.get("/")
    for response in (evil, no_origin):
        assert not any(name.startswith("access-control-") for name in response.headers)
        assert response.headers["x-kept"] == "1"
    assert allowed.headers.get_list("access-control-allow-origin") == ["https://app.example"]
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-expose-headers" not in allowed.headers


def _reflecting_starlette_app() -> ASGIApp:
    """A common misconfiguration: Starlette's CORS reflecting every origin, with cookies."""

    async def secret(request: Request) -> PlainTextResponse:
        return PlainTextResponse("account data")

    app = Starlette(routes=[Route("/", secret)])
    app.add_middleware(
        StarletteCORSMiddleware,
        allow_origin_regex=".*",
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    return app


@pytest.mark.anyio
async def test_inner_reflecting_cors_cannot_widen_the_policy(
    events: EventEmitter, sink: RecordingSink
) -> None:
    inner = _reflecting_starlette_app()
    async with asgi_client(inner) as client:
        unprotected = await client.get("/", headers=EVIL)
    assert unprotected.headers["access-control-allow-origin"] == "https://evil.net"

    app = CORSMiddleware(inner, SETTINGS, events=events)
    async with asgi_client(app) as client:
        actual = await client.get("/", headers=EVIL)
        preflight = await client.options("/", headers=PREFLIGHT_EVIL)
    assert actual.text == "account data"
    assert "access-control-allow-origin" not in actual.headers
    assert "access-control-allow-credentials" not in actual.headers
    assert preflight.status_code == 403
    assert sink.reasons() == ["origin-not-allowed"]


# --- Preflights ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_preflight_is_not_forwarded(events: EventEmitter) -> None:
    inner = RecordingApp()
    app = CORSMiddleware(inner, SETTINGS, events=events)
    async with asgi_client(app) as client:
        good = await client.options(
            "/", headers={**ALLOWED, "access-control-request-method": "PUT"}
        )
        bad = await client.options("/", headers=PREFLIGHT_EVIL)
    assert (good.status_code, bad.status_code) == (204, 403)
    assert "content-length" not in good.headers  # RFC 9110 section 8.6: not on a 204
    assert inner.calls == []


@pytest.mark.anyio
async def test_options_without_request_method_is_an_actual_request(events: EventEmitter) -> None:
    inner = RecordingApp()
    app = CORSMiddleware(inner, SETTINGS, events=events)
    async with asgi_client(app) as client:
        response = await client.options("/", headers=ALLOWED)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert len(inner.calls) == 1


@pytest.mark.anyio
async def test_preflight_without_origin_goes_to_the_app(events: EventEmitter) -> None:
    inner = RecordingApp()
    app = CORSMiddleware(inner, SETTINGS, events=events)
    async with asgi_client(app) as client:
        response = await client.options("/", headers={"access-control-request-method": "PUT"})
    assert response.status_code == 200
    assert len(inner.calls) == 1


@pytest.mark.anyio
async def test_refused_preflight_answers_json_when_asked(
    events: EventEmitter, sink: RecordingSink
) -> None:
    app = CORSMiddleware(RecordingApp(), SETTINGS, events=events)
    async with asgi_client(app) as client:
        response = await client.options(
            "/", headers={**PREFLIGHT_EVIL, "accept": "application/json"}
        )
    assert response.status_code == 403
    body = response.json()
    assert body["status"] == 403
    assert body["request_id"] == sink.records[0]["request_id"]


@pytest.mark.anyio
async def test_private_network_preflight_granted_when_allowed(events: EventEmitter) -> None:
    settings = SETTINGS.model_copy(update={"allow_private_network": True})
    app = CORSMiddleware(RecordingApp(), settings, events=events)
    headers = {**ALLOWED, "access-control-request-method": "GET"}
    async with asgi_client(app) as client:
        asked = await client.options(
            "/", headers={**headers, "access-control-request-private-network": "true"}
        )
        not_asked = await client.options("/", headers=headers)
    assert asked.status_code == 204
    assert asked.headers["access-control-allow-private-network"] == "true"
    assert "access-control-allow-private-network" not in not_asked.headers


@pytest.mark.anyio
async def test_preflight_headers_without_credentials_or_extras(events: EventEmitter) -> None:
    settings = CORSSettings(allow_origins=("https://app.example",), max_age_seconds=0)
    app = CORSMiddleware(RecordingApp(), settings, events=events)
    async with asgi_client(app) as client:
        response = await client.options(
            "/", headers={**ALLOWED, "access-control-request-method": "POST"}
        )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert response.headers["access-control-allow-methods"] == "GET, HEAD, POST"
    assert response.headers["access-control-max-age"] == "0"
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.anyio
async def test_pattern_with_port(events: EventEmitter) -> None:
    settings = CORSSettings(allow_origins=("https://*.tenant.example:8443",))
    app = CORSMiddleware(RecordingApp(), settings, events=events)
    async with asgi_client(app) as client:
        granted = await client.get("/", headers={"origin": "https://a.tenant.example:8443"})
        refused = await client.get("/", headers={"origin": "https://a.tenant.example"})
    assert granted.headers["access-control-allow-origin"] == "https://a.tenant.example:8443"
    assert "access-control-allow-origin" not in refused.headers


# --- Monitor-only --------------------------------------------------------------------


@pytest.mark.anyio
async def test_monitor_only_reports_and_forwards_a_bad_preflight(
    events: EventEmitter, sink: RecordingSink
) -> None:
    inner = RecordingApp([(b"access-control-allow-origin", b"*")])
    settings = SETTINGS.model_copy(update={"monitor_only": True})
    app = CORSMiddleware(inner, settings, events=events)
    async with asgi_client(app) as client:
        refused = await client.options("/", headers=PREFLIGHT_EVIL)
        granted = await client.options(
            "/", headers={**ALLOWED, "access-control-request-method": "PUT"}
        )
    # The would-be refusal reaches the app, whose own answer is kept as it was.
    assert refused.status_code == 200
    assert refused.headers["access-control-allow-origin"] == "*"
    assert "Origin" in refused.headers["vary"]
    # What the policy grants is granted in either mode.
    assert granted.status_code == 204
    assert granted.headers["access-control-allow-origin"] == "https://app.example"
    assert len(inner.calls) == 1
    [record] = sink.records
    assert (record["reason"], record["action"]) == ("origin-not-allowed", "monitored")


@pytest.mark.anyio
async def test_monitor_only_keeps_app_cors_only_where_it_does_not_grant(
    events: EventEmitter,
) -> None:
    settings = SETTINGS.model_copy(update={"monitor_only": True})
    app = CORSMiddleware(RecordingApp(APP_CORS), settings, events=events)
    async with asgi_client(app) as client:
        evil = await client.get("/", headers=EVIL)
        allowed = await client.get("/", headers=ALLOWED)
    assert evil.headers["access-control-allow-origin"] == "https://evil.net"
    assert allowed.headers.get_list("access-control-allow-origin") == ["https://app.example"]


# --- Concurrency -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_per_request_state_on_the_instance(events: EventEmitter) -> None:
    """One instance serves interleaved requests; each gets its own grant."""
    settings = CORSSettings(allow_origins=("https://*.example.com",))
    app = CORSMiddleware(RecordingApp(), settings, events=events)
    results: dict[str, str | None] = {}

    async def fetch(origin: str) -> None:
        async with asgi_client(app) as client:
            response = await client.get("/", headers={"origin": origin})
        results[origin] = response.headers.get("access-control-allow-origin")

    origins = [f"https://t{i}.example.com" for i in range(20)] + ["https://evil.net"]
    async with anyio.create_task_group() as group:
        for origin in origins:
            group.start_soon(fetch, origin)
    assert results == {o: (None if o == "https://evil.net" else o) for o in origins}
