"""The session cookie lookup: `cookie_from_lines` skips a line that does not contain
the cookie's name without splitting it. These tests hold it to the full parse it
replaced (`_full_parse`, kept here as the reference), on the named attack cases and
on generated lines, directly and through the middleware's request phase."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.sessions import (
    SessionMiddleware,
    SessionSettings,
    cookie_from_lines,
    looks_like_session_id,
)
from bastion.stages import Flow
from bastion.types import Scope
from tests.sessions.harness import KEY

NAME = b"__Host-session"
ID = "A" * 43  # the shape of an id we issue
OTHER_ID = "B" * 43


def _full_parse(lines: list[bytes], name: bytes) -> str | None:
    """The parse before the shortcut, unchanged: every line split, every pair read."""
    found: list[bytes] = []
    for value in lines:
        for pair in value.split(b";"):
            cookie_name, sep, cookie_value = pair.strip().partition(b"=")
            if sep and cookie_name == name:
                found.append(cookie_value.strip().strip(b'"'))
    if len(found) != 1:
        return None
    try:
        return found[0].decode("ascii")
    except UnicodeDecodeError:
        return None


def _line(text: str) -> bytes:
    return text.encode("latin-1")


CASES = [
    pytest.param([], None, id="session-cookie-no-header"),
    pytest.param(["csrftoken=abc; django_csrftoken=def"], None, id="session-cookie-absent"),
    pytest.param([f"__Host-session={ID}"], ID, id="session-cookie-only"),
    pytest.param([f"a=1; __Host-session={ID}; b=2"], ID, id="session-cookie-among-others"),
    pytest.param([f"x__Host-session={ID}"], None, id="session-cookie-name-suffix"),
    pytest.param([f"__Host-sessionx={ID}"], None, id="session-cookie-name-prefix"),
    pytest.param([f"__Host-session-2={ID}"], None, id="session-cookie-name-longer"),
    pytest.param([f"__host-session={ID}"], None, id="session-cookie-name-case"),
    pytest.param(
        [f"__Host-session={ID}; __Host-session={OTHER_ID}"], None, id="session-cookie-duplicate"
    ),
    pytest.param(
        [f"__Host-session={ID}", f"__Host-session={OTHER_ID}"],
        None,
        id="session-cookie-duplicate-lines",
    ),
    pytest.param(["a=1", f"b=2; __Host-session={ID}"], ID, id="session-cookie-second-line"),
    pytest.param(
        [f"x__Host-session={OTHER_ID}; __Host-session={ID}"],
        ID,
        id="session-cookie-suffix-beside-real",
    ),
    pytest.param([f"a=__Host-session={ID}"], None, id="session-cookie-name-in-value"),
    pytest.param([f'__Host-session="{ID}"'], ID, id="session-cookie-quoted"),
    pytest.param([f"  __Host-session= {ID} ;"], ID, id="session-cookie-spaces"),
    pytest.param([f"__Host-session ={ID}"], None, id="session-cookie-space-in-name"),
    pytest.param([f"\t__Host-session={ID}\t"], ID, id="session-cookie-tabs"),
    pytest.param(["__Host-session"], None, id="session-cookie-no-equals"),
    pytest.param(["__Host-session="], "", id="session-cookie-empty-value"),
    pytest.param(["__Host-session=\xe9" + "A" * 42], None, id="session-cookie-non-ascii"),
    pytest.param([f"__Host-session={ID}; __Host-session"], ID, id="session-cookie-bare-duplicate"),
    pytest.param([f"__Host-session={ID}={ID}"], f"{ID}={ID}", id="session-cookie-equals-in-value"),
    pytest.param([f"__Host-Session={ID}"], None, id="session-cookie-other-case-letter"),
]


@pytest.mark.parametrize(("lines", "expected"), CASES)
def test_lookup_matches_the_full_parse(lines: list[str], expected: str | None) -> None:
    raw = [_line(line) for line in lines]
    assert _full_parse(raw, NAME) == expected
    assert cookie_from_lines(raw, NAME) == expected


# Lines built from pieces of the name and the characters the grammar turns on, so
# suffixes, prefixes, duplicates, quotes and spaces come up often.
_PIECES = st.sampled_from(
    [b"__Host-session", b"__Host-", b"session", b"x", b"=", b";", b" ", b'"', b"\t", b"A" * 43]
)
_LINES = st.lists(st.lists(_PIECES, max_size=12).map(b"".join), max_size=3)


@given(_LINES)
def test_lookup_matches_the_full_parse_on_generated_lines(lines: list[bytes]) -> None:
    assert cookie_from_lines(lines, NAME) == _full_parse(lines, NAME)


def _flow(lines: list[bytes]) -> Flow:
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"cookie", line) for line in lines],
        "client": ("127.0.0.1", 1),
        "scheme": "https",
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: object) -> None:
        return None

    return Flow(scope, receive, send)


@pytest.mark.parametrize(("lines", "expected"), CASES)
def test_request_phase_asks_the_store_exactly_when_the_full_parse_finds_an_id(
    lines: list[str], expected: str | None
) -> None:
    """The middleware goes to the store (returns the load's awaitable) for an id of
    our shape that the full parse found, and for nothing else."""

    async def app(scope: Scope, receive: object, send: object) -> None:
        return None

    middleware = SessionMiddleware(app, SessionSettings(), secret_keys=[KEY])
    raw = [_line(line) for line in lines]
    reference = _full_parse(raw, NAME)
    pending = middleware.enter(_flow(raw))
    asked = pending is not None
    if pending is not None:
        pending.close()  # type: ignore[attr-defined]  # the load coroutine, never awaited
    assert asked == (reference is not None and looks_like_session_id(reference))
