"""Fixtures of the store tests: one parametrised `backend` for the contract suite.

Memory and SQLite run on a fake clock that tests move; Redis and Redis Cluster run
on real servers the suite starts once per session, and tests let their (short)
TTLs pass for real. Each test gets a fresh store; on Redis, a fresh key prefix.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.stores import MemoryStore, SQLiteStore, Store
from tests.support.clock import FakeClock
from tests.support.redis import RedisClusterNodes, RedisServer, redis_cluster, redis_server

BACKENDS = ["memory", "sqlite", "redis", "redis-cluster"]
# Real Redis expires a key within a millisecond of its TTL; waiting this much longer
# makes "it has expired" certain without slowing the suite.
_REAL_TIME_MARGIN_SECONDS = 0.05


@dataclass
class Backend:
    """A store under test and the way to let time pass for it."""

    name: str
    store: Store
    make: Callable[..., Store]
    """Another store on the same backend, with constructor options (closed by the fixture)."""
    clock: FakeClock | None

    @property
    def exact_time(self) -> bool:
        """True when time is a fake clock, so durations can be asserted exactly."""
        return self.clock is not None

    async def pass_time(self, seconds: float) -> None:
        """Let `seconds` pass: move the fake clock, or wait for the real server."""
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds + _REAL_TIME_MARGIN_SECONDS)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


def _unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, anyio_backend: str
) -> AsyncIterator[Backend]:
    name = str(request.param)
    made: list[Store] = []
    fake: FakeClock | None = clock
    if name == "memory":

        def make(**options: Any) -> Store:
            return MemoryStore(clock=clock, **options)

    elif name == "sqlite":
        path = tmp_path / "store.db"

        def make(**options: Any) -> Store:
            return SQLiteStore(path, clock=clock, **options)

    else:
        from bastion.stores.redis import RedisStore

        if name == "redis":
            url = request.getfixturevalue("redis_standalone").url
        else:
            url = request.getfixturevalue("redis_cluster_nodes").url
        prefix = _unique_prefix()
        fake = None

        def make(**options: Any) -> Store:
            return RedisStore(url, key_prefix=prefix, **options)

    def tracked(**options: Any) -> Store:
        store = make(**options)
        made.append(store)
        return store

    store = tracked()
    try:
        yield Backend(name, store, tracked, fake)
    finally:
        for each in made:
            await each.close()
