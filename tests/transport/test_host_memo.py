"""The remembered host verdicts: the fast path decides exactly as the full check.

With no proxy trusted, a request whose one `Host` line was allowed before skips
reading the transport facts. These tests hold the fast path to the full one (the
same context, the same HSTS, the same refusals) and show its memo bounded.
"""

from __future__ import annotations

from typing import Any

import pytest

from bastion.context import SCOPE_KEY
from bastion.events import EventEmitter
from bastion.transport import TransportMiddleware, TransportSettings
from bastion.transport.middleware import _HOST_MEMO_SIZE
from tests.conftest import asgi_client
from tests.support.apps import raw_app

pytestmark = pytest.mark.anyio


def _layer(events: EventEmitter, **values: Any) -> TransportMiddleware:
    settings = TransportSettings(**{"allowed_hosts": ("*.example.com", "bank.example")} | values)
    return TransportMiddleware(raw_app, settings, events=events)


async def test_spray_of_allowed_hosts_keeps_the_memo_bounded(events: EventEmitter) -> None:
    """transport-memo-bounded-spray: a wildcard pattern admits endless hosts."""
    layer = _layer(events)
    async with asgi_client(layer) as client:
        for index in range(_HOST_MEMO_SIZE * 3):
            response = await client.get(f"https://h{index}.example.com/")
            assert response.status_code == 200
    assert 0 < len(layer._allowed_host_memo) <= _HOST_MEMO_SIZE


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("evil.example", id="transport-memo-refused-host"),
        pytest.param("bank.example.evil.example", id="transport-memo-suffix-host"),
        pytest.param("bank.example:99999", id="transport-memo-bad-port"),
    ],
)
async def test_refused_hosts_are_never_remembered(events: EventEmitter, host: str) -> None:
    layer = _layer(events)
    async with asgi_client(layer) as client:
        for _ in range(3):
            response = await client.get("https://bank.example/", headers={"host": host})
            assert response.status_code == 400
    assert host.encode() not in layer._allowed_host_memo


async def test_remembered_host_still_redirected_over_plain_http(events: EventEmitter) -> None:
    """transport-memo-plain-http: an allowed host does not skip the HTTPS check."""
    layer = _layer(events)
    async with asgi_client(layer) as client:
        secure = await client.get("https://bank.example/")
        plain = await client.get("http://bank.example/?a=1")
    assert secure.status_code == 200
    assert plain.status_code == 308
    assert plain.headers["location"] == "https://bank.example/?a=1"
    assert "strict-transport-security" not in plain.headers


async def test_fast_path_sets_the_context_as_the_full_check(events: EventEmitter) -> None:
    layer = _layer(events)
    seen: list[tuple[Any, ...]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        context = scope[SCOPE_KEY]
        seen.append((context.client, context.scheme, context.host, context.port))
        await raw_app(scope, receive, send)

    layer.app = app
    async with asgi_client(layer, client=("192.0.2.9", 4321)) as client:
        first = await client.get("https://bank.example:8443/")
        second = await client.get("https://bank.example:8443/")
    assert first.headers["strict-transport-security"] == second.headers["strict-transport-security"]
    assert seen[0] == seen[1] == (("192.0.2.9", 4321), "https", "bank.example", 8443)
    assert b"bank.example:8443" in layer._allowed_host_memo


async def test_two_host_lines_always_take_the_full_check(events: EventEmitter) -> None:
    """transport-memo-duplicate-host: two Host lines are refused, remembered or not."""
    layer = _layer(events)
    async with asgi_client(layer) as client:
        assert (await client.get("https://bank.example/")).status_code == 200
        response = await client.get(
            "https://bank.example/", headers=[("host", "bank.example"), ("host", "bank.example")]
        )
    assert response.status_code == 400
