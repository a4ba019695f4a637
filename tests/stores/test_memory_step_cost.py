"""What keeps the memory store's rate-limit step cheap, held to what it replaces.

* `steps_synchronously` tells overridden steps apart without reading the instance's
  `__dict__` (which would make CPython before 3.13 build it as a real dict and leave every
  attribute load of the store unspecialised), and still sees every override;
* the step rounds the clock with `float.__round__` called directly: the same
  microseconds as `round(now * MICROSECONDS)`, from a float clock or one that reads
  whole seconds as an `int`.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.stores import MemoryStore, memory
from bastion.stores.gcra import MICROSECONDS, GCRAResult, parse_limit
from tests.support.clock import FakeClock


class _OverridesGet(MemoryStore):
    async def get(self, key: str) -> bytes | None:
        return await super().get(key)


async def _no_result(*args: Any, **kwargs: Any) -> GCRAResult | None:
    return None


def _patched(name: str, value: object) -> MemoryStore:
    store = MemoryStore()
    setattr(store, name, value)
    return store


def _instance_dict_is_built(store: MemoryStore) -> bool:
    """Whether the store's attributes live in a real dict (CPython: it appears among
    the object's referents only once built)."""
    return any(isinstance(ref, dict) and "_data" in ref for ref in gc.get_referents(store))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(MemoryStore, True, id="store-sync-plain"),
        pytest.param(_OverridesGet, False, id="store-sync-subclass-overrides-get"),
        pytest.param(
            lambda: _patched("gcra", _no_result), False, id="store-sync-instance-function"
        ),
        pytest.param(
            lambda: _patched("gcra_unless", MemoryStore().gcra_unless),
            False,
            id="store-sync-instance-another-stores-step",
        ),
        pytest.param(
            lambda: _patched("get", _OverridesGet().get),
            False,
            id="store-sync-instance-subclass-step",
        ),
    ],
)
def test_steps_synchronously_sees_every_override(make: Any, expected: bool) -> None:
    store = make()
    assert store.steps_synchronously is expected


def _vars_builds_a_visible_dict() -> bool:
    probe = MemoryStore()
    vars(probe)
    return _instance_dict_is_built(probe)


@pytest.mark.skipif(
    not _vars_builds_a_visible_dict(),
    # The cost this guards against is CPython's before 3.13: `vars()` moves the
    # attributes into a real dict, and attribute loads are no longer specialised.
    # 3.13 keeps the values inline and the dict shares them: nothing to build.
    reason="vars() builds no separate instance dict on this Python",
)
@pytest.mark.parametrize("case", ["store-sync-instance-dict-not-built"])
def test_asking_whether_it_steps_synchronously_leaves_the_instance_dict_alone(
    case: str,
) -> None:
    store = MemoryStore()
    assert store.steps_synchronously
    assert not _instance_dict_is_built(store)
    vars(store)  # what the check used to do
    assert _instance_dict_is_built(store)  # so the probe above can see it


@given(
    now=st.floats(0, 2.0**33, allow_nan=False)
    | st.integers(0, 2**33)
    | st.integers(0, 2**33).map(lambda us: (us + 0.5) / MICROSECONDS)  # halfway cases
)
def test_the_direct_round_is_round(now: float) -> None:
    assert memory._round_float(now * memory._MICROSECONDS_FLOAT) == round(now * MICROSECONDS)


@pytest.mark.parametrize("case", ["store-step-whole-second-clock"])
def test_a_clock_of_whole_seconds_steps_as_a_float_clock(case: str) -> None:
    """A clock that returns `int` seconds gets the verdicts of the same clock in floats."""
    whole = FakeClock(1_700_000_000)
    floats = FakeClock(1_700_000_000.0)
    by_int, by_float = MemoryStore(clock=whole), MemoryStore(clock=floats)
    limit = parse_limit(1.0, 2.0)
    for advance in (0, 0, 0, 0, 1, 0, 5, 0, 0, 0):
        whole.advance(advance)
        floats.advance(float(advance))
        assert isinstance(whole(), int)
        got = by_int.gcra_unless_now("ban:c", "rl:c", limit)
        assert got == by_float.gcra_unless_now("ban:c", "rl:c", limit)
        assert by_int.gcra_now("rl:d", limit) == by_float.gcra_now("rl:d", limit)
    assert list(by_int._data.items()) == list(by_float._data.items())
