"""The adapter: modes, routes, scopes, concurrency, timeouts and the trip guarantee."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bastion.events import EventEmitter
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.limits.reasons import (
    REASON_BODY_TIMEOUT,
    REASON_BODY_TOO_LARGE,
    REASON_CONTENT_LENGTH_TOO_LARGE,
    REASON_CONTENT_TYPE_NOT_ALLOWED,
    REASON_HEADERS_TOO_MANY,
    REASON_JSON_TOO_DEEP,
    REASON_OVERLOADED,
)
from bastion.types import Message, Receive, Scope, Send
from tests.conftest import RecordingSink, asgi_client
from tests.limits.harness import ScriptedPeer, http_scope
from tests.support.apps import make_app

MiB = 1024 * 1024


async def read_body(receive: Receive) -> tuple[bytes, bool]:
    """The body as the app sees it, and whether it ended in a disconnect."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body, True
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body, False


async def answer(send: Send, status: int = 200, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


class RecordingApp:
    """A raw app that reads the whole body, remembers what it saw, and answers."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.disconnects = 0
        self.receives: list[Receive] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.receives.append(receive)
        if scope["type"] != "http":
            return
        body, disconnected = await read_body(receive)
        self.bodies.append(body)
        if disconnected:
            self.disconnects += 1
            # A careless app answers anyway: the layer must drop this.
            await answer(send, 200, b"partial")
            return
        await answer(send, 200, str(len(body)).encode())


def chunks_of(total: int, size: int = 65536) -> AsyncIterator[bytes]:
    async def generate() -> AsyncIterator[bytes]:
        for start in range(0, total, size):
            yield b"x" * min(size, total - start)

    return generate()


@pytest.mark.anyio
async def test_monitor_only_reports_once_and_lets_everything_through(
    events: EventEmitter, sink: RecordingSink
) -> None:
    app = RecordingApp()
    middleware = LimitsMiddleware(
        app, LimitsSettings(monitor_only=True, max_header_count=20), events=events
    )
    async with asgi_client(middleware) as client:
        declared = await client.post("/submit", content=b"x" * (MiB + 1))
        streamed = await client.post("/submit", content=chunks_of(3 * MiB))
        deep = await client.post(
            "/submit", content=b"[" * 5000, headers={"content-type": "application/json"}
        )
        headers = await client.get("/", headers=[(f"x-{i}", "v") for i in range(30)])
    assert [r.status_code for r in (declared, streamed, deep, headers)] == [200] * 4
    assert [len(body) for body in app.bodies] == [MiB + 1, 3 * MiB, 5000, 0]
    assert app.disconnects == 0
    assert sink.reasons() == [
        REASON_CONTENT_LENGTH_TOO_LARGE,
        REASON_BODY_TOO_LARGE,  # the streamed body: reported once, not per chunk
        REASON_JSON_TOO_DEEP,
        REASON_HEADERS_TOO_MANY,
    ]
    assert {record["action"] for record in sink.records} == {"monitored"}


@pytest.mark.anyio
async def test_per_route_override(events: EventEmitter, sink: RecordingSink) -> None:
    settings = LimitsSettings(
        routes={
            "POST /submit": {"max_body_bytes": 2 * MiB},
            "/echo": {"allowed_content_types": ["text/plain"]},
        }
    )
    middleware = LimitsMiddleware(make_app("starlette"), settings, events=events)
    body = b"x" * (MiB + MiB // 2)
    async with asgi_client(middleware) as client:
        upload = await client.post("/submit", content=body)
        elsewhere = await client.post("/echo", content=body, headers={"content-type": "text/plain"})
        echo_text = await client.post(
            "/echo", content=b"hi", headers={"content-type": "text/plain"}
        )
        echo_json = await client.post(
            "/echo", content=b"{}", headers={"content-type": "application/json"}
        )
    assert (upload.status_code, upload.text) == (200, str(len(body)))
    assert elsewhere.status_code == 413
    assert (echo_text.status_code, echo_text.text) == (200, "hi")
    assert echo_json.status_code == 415
    assert sink.reasons() == [REASON_CONTENT_LENGTH_TOO_LARGE, REASON_CONTENT_TYPE_NOT_ALLOWED]


@pytest.mark.anyio
@pytest.mark.parametrize("scope_type", ["lifespan", "unknown-extension"])
async def test_other_scopes_pass_through_untouched(scope_type: str) -> None:
    app = RecordingApp()
    middleware = LimitsMiddleware(app, LimitsSettings(max_header_count=1))
    peer = ScriptedPeer()
    scope: Scope = {"type": scope_type, "headers": [(b"a", b"1")] * 5}
    await middleware(scope, peer.receive, peer.send)
    assert app.receives == [peer.receive]
    assert "bastion" not in scope


@pytest.mark.anyio
async def test_disabled_layer_is_a_passthrough(sink: RecordingSink, events: EventEmitter) -> None:
    app = RecordingApp()
    middleware = LimitsMiddleware(
        app, LimitsSettings(enabled=False, max_body_bytes=1), events=events
    )
    peer = ScriptedPeer([b"too long"])
    await middleware(http_scope(), peer.receive, peer.send)
    assert app.receives == [peer.receive]
    assert app.bodies == [b"too long"]
    assert sink.records == []


@pytest.mark.anyio
async def test_websocket_handshake_gets_header_limits_only(
    events: EventEmitter, sink: RecordingSink
) -> None:
    app = RecordingApp()
    middleware = LimitsMiddleware(app, LimitsSettings(max_header_count=3), events=events)
    scope: Scope = {"type": "websocket", "path": "/ws", "headers": [(b"x", b"1")] * 4}
    peer = ScriptedPeer()
    await middleware(scope, peer.receive, peer.send)
    assert app.receives == []
    assert peer.sent == [{"type": "websocket.close", "code": 1008}]
    assert sink.reasons() == [REASON_HEADERS_TOO_MANY]

    fine: Scope = {"type": "websocket", "path": "/ws", "headers": [(b"x", b"1")] * 3}
    await middleware(fine, peer.receive, peer.send)
    assert app.receives == [peer.receive]  # messages are the WebSocket guard's business


@pytest.mark.anyio
async def test_concurrency_cap_sheds_with_retry_after(
    events: EventEmitter, sink: RecordingSink
) -> None:
    entered = 0
    all_in = asyncio.Event()
    release = asyncio.Event()

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal entered
        entered += 1
        if entered == 2:
            all_in.set()
        await release.wait()
        await answer(send)

    middleware = LimitsMiddleware(
        slow_app,
        LimitsSettings(max_concurrent_requests=2, overload_retry_after_seconds=7),
        events=events,
    )
    async with asgi_client(middleware) as client:
        first = asyncio.create_task(client.get("/"))
        second = asyncio.create_task(client.get("/"))
        await asyncio.wait_for(all_in.wait(), timeout=5)
        assert middleware.in_flight == 2
        shed = await client.get("/")
        release.set()
        results = await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
        after = await client.get("/")
    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "7"
    assert [r.status_code for r in results] == [200, 200]
    assert after.status_code == 200
    assert middleware.in_flight == 0
    assert sink.reasons() == [REASON_OVERLOADED]
    assert sink.records[0]["kind"] == "sys_availability"


@pytest.mark.anyio
async def test_slots_are_released_on_every_exit() -> None:
    class Boom(Exception):
        pass

    async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise Boom

    async def cancelled_app(scope: Scope, receive: Receive, send: Send) -> None:
        raise asyncio.CancelledError

    for app, expected in ((failing_app, Boom), (cancelled_app, asyncio.CancelledError)):
        middleware = LimitsMiddleware(app, LimitsSettings(max_concurrent_requests=1))
        for _ in range(3):  # a leaked slot would shed the second request
            peer = ScriptedPeer([b"x"])
            with pytest.raises(expected):
                await middleware(http_scope(), peer.receive, peer.send)
            assert middleware.in_flight == 0
    # The app raising after a refusal (ClientDisconnect, say) is swallowed and released.
    middleware = LimitsMiddleware(failing_app, LimitsSettings(max_body_bytes=1))
    peer = ScriptedPeer([b"xx"])
    await middleware(http_scope(), peer.receive, peer.send)
    assert (peer.status, middleware.in_flight) == (413, 0)
    # A client that disconnects mid-body releases its slot too.
    middleware = LimitsMiddleware(RecordingApp(), LimitsSettings(max_concurrent_requests=1))
    peer = ScriptedPeer([b"x"], hang=True)
    task = asyncio.create_task(middleware(http_scope(), peer.receive, peer.send))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert middleware.in_flight == 0


@pytest.mark.anyio
async def test_after_a_trip_the_app_gets_nothing_more_and_its_answer_is_dropped(
    events: EventEmitter, sink: RecordingSink
) -> None:
    app = RecordingApp()
    middleware = LimitsMiddleware(app, LimitsSettings(max_body_bytes=10), events=events)
    peer = ScriptedPeer([b"12345", b"67890", b"abc", b"never read"])
    await middleware(http_scope(), peer.receive, peer.send)
    # The chunk that crossed the limit never reached the app, nor anything after it.
    assert app.bodies == [b"1234567890"]
    assert app.disconnects == 1
    assert len(peer.received) == 3
    assert peer.status == 413
    assert b"partial" not in peer.body_sent
    assert sink.reasons() == [REASON_BODY_TOO_LARGE]


@pytest.mark.anyio
async def test_trip_after_the_response_started_truncates_it(
    events: EventEmitter, sink: RecordingSink
) -> None:
    async def streaming_echo(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the app gives up, leaving its response unfinished
            await send({"type": "http.response.body", "body": message["body"], "more_body": True})
            if not message.get("more_body"):
                await send({"type": "http.response.body", "body": b""})
                return

    middleware = LimitsMiddleware(streaming_echo, LimitsSettings(max_body_bytes=6), events=events)
    peer = ScriptedPeer([b"abc", b"def", b"ghi", b"jkl"])
    await middleware(http_scope(), peer.receive, peer.send)
    assert peer.status == 200  # too late to change
    assert peer.body_sent == b"abcdef"
    assert not peer.response_complete  # the server will close the connection
    assert sink.reasons() == [REASON_BODY_TOO_LARGE]
    assert sink.records[0]["details"] == {"response_started": True}


@pytest.mark.anyio
async def test_an_app_that_never_reads_the_body_reads_nothing() -> None:
    async def ignoring_app(scope: Scope, receive: Receive, send: Send) -> None:
        await answer(send)

    peer = ScriptedPeer([b"x" * 100] * 100)
    middleware = LimitsMiddleware(ignoring_app, LimitsSettings(max_body_bytes=10))
    await middleware(http_scope(), peer.receive, peer.send)
    assert (peer.status, peer.received) == (200, [])


@pytest.mark.anyio
async def test_idle_body_timeout_is_408(events: EventEmitter, sink: RecordingSink) -> None:
    app = RecordingApp()
    settings = LimitsSettings(body_idle_timeout_seconds=0.02)
    middleware = LimitsMiddleware(app, settings, events=events)
    peer = ScriptedPeer([b"first"], hang=True)  # announces more, then sends nothing
    await asyncio.wait_for(middleware(http_scope(), peer.receive, peer.send), timeout=5)
    assert peer.status == 408
    assert app.bodies == [b"first"]
    assert sink.reasons() == [REASON_BODY_TIMEOUT]


@pytest.mark.anyio
async def test_total_body_timeout_sums_the_waits(events: EventEmitter, sink: RecordingSink) -> None:
    app = RecordingApp()
    settings = LimitsSettings(body_idle_timeout_seconds=5, body_timeout_seconds=0.05)
    middleware = LimitsMiddleware(app, settings, events=events)
    peer = ScriptedPeer([b"x"] * 50, delay_seconds=0.02)  # each wait is short, together long
    await asyncio.wait_for(middleware(http_scope(), peer.receive, peer.send), timeout=5)
    # No single wait comes near the idle timeout: only their sum can trip, and it
    # trips by the third chunk (asyncio.sleep never returns early).
    assert peer.status == 408
    assert len(app.bodies[0]) <= 2
    assert sink.reasons() == [REASON_BODY_TIMEOUT]


@pytest.mark.anyio
async def test_timeout_in_monitor_mode_waits_and_reports_once(
    events: EventEmitter, sink: RecordingSink
) -> None:
    app = RecordingApp()
    settings = LimitsSettings(monitor_only=True, body_idle_timeout_seconds=0.01)
    middleware = LimitsMiddleware(app, settings, events=events)
    peer = ScriptedPeer([b"a", b"b", b"c"], delay_seconds=0.02)
    await asyncio.wait_for(middleware(http_scope(), peer.receive, peer.send), timeout=5)
    assert (peer.status, app.bodies) == (200, [b"abc"])
    assert sink.reasons() == [REASON_BODY_TIMEOUT]
    assert sink.records[0]["action"] == "monitored"


@pytest.mark.anyio
async def test_waiting_for_disconnect_after_the_body_is_not_timed() -> None:
    """Starlette's StreamingResponse calls receive() for the whole response to learn
    of a disconnect; that wait is not a slow body."""
    seen: list[Message] = []

    async def listening_app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        seen.append(await receive())  # returns only once the response is complete
        await send({"type": "http.response.body", "body": b""})

    async def receive_after(peer: ScriptedPeer) -> Message:
        message = await peer.receive()
        if message["type"] == "http.disconnect":
            await asyncio.sleep(0.05)  # longer than the idle timeout
        return message

    middleware = LimitsMiddleware(listening_app, LimitsSettings(body_idle_timeout_seconds=0.02))
    peer = ScriptedPeer([b"body"])
    peer._complete.set()
    await middleware(http_scope(), lambda: receive_after(peer), peer.send)
    assert peer.status == 200
    assert seen == [{"type": "http.disconnect"}]


@pytest.mark.anyio
async def test_instance_is_reusable_and_keeps_no_request_state() -> None:
    app = RecordingApp()
    middleware = LimitsMiddleware(app, LimitsSettings(max_body_bytes=5))
    before = dict(vars(middleware))
    results = []
    for chunks in ([b"12345"], [b"123456"], [b"1", b"2"]):
        peer = ScriptedPeer(chunks)
        await middleware(http_scope(), peer.receive, peer.send)
        results.append(peer.status)
    assert results == [200, 413, 200]
    assert vars(middleware) == before


@pytest.mark.anyio
async def test_accepts_starlette_add_middleware() -> None:
    from starlette.applications import Starlette

    starlette_app = Starlette()
    starlette_app.add_middleware(LimitsMiddleware, settings=LimitsSettings(max_body_bytes=3))
    async with asgi_client(starlette_app) as client:
        assert (await client.post("/", content=b"1234")).status_code == 413
        assert (await client.get("/")).status_code == 404


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content_type", "deep", "shallow"),
    [
        pytest.param("text/plain", DEEP, b"[1]", id="text-plain"),
        pytest.param("application/octet-stream", DEEP, b"[1]", id="octet-stream"),
        pytest.param("application/x-json", DEEP, b"[1]", id="unknown-type"),
        pytest.param("application/x-www-form-urlencoded", DEEP, b"[1]", id="urlencoded"),
        pytest.param(
            "text/plain",
            # As deep as DEEP: `json` on CPython 3.13 parses 5,000 levels (3.11 did not).
            DEEP.decode("ascii").encode("utf-16"),
            "[1]".encode("utf-16"),
            id="text-plain-utf16",
        ),
    ],
)
async def test_request_json_is_guarded_whatever_the_content_type(
    content_type: str, deep: bytes, shallow: bytes
) -> None:
    """Starlette's `Request.json()` parses any body: the threat is real, and closed."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def parse(request: Request) -> Response:
        return PlainTextResponse(type(await request.json()).__name__)

    app = Starlette(routes=[Route("/parse", parse, methods=["POST"])])
    headers = {"content-type": content_type}
    async with asgi_client(app) as client:
        with pytest.raises(RecursionError):
            await client.post("/parse", content=deep, headers=headers)
    guarded = LimitsMiddleware(app, LimitsSettings(), events=EventEmitter([]))
    async with asgi_client(guarded) as client:
        refused = await client.post("/parse", content=deep, headers=headers)
        parsed = await client.post("/parse", content=shallow, headers=headers)
    assert refused.status_code == 400
    assert (parsed.status_code, parsed.text) == (200, "list")
