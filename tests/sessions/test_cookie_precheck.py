"""`SessionMiddleware.enter` skips the cookie parse when the request's one `Cookie`
line does not contain the session cookie's name at all. Every arrival on the edges
of that test must end exactly as a request with no cookie (or, for a real id of
ours, be looked up), as the full parse decides."""

from __future__ import annotations

import pytest

from bastion.sessions import looks_like_session_id, new_session_id, read_cookie
from tests.sessions.test_cookie_line_shapes import outcome
from tests.sessions.test_new_session import ACTIONS, COOKIE

pytestmark = pytest.mark.anyio

UNKNOWN_ID = new_session_id()
NAME = COOKIE.encode()
ID = UNKNOWN_ID.encode()
# Header lines, and how many store reads the arrival costs (only an id is looked up).
ARRIVALS = [
    pytest.param([(b"cookie", b"a=" + NAME)], 0, id="session-precheck-name-in-value"),
    pytest.param([(b"cookie", b"x" + NAME + b"=" + ID)], 0, id="session-precheck-name-prefixed"),
    pytest.param([(b"cookie", b"a=1"), (b"cookie", b"b=2")], 0, id="session-precheck-two-lines"),
    pytest.param(
        [(b"cookie", b"a=1"), (b"cookie", NAME + b"=" + ID)], 1, id="session-precheck-second-line"
    ),
    pytest.param(
        [(b"cookie", NAME + b"=" + ID), (b"cookie", NAME + b"=" + ID)],
        0,
        id="session-precheck-two-lines-twice",
    ),
    pytest.param([(b"cookie", b" " + NAME + b"=" + ID + b" ")], 1, id="session-precheck-spaced"),
    pytest.param([(b"cookie", NAME + b" =" + ID)], 0, id="session-precheck-space-in-pair"),
    pytest.param([(b"cookie", NAME.upper() + b"=" + ID)], 0, id="session-precheck-name-case"),
    pytest.param(
        [(b"Cookie", b"a=1"), (b"cookie", NAME + b"=" + ID)], 1, id="session-precheck-mixed-names"
    ),
    pytest.param(
        [(b"Cookie", NAME + b"=" + ID), (b"cookie", b"a=1")],
        0,
        id="session-precheck-upper-holds-id",
    ),
    pytest.param([(b"cookie", b"")], 0, id="session-precheck-empty-line"),
]


@pytest.mark.parametrize(("headers", "reads"), ARRIVALS)
@pytest.mark.parametrize("action", list(ACTIONS))
async def test_precheck_arrivals_end_as_the_full_parse(
    action: str, headers: list[tuple[bytes, bytes]], reads: int
) -> None:
    # The full parse, on the raw lines: an id of ours is looked up, nothing else.
    untrusted_id = read_cookie(headers, NAME)
    assert reads == (untrusted_id is not None and looks_like_session_id(untrusted_id))
    *reference, _ = await outcome(action, [])
    *found, found_reads = await outcome(action, headers)
    assert found == reference
    assert found_reads == reads
