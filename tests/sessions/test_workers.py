"""Four uvicorn workers sharing one real Redis keep one consistent session per user."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.support.redis import redis_server
from tests.support.secret_watch import never_logged
from tests.support.servers import serve

pytestmark = [pytest.mark.server, pytest.mark.anyio]

KEY = never_logged("workers-test-key-" + "abcdefghijklmnopqrstuvwxyz")
USERS = ("alice", "bob", "carol", "dave")
COUNTS_PER_USER = 25
SAME_ORIGIN = {"sec-fetch-site": "same-origin"}


async def _one_user(base_url: str, user: str) -> tuple[set[int], dict[str, object]]:
    pids: set[int] = set()
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        login = await client.post(f"/login?u={user}", headers=SAME_ORIGIN)
        assert login.status_code == 200
        pids.add(login.json()["pid"])
        for expected in range(1, COUNTS_PER_USER + 1):
            # A new connection each time, so the kernel spreads requests over workers.
            response = await client.post("/count", headers={**SAME_ORIGIN, "connection": "close"})
            assert response.status_code == 200
            assert response.json()["count"] == expected
            pids.add(response.json()["pid"])
        final = (await client.get("/whoami")).json()
    return pids, final


async def test_sessions_are_shared_by_four_workers(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as redis:
        env = {
            "BASTION_MODE": "development",
            "BASTION_SECRET_KEYS": KEY,
            "BASTION_STORE__URL": redis.url,
        }
        with serve(
            "tests.sessions.app_factory:create_app",
            env=env,
            extra_args=("--workers", "4", "--no-proxy-headers"),
        ) as running:
            results = await asyncio.wait_for(
                asyncio.gather(*(_one_user(running.url, user) for user in USERS)), timeout=60
            )
    all_pids: set[int] = set()
    for user, (pids, final) in zip(USERS, results, strict=True):
        assert final["user"] == user
        assert final["count"] == COUNTS_PER_USER
        all_pids |= pids
    # The requests really were spread over several worker processes.
    assert len(all_pids) >= 2
