"""What keeps the guard's handshake cheap, held to what it replaces.

* `Origin` and `Host` lines are found by C-level scans of the names when they all
  came lower-cased (`_lower_names`, `_lines`): the same lines as the per-name
  lower-casing comprehensions they replace, whatever the names' case;
* the origin verdict is remembered (`_check_origin`), keyed by exactly the facts that
  decide it: over hypothesis-drawn handshakes sharing one guard (so later ones are
  answered from the memo), every verdict is `check_origin`'s on the old facts; a
  spray of origins leaves the memo at its bound, and lines too long to remember are
  decided afresh;
* the query string is only parsed when it could hold a `ticket` parameter
  (`_ticket_params`): the same parameters as `parse_qs`, over drawn queries, and an
  escaped name is still found by the adapter;
* a client's counter key is remembered (`_client_count_key`), bounded likewise;
* a handshake offering no subprotocol shares one `BearerOffer`, equal to the one
  `split_bearer` builds for any empty list.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.context import get_context
from bastion.events import KIND_AUTHN_FAIL, EventEmitter
from bastion.hosts import parse_origin
from bastion.types import Receive, Scope, Send
from bastion.websocket import BearerOffer, WebSocketGuardMiddleware, WebSocketSettings
from bastion.websocket import reasons as r
from bastion.websocket.core import (
    OriginPolicy,
    check_origin,
    hashed_key,
    own_origin,
    split_bearer,
)
from bastion.websocket.middleware import (
    CLIENT_COUNT_PREFIX,
    CLIENT_MEMO_ENTRIES,
    ORIGIN_MEMO_ENTRIES,
    ORIGIN_MEMO_MAX_LINE_BYTES,
    _lines,
    _lower_names,
    _ticket_params,
)
from tests.conftest import RecordingSink
from tests.websocket.test_middleware import guard, only, refused, ws_scope

Headers = list[tuple[Any, bytes]]


def old_origin_lines(headers: Headers) -> list[bytes]:
    """The guard's `Origin` lines before the scans (its `_origin_lines`)."""
    return [value for key, value in headers if key.lower() == b"origin"]


def old_host_line(headers: Headers) -> bytes | None:
    """The guard's one `Host` line before the scans (its `_host_line`)."""
    hosts = [value for key, value in headers if key.lower() == b"host"]
    return hosts[0] if len(hosts) == 1 else None


def _spellings(name: str) -> list[bytes]:
    return [name.encode(), name.title().encode(), name.upper().encode(), name.swapcase().encode()]


NAMES = st.sampled_from(
    [
        *_spellings("origin"),
        *_spellings("host"),
        b"x-origin",
        b"origin2",
        b"hostname",
        b"cookie",
        b"user-agent",
        b"sec-websocket-key",
        b"",
    ]
)
ORIGIN_VALUES = st.sampled_from(
    [
        b"https://app.example",
        b"https://APP.example:443",
        b"http://app.example",
        b"https://app.example:8443",
        b"https://partner.example",
        b"http://127.0.0.1:8000",
        b"https://app.example.evil.net",
        b"https://evil.example",
        b"null",
        b" null ",
        b"app.example",
        b"wss://app.example",
        b"https://[::1]:8443",
        b"",
    ]
) | st.binary(max_size=40)
HOST_VALUES = st.sampled_from(
    [b"app.example", b"APP.example:443", b"127.0.0.1:8000", b"[::1]:8443", b"bad/host", b"a:0"]
) | st.binary(max_size=20)


@st.composite
def header_lists(draw: st.DrawFn) -> Headers:
    headers: Headers = []
    for name in draw(st.lists(NAMES, max_size=8)):
        if name.lower() == b"origin":
            value = draw(ORIGIN_VALUES)
        elif name.lower() == b"host":
            value = draw(HOST_VALUES)
        else:
            value = draw(st.binary(max_size=12))
        headers.append((name, value))
    return headers


@given(header_lists())
def test_the_scans_find_the_lines_the_comprehensions_found(headers: Headers) -> None:
    names = _lower_names(headers)
    assert list(_lines(headers, names, b"origin")) == old_origin_lines(headers)
    hosts = _lines(headers, names, b"host")
    assert (hosts[0] if len(hosts) == 1 else None) == old_host_line(headers)


def test_names_that_are_not_bytes_match_nothing_as_before() -> None:
    """Against the ASGI spec, but no crash and no match, as the comprehensions."""
    headers: Headers = [("origin", b"https://evil.example"), (b"Host", b"app.example")]
    names = _lower_names(headers)
    assert _lines(headers, names, b"origin") == ()
    assert _lines(headers, names, b"host") == (b"app.example",)


# --- the origin memo -----------------------------------------------------------------


async def no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("only the guard's handshake helpers are called")


_MEMO_GUARD = WebSocketGuardMiddleware(
    no_app,
    WebSocketSettings(allowed_origins=("https://partner.example",)),
    events=EventEmitter([]),
)
_STRICT_GUARD = WebSocketGuardMiddleware(
    no_app,
    WebSocketSettings(allowed_origins=("https://partner.example",), allow_same_origin=False),
    events=EventEmitter([]),
)


def verdict(
    middleware: WebSocketGuardMiddleware,
    headers: Headers,
    scheme: str,
    host: str | None,
    port: int | None,
    cookie: bool,
) -> str:
    context = get_context({"type": "websocket", "scheme": scheme, "client": ("10.0.0.1", 1)})
    context.host, context.port = host, port
    return middleware._check_origin(headers, context, cookie_authenticated=cookie)


def unremembered(
    middleware: WebSocketGuardMiddleware,
    headers: Headers,
    scheme: str,
    host: str | None,
    port: int | None,
    cookie: bool,
) -> str:
    """The verdict as the guard reached it before the memo."""
    own = own_origin(scheme, host, port, old_host_line(headers))
    return check_origin(
        old_origin_lines(headers), own, middleware.origin_policy, cookie_authenticated=cookie
    )


SCHEMES = ("ws", "wss", "http", "https", "ftp")
HOSTS = (None, "app.example", "127.0.0.1", "[::1]")
PORTS = (None, 80, 443, 8000, 8443)


@settings(max_examples=150)
@given(headers=header_lists(), strict=st.booleans())
def test_the_remembered_verdict_is_the_verdict(headers: Headers, strict: bool) -> None:
    """One guard across all examples, and every context for each header list: the
    facts a memo key could wrongly leave out differ between two calls that share
    the rest, so a later one would be answered from the memo with the wrong verdict."""
    middleware = _STRICT_GUARD if strict else _MEMO_GUARD
    for scheme in SCHEMES:
        for host in HOSTS:
            for port in PORTS:
                for cookie in (False, True):
                    expected = unremembered(middleware, headers, scheme, host, port, cookie)
                    assert verdict(middleware, headers, scheme, host, port, cookie) == expected


def test_a_spray_of_origins_keeps_the_memo_bounded() -> None:
    """ws-origin-memo-spray: every distinct origin is a new key; the memo stays bounded."""
    middleware = WebSocketGuardMiddleware(no_app, events=EventEmitter([]))
    for i in range(3 * ORIGIN_MEMO_ENTRIES):
        origin = f"https://h{i}.evil.example".encode()
        headers = [(b"host", b"app.example"), (b"origin", origin)]
        assert verdict(middleware, headers, "wss", None, None, True) == r.REASON_FOREIGN_ORIGIN
        assert 0 < len(middleware._origin_memo) <= ORIGIN_MEMO_ENTRIES
    newest = ((b"https://h767.evil.example",), b"app.example", "wss", None, None, True)
    assert newest in middleware._origin_memo
    same = [(b"host", b"app.example"), (b"origin", b"https://app.example")]
    assert verdict(middleware, same, "wss", None, None, True) == ""


def test_a_new_origin_policy_is_not_answered_from_the_old_ones_memo() -> None:
    """ws-origin-memo-policy-change: verdicts remembered under one policy are forgotten
    when another is assigned (a partner origin allowed after a foreign verdict)."""
    middleware = WebSocketGuardMiddleware(no_app, events=EventEmitter([]))
    partner = [(b"host", b"app.example"), (b"origin", b"https://partner.example")]
    assert verdict(middleware, partner, "wss", None, None, False) == r.REASON_FOREIGN_ORIGIN
    allowed = parse_origin("https://partner.example")
    assert allowed is not None
    middleware.origin_policy = OriginPolicy(frozenset({allowed}), allow_same_origin=True)
    assert middleware._origin_memo == {}
    assert verdict(middleware, partner, "wss", None, None, False) == ""


def test_the_connection_limit_is_the_message_rules_one() -> None:
    middleware = WebSocketGuardMiddleware(
        no_app, WebSocketSettings(messages_per_second=7, message_burst=3)
    )
    assert middleware.connection_limit is middleware.message_rules.connection_limit


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param(
            [(b"host", b"app.example"), (b"origin", b"https://" + b"a" * 400 + b".example")],
            r.REASON_ORIGIN_MALFORMED,
            id="ws-origin-memo-long-origin",
        ),
        pytest.param(
            [(b"host", b"a" * 400 + b".example"), (b"origin", b"https://app.example")],
            r.REASON_FOREIGN_ORIGIN,
            id="ws-origin-memo-long-host",
        ),
        pytest.param(
            [
                (b"host", b"app.example"),
                (b"origin", b"https://app.example"),
                (b"origin", b"https://app.example"),
            ],
            r.REASON_ORIGIN_MALFORMED,
            id="ws-origin-memo-several-origins",
        ),
    ],
)
def test_lines_too_long_to_remember_are_decided_afresh(headers: Headers, reason: str) -> None:
    middleware = WebSocketGuardMiddleware(no_app, events=EventEmitter([]))
    assert max(len(value) for _, value in headers) > ORIGIN_MEMO_MAX_LINE_BYTES or (
        len([name for name, _ in headers if name == b"origin"]) > 1
    )
    for _ in range(2):
        assert verdict(middleware, headers, "wss", None, None, True) == reason
    assert middleware._origin_memo == {}


# --- the query string ------------------------------------------------------------------

QUERY_PARTS = st.sampled_from(
    [b"ticket", b"tick", b"et", b"%74", b"%", b"%7", b"+", b"=", b"&", b";", b"a", b"T", b"\xff"]
)


@given(st.lists(QUERY_PARTS, max_size=12).map(b"".join) | st.binary(max_size=30))
def test_ticket_params_are_parse_qs_s(query: bytes) -> None:
    assert _ticket_params(query) == parse_qs(query.decode("latin-1")).get("ticket")


@pytest.mark.anyio
async def test_an_escaped_ticket_name_is_still_checked(
    sink: RecordingSink, events: EventEmitter
) -> None:
    """ws-ticket-escaped-name: `%74icket` is `ticket` to `parse_qs`, so it is checked."""
    app = guard(events)
    assert await refused(app, ws_scope(query=b"%74icket=forged")) == 1008
    assert only(sink, r.REASON_TICKET_INVALID)["kind"] == KIND_AUTHN_FAIL


# --- the client's counter key, and the empty offer -------------------------------------


def test_client_keys_are_hashed_keys_and_the_memo_stays_bounded() -> None:
    middleware = WebSocketGuardMiddleware(no_app, events=EventEmitter([]))
    for i in range(2 * CLIENT_MEMO_ENTRIES + 1):
        client = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        assert middleware._client_count_key(client) == hashed_key(CLIENT_COUNT_PREFIX, client)
        assert middleware._client_count_key(client) == hashed_key(CLIENT_COUNT_PREFIX, client)
        assert 0 < len(middleware._client_keys) <= CLIENT_MEMO_ENTRIES
    long_client = "x" * 65
    assert middleware._client_count_key(long_client) == hashed_key(CLIENT_COUNT_PREFIX, long_client)
    assert long_client not in middleware._client_keys


@pytest.mark.parametrize("offered", [pytest.param([], id="list"), pytest.param((), id="tuple")])
def test_an_empty_offer_is_the_general_one(offered: list[str]) -> None:
    assert split_bearer(offered) == BearerOffer(None, (), "")
