"""`strip_app_cors` (the response edit of a policy that grants nothing) against the
edits it replaced, kept here as references: the plain loop (be819b2), and the loop
with its memo of plain names as it was before a lower-case `vary` line was passed
over without a call (a27f49c). Application CORS lines in any case and position must
still go, a name that merely holds the prefix (or is `vary` in another case) must
stay, every line that is no pair of bytes must fail (or pass) as before, and the
memo must come out as the old edit left it; a hypothesis run covers the rest.

Attack cases (`cors-strip-app-*` ids: an application grant) sit beside the
legitimate responses (`cors-strip-ok-*`) that must go on unchanged, as the same list.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.cors import (
    _CORS_NAME_STARTS,
    _CORS_PREFIX,
    _PLAIN_NAMES,
    _PLAIN_NAMES_ENTRIES,
    _PLAIN_NAMES_MAX_BYTES,
    CORSMiddleware,
    CORSSettings,
    strip_app_cors,
)
from bastion.events import EventEmitter
from bastion.types import Message, RawHeaders, Receive, Scope, Send


def _reference_loop(headers: RawHeaders) -> RawHeaders:
    """The plain loop (be819b2), unchanged."""
    for name, _ in headers:
        if name[:1] in _CORS_NAME_STARTS and name.lower().startswith(_CORS_PREFIX):
            return [line for line in headers if not line[0].lower().startswith(_CORS_PREFIX)]
    return headers


_REFERENCE_MEMO: set[bytes] = set()


def _reference_memo(headers: RawHeaders) -> RawHeaders:
    """The loop with its memo of plain names (a27f49c), unchanged but for a memo of
    its own, so the edit under test cannot change what it remembers."""
    plain = _REFERENCE_MEMO
    for name, _ in headers:
        if name in plain:
            continue
        if name[:1] in _CORS_NAME_STARTS and name.lower().startswith(_CORS_PREFIX):
            return [line for line in headers if not line[0].lower().startswith(_CORS_PREFIX)]
        if name.__class__ is bytes and len(name) <= _PLAIN_NAMES_MAX_BYTES:  # _remember_plain
            lower = name.lower()
            if lower != b"vary" and not lower.startswith(_CORS_PREFIX):
                if len(plain) >= _PLAIN_NAMES_ENTRIES:
                    plain.clear()
                plain.add(name)
    return headers


_PLAIN = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"5")]

# (lines, whether the application's CORS lines are there to go)
CASES = [
    pytest.param([], False, id="cors-strip-ok-empty"),
    pytest.param(_PLAIN, False, id="cors-strip-ok-plain"),
    pytest.param([*_PLAIN, (b"vary", b"Origin, Sec-Fetch-Site")], False, id="cors-strip-ok-vary"),
    pytest.param([(b"Vary", b"Accept"), *_PLAIN], False, id="cors-strip-ok-vary-title-case"),
    pytest.param([(b"set-cookie", b"a=b"), (b"set-cookie", b"c=d")], False, id="cors-strip-ok-rep"),
    pytest.param([(b"allow", b"GET"), (b"age", b"1")], False, id="cors-strip-ok-other-a-names"),
    pytest.param([(b"x-access-control-note", b"1")], False, id="cors-strip-ok-prefix-inside"),
    pytest.param([(b"x-access", b"1"), (b"-control-x", b"2")], False, id="cors-strip-ok-split"),
    pytest.param([(b"access-control", b"1")], False, id="cors-strip-ok-prefix-without-dash"),
    pytest.param([(b"vary", b"Cookie"), (b"vary", b"*")], False, id="cors-strip-ok-vary-lines"),
    pytest.param([(b"vary", b"x"), (b"VARY", b"y")], False, id="cors-strip-ok-vary-cases"),
    pytest.param([(b"varyx", b"1"), (b"vary ", b"2")], False, id="cors-strip-ok-vary-lookalikes"),
    pytest.param(
        [(b"content-type", b"access-control-allow-origin")], False, id="cors-strip-ok-val"
    ),
    pytest.param(
        [*_PLAIN, (b"access-control-allow-origin", b"https://evil.example")],
        True,
        id="cors-strip-app-grant-last",
    ),
    pytest.param(
        [(b"access-control-allow-origin", b"*"), *_PLAIN], True, id="cors-strip-app-grant-first"
    ),
    pytest.param(
        [(b"Access-Control-Allow-Origin", b"*"), *_PLAIN], True, id="cors-strip-app-grant-title"
    ),
    pytest.param(
        [(b"ACCESS-CONTROL-ALLOW-CREDENTIALS", b"true"), (b"aCcEsS-cOnTrOl-Expose-Headers", b"x")],
        True,
        id="cors-strip-app-lines-any-case",
    ),
    pytest.param([(b"access-control-", b"1")], True, id="cors-strip-app-prefix-alone"),
    pytest.param(
        [(b"x-access-control-note", b"1"), (b"access-control-allow-origin", b"*")],
        True,
        id="cors-strip-app-grant-after-prefix-inside",
    ),
    pytest.param(
        [(b"vary", b"Origin, Sec-Fetch-Site"), (b"access-control-allow-origin", b"*")],
        True,
        id="cors-strip-app-grant-after-vary",
    ),
    pytest.param(
        [(b"vary", b"a"), (b"Vary", b"b"), (b"Access-Control-Max-Age", b"1"), *_PLAIN],
        True,
        id="cors-strip-app-line-after-vary-lines",
    ),
    pytest.param(
        [(b"access-control-allow-origin", b"*"), (b"access-control-allow-origin", b"*")],
        True,
        id="cors-strip-app-grant-repeated",
    ),
    pytest.param(
        [[b"access-control-allow-origin", b"*"], [b"a", b"b"]], True, id="cors-strip-app-list"
    ),
    pytest.param(
        [(b"access-control-allow-origin", b"*"), (b"x", b"1", b"extra")],
        True,
        id="cors-strip-app-grant-before-a-malformed-line",
    ),
]


@pytest.mark.parametrize("as_tuple", [False, True], ids=["list", "tuple"])
@pytest.mark.parametrize(("headers", "has_app_cors"), CASES)
def test_strip_matches_the_edits_it_replaced(
    headers: list[Any], *, has_app_cors: bool, as_tuple: bool
) -> None:
    lines: Any = tuple(headers) if as_tuple else list(headers)
    for reference in (_reference_loop, _reference_memo, _reference_memo):  # memo cold, warm
        expected = reference(lines)
        result = strip_app_cors(lines)
        assert result == expected
        assert (result is lines) == (expected is lines)  # "nothing to change": the same list
        assert (result is not lines) == has_app_cors
        assert not any(
            line[0].lower().startswith(_CORS_PREFIX) for line in result if len(line) == 2
        )


def test_the_memo_ends_as_the_old_edit_left_it() -> None:
    """cors-strip-memo-parity: after the same answers (the table, then a spray of
    distinct names past the bound, `vary` in every case among them), the memo holds
    exactly what the old edit's memo holds: `vary` never, within the bound."""
    _PLAIN_NAMES.clear()
    _REFERENCE_MEMO.clear()
    answers: list[Any] = [param.values[0] for param in CASES]
    answers += [
        [(b"x-echo-%d" % index, b"1"), (b"vary", b"o"), (b"Vary", b"p"), (b"x-" * 40, b"2")]
        for index in range(3 * _PLAIN_NAMES_ENTRIES)
    ]
    for lines in answers:
        assert strip_app_cors(lines) == _reference_memo(lines)
        assert _PLAIN_NAMES == _REFERENCE_MEMO
        assert len(_PLAIN_NAMES) <= _PLAIN_NAMES_ENTRIES
    assert _PLAIN_NAMES
    assert not {b"vary", b"Vary"} & _PLAIN_NAMES


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"content-type", b"text/plain", b"x")], id="cors-strip-three-items"),
        pytest.param([(b"access-control-allow-origin",)], id="cors-strip-one-item"),
        pytest.param([()], id="cors-strip-empty-line"),
        pytest.param([None], id="cors-strip-not-a-pair"),
        pytest.param([(bytearray(b"x-a"), b"1")], id="cors-strip-bytearray-name"),
        pytest.param([(b"x", b"1"), (b"y", b"2", b"3")], id="cors-strip-malformed-second"),
        pytest.param([("access-control-allow-origin", "*")], id="cors-strip-text-cors-name"),
        pytest.param([("content-type", "text/plain"), (b"x", b"y")], id="cors-strip-text-names"),
        pytest.param(
            [("content-type", "x"), (b"access-control-allow-origin", b"*")],
            id="cors-strip-text-name-then-app-grant",
        ),
        pytest.param([(b"x", b"1"), ("ab")], id="cors-strip-two-letter-text-line"),
        pytest.param([(b"vary", b"x"), (b"y", b"2", b"3")], id="cors-strip-malformed-after-vary"),
        pytest.param([(b"vary", b"x"), None], id="cors-strip-not-a-pair-after-vary"),
    ],
)
def test_lines_that_are_no_pairs_of_bytes_go_as_before(headers: list[Any]) -> None:
    """What the old loop did with lines ASGI does not allow (fail, or pass a text
    name through), the edit does too: same result, or the same exception class."""
    try:
        expected = _reference_loop(headers)
    except Exception as error:  # any failure must be the very same one
        with pytest.raises(error.__class__):
            strip_app_cors(headers)
        return
    result = strip_app_cors(headers)
    assert result == expected
    assert (result is headers) == (expected is headers)


_NAMES = st.sampled_from(
    [
        b"content-type",
        b"vary",
        b"Vary",
        b"access-control-allow-origin",
        b"Access-Control-Allow-Credentials",
        b"ACCESS-CONTROL-",
        b"access-control",
        b"x-access-control-a",
        b"xaccess-control-",
        b"access",
        b"-control-",
        b"a",
        b"",
    ]
) | st.binary(max_size=20)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.binary(max_size=4)), max_size=6))
def test_strip_equals_the_loop_on_any_byte_lines(headers: list[tuple[bytes, bytes]]) -> None:
    """cors-strip-differential: for any lines of bytes, the same answer as the loop."""
    expected = _reference_loop(headers)
    result = strip_app_cors(headers)
    assert result == expected
    assert (result is headers) == (expected is headers)
    assert _reference_memo(headers) == expected


class _App:
    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(("app_headers", "has_app_cors"), CASES[:-2])
def test_the_default_policy_strips_what_the_loop_strips(
    app_headers: list[tuple[bytes, bytes]], *, has_app_cors: bool
) -> None:
    """Through the middleware with the default policy (grants nothing), with and
    without `Origin`: the response head is the loop's answer, and no line of the
    application's CORS reaches the client."""
    for request_headers in ([], [(b"origin", b"https://evil.example")]):
        _PLAIN_NAMES.clear()
        app = CORSMiddleware(_App(list(app_headers)), CORSSettings(), events=EventEmitter([]))
        sent = _Sent()
        scope: Scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "query_string": b"",
            "headers": request_headers,
        }
        anyio.run(app, scope, _receive, sent)
        head = sent.messages[0]["headers"]
        assert list(head) == list(_reference_loop(app_headers))
        assert has_app_cors == (len(head) != len(app_headers))


async def _receive() -> Message:
    return {"type": "http.request", "body": b""}


class _Sent:
    """A `send` that keeps what it gets."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
