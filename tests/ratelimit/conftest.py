"""Fixtures of the rate-limit tests: a fake clock, a store that can be switched off,
and real Redis servers (started once per session; CI=true makes a missing
`redis-server` a failure, not a skip)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bastion.exceptions import StoreError
from bastion.stores import MemoryStore
from bastion.stores.gcra import GCRAResult
from tests.support.clock import FakeClock
from tests.support.redis import RedisClusterNodes, RedisServer, redis_cluster, redis_server


class SwitchableStore(MemoryStore):
    """A memory store whose backend can be "down": every call then raises StoreError."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise StoreError("store is down")

    async def get(self, key: str) -> bytes | None:
        self._check()
        return await super().get(key)

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None) -> int:
        self._check()
        return await super().incr(key, amount, ttl_seconds=ttl_seconds)

    async def gcra(
        self,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult:
        self._check()
        return await super().gcra(
            key,
            emission_interval_seconds=emission_interval_seconds,
            burst_tolerance_seconds=burst_tolerance_seconds,
            cost=cost,
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> SwitchableStore:
    return SwitchableStore(clock=clock)


@pytest.fixture(scope="session")
def redis_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("rl-redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    with redis_cluster(tmp_path_factory.mktemp("rl-cluster")) as cluster:
        yield cluster
