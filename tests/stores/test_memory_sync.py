"""The memory store's synchronous steps (`get_now`, `gcra_now`, `gcra_unless_now`, the
rate-limit layer's per-request path) against the awaited ones, their digest memo under
a spray of keys, and the results they build with `tuple.__new__`."""

from __future__ import annotations

import asyncio
import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.exceptions import StoreError
from bastion.stores import MemoryStore, memory
from bastion.stores.gcra import GCRAResult, parse_limit
from tests.stores.test_contract import BAD_KEYS
from tests.support.clock import FakeClock
from tests.support.stores import SwitchableStore

pytestmark = pytest.mark.anyio

_KEYS = ("rl:a", "rl:b", "ban:a", "ban:b", "other")
_RATES = ((1.0, 2.0), (0.25, 0.0), (60.0, 540.0))

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["gcra", "gcra_unless", "get", "set", "advance"]),
        st.integers(0, len(_KEYS) - 1),  # the key (the guard, for gcra_unless)
        st.integers(0, len(_KEYS) - 1),  # the bucket, for gcra_unless
        st.integers(0, len(_RATES) - 1),
        st.integers(0, 2),  # the cost
        st.integers(0, 4_000_000),  # microseconds to advance, or a TTL
    ),
    max_size=80,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_the_synchronous_steps_are_the_awaited_steps(
    ops: list[tuple[str, int, int, int, int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stores, the same operations, one through the synchronous steps and one
    through the awaited ones: the same answers, and the same entries in the same
    (recency) order after every step, sweeps, evictions and rebuilds included."""
    monkeypatch.setattr(memory, "_COLD_SNAPSHOT", 2)
    monkeypatch.setattr(memory, "_COMPACT_MIN_DELETIONS", 3)
    monkeypatch.setattr(memory, "_SWEEP_EVERY_WRITES", 3)
    monkeypatch.setattr(memory, "_SWEEP_BATCH", 2)

    async def run() -> None:
        clock = FakeClock()
        now_store = MemoryStore(max_entries=4, clock=clock)
        awaited = MemoryStore(max_entries=4, clock=clock)
        assert now_store.steps_synchronously
        for op, first, second, rate, cost, number in ops:
            key, other = _KEYS[first], _KEYS[second]
            interval, tolerance = _RATES[rate]
            if cost * interval > tolerance + interval:
                cost = 1
            seconds = {"emission_interval_seconds": interval, "burst_tolerance_seconds": tolerance}
            limit = parse_limit(interval, tolerance, cost)
            if op == "gcra":
                got: object = now_store.gcra_now(key, limit)
                expected: object = await awaited.gcra(key, **seconds, cost=cost)
            elif op == "gcra_unless":
                got = now_store.gcra_unless_now(key, other, limit)
                expected = await awaited.gcra_unless(key, other, **seconds, cost=cost)
            elif op == "get":
                got, expected = now_store.get_now(key), await awaited.get(key)
            elif op == "set":
                ttl = 1 + number / 1_000_000
                for store in (now_store, awaited):
                    await store.set(key, b"1", ttl)
                got = expected = None
            else:
                clock.advance(number / 1_000_000)
                got = expected = None
            assert got == expected
            assert type(got) is type(expected)
            assert list(now_store._data.items()) == list(awaited._data.items())
            assert (len(now_store), now_store.size_bytes) == (len(awaited), awaited.size_bytes)

    asyncio.run(run())


@pytest.mark.parametrize("case", ["store-digest-memo-bounded-spray"])
async def test_a_spray_of_keys_keeps_the_digest_memo_at_its_bound(case: str) -> None:
    """Three times as many distinct keys as the memo holds, each a bucket of its own;
    the memo never passes its bound, and a bucket used all along still counts right."""
    store = MemoryStore(clock=FakeClock())
    limit = parse_limit(60.0, 120.0)  # three at once
    seen = []
    for i in range(3 * memory._DIGEST_MEMO_ENTRIES):
        assert store.gcra_now(f"rl:spray:{i}", limit).allowed
        assert store.get_now(f"ban:spray:{i}") is None
        if i % 4000 == 0:
            seen.append(store.gcra_unless_now("ban:user", "rl:user", limit))
        assert len(store._digests) <= memory._DIGEST_MEMO_ENTRIES
    assert [result is not None and result.allowed for result in seen] == [True] * 3 + [False]


@pytest.mark.parametrize("bad", BAD_KEYS)
async def test_the_synchronous_steps_refuse_bad_keys(bad: str) -> None:
    store = MemoryStore(clock=FakeClock())
    limit = parse_limit(1.0, 1.0)
    for step in (
        lambda: store.get_now(bad),
        lambda: store.gcra_now(bad, limit),
        lambda: store.gcra_unless_now(bad, "rl:c", limit),
        lambda: store.gcra_unless_now("ban:c", bad, limit),
    ):
        with pytest.raises(ValueError, match="store key"):
            step()
    assert len(store) == 0
    assert bad not in store._digests  # a refused key is not remembered


async def test_the_synchronous_steps_of_a_closed_store_fail() -> None:
    store = MemoryStore(clock=FakeClock())
    limit = parse_limit(1.0, 1.0)
    assert store.gcra_now("rl:c", limit).allowed
    await store.close()
    assert store._digests == {}
    for step in (
        lambda: store.get_now("rl:c"),
        lambda: store.gcra_now("rl:c", limit),
        lambda: store.gcra_unless_now("ban:c", "rl:c", limit),
    ):
        with pytest.raises(StoreError):
            step()


class _OverridesGcraUnless(MemoryStore):
    async def gcra_unless(
        self,
        guard_key: str,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult | None:
        return None


def test_only_a_store_without_overridden_steps_steps_synchronously() -> None:
    assert MemoryStore().steps_synchronously
    assert not SwitchableStore().steps_synchronously  # overrides get and gcra
    assert not _OverridesGcraUnless().steps_synchronously
    patched = MemoryStore()
    patched.get = SwitchableStore().get  # type: ignore[method-assign]
    assert not patched.steps_synchronously


@given(
    allowed=st.booleans(),
    limit=st.integers(0, 10**6),
    remaining=st.integers(0, 10**6),
    retry_after=st.floats(0, 1e7, allow_nan=False),
    reset_after=st.floats(0, 1e7, allow_nan=False),
)
def test_a_result_built_by_the_store_is_a_gcra_result(
    allowed: bool, limit: int, remaining: int, retry_after: float, reset_after: float
) -> None:
    """The store builds its results with `tuple.__new__`: the same as the class's own
    constructor, and as immutable."""
    fields = (allowed, limit, remaining, retry_after, reset_after)
    built = memory._new_tuple(GCRAResult, fields)
    made = GCRAResult(allowed, limit, remaining, retry_after, reset_after)
    assert type(built) is GCRAResult
    assert built == made
    assert hash(built) == hash(made)
    assert repr(built) == repr(made)
    assert (built.allowed, built.retry_after_seconds) == (allowed, retry_after)
    assert copy.deepcopy(built) == built._replace() == made
    with pytest.raises(AttributeError):
        built.allowed = not allowed  # type: ignore[misc]


def test_an_expired_bucket_that_is_the_newest_is_replaced_in_place() -> None:
    """A client back after its bucket expired, with no other key used since: the new
    bucket takes the old one's place (last, as a new entry would be), spending no dict
    slot, and is `gcra_step`'s."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    limit = parse_limit(1.0, 1.0)
    store.gcra_now("rl:other", limit)
    first = store.gcra_now("rl:c", limit)
    assert first.allowed
    clock.advance(10)  # both buckets expired
    deleted, size = store._deleted, (len(store), store.size_bytes)
    again = store.gcra_now("rl:c", limit)
    assert again == first  # a fresh bucket's verdict
    assert store._deleted == deleted  # replaced in place: no slot spent
    assert (len(store), store.size_bytes) == size
    assert list(store._data)[-1] == memory._digest("rl:c")
    assert store.get_now("rl:other") is None  # the other one is gone when touched
