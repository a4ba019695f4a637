"""Through a real uvicorn on 127.0.0.1: proxy headers count only from trusted peers.

uvicorn runs with `--no-proxy-headers`: by default it applies `X-Forwarded-For`
from 127.0.0.1 itself, which would hide what this layer does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import RunningServer, serve
from tests.transport.app_factory import SETTINGS_ENV

pytestmark = [pytest.mark.server, pytest.mark.anyio]

FACTORY = "tests.transport.app_factory:create_app"
SPOOF = {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}


def _serve(trusted_proxies: list[str]) -> Iterator[RunningServer]:
    settings = {
        "allowed_hosts": ["127.0.0.1"],
        "trusted_proxies": trusted_proxies,
        "insecure_allow_http": True,
    }
    with serve(
        FACTORY, env={SETTINGS_ENV: json.dumps(settings)}, extra_args=("--no-proxy-headers",)
    ) as server:
        yield server


@pytest.fixture(scope="module")
def untrusting_server() -> Iterator[RunningServer]:
    yield from _serve([])


@pytest.fixture(scope="module")
def trusting_server() -> Iterator[RunningServer]:
    yield from _serve(["127.0.0.1"])


async def test_proxy_headers_from_untrusted_peer_are_ignored(
    untrusting_server: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=untrusting_server.url) as client:
        response = await client.get("/context", headers=SPOOF)
    assert response.status_code == 200
    view = response.json()
    assert view["client"][0] == "127.0.0.1"
    assert view["client"][1] > 0  # the real ephemeral port of our socket
    assert (view["scheme"], view["host"], view["port"]) == (
        "http",
        "127.0.0.1",
        untrusting_server.port,
    )
    assert "strict-transport-security" not in response.headers


async def test_proxy_headers_from_trusted_peer_are_used(trusting_server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=trusting_server.url) as client:
        response = await client.get("/context", headers=SPOOF)
        plain = await client.get("/context")
    assert response.status_code == 200
    assert response.json()["client"] == ["203.0.113.7", 0]
    assert response.json()["scheme"] == "https"
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert plain.json()["client"][0] == "127.0.0.1"


async def test_bad_host_refused_by_real_server(trusting_server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=trusting_server.url) as client:
        response = await client.get("/context", headers={"host": "evil.example"})
        garbage = await client.get("/context", headers={"x-forwarded-for": "garbage"})
    assert response.status_code == 400
    assert garbage.status_code == 400
