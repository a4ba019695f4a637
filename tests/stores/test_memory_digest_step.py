"""`MemoryStore.gcra_unless_digest_now` (the rate-limit layer's step on digests it
remembers) against `gcra_unless_now` and `gcra_now`, the steps it short-cuts.

Two stores see the same operations, one stepping by digest and one by key, and
must agree after every one: the verdict, and the store's whole state (entries in
recency order, sizes, the sweep, rebuild and cold-end bookkeeping), so that every
later step agrees too. The named cases pin which of them take the inlined path (a
bucket that is the most recently used entry, live or expired) and which the general
`_gcra`, so that agreement is never agreement on a path not taken.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.exceptions import StoreError
from bastion.stores import MemoryStore, memory
from bastion.stores.gcra import GCRALimit, GCRAResult, parse_limit
from tests.stores.memory_state import assert_same_state, make_periodic_work_frequent
from tests.stores.test_contract import BAD_KEYS
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio

_KEYS = ("rl:a", "rl:b", "ban:a", "ban:b", "other")
_LIMITS = (
    parse_limit(1.0, 2.0),  # three at once, one a second
    parse_limit(1.0, 0.0),  # one a second, no burst
    parse_limit(60.0, 540.0),
    parse_limit(1e-6, 0.999999),  # the benchmark's: every bucket expired by the next step
    GCRALimit(1_000_000, 0, 0),  # cost 0: nothing stored
    GCRALimit(1_000_000, 0, 2),  # unvalidated: a cost the burst never holds
)
_BY_NAME = {
    "burst3": 0,
    "one": 1,
    "slow": 2,
    "bench": 3,
    "free": 4,
    "never": 5,
}


class Pair:
    """Two stores on one clock: `by_digest` stepped by digest, `by_key` by key."""

    def __init__(self, **options: Any) -> None:
        self.clock = FakeClock()
        self.by_digest = MemoryStore(clock=self.clock, **options)
        self.by_key = MemoryStore(clock=self.clock, **options)
        self.general = 0  # steps of `by_digest` that went the general way (`_gcra`)
        original = self.by_digest._gcra

        def counted(digest: bytes, limit: GCRALimit, now: float) -> GCRAResult:
            self.general += 1
            return original(digest, limit, now)

        self.by_digest._gcra = counted  # type: ignore[method-assign]

    def step(self, guard: str | None, key: str, limit: GCRALimit) -> GCRAResult | None:
        store = self.by_digest
        guard_digest = None if guard is None else store.digest_now(guard)
        got = store.gcra_unless_digest_now(guard_digest, store.digest_now(key), limit)
        if guard is None:
            expected: GCRAResult | None = self.by_key.gcra_now(key, limit)
        else:
            expected = self.by_key.gcra_unless_now(guard, key, limit)
        assert got == expected
        assert type(got) is type(expected)
        self.check()
        return got

    async def both(self, method: str, *args: Any) -> None:
        for store in (self.by_digest, self.by_key):
            await getattr(store, method)(*args)
        self.check()

    def check(self) -> None:
        assert_same_state(self.by_digest, self.by_key)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    make_periodic_work_frequent(monkeypatch)


# (operation, arguments): ("step", guard or None, key, limit name, inlined?),
# ("advance", seconds), ("set", key, ttl), ("get", key)
_Op = tuple[Any, ...]

CASES = [
    pytest.param(
        [("step", "ban:a", "rl:a", "burst3", False), ("step", "ban:a", "rl:a", "burst3", True)],
        id="digest-step-live-newest-allowed",
    ),
    pytest.param(
        [("step", "ban:a", "rl:a", "one", False), ("step", "ban:a", "rl:a", "one", True)],
        id="digest-step-live-newest-refused",
    ),
    pytest.param(
        [
            *(("step", "ban:a", "rl:a", "burst3", i > 0) for i in range(4)),
            ("advance", 0.5),
            ("step", "ban:a", "rl:a", "burst3", True),  # a TAT ahead of now, still refused
            ("advance", 0.6),
            ("step", "ban:a", "rl:a", "burst3", True),  # allowed again
        ],
        id="digest-step-live-newest-refill",
    ),
    pytest.param(
        [
            ("step", "ban:a", "rl:a", "burst3", False),
            ("advance", 10),
            *(("step", "ban:a", "rl:a", "burst3", True) for _ in range(3)),
        ],
        id="digest-step-stale-newest",
    ),
    pytest.param(
        [("step", "ban:a", "rl:a", "bench", False)]
        + [
            op
            for _ in range(40)  # past a sweep, each write counted towards it
            for op in (("advance", 0.00001), ("step", "ban:a", "rl:a", "bench", True))
        ],
        id="digest-step-stale-newest-bench-rate",
    ),
    pytest.param(
        [
            ("step", None, "rl:a", "one", False),
            ("advance", 10),
            ("step", None, "rl:a", "never", False),  # stale, refused: dropped, the general way
            ("step", None, "rl:a", "one", False),
        ],
        id="digest-step-stale-never-allowed",
    ),
    pytest.param(
        [
            ("step", None, "rl:a", "one", False),
            ("advance", 10),
            ("step", None, "rl:a", "free", False),  # stale, cost 0: dropped, the general way
        ],
        id="digest-step-stale-cost-zero",
    ),
    pytest.param(
        [("step", None, "rl:a", "one", False), ("step", None, "rl:a", "free", True)],
        id="digest-step-live-cost-zero",
    ),
    pytest.param(
        [
            ("step", "ban:a", "rl:a", "burst3", False),
            ("step", "ban:b", "rl:b", "burst3", False),
            ("step", "ban:a", "rl:a", "burst3", False),  # not the newest: moved, the general way
            ("step", "ban:a", "rl:a", "burst3", True),
        ],
        id="digest-step-not-newest",
    ),
    pytest.param(
        [
            ("step", "ban:a", "rl:a", "burst3", False),
            ("set", "ban:a", 5.0),
            ("step", "ban:a", "rl:a", "burst3", None),  # banned: no step at all
            ("step", "ban:b", "rl:b", "burst3", False),
            ("advance", 6),
            ("step", "ban:a", "rl:a", "burst3", False),  # the ban expired and was dropped
            ("step", "ban:a", "rl:a", "burst3", True),
        ],
        id="digest-step-banned-then-expired",
    ),
    pytest.param(
        [
            ("step", "ban:a", "rl:a", "one", False),
            ("set", "ban:a", 5.0),
            ("get", "rl:a"),  # the bucket is the newest again, the ban still live
            ("step", "ban:a", "rl:a", "one", None),
        ],
        id="digest-step-banned-newest-bucket",
    ),
    pytest.param(
        [("set", "rl:a", 60.0), ("step", None, "rl:a", "burst3", False)],
        id="digest-step-key-holds-a-value",
    ),
    pytest.param(
        [
            ("step", None, "rl:a", "one", False),
            ("advance", 10),
            ("get", "rl:a"),  # expired: dropped, though still the last key put in
            ("step", None, "rl:a", "one", False),
            ("step", None, "rl:a", "one", True),
        ],
        id="digest-step-newest-is-gone",
    ),
    pytest.param(
        [
            ("step", None, "rl:b", "one", False),
            ("step", None, "other", "one", False),
            ("step", None, "rl:a", "one", False),
            ("advance", 10),
            # Stale steps in place: every third write sweeps expired entries from the
            # cold end, and the sweep's deletions bring a rebuild.
            *(("step", None, "rl:a", "one", True) for _ in range(7)),
        ],
        id="digest-step-stale-sweeps-and-rebuilds",
    ),
    pytest.param(
        [
            *(("step", None, f"rl:{k}", "slow", False) for k in "abcdef"),
            ("step", None, "rl:f", "slow", True),
            ("step", None, "rl:a", "slow", False),  # evicted at the bound: a fresh bucket
        ],
        id="digest-step-evicted-at-the-bound",
    ),
]


@pytest.mark.parametrize("ops", CASES)
async def test_the_digest_step_is_the_key_step(small: None, ops: Sequence[_Op]) -> None:
    pair = Pair(max_entries=4)
    for op in ops:
        name = op[0]
        if name == "step":
            _, guard, key, limit, inlined = op
            before = pair.general
            result = pair.step(guard, key, _LIMITS[_BY_NAME[limit]])
            if inlined is None:
                assert result is None
            else:
                assert result is not None
                assert (pair.general == before) is inlined
        elif name == "advance":
            pair.clock.advance(op[1])
        elif name == "set":
            await pair.both("set", op[1], b"1", op[2])
        else:
            for store in (pair.by_digest, pair.by_key):
                await store.get(op[1])
            pair.check()


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["step", "step", "step", "step", "set", "get", "advance"]),
        st.integers(-1, len(_KEYS) - 1),  # the guard (-1: none), or the key
        st.integers(0, len(_KEYS) - 1),  # the bucket
        st.integers(0, len(_LIMITS) - 1),
        st.sampled_from([0, 1, 500_000, 1_000_000, 3_000_000, 120_000_000]),  # µs, or TTL
    ),
    max_size=80,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_the_digest_step_is_the_key_step_over_any_operations(
    ops: list[tuple[str, int, int, int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any mix of steps, values, reads and time, at a bound of four entries."""
    monkeypatch.setattr(memory, "_COLD_SNAPSHOT", 2)
    monkeypatch.setattr(memory, "_COMPACT_MIN_DELETIONS", 3)
    monkeypatch.setattr(memory, "_SWEEP_EVERY_WRITES", 3)
    monkeypatch.setattr(memory, "_SWEEP_BATCH", 2)

    async def run() -> None:
        pair = Pair(max_entries=4)
        for op, first, second, limit, number in ops:
            if op == "step":
                guard = None if first < 0 else _KEYS[first]
                pair.step(guard, _KEYS[second], _LIMITS[limit])
            elif op == "set":
                await pair.both("set", _KEYS[max(first, 0)], b"1", 1 + number / 1_000_000)
            elif op == "get":
                for store in (pair.by_digest, pair.by_key):
                    await store.get(_KEYS[max(first, 0)])
                pair.check()
            else:
                pair.clock.advance(number / 1_000_000)

    asyncio.run(run())


@pytest.mark.parametrize("case", ["digest-step-closed-store"])
async def test_the_digest_step_of_a_closed_store_fails(case: str) -> None:
    store = MemoryStore(clock=FakeClock())
    guard, bucket = store.digest_now("ban:a"), store.digest_now("rl:a")
    limit = parse_limit(1.0, 2.0)
    assert store.gcra_unless_digest_now(guard, bucket, limit) is not None
    assert store.gcra_unless_digest_now(guard, bucket, limit) is not None  # the newest
    await store.close()
    for step_guard in (guard, None):
        with pytest.raises(StoreError):
            store.gcra_unless_digest_now(step_guard, bucket, limit)
    assert len(store) == 0


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_a_bad_key_has_no_digest(bad: str) -> None:
    with pytest.raises(ValueError, match="store key"):
        MemoryStore().digest_now(bad)


def test_the_digest_is_the_name_the_key_is_kept_under() -> None:
    store = MemoryStore(clock=FakeClock())
    for key in _KEYS:
        assert store.digest_now(key) == memory._digest(key)
