"""The remembered host's port, over every scheme and scope type.

The parity cases (the full path against the remembered one,
`test_remembered_parity`) are run here over the port shapes a remembered host can
have, on both secure schemes, and with the host remembered over the other scheme
first.
"""

from __future__ import annotations

import pytest

from tests.conftest import RecordingSink
from tests.transport.test_remembered_parity import Case, _answer, _layer

pytestmark = pytest.mark.anyio


HOSTS = [b"bank.example", b"bank.example:443", b"bank.example:8443", b"api.bank.example:80"]
SHAPES = [
    pytest.param(Case(scope_type, host, scheme, settings=settings), learnt, id=name)
    for host in HOSTS
    for scope_type, scheme, learnt in (
        ("http", "https", "https"),
        ("websocket", "wss", "wss"),
        ("http", "https", "wss"),
        ("websocket", "wss", "https"),
        ("http", "http", "https"),
        ("websocket", "ws", "wss"),
    )
    for settings, mode in (({}, "strict"), ({"insecure_allow_http": True}, "plain-allowed"))
    for name in [
        f"transport-remembered-port-{scope_type}-{scheme}-learnt-{learnt}-{mode}-"
        + host.decode().replace(":", "-")
    ]
]


@pytest.mark.parametrize(("case", "learnt"), SHAPES)
async def test_remembered_port_answers_as_the_full_check(case: Case, learnt: str) -> None:
    """The same request, to a layer that never saw its host, and to one that
    remembered it from a request over the scheme `learnt`."""
    sink = RecordingSink()
    full = await _answer(_layer(sink, case), sink, case)
    warm = _layer(sink, case)
    learnt_type = "websocket" if learnt in ("ws", "wss") else "http"
    await _answer(warm, sink, Case(learnt_type, case.host, learnt, settings=case.settings))
    assert case.host in warm._allowed_host_memo
    assert await _answer(warm, sink, case) == full
