"""Memory store specifics: the bounds hold under a key spray; eviction is LRU and fail safe."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections import OrderedDict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.exceptions import StoreError
from bastion.stores import memory
from bastion.stores.base import MAX_KEY_BYTES, MAX_VALUE_BYTES
from bastion.stores.gcra import MICROSECONDS, gcra_step, parse_limit
from bastion.stores.memory import DEFAULT_MAX_ENTRIES, MemoryStore, bytes_per_entry
from tests.stores.test_contract import BAD_KEYS
from tests.support.clock import FakeClock
from tests.support.stores import SwitchableStore

pytestmark = pytest.mark.anyio


async def test_a_spray_of_a_million_keys_stays_at_the_bound(clock: FakeClock) -> None:
    bound = 10_000
    store = MemoryStore(max_entries=bound, clock=clock)
    for i in range(1_000_000):
        # Distinct keys, as an attacker minting a new bucket or session per request.
        if i % 2:
            await store.set(f"spray:{i}", b"x" * 16, 3600.0)
        else:
            await store.gcra(f"rl:{i}", emission_interval_seconds=1.0, burst_tolerance_seconds=59.0)
        if i % 100_000 == 0:
            assert len(store) <= bound
    assert len(store) == bound
    assert len(store._data) == bound
    # The newest survive; the oldest went first.
    assert await store.get("spray:999999") == b"x" * 16
    assert await store.get("spray:1") is None


async def test_the_byte_bound_holds(clock: FakeClock) -> None:
    store = MemoryStore(max_bytes=2 * MAX_VALUE_BYTES, clock=clock)
    value = b"v" * (100 * 1024)
    for i in range(100):
        await store.set(f"big:{i}", value, None)
        assert store.size_bytes <= store.max_bytes
    assert len(store) < 25
    assert await store.get("big:99") == value


async def test_eviction_is_least_recently_used(clock: FakeClock) -> None:
    store = MemoryStore(max_entries=3, clock=clock)
    for key in ("a", "b", "c"):
        await store.set(key, b"1", None)
    assert await store.get("a") == b"1"  # a is now the most recently used
    await store.set("d", b"1", None)
    assert await store.get("b") is None
    assert [await store.get(key) for key in ("a", "c", "d")] == [b"1", b"1", b"1"]


async def test_a_key_used_after_the_cold_snapshot_is_not_the_next_evicted(
    clock: FakeClock,
) -> None:
    """The eviction order is read from a snapshot of the cold end: a key used after
    the snapshot was taken leaves it (`_mark_newest`), or the next eviction would
    take the most recently used key."""
    store = MemoryStore(max_entries=3, clock=clock)
    for key in ("a", "b", "c"):
        await store.set(key, b"1", None)
    await store.set("d", b"1", None)  # the snapshot [a, b, c, d] is taken; a goes
    assert await store.get("b") == b"1"  # b is now the most recently used
    await store.set("e", b"1", None)  # the oldest is c, not b
    assert [await store.get(key) for key in ("b", "c", "d", "e")] == [b"1", None, b"1", b"1"]


async def test_expired_entries_are_swept_without_a_thread(clock: FakeClock) -> None:
    store = MemoryStore(max_entries=100, clock=clock)
    writes = memory._SWEEP_EVERY_WRITES
    assert writes <= memory._SWEEP_BATCH
    for i in range(writes):  # the last of these writes sweeps, finding nothing expired
        await store.set(f"old:{i}", b"x", 1.0)
    clock.advance(2.0)
    for i in range(writes - 1):
        await store.set(f"new:{i}", b"x", None)
    assert len(store) == 2 * writes - 1  # the old ones held, though no read sees them
    await store.gcra("rl:new", emission_interval_seconds=1.0, burst_tolerance_seconds=1.0)
    # Every so many writes (a GCRA step included), a batch of expired entries goes
    # from the cold end.
    assert len(store) == writes


async def test_expired_entries_go_before_live_ones(clock: FakeClock) -> None:
    store = MemoryStore(max_entries=10, clock=clock)
    for i in range(5):
        await store.set(f"old:{i}", b"x", 1.0)
    for i in range(5):
        await store.set(f"live:{i}", b"x", None)
    clock.advance(2.0)
    for i in range(5):
        await store.gcra(f"rl:{i}", emission_interval_seconds=1.0, burst_tolerance_seconds=1.0)
    assert len(store) == 10
    assert [await store.get(f"live:{i}") for i in range(5)] == [b"x"] * 5


async def test_evicting_an_owner_index_takes_its_keys_along(clock: FakeClock) -> None:
    store = MemoryStore(max_entries=6, clock=clock)
    for key in ("s1", "s2"):
        await store.set(key, b"alice", 60.0)
        await store.add_to_owner("alice", key, 60.0)
    assert len(store) == 5  # two sessions, one index with two members
    assert await store.get("s1") == await store.get("s2") == b"alice"  # the index is coldest
    for i in range(2):
        await store.set(f"filler:{i}", b"x", 60.0)
    # The index was least recently used: it went, and, fail safe, so did the keys it
    # listed, which "log out everywhere" could otherwise no longer reach.
    assert await store.get("s1") is None
    assert await store.get("s2") is None
    assert await store.delete_owned("alice") == 0
    assert [await store.get(f"filler:{i}") for i in range(2)] == [b"x", b"x"]


async def test_owner_bound_prunes_dead_entries_before_evicting(clock: FakeClock) -> None:
    store = MemoryStore(max_keys_per_owner=2, clock=clock)
    for key in ("s1", "s2"):
        await store.set(key, b"x", 60.0)
        await store.add_to_owner("alice", key, 60.0)
    await store.delete("s1")  # logged out on its own: its entry is dead
    await store.set("s3", b"x", 60.0)
    await store.add_to_owner("alice", "s3", 60.0)
    assert await store.get("s2") == b"x"
    assert await store.delete_owned("alice") == 2


def test_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryStore(max_entries=0)
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryStore(max_bytes=MAX_VALUE_BYTES)
    with pytest.raises(ValueError, match="max_keys_per_owner"):
        MemoryStore(max_keys_per_owner=0)


async def test_bytes_per_entry(clock: FakeClock) -> None:
    """What one typical entry costs (reported in docs): a 64-hex-character key, 64 bytes."""
    count = 20_000
    tracemalloc.start()
    try:
        store = MemoryStore(max_entries=DEFAULT_MAX_ENTRIES, clock=clock)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            await store.set(f"session:{i:064x}", b"v" * 64, 3600.0)
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    # The key is kept as a 15-byte digest (48 B), plus the tuple, the float and the
    # dict slot; the value here is one shared constant.
    assert 100 < per_entry < 300, per_entry


async def test_a_bucket_spray_costs_under_200_bytes_per_entry(clock: FakeClock) -> None:
    """Issue #8's budget: sprayed rate-limit buckets cost under 200 bytes each, at the bound."""

    async def fill(store: MemoryStore, i: int) -> None:
        # The shape of a rate-limit bucket key: a rule id and a 128-bit client hash.
        key = f"rl:0123456789abcdef:c:{i:032x}"
        await store.gcra(key, emission_interval_seconds=1.0, burst_tolerance_seconds=59.0)

    store = MemoryStore(clock=clock)  # the default bound
    per_entry = await bytes_per_entry(store, fill)
    assert len(store) == store.max_entries
    assert per_entry < 200, per_entry


class _ReferenceLRU:
    """The memory store's eviction rules, written the obvious way: an `OrderedDict`
    from key to (expires_at, value), most recently used last."""

    def __init__(self, bound: int, sweep_every_writes: int, sweep_batch: int) -> None:
        self.bound = bound
        self.sweep_every_writes = sweep_every_writes
        self.sweep_batch = sweep_batch
        self.writes = 0
        self.items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def live(self, key: str, now: float) -> bytes | None:
        item = self.items.get(key)
        if item is None:
            return None
        if item[0] <= now:
            del self.items[key]
            return None
        self.items.move_to_end(key)
        return item[1]

    def set(self, key: str, value: bytes, ttl: float, now: float) -> None:
        self.items.pop(key, None)
        self.items[key] = (now + ttl, value)
        self.writes += 1
        if self.writes % self.sweep_every_writes == 0:  # the store's sweep of the cold end
            for _ in range(self.sweep_batch):
                oldest = next(iter(self.items))
                if self.items[oldest][0] > now:
                    break
                del self.items[oldest]
        while len(self.items) > self.bound:
            del self.items[next(iter(self.items))]


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["set", "get", "delete", "advance"]),
        st.integers(0, 11),  # the key, or seconds to advance
        st.integers(1, 5),  # a TTL in seconds
    ),
    max_size=120,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_eviction_order_matches_a_plain_lru(
    ops: list[tuple[str, int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exact LRU + TTL, through the cold-end snapshot, the sweeps and the dict
    rebuilds, which tiny limits here make happen every few operations."""
    monkeypatch.setattr(memory, "_COLD_SNAPSHOT", 2)
    monkeypatch.setattr(memory, "_COMPACT_MIN_DELETIONS", 3)
    monkeypatch.setattr(memory, "_SWEEP_EVERY_WRITES", 3)
    monkeypatch.setattr(memory, "_SWEEP_BATCH", 4)

    async def run() -> None:
        clock = FakeClock()
        store = MemoryStore(max_entries=5, clock=clock)
        model = _ReferenceLRU(5, sweep_every_writes=3, sweep_batch=4)
        for op, number, ttl in ops:
            key = f"k{number}"
            if op == "set":
                value = b"%d" % ttl
                await store.set(key, value, float(ttl))
                model.set(key, value, float(ttl), clock())
            elif op == "get":
                assert await store.get(key) == model.live(key, clock())
            elif op == "delete":
                present = model.live(key, clock()) is not None
                model.items.pop(key, None)
                assert await store.delete(key) is present
            else:
                clock.advance(number / 4)
            assert list(store._data) == [memory._digest(k) for k in model.items]
            assert len(store) == len(model.items)

    asyncio.run(run())


_STEPS = st.lists(
    st.tuples(
        # Microseconds to advance, so buckets empty and expire; whole quarter seconds
        # land exactly on the TATs of the round rates below.
        st.integers(0, 3 * 10**7) | st.integers(0, 12).map(lambda k: k * 250_000),
        st.integers(0, 3),  # the cost
        st.booleans(),  # through `gcra_unless` (else `gcra`)
        st.booleans(),  # another key used first (the bucket is then not the newest)
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    interval_us=st.integers(1, 10**7) | st.sampled_from([250_000, 10**6]),
    extra_tolerance_us=st.integers(0, 10**8) | st.just(0),
    steps=_STEPS,
)
def test_the_inlined_gcra_step_is_gcra_step(
    interval_us: int, extra_tolerance_us: int, steps: list[tuple[int, int, bool, bool]]
) -> None:
    """The store's inlined step gives `gcra_step`'s verdicts and stores its TATs,
    expiring a bucket when its TAT passes, and leaves the bucket most recently used."""
    tolerance_us = 2 * interval_us + extra_tolerance_us  # so every cost up to 3 is valid
    seconds = {
        "emission_interval_seconds": interval_us / MICROSECONDS,
        "burst_tolerance_seconds": tolerance_us / MICROSECONDS,
    }

    async def run() -> None:
        clock = FakeClock()
        store = MemoryStore(clock=clock)
        bucket = memory._digest("rl:bucket")
        tat: int | None = None  # the reference state
        for advance_us, cost, guarded, other_first in steps:
            clock.advance(advance_us / MICROSECONDS)
            if other_first:
                await store.set("other", b"x", None)
            limit = parse_limit(
                seconds["emission_interval_seconds"], seconds["burst_tolerance_seconds"], cost
            )
            now = clock()
            stored = tat if tat is not None and tat / MICROSECONDS > now else None
            step = gcra_step(stored, round(now * MICROSECONDS), limit)
            tat = step.tat_us if step.tat_us is not None else stored
            if guarded:
                got = await store.gcra_unless("ban:c", "rl:bucket", **seconds, cost=cost)
            else:
                got = await store.gcra("rl:bucket", **seconds, cost=cost)
            assert got == step.result()
            entry = store._data.get(bucket)
            assert entry == (None if tat is None else float(tat))
            if entry is not None:
                assert list(store._data)[-1] == bucket
            assert set(store._data) <= {bucket, memory._digest("other")}
            assert len(store) == len(store._data)

    asyncio.run(run())


async def test_gcra_unless_goes_through_overridden_methods(clock: FakeClock) -> None:
    """Test doubles that override `get` or `gcra` (failure switches) stay in play."""
    store = SwitchableStore(clock=clock)
    assert await _guarded_step(store, "rl:c") is True
    store.down = True
    with pytest.raises(StoreError):
        await _guarded_step(store, "rl:c")
    store.down = False
    await store.set("ban:c", b"1", 60.0)
    assert await _guarded_step(store, "rl:c") is None


@pytest.mark.parametrize("bad", BAD_KEYS)
@pytest.mark.parametrize("guard_is_bad", [True, False], ids=["guard", "bucket"])
async def test_gcra_unless_refuses_bad_keys(clock: FakeClock, bad: str, guard_is_bad: bool) -> None:
    store = MemoryStore(clock=clock)
    guard, key = (bad, "rl:c") if guard_is_bad else ("ban:c", bad)
    with pytest.raises(ValueError, match="store key"):
        await store.gcra_unless(
            guard, key, emission_interval_seconds=1.0, burst_tolerance_seconds=1.0
        )
    assert len(store) == 0


async def test_gcra_unless_takes_the_longest_and_unprintable_keys(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    longest = "é" * (MAX_KEY_BYTES // 2)  # two UTF-8 bytes each
    spaced = "rl:\u00a0c"  # a no-break space: not printable, not a control character
    for key in (longest, spaced):
        assert [await _guarded_step(store, key) for _ in range(3)] == [True, True, False]


async def _guarded_step(store: MemoryStore, key: str) -> bool | None:
    """`gcra_unless` with the guard `ban:c` and a burst of two: allowed, or None."""
    result = await store.gcra_unless(
        "ban:c", key, emission_interval_seconds=1.0, burst_tolerance_seconds=1.0
    )
    return None if result is None else result.allowed
