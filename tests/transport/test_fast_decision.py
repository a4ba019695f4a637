"""The remembered outcomes of `TransportMiddleware.enter` against the full decision.

With no proxy trusted, a request that passed is remembered under its one `Host`
line, scope type and scheme (`_Pass`), and the next request with the same three is
answered from the memo. These tests hold that shortcut to two references:

* `reference`: the full path's decision written out from the pure core
  (`TransportFacts`, `resolve_transport`, `check_host`, the HTTPS rule and HSTS), as
  `enter` made it before any memo (the old algorithm, kept here);
* a fresh layer (both memos empty), for everything a request shows: the messages
  sent, the events, the context and the scope the application got.

Each named attack case is answered cold, twice on one layer, and after the layer
remembered its neighbours (the legitimate host, the secure scheme); a hypothesis
test sends random request sequences through one layer. The memo is bounded: a
spray of hosts, or of schemes under one host, stays within its bound.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.context import SCOPE_KEY, get_context
from bastion.events import EventEmitter
from bastion.hosts import DEFAULT_PORTS
from bastion.stages import Flow
from bastion.transport import (
    AllowedHosts,
    ProxyTrust,
    ResolvedTransport,
    TransportFacts,
    TransportMiddleware,
    TransportSettings,
    build_https_url,
    check_host,
    hsts_header_value,
    resolve_transport,
)
from bastion.transport.allowed_hosts import LOCAL_HOSTS
from bastion.transport.middleware import _HOST_MEMO_SIZE
from bastion.types import Message, Receive, Scope, Send
from tests.conftest import RecordingSink
from tests.transport.support import observe

pytestmark = pytest.mark.anyio

ALLOWED = ("bank.example", "*.bank.example", "[::1]", "127.0.0.1")


@dataclass(frozen=True)
class Request:
    """One request, as a server would deliver it."""

    host_lines: tuple[bytes, ...] = (b"bank.example",)
    scheme: Any = "https"  # None: no `scheme` key
    scope_type: str = "http"
    client: Any = ("203.0.113.9", 5000)
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()
    path: str = "/a"
    raw_path: bytes | None = None
    outer_context: bool = False
    """A context made before the layer (by an outer layer), for another client."""

    def scope(self) -> Scope:
        scope: dict[str, Any] = {
            "type": self.scope_type,
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "path": self.path,
            "raw_path": self.raw_path if self.raw_path is not None else self.path.encode(),
            "query_string": b"q=1",
            "headers": [*((b"host", line) for line in self.host_lines), *self.extra_headers],
            "client": self.client,
            "server": ("127.0.0.1", 8000),
        }
        if self.scheme is not None:
            scope["scheme"] = self.scheme
        if self.scope_type == "http":
            scope["method"] = "GET"
        if self.outer_context:
            outer = get_context({"type": self.scope_type, "client": ("198.51.100.1", 1)})
            outer.scheme = "wss"
            outer.host, outer.port = "outer.example", 1
            scope[SCOPE_KEY] = outer
        return scope


@dataclass(frozen=True)
class Decision:
    """What a request shows of the transport decision."""

    context: tuple[Any, ...] | None  # (client, scheme, host, port) the app saw; None: not reached
    status: int | None  # the HTTP status sent, None over a WebSocket
    location: bytes | None
    hsts: bool


def reference(values: dict[str, Any], request: Request) -> Decision:
    """The full path of `enter` (no monitor-only), written out from the pure core."""
    transport = TransportSettings(**values)
    scope = request.scope()
    trusted = bool(transport.trusted_proxies)
    facts = TransportFacts.from_scope(scope, read_proxy_headers=trusted)
    resolved = ResolvedTransport(facts.peer, facts.scheme)
    if trusted:
        trust = ProxyTrust(transport.trusted_proxies, frozenset(transport.proxy_headers))
        resolved = resolve_transport(facts, trust)
    http_status = None if facts.is_websocket else 400
    if resolved.reason:
        return Decision(None, http_status, None, False)
    allowed = AllowedHosts.from_patterns(transport.allowed_hosts or LOCAL_HOSTS)
    host = check_host(facts.host_lines, allowed, forwarded_host=resolved.untrusted_host).host
    if host is None:
        return Decision(None, http_status, None, False)
    secure = resolved.scheme in ("https", "wss")
    if not secure and not transport.insecure_allow_http:
        if facts.is_websocket:
            return Decision(None, None, None, False)
        location = build_https_url(
            host.host,
            transport.https_port,
            raw_path=scope["raw_path"],
            path=scope["path"],
            query_string=scope["query_string"],
        )
        return Decision(None, transport.https_redirect_status, location, False)
    port = host.port or DEFAULT_PORTS.get(resolved.scheme)
    context = (resolved.client, resolved.scheme, host.host, port)
    hsts = secure and not facts.is_websocket and bool(hsts_header_value(transport))
    return Decision(context, None if facts.is_websocket else 200, None, hsts)


async def answer(layer: TransportMiddleware, sink: RecordingSink, request: Request) -> Any:
    """Everything one request shows: its decision, and the messages, events and the
    application's scope and context in full."""
    scope = request.scope()
    observed = await observe(
        layer,
        sink,
        scope,
        lambda context: (
            context.client,
            context.scheme,
            context.host,
            context.port,
            context.refused_by,
            context.nonce_source,
        ),
    )
    start = next((m for m in observed.messages if m["type"] == "http.response.start"), None)
    headers = dict(start["headers"]) if start is not None else {}
    decision = Decision(
        observed.seen[0][1][:4] if observed.seen else None,
        start["status"] if start is not None else None,
        headers.get(b"location"),
        b"strict-transport-security" in headers,
    )
    app_view = [
        (app_scope is scope, app_scope["headers"], app_scope.get("scheme"), fields)
        for app_scope, fields in observed.seen
    ]
    return decision, observed.messages, observed.events, app_view


async def hooks_of(layer: TransportMiddleware, request: Request) -> list[Any]:
    """The response hooks `enter` leaves on the flow (HSTS shows on HTTP responses
    only: this shows it on a WebSocket's flow too)."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    flow = Flow(request.scope(), receive, send)
    pending = layer.enter(flow)
    if pending is not None:
        await pending
    return list(flow.hooks)


def make_layer(values: dict[str, Any], sink: RecordingSink) -> TransportMiddleware:
    return TransportMiddleware(_unset_app, TransportSettings(**values), events=EventEmitter([sink]))


async def _unset_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("`answer` sets the application")


def with_host(*lines: bytes, **fields: Any) -> Request:
    return Request(host_lines=lines, **fields)


STRICT: dict[str, Any] = {"allowed_hosts": ALLOWED}
PLAIN = {**STRICT, "insecure_allow_http": True}
PROXIED = {
    **STRICT,
    "trusted_proxies": ("10.0.0.0/8",),
    "proxy_headers": ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"),
}
NO_HSTS = {**STRICT, "hsts_max_age_seconds": 0}
MONITOR = {**STRICT, "monitor_only": True}
LEGIT = Request()
SECURE_WS = Request(scheme="wss", scope_type="websocket")

# (settings, what the layer answered before, the request, whether it reaches the app)
CASES = [
    pytest.param(STRICT, [], LEGIT, True, id="transport-fast-legitimate"),
    pytest.param(
        STRICT, [LEGIT], with_host(b"evil.example"), False, id="transport-fast-host-spoofed"
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        with_host(b"bank.example.evil.example"),
        False,
        id="transport-fast-host-suffix-spoofed",
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        with_host(b"evil.example", path="/", raw_path=b"https://bank.example/"),
        False,
        id="transport-fast-absolute-form-mismatched-host",
    ),
    pytest.param(
        STRICT,
        [with_host(b"evil.example")],
        with_host(b"bank.example", path="/", raw_path=b"https://evil.example/"),
        True,
        id="transport-fast-absolute-form-allowed-host",
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        with_host(b"bank.example", b"evil.example"),
        False,
        id="transport-fast-two-host-lines",
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        with_host(b"bank.example", b"bank.example"),
        False,
        id="transport-fast-repeated-host-line",
    ),
    pytest.param(STRICT, [LEGIT], with_host(), False, id="transport-fast-no-host"),
    pytest.param(
        STRICT,
        [LEGIT],
        replace(LEGIT, scheme="http", extra_headers=((b"x-forwarded-proto", b"https"),)),
        False,
        id="transport-fast-forwarded-proto-no-proxy-trusted",
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        replace(LEGIT, extra_headers=((b"x-forwarded-host", b"evil.example"),)),
        True,
        id="transport-fast-forwarded-host-no-proxy-trusted",
    ),
    pytest.param(
        PROXIED,
        [LEGIT],
        replace(
            LEGIT,
            scheme="http",
            extra_headers=((b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"10.0.0.1")),
        ),
        False,
        id="transport-fast-forwarded-proto-untrusted-peer",
    ),
    pytest.param(
        PROXIED,
        [LEGIT],
        replace(LEGIT, extra_headers=((b"x-forwarded-host", b"evil.example"),)),
        True,
        id="transport-fast-forwarded-host-untrusted-peer",
    ),
    pytest.param(
        PROXIED,
        [replace(LEGIT, client=("10.0.0.1", 1))],
        replace(
            LEGIT, client=("10.0.0.1", 1), extra_headers=((b"x-forwarded-host", b"evil.example"),)
        ),
        False,
        id="transport-fast-forwarded-host-trusted-proxy-refused",
    ),
    pytest.param(
        STRICT, [LEGIT], replace(LEGIT, scheme="http"), False, id="transport-fast-http-downgrade"
    ),
    pytest.param(
        STRICT,
        [SECURE_WS],
        replace(SECURE_WS, scheme="ws"),
        False,
        id="transport-fast-ws-downgrade",
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        replace(LEGIT, scheme=None),
        False,
        id="transport-fast-no-scheme-downgrade",
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        replace(LEGIT, scheme="HTTPS"),
        False,
        id="transport-fast-upper-case-scheme",
    ),
    pytest.param(PLAIN, [LEGIT], replace(LEGIT, scheme=""), True, id="transport-fast-empty-scheme"),
    pytest.param(
        PLAIN,
        [LEGIT],
        replace(LEGIT, scheme="http", outer_context=True),
        True,
        id="transport-fast-plain-allowed-outer-context",
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        with_host(b"a" * 300 + b".bank.example"),
        False,
        id="transport-fast-oversized-host",
    ),
    pytest.param(
        STRICT, [LEGIT], with_host(b"bank.example:8443"), True, id="transport-fast-host-port"
    ),
    pytest.param(
        STRICT, [LEGIT], with_host(b"bank.example:443"), True, id="transport-fast-default-port"
    ),
    pytest.param(
        STRICT, [LEGIT], with_host(b"bank.example:99999"), False, id="transport-fast-bad-port"
    ),
    pytest.param(
        STRICT, [LEGIT], with_host(b"bank.example:"), False, id="transport-fast-empty-port"
    ),
    pytest.param(STRICT, [], with_host(b"[::1]:8443"), True, id="transport-fast-ipv6-literal"),
    pytest.param(
        STRICT,
        [with_host(b"[::1]")],
        with_host(b"::1"),
        False,
        id="transport-fast-ipv6-unbracketed",
    ),
    pytest.param(
        STRICT, [LEGIT], with_host(b"BANK.Example."), True, id="transport-fast-case-and-dot"
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        with_host("bänk.example".encode("latin-1")),
        False,
        id="transport-fast-unicode-host",
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        with_host("bänk.example".encode("idna")),
        False,
        id="transport-fast-punycode-host",
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        with_host(b"xn--bnk-sna.bank.example"),
        True,
        id="transport-fast-punycode-subdomain",
    ),
    pytest.param(STRICT, [LEGIT], replace(LEGIT, client=None), True, id="transport-fast-no-client"),
    pytest.param(
        STRICT,
        [LEGIT],
        replace(LEGIT, client=["203.0.113.7", "6000"]),
        True,
        id="transport-fast-client-list",
    ),
    pytest.param(
        STRICT, [LEGIT], replace(LEGIT, outer_context=True), True, id="transport-fast-outer-context"
    ),
    pytest.param(
        STRICT,
        [LEGIT],
        replace(LEGIT, scope_type="websocket"),
        True,
        id="transport-fast-https-scheme-on-websocket",
    ),
    pytest.param(STRICT, [LEGIT], SECURE_WS, True, id="transport-fast-wss-after-https"),
    pytest.param(
        STRICT,
        [SECURE_WS],
        replace(SECURE_WS, scope_type="http"),
        True,
        id="transport-fast-wss-scheme-on-http",
    ),
    pytest.param(NO_HSTS, [LEGIT], LEGIT, True, id="transport-fast-no-hsts"),
    pytest.param(
        MONITOR,
        [LEGIT],
        replace(LEGIT, scheme="http"),
        True,
        id="transport-fast-monitor-only-downgrade",
    ),
    pytest.param(
        MONITOR, [LEGIT], with_host(b"evil.example"), True, id="transport-fast-monitor-only-host"
    ),
]


@pytest.mark.parametrize(("values", "before", "request_", "reaches_app"), CASES)
async def test_named_cases_answer_as_the_full_decision(
    values: dict[str, Any], before: list[Request], request_: Request, reaches_app: bool
) -> None:
    sink = RecordingSink()
    cold = await answer(make_layer(values, sink), sink, request_)
    assert (cold[0].context is not None) is reaches_app  # the case is what its name says
    if not values.get("monitor_only"):
        assert cold[0] == reference(values, request_)
    warm = make_layer(values, sink)
    for earlier in [*before, request_]:  # the request itself: remembered if it passed
        await answer(warm, sink, earlier)
    assert await answer(warm, sink, request_) == cold
    assert await answer(warm, sink, request_) == cold
    assert await hooks_of(warm, request_) == await hooks_of(make_layer(values, sink), request_)


# --- generated sequences ----------------------------------------------------------------

HOST_LINES = st.sampled_from(
    [
        (b"bank.example",),
        (b"bank.example",),
        (b"api.bank.example:8443",),
        (b"bank.example:443",),
        (b"BANK.example",),
        (b"[::1]",),
        (b"127.0.0.1:80",),
        (b"evil.example",),
        (b"bank.example:99999",),
        (b"bank.example", b"bank.example"),
        (),
    ]
)
REQUESTS = st.builds(
    Request,
    host_lines=HOST_LINES,
    scheme=st.sampled_from(["https", "http", "wss", "ws", None, "", "HTTPS"]),
    scope_type=st.sampled_from(["http", "websocket"]),
    client=st.sampled_from([("203.0.113.9", 5000), ("10.0.0.1", 1), ["192.0.2.1", "7"], None]),
    extra_headers=st.sampled_from(
        [(), ((b"x-forwarded-proto", b"https"),), ((b"x-forwarded-host", b"evil.example"),)]
    ),
    outer_context=st.booleans(),
)
SETTINGS = st.sampled_from([STRICT, PLAIN, PROXIED, NO_HSTS, MONITOR])


@settings(max_examples=150, deadline=None)
@given(values=SETTINGS, requests=st.lists(REQUESTS, min_size=1, max_size=8))
def test_generated_sequences_answer_as_the_full_decision(
    values: dict[str, Any], requests: list[Request]
) -> None:
    """One layer answers the sequence, each request after its neighbours (its first
    `Host` line alone, over its secure scheme, over the other scope type), which it
    may have remembered: each answer
    is a fresh layer's, and the reference's (outside monitor-only)."""

    async def main() -> None:
        sink = RecordingSink()
        warm = make_layer(values, sink)
        for request in requests:
            secure = "wss" if request.scope_type == "websocket" else "https"
            neighbours = [replace(request, host_lines=request.host_lines[:1])]
            neighbours.append(replace(neighbours[0], scheme=secure))
            other_type = "http" if request.scope_type == "websocket" else "websocket"
            neighbours.append(replace(neighbours[0], scope_type=other_type))
            for neighbour in neighbours:
                await answer(warm, sink, neighbour)
            cold = await answer(make_layer(values, sink), sink, request)
            assert await answer(warm, sink, request) == cold
            cold_hooks = await hooks_of(make_layer(values, sink), request)
            assert await hooks_of(warm, request) == cold_hooks
            if not values.get("monitor_only"):
                assert cold[0] == reference(values, request)

    asyncio.run(main())


# --- bounds ---------------------------------------------------------------------------


async def test_spray_of_allowed_hosts_keeps_the_memo_bounded() -> None:
    """transport-fast-spray-hosts: a wildcard admits endless hosts, each remembered."""
    sink = RecordingSink()
    layer = make_layer(STRICT, sink)
    for index in range(_HOST_MEMO_SIZE * 3):
        request = with_host(f"h{index}.bank.example".encode())
        assert (await answer(layer, sink, request))[0].status == 200
        assert 0 < len(layer._allowed_host_memo) <= _HOST_MEMO_SIZE
    assert b"h767.bank.example" in layer._allowed_host_memo  # the newest is kept


async def test_spray_of_schemes_keeps_one_host_bounded() -> None:
    """transport-fast-spray-schemes: only the schemes servers send are remembered."""
    sink = RecordingSink()
    layer = make_layer(PLAIN, sink)
    schemes = ["http", "https", "ws", "wss", "", "HTTP", "ftp", "h2", "https ", *"abcdefgh"]
    for scheme in schemes:
        for scope_type in ("http", "websocket"):
            request = replace(LEGIT, scheme=scheme, scope_type=scope_type)
            assert (await answer(layer, sink, request))[0].context is not None
    passes = layer._allowed_host_memo[b"bank.example"]
    assert {scope_type: set(by_scheme) for scope_type, by_scheme in passes.items()} == {
        "http": set(DEFAULT_PORTS),
        "websocket": set(DEFAULT_PORTS),
    }


async def test_refusals_and_proxied_requests_are_never_remembered() -> None:
    """transport-fast-not-remembered: only a request that passed, with no proxy trusted."""
    sink = RecordingSink()
    strict, proxied = make_layer(STRICT, sink), make_layer(PROXIED, sink)
    refused = [with_host(b"evil.example"), replace(LEGIT, scheme="http"), with_host(b"a" * 300)]
    for request in refused:
        assert (await answer(strict, sink, request))[0].context is None
    assert strict._allowed_host_memo == {}
    assert (await answer(proxied, sink, LEGIT))[0].context is not None
    assert proxied._allowed_host_memo == {}
