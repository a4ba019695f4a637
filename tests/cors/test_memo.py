"""The memo of actual-request decisions and the precomputed response edits.

The adapter remembers, per raw `Origin` value, the response edit it decided
(`CORSMiddleware._hooks_by_origin`), and edits the usual response on a fast path
(`build_response_edit`). Both must decide exactly as the unmemoised core does
(`check_origin`, then `rewrite_headers`), for every attack case, and the memo must
stay bounded however many distinct values a client sprays.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.cors import (
    _MEMO_MAX_ORIGIN_BYTES,
    _MEMO_MAX_ORIGINS,
    CORSMiddleware,
    CORSSettings,
    build_response_edit,
    check_origin,
    rewrite_headers,
)
from bastion.events import EventEmitter
from bastion.types import Message, RawHeaders, Receive, Scope, Send
from tests.cors.test_attacks import ACTUAL, REFLECTION_PROBES
from tests.cors.test_attacks import SETTINGS as ATTACK_SETTINGS

SETTINGS = {
    "attack-table": ATTACK_SETTINGS,
    "attack-table-monitor-only": ATTACK_SETTINGS.model_copy(update={"monitor_only": True}),
    "default": CORSSettings(),
    "any-origin": CORSSettings(insecure_allow_any_origin=True, expose_headers=("x-a",)),
}

# Every origin of the attack tables, and a few more spellings and oddities.
ORIGINS = sorted(
    {str(param.values[0]) for param in ACTUAL if param.values[0] is not None}
    | {probe for probe, _ in REFLECTION_PROBES}
    | {
        "https://API.example.com:443",
        "https://[::1]",
        "http://localhost:3000.",
        "https://app.example:0443",
        "https://app.example\r\nx-evil: 1",
        "\u00e9://app.example",
        "https://" + "a" * 300 + ".example.com",
    }
)

# Response heads the app may send: the edit must treat each exactly as the core does.
APP_HEADERS: list[RawHeaders] = [
    [],
    [(b"content-type", b"text/plain"), (b"content-length", b"2")],
    [(b"vary", b"Accept-Encoding"), (b"x", b"1")],
    [(b"Vary", b"Origin, Sec-Fetch-Site")],
    [(b"vary", b"*")],
    [(b"vary", b"")],
    [(b"Access-Control-Allow-Origin", b"*"), (b"access-control-allow-credentials", b"true")],
    [(b"age", b"1"), (b"VARY", b"x-origin"), (b"accept-ranges", b"bytes"), (b"vary", b"Cookie")],
]


class HeadersApp:
    """A raw ASGI app answering with `headers`, set by the test before each request."""

    def __init__(self) -> None:
        self.headers: RawHeaders = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"ok"})


async def _response_headers(app: CORSMiddleware, origin: bytes | None) -> RawHeaders:
    """One GET through `app`, as a server calls it; the response's header lines."""
    headers = [(b"host", b"localhost")]
    if origin is not None:
        headers.append((b"origin", origin))
    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    started: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.append(message)

    await app(scope, receive, send)
    [start] = started
    return list(start["headers"])


def _fresh_headers(app: CORSMiddleware, origin: bytes, app_headers: RawHeaders) -> RawHeaders:
    """What the unmemoised core gives: `check_origin`, the grant, `rewrite_headers`;
    for a policy that grants nothing, the app's lines without its CORS lines, and no
    `Vary`: no response depends on `Origin` (in monitor-only mode, which keeps the
    app's lines, the response keeps its `Vary: Origin`)."""
    if app._grants_nothing and not app.settings.monitor_only:
        return [line for line in app_headers if not line[0].lower().startswith(b"access-control-")]
    verdict = check_origin(origin, app.policy)
    if verdict.allowed and verdict.origin is not None:
        grant = app._grant(verdict.origin, preflight=False)
        return rewrite_headers(app_headers, grant)
    return rewrite_headers(app_headers, (), keep_app_cors=app.settings.monitor_only)


@pytest.mark.anyio
@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize("settings", SETTINGS.values(), ids=list(SETTINGS))
async def test_memoised_decision_matches_fresh_decision(
    settings: CORSSettings, origin: str, events: EventEmitter
) -> None:
    """cors-memo-parity: the first request (decided afresh and remembered) and the
    next ones (from the memo) edit every response head as the core does."""
    inner = HeadersApp()
    app = CORSMiddleware(inner, settings, events=events)
    untrusted_origin = origin.encode()
    for app_headers in APP_HEADERS:
        inner.headers = app_headers
        expected = _fresh_headers(app, untrusted_origin, app_headers)
        for _ in range(2):
            assert await _response_headers(app, untrusted_origin) == expected
    remembered = untrusted_origin in app._hooks_by_origin
    if app._grants_nothing:
        assert not app._hooks_by_origin  # nothing to decide, nothing remembered
    else:
        assert remembered == (len(untrusted_origin) <= _MEMO_MAX_ORIGIN_BYTES)


@pytest.mark.anyio
async def test_memo_bounded_spray(events: EventEmitter) -> None:
    """cors-memo-bounded-spray: distinct origins, allowed, refused and oversized,
    never grow the memo past its bounds, and never change a later decision."""
    inner = HeadersApp()
    app = CORSMiddleware(inner, ATTACK_SETTINGS, events=events)
    memo = app._hooks_by_origin
    oversized = b"https://" + b"a" * _MEMO_MAX_ORIGIN_BYTES + b".example.com"
    for i in range(3 * _MEMO_MAX_ORIGINS):
        for origin in (
            b"https://t%d.example.com" % i,
            b"https://e%d.evil.net" % i,
            b"https://x%d.%s" % (i, b"b" * 250),
            oversized + b"%d" % i,
        ):
            await _response_headers(app, origin)
            assert len(memo) <= _MEMO_MAX_ORIGINS
    assert all(len(key) <= _MEMO_MAX_ORIGIN_BYTES for key in memo)
    assert not any(key.startswith(oversized) for key in memo)
    # After the spray, decisions are still the core's.
    for origin in (b"https://app.example", b"https://evil.net", b"https://t1.example.com"):
        assert await _response_headers(app, origin) == _fresh_headers(app, origin, [])


_NAMES = st.sampled_from(
    [
        *(b"vary", b"Vary", b"VARY", b"access-control-allow-origin", b"Access-Control-Max-Age"),
        *(b"age", b"accept-ranges", b"content-type", b"x-vary", b"access-controls", b"a", b""),
    ]
)
_VALUES = st.lists(
    st.sampled_from([b"Origin", b" oRIGIN\t", b"*", b"Cookie", b" ", b"x-origin", b""])
    | st.binary(max_size=8),
    max_size=4,
).map(b",".join)
_HEADERS = st.lists(st.tuples(_NAMES, _VALUES), max_size=6)


def _varies_on_origin_by_split(value: bytes) -> bool:
    """The definition `rewrite_headers` implements with one pattern."""
    return any(token.strip(b" \t").lower() in (b"origin", b"*") for token in value.split(b","))


@given(_HEADERS, st.booleans(), st.booleans())
def test_response_edit_matches_rewrite_headers(
    app_headers: RawHeaders, granted: bool, keep_app_cors: bool
) -> None:
    """cors-edit-fast-path-parity: the precomputed edit is `rewrite_headers`, and
    leaves the app's list as it was."""
    grant = ((b"access-control-allow-origin", b"https://app.example"),) if granted else ()
    sent = list(app_headers)
    edited = build_response_edit(grant, keep_app_cors=keep_app_cors)(sent)
    assert edited == rewrite_headers(app_headers, grant, keep_app_cors=keep_app_cors)
    assert sent == app_headers
    assert edited is not sent


@given(_VALUES)
def test_vary_pattern_matches_token_definition(value: bytes) -> None:
    """A `Vary` line is left as it is exactly when a member is `Origin` or `*`."""
    [(_, edited)] = rewrite_headers([(b"vary", value)], ())
    assert (edited == value) == _varies_on_origin_by_split(value)
