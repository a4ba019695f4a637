"""Redis store specifics against real servers: one round trip per GCRA step, the Lua
script agrees with the Python core, failures become `StoreError` without secrets,
recovery after a restart, and Cluster keys spread over several slots."""

from __future__ import annotations

import random
import socket
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from bastion.exceptions import StoreError
from bastion.stores.gcra import GCRALimit, gcra_step
from bastion.stores.redis import RedisStore
from tests.support.redis import RedisClusterNodes, RedisServer, redis_server
from tests.support.secret_watch import never_logged

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(redis_standalone: RedisServer, anyio_backend: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_standalone.url, key_prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def dedicated_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own, which it may stop and start."""
    with redis_server(tmp_path / "redis") as server:
        yield server


async def test_one_round_trip_per_gcra_step(
    store: RedisStore, redis_standalone: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def step() -> None:
        await store.gcra("rl", emission_interval_seconds=1.0, burst_tolerance_seconds=100.0)

    await step()  # connects and loads the script
    # Client side: count the requests the store's connections send.
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent.append(bytes(command[0] if isinstance(command, list) else command)[:40])
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    # Server side: count the commands Redis ran.
    with redis_standalone.client() as admin:
        before = admin.info("commandstats")
        for _ in range(10):
            await step()
        monkeypatch.undo()
        after = admin.info("commandstats")
    ran = {
        name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
        for name in after
        if name != "cmdstat_info"
    }
    assert len(sent) == 10
    assert all(b"EVALSHA" in request for request in sent)
    # One EVALSHA per step; TIME, GET and SET run inside the script, on the server.
    assert {name: calls for name, calls in ran.items() if calls} == {
        "cmdstat_evalsha": 10,
        "cmdstat_time": 10,
        "cmdstat_get": 10,
        "cmdstat_set": 10,
    }


async def test_the_lua_script_computes_what_the_python_core_does(store: RedisStore) -> None:
    rng = random.Random(20240611)
    now = 1_700_000_000_000_000
    for case in range(6):
        interval = rng.choice([1, 7, 999, 100_000, 1_000_000, 3_600_000_000])
        burst = rng.randint(1, 12)
        stored: int | None = None
        key = f"lua-vs-python:{case}"
        for _ in range(60):
            now += rng.choice([0, 0, 1, interval // 2, interval, 3 * interval, 17])
            cost = rng.randint(0, burst)
            limit = GCRALimit(interval, interval * (burst - 1), cost)
            expected = gcra_step(stored, now, limit)
            got = await store.gcra_at(key, limit, now)
            assert got == expected.result(), (case, now, limit)
            if expected.tat_us is not None:
                stored = expected.tat_us
                # Real TTLs run on the server clock; restore the state the script wrote
                # so the comparison never depends on how long the test takes.
                await store.set(key, str(stored).encode(), 3600.0)


async def test_keys_are_hash_tagged_under_the_prefix(store: RedisStore) -> None:
    assert store.redis_key("session:abc") == f"{store.key_prefix}{{session:abc}}"
    assert store.owner_key("alice") == f"{store.key_prefix}owner:{{alice}}"
    await store.set("session:abc", b"v", 60.0)
    raw = await store._client.get(store.redis_key("session:abc"))
    assert raw == b"v"


async def test_outage_is_a_store_error_and_recovery_needs_no_new_store(
    dedicated_server: RedisServer,
) -> None:
    store = RedisStore(dedicated_server.url, connect_timeout_seconds=0.5, timeout_seconds=0.5)
    try:
        await store.set("k", b"v", 60.0)
        assert (
            await store.gcra("rl", emission_interval_seconds=1.0, burst_tolerance_seconds=1.0)
        ).allowed

        dedicated_server.stop()
        operations: list[Callable[[], Awaitable[object]]] = [
            lambda: store.get("k"),
            lambda: store.set("k", b"v", None),
            lambda: store.incr("n", ttl_seconds=None),
            lambda: store.gcra("rl", emission_interval_seconds=1.0, burst_tolerance_seconds=1.0),
            lambda: store.delete_owned("alice"),
            store.ping,
        ]
        for operation in operations:
            started = time.monotonic()
            with pytest.raises(StoreError, match="redis store"):
                await operation()
            assert time.monotonic() - started < 2.0

        dedicated_server.start()  # same port; an empty server with an empty script cache
        assert await store.get("k") is None
        result = await store.gcra("rl", emission_interval_seconds=1.0, burst_tolerance_seconds=1.0)
        assert result.allowed  # NOSCRIPT was handled: the script was loaded again
        assert await store.incr("n", ttl_seconds=None) == 1
    finally:
        await store.close()


async def test_errors_and_reprs_never_show_the_password(tmp_path: Path) -> None:
    password = never_logged("hunter2-correct-horse")
    with redis_server(tmp_path / "redis", password=password) as server:
        good = RedisStore(server.url)
        wrong_url = f"redis://:{password}-wrong@127.0.0.1:{server.port}/0"
        wrong = RedisStore(wrong_url)
        try:
            await good.set("k", b"v", None)
            assert await good.get("k") == b"v"
            with pytest.raises(StoreError) as caught:
                await wrong.get("k")
            text = "".join(traceback.format_exception(caught.value))
            assert password not in text
            assert password not in repr(good)
            assert password not in repr(wrong)
            assert f"127.0.0.1:{server.port}" in repr(good)
        finally:
            await good.close()
            await wrong.close()


async def test_a_silent_server_times_out_as_store_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections into the backlog, never answers
        port = silent.getsockname()[1]
        store = RedisStore(
            f"redis://127.0.0.1:{port}/0", connect_timeout_seconds=0.2, timeout_seconds=0.2
        )
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="Timeout"):
                await store.get("k")
            assert time.monotonic() - started < 1.5
        finally:
            await store.close()


async def test_cluster_spreads_keys_over_slots_and_nodes(
    redis_cluster_nodes: RedisClusterNodes, anyio_backend: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    store = RedisStore(redis_cluster_nodes.url, key_prefix=prefix)
    try:
        keys = [f"session:{i}" for i in range(30)]
        for key in keys:
            await store.set(key, b"alice", 60.0)
            await store.add_to_owner("alice", key, 60.0)
        slots = {key_slot(store.redis_key(key).encode()) for key in keys}
        index_slot = key_slot(store.owner_key("alice").encode())
        assert len(slots) > 10
        assert len(slots - {index_slot}) >= 10  # the index sits apart from its keys
        holding = []
        for node in redis_cluster_nodes.nodes:
            with node.client() as client:
                if client.keys(f"{prefix}{{session:*"):
                    holding.append(node.port)
        assert len(holding) >= 2  # several primaries, one logical operation each
        assert await store.delete_owned("alice") == len(keys)
        assert [await store.get(key) for key in keys] == [None] * len(keys)
    finally:
        await store.close()


def test_bad_configuration_is_refused() -> None:
    from bastion.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="scheme"):
        RedisStore("http://127.0.0.1:6379")
    with pytest.raises(ConfigurationError, match="timeouts"):
        RedisStore("redis://127.0.0.1:6379", timeout_seconds=0)
    with pytest.raises(ConfigurationError, match="key_prefix"):
        RedisStore("redis://127.0.0.1:6379", key_prefix="{x}")
    with pytest.raises(ConfigurationError) as caught:
        RedisStore("redis://:s3cret@127.0.0.1:notaport/0")
    assert "s3cret" not in str(caught.value)
