"""`MemoryStore.incr`'s inlined step on a live counter, against the general one.

Two stores see the same operations: one is stepped by `incr`, the other by
`reference_incr`, `incr` as it was before it inlined the live counter's step (kept
here). After every operation they must agree: the result, or the error's type and
message, and the store's whole state (entries in recency order, sizes, the sweep,
rebuild and cold-end bookkeeping), so that every later step agrees too. The named
cases pin which steps take the inlined path, so that agreement is never agreement
on a path not taken; a spray of counters leaves the digest memo at its bound.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.exceptions import StoreError
from bastion.stores import MemoryStore, memory
from bastion.stores.base import (
    MAX_COUNTER,
    MIN_COUNTER,
    check_amount,
    check_counter,
    check_ttl,
    parse_counter,
)
from tests.stores.memory_state import assert_same_state, make_periodic_work_frequent
from tests.stores.test_contract import BAD_KEYS
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio


async def reference_incr(
    store: MemoryStore, key: str, amount: int = 1, *, ttl_seconds: float | None
) -> int:
    """`MemoryStore.incr` before the inlined step, line for line."""
    digest = memory._digest(key)
    check_amount(amount)
    ttl = check_ttl(ttl_seconds)
    now = store._now()
    entry = store._data.get(digest)
    current = store._live(digest, now)
    if current is None or entry is None:
        result = check_counter(amount)
        expires_at = memory._expiry(now, ttl)
    else:
        if isinstance(current, dict):  # pragma: no cover - unreachable: NUL keys
            raise StoreError("store key does not hold an integer")
        result = check_counter(parse_counter(current) + amount)
        expires_at = memory._split(entry)[0]
    store._put(digest, (expires_at, result), now)
    return result


_BAD_KEYS: tuple[str, ...] = tuple(str(param.values[0]) for param in BAD_KEYS)


class _Amount(int):
    """An `int` subclass: checked by `check_amount`, as any amount not a plain int."""


_KEYS: tuple[Any, ...] = ("ws:a", "ws:b", "other", "counter:é")
_AMOUNTS: tuple[Any, ...] = (
    1,
    -1,
    0,
    7,
    MAX_COUNTER,
    MIN_COUNTER,
    MAX_COUNTER + 1,
    MIN_COUNTER - 1,
    True,
    1.0,
    "1",
    _Amount(2),
)
_TTLS: tuple[Any, ...] = (
    None,
    1,
    2.5,
    3600,
    0,
    -1,
    math.nan,
    math.inf,
    10 * 365 * 24 * 3600.0 + 1,
    True,
    "60",
)


class Pair:
    """Two stores on one clock: `fast` stepped by `incr`, `general` by `reference_incr`."""

    def __init__(self, **options: Any) -> None:
        self.clock = FakeClock()
        self.fast = MemoryStore(clock=self.clock, **options)
        self.general = MemoryStore(clock=self.clock, **options)
        self.general_steps = 0  # steps of `fast` that read the counter through `_live`
        live = self.fast._live

        def counted(digest: bytes, now: float) -> Any:
            self.general_steps += 1
            return live(digest, now)

        self.fast._live = counted  # type: ignore[method-assign]

    async def incr(self, key: Any, amount: Any, ttl: Any) -> bool:
        """Both steps; True if `fast` stepped a counter it read without `_live`."""
        before = self.general_steps
        got = await _outcome(self.fast.incr(key, amount, ttl_seconds=ttl))
        expected = await _outcome(reference_incr(self.general, key, amount, ttl_seconds=ttl))
        assert got == expected
        self.check()
        return self.general_steps == before and got[0] is int  # type: ignore[index]

    async def both(self, method: str, *args: Any, **kwargs: Any) -> None:
        got = await _outcome(getattr(self.fast, method)(*args, **kwargs))
        assert got == await _outcome(getattr(self.general, method)(*args, **kwargs))
        self.check()

    def check(self) -> None:
        assert_same_state(self.fast, self.general)


async def _outcome(step: Any) -> object:
    """What a step gave: its result, or its error's type and message."""
    try:
        result = await step
    except (TypeError, ValueError, StoreError) as error:
        return (type(error), str(error))
    return (type(result), result)


# (operation, arguments): ("incr", key, amount, ttl, inlined?), ("advance", seconds),
# ("set", key, ttl), ("step", key) (a GCRA bucket), ("touch", key, ttl)
_Op = tuple[Any, ...]

CASES = [
    pytest.param(
        [("incr", "ws:a", 1, 3600, False), ("incr", "ws:a", -1, 3600, True)],
        id="incr-live-newest",
    ),
    pytest.param(
        [
            ("incr", "ws:a", 1, 3600, False),
            ("incr", "ws:b", 1, 3600, False),
            ("incr", "ws:a", 1, 3600, True),  # not the newest: moved, inlined
            ("incr", "ws:b", -1, 60, True),
        ],
        id="incr-live-not-newest",
    ),
    pytest.param(
        [("incr", "ws:a", 1, 1, False), ("advance", 2), ("incr", "ws:a", 1, 1, False)],
        id="incr-expired-starts-afresh",
    ),
    pytest.param(
        [("incr", "ws:a", 1, 3600, False), ("incr", "ws:a", 1, None, True)],
        id="incr-live-keeps-its-expiry",
    ),
    pytest.param(
        [("set", "ws:a", 60), ("incr", "ws:a", 1, 60, False), ("incr", "ws:a", 1, 60, True)],
        id="incr-on-a-value-written-as-bytes",
    ),
    pytest.param(
        [("step", "ws:a"), ("incr", "ws:a", 1, 60, False)],
        id="incr-on-a-gcra-bucket",
    ),
    pytest.param(
        [
            ("incr", "ws:a", MAX_COUNTER, 60, False),
            ("incr", "ws:b", 1, 60, False),
            ("incr", "ws:a", 1, 60, False),  # overflows: moved, then refused
            ("incr", "ws:a", -1, 60, True),
        ],
        id="incr-live-overflow",
    ),
    pytest.param(
        [("incr", "ws:a", 1, 60, False), *(("incr", "ws:a", 1, ttl, False) for ttl in _TTLS[4:])],
        id="incr-live-bad-ttls",
    ),
    pytest.param(
        [
            ("incr", "ws:a", 1, 60, False),
            *(("incr", "ws:a", amount, 60, False) for amount in _AMOUNTS[6:11]),  # refused
            ("incr", "ws:a", _Amount(2), 60, True),  # checked by `check_amount`, then inlined
            ("incr", "ws:a", 1, 60, True),
        ],
        id="incr-live-odd-amounts",
    ),
    pytest.param(
        [("incr", key, 1, 60, False) for key in _BAD_KEYS] + [("incr", 42, 1, 60, False)],
        id="incr-bad-keys",
    ),
    pytest.param(
        [
            ("incr", "ws:b", 1, 1, False),
            ("incr", "other", 1, 1, False),
            ("incr", "ws:a", 1, 60, False),
            ("advance", 2),
            # Every third write sweeps expired entries from the cold end, and the
            # deletions bring a rebuild.
            *(("incr", "ws:a", 1, 60, True) for _ in range(7)),
        ],
        id="incr-live-sweeps-and-rebuilds",
    ),
    pytest.param(
        [
            *(("incr", f"ws:{k}", 1, 60, False) for k in "abcdef"),
            ("incr", "ws:f", 1, 60, True),
            ("incr", "ws:a", 1, 60, False),  # evicted at the bound: a fresh counter
        ],
        id="incr-evicted-at-the-bound",
    ),
]


async def _run(pair: Pair, op: _Op) -> bool | None:
    name = op[0]
    if name == "incr":
        return await pair.incr(op[1], op[2], op[3])
    if name == "advance":
        pair.clock.advance(op[1])
    elif name == "set":
        await pair.both("set", op[1], b"1", op[2])
    elif name == "step":
        await pair.both("gcra", op[1], emission_interval_seconds=1.0, burst_tolerance_seconds=2.0)
    else:
        await pair.both("touch", op[1], op[2])
    return None


@pytest.mark.parametrize("ops", CASES)
async def test_incr_is_the_general_step(
    ops: Sequence[_Op], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_periodic_work_frequent(monkeypatch)
    pair = Pair(max_entries=4)
    for op in ops:
        inlined = await _run(pair, op)
        if op[0] == "incr":
            assert inlined is op[4], op


_OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("incr"),
            st.sampled_from(_KEYS),
            st.sampled_from(_AMOUNTS) | st.integers(-3, 3),
            st.sampled_from(_TTLS),
        ),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1, 2, 61])),
        st.tuples(st.just("set"), st.sampled_from(_KEYS), st.sampled_from([1, 60])),
        st.tuples(st.just("step"), st.sampled_from(_KEYS)),
        st.tuples(st.just("touch"), st.sampled_from(_KEYS), st.sampled_from([1, 60])),
    ),
    max_size=60,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_incr_is_the_general_step_over_any_operations(
    ops: list[_Op], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any mix of increments, values, buckets, refreshes and time, at a bound of four."""
    make_periodic_work_frequent(monkeypatch)

    async def run() -> None:
        pair = Pair(max_entries=4)
        for op in ops:
            await _run(pair, op)

    asyncio.run(run())


async def test_a_spray_of_counters_keeps_the_digest_memo_bounded() -> None:
    store = MemoryStore(clock=FakeClock())
    for i in range(2 * memory._DIGEST_MEMO_ENTRIES + 1):
        assert await store.incr(f"ws:conns:client:{i}", ttl_seconds=60) == 1
        assert 0 < len(store._digests) <= memory._DIGEST_MEMO_ENTRIES
    for bad in _BAD_KEYS:
        with pytest.raises(ValueError, match="store key"):
            await store.incr(bad, ttl_seconds=60)
        assert bad not in store._digests  # a refused key is not remembered


async def test_a_closed_store_refuses_the_inlined_step() -> None:
    store = MemoryStore(clock=FakeClock())
    assert await store.incr("ws:a", ttl_seconds=60) == 1
    await store.close()
    with pytest.raises(StoreError):
        await store.incr("ws:a", ttl_seconds=60)
