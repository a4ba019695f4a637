"""The digest step's shared result for an empty bucket (`MemoryStore._full_step`).

`gcra_unless_digest_now` answers a step on a bucket whose TAT has passed with one
result built per rate and shared, instead of building it. Here it is held to the
general step it stands for (`gcra_unless_now`, which builds every result in `_gcra`),
request by request: the results, the store's entries in recency order, and the
refusals, over hypothesis-drawn sequences of keys, rates (several on one store, so
the remembered rate is replaced), bans and clock steps (backwards too), beside named
attack cases.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.stores import MemoryStore
from bastion.stores.gcra import GCRALimit, GCRAResult, parse_limit
from tests.support.clock import FakeClock

# Rates of every kind: a burst of one, a burst of several, cost 2, cost 0, and a
# cost over the burst (built directly: `parse_limit` refuses it), which is never
# allowed and so is never the shared result.
_LIMITS = [
    parse_limit(1.0, 0.0),
    parse_limit(0.5, 1.5),
    parse_limit(0.25, 0.75, 2),
    parse_limit(1.0, 2.0, 0),
    GCRALimit(1_000_000, 0, 3),
]
_KEYS = ["rl:a", "rl:b", "rl:c"]


def _pair() -> tuple[FakeClock, MemoryStore, MemoryStore]:
    clock = FakeClock()
    return clock, MemoryStore(clock=clock), MemoryStore(clock=clock)


def _step(
    clock: FakeClock, fast: MemoryStore, general: MemoryStore, key: str, limit: GCRALimit
) -> GCRAResult | None:
    """One step on both stores: they must agree (results, entries, order)."""
    got = fast.gcra_unless_digest_now(fast.digest_now("ban:x"), fast.digest_now(key), limit)
    want = general.gcra_unless_now("ban:x", key, limit)
    assert got == want
    assert list(fast._data.items()) == list(general._data.items())
    return got


_STEPS = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 1e-6, 0.1, 0.5, 1.0, 3.0, -0.5, -2.0]),  # clock steps
        st.sampled_from(_KEYS),
        st.sampled_from(range(len(_LIMITS))),
        st.sampled_from([None, None, None, None, "ban", "unban"]),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_STEPS)
def test_the_shared_result_agrees_with_the_general_step(
    steps: list[tuple[float, str, int, str | None]],
) -> None:
    clock, fast, general = _pair()
    for advance, key, which, ban in steps:
        clock.advance(advance)
        for store in (fast, general):
            if ban == "ban":
                asyncio.run(store.set("ban:x", b"1", 5.0))
            elif ban == "unban":
                asyncio.run(store.delete("ban:x"))
        _step(clock, fast, general, key, _LIMITS[which])


def _statuses(
    clock: FakeClock, fast: MemoryStore, general: MemoryStore, plan: list[tuple[float, str]]
) -> list[bool]:
    limit = parse_limit(1.0, 2.0)  # a burst of 3, then one a second
    seen = []
    for advance, key in plan:
        clock.advance(advance)
        result = _step(clock, fast, general, key, limit)
        assert result is not None
        seen.append(result.allowed)
    return seen


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        pytest.param([(2.0, "rl:a")] * 5, [True] * 5, id="memory-full-bucket-below-the-rate-ok"),
        pytest.param(
            [(5.0, "rl:a")] + [(0.0, "rl:a")] * 4,
            [True, True, True, False, False],
            id="memory-full-bucket-burst-over-the-limit",
        ),
        pytest.param(
            [(5.0, "rl:a"), (0.0, "rl:a"), (0.0, "rl:a"), (-30.0, "rl:a"), (0.0, "rl:a")],
            [True, True, True, False, False],
            id="memory-full-bucket-clock-backwards",
        ),
        pytest.param(
            [(5.0, f"rl:{i}") for i in range(50)] + [(0.0, "rl:a")] * 4,
            [True] * 50 + [True, True, True, False],
            id="memory-full-bucket-many-clients-spray",
        ),
    ],
)
def test_named_cases(plan: list[tuple[float, str]], expected: list[bool]) -> None:
    clock, fast, general = _pair()
    assert _statuses(clock, fast, general, plan) == expected


def test_the_result_is_shared_only_for_an_empty_bucket() -> None:
    """The shortcut is taken (the same object comes back), and a bucket in use gets
    a result of its own; a second rate on the same store replaces the remembered one."""
    clock, fast, general = _pair()
    one, other = parse_limit(1.0, 2.0), parse_limit(0.5, 1.5)
    first = _step(clock, fast, general, "rl:a", one)  # a new bucket: `_gcra`
    clock.advance(10.0)
    empty = _step(clock, fast, general, "rl:a", one)
    clock.advance(10.0)
    assert _step(clock, fast, general, "rl:a", one) is empty  # shared
    in_use = _step(clock, fast, general, "rl:a", one)  # no time passed: not empty
    assert in_use is not empty
    assert in_use != empty
    clock.advance(10.0)
    replaced = _step(clock, fast, general, "rl:a", other)
    assert replaced != empty
    clock.advance(10.0)
    assert _step(clock, fast, general, "rl:a", one) == first == empty
