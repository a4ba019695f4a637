"""Exactness through real servers: 200 concurrent clients against four uvicorn
workers sharing one Redis (then a 3-master Redis Cluster), one bucket limited to N:
exactly N are allowed, never N plus races."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx
import psutil
import pytest

from tests.ratelimit.app_factory import PREFIX_ENV, RATE_ENV, URL_ENV
from tests.support.redis import RedisClusterNodes, RedisServer
from tests.support.servers import serve

pytestmark = [pytest.mark.server, pytest.mark.anyio]

FACTORY = "tests.ratelimit.app_factory:create_app"
WORKERS = 4
CLIENTS = 200
ALLOWED = 50  # N: a quarter of the clients, so both outcomes are plentiful
MAX_PARALLEL = 100  # sockets open at once: bounded, yet far more than workers


async def _hammer(url: str) -> Counter[int]:
    limiter = asyncio.Semaphore(MAX_PARALLEL)
    limits = httpx.Limits(max_connections=MAX_PARALLEL, max_keepalive_connections=0)

    async def one(client: httpx.AsyncClient) -> int:
        async with limiter:
            return (await client.get("/")).status_code

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        # One warm-up per worker would consume quota; the bucket is fresh instead.
        statuses = await asyncio.gather(*(one(client) for _ in range(CLIENTS)))
    return Counter(statuses)


async def _exactly_n(store_url: str) -> None:
    env = {
        URL_ENV: store_url,
        PREFIX_ENV: f"rl{uuid.uuid4().hex[:10]}:",
        RATE_ENV: f"{ALLOWED}/hour",  # no refill during the run
    }
    with serve(FACTORY, env=env, extra_args=("--workers", str(WORKERS))) as server:
        # uvicorn shares the inherited socket (`--fd`) with its worker processes.
        workers = psutil.Process(server.pid).children()
        spawned = [w for w in workers if "spawn_main" in " ".join(w.cmdline())]
        assert len(spawned) == WORKERS
        counts = await _hammer(server.url)
    assert counts == {200: ALLOWED, 429: CLIENTS - ALLOWED}


async def test_exactly_n_across_four_workers_on_redis(redis_standalone: RedisServer) -> None:
    await _exactly_n(redis_standalone.url)


async def test_exactly_n_across_four_workers_on_redis_cluster(
    redis_cluster_nodes: RedisClusterNodes,
) -> None:
    await _exactly_n(redis_cluster_nodes.url)
