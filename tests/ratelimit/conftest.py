"""Fixtures of the rate-limit tests: a fake clock, a store that can be switched off,
and real Redis servers (started once per session; CI=true makes a missing
`redis-server` a failure, not a skip)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.clock import FakeClock
from tests.support.redis import RedisClusterNodes, RedisServer, redis_cluster, redis_server
from tests.support.stores import SwitchableStore


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
