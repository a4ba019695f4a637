"""The store contract, run against every implementation (memory, SQLite, Redis,
Redis Cluster) through the parametrised `backend` fixture.

Durations are short (a fraction of a second) so the real-Redis runs can let them
pass for real; memory and SQLite move a fake clock and assert times exactly.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from bastion.exceptions import StoreError
from bastion.stores import MAX_KEY_BYTES, MAX_VALUE_BYTES, Store
from tests.stores.conftest import Backend

pytestmark = pytest.mark.anyio

TTL = 0.2


async def test_implements_the_protocol(backend: Backend) -> None:
    assert isinstance(backend.store, Store)
    await backend.store.ping()


# -- get / set / delete ----------------------------------------------------------


async def test_get_set_delete(backend: Backend) -> None:
    store = backend.store
    assert await store.get("k") is None
    await store.set("k", b"one", None)
    assert await store.get("k") == b"one"
    await store.set("k", b"two", None)
    assert await store.get("k") == b"two"
    assert await store.delete("k") is True
    assert await store.delete("k") is False
    assert await store.get("k") is None


async def test_values_are_bytes_exactly(backend: Backend) -> None:
    every_byte = bytes(range(256))
    await backend.store.set("binary", every_byte, None)
    await backend.store.set("empty", b"", None)
    assert await backend.store.get("binary") == every_byte
    assert await backend.store.get("empty") == b""


async def test_keys_are_distinct(backend: Backend) -> None:
    store = backend.store
    keys = ["a", "A", "a ", "a:b", "a{b}", "{a}", "a}", "{", "owner:{a}", "ключ", "鍵"]
    for index, key in enumerate(keys):
        await store.set(key, str(index).encode(), None)
    for index, key in enumerate(keys):
        assert await store.get(key) == str(index).encode(), key


async def test_unicode_keys(backend: Backend) -> None:
    store = backend.store
    key = "session:ключ:🔑:用户"
    await store.set(key, b"v", TTL)
    assert await store.get(key) == b"v"
    assert await store.get("session:ключ:🔑:用戶") is None
    assert await store.incr("counter:é", ttl_seconds=None) == 1
    await store.add_to_owner("usér:🔑", key, TTL)
    assert await store.delete_owned("usér:🔑") == 1
    assert await store.get(key) is None


# -- expiry ----------------------------------------------------------------------


async def test_ttl_expiry(backend: Backend) -> None:
    store = backend.store
    await store.set("k", b"v", TTL)
    await store.set("forever", b"v", None)
    assert await store.get("k") == b"v"
    await backend.pass_time(TTL)
    assert await store.get("k") is None
    assert await store.delete("k") is False
    assert await store.get("forever") == b"v"


# Only the fake-clock backends: real Redis time cannot be stopped just before the TTL
# (test_ttl_expiry covers Redis with real time).
@pytest.mark.parametrize("backend", ["memory", "sqlite"], indirect=True)
async def test_ttl_is_exact_on_a_fake_clock(backend: Backend) -> None:
    assert backend.exact_time
    store = backend.store
    await store.set("k", b"v", 10.0)
    await backend.pass_time(9.999)
    assert await store.get("k") == b"v"
    await backend.pass_time(0.001)
    assert await store.get("k") is None


async def test_set_replaces_the_ttl(backend: Backend) -> None:
    store = backend.store
    await store.set("k", b"short", TTL)
    await store.set("k", b"long", None)
    await store.set("j", b"long", None)
    await store.set("j", b"short", TTL)
    await backend.pass_time(TTL)
    assert await store.get("k") == b"long"
    assert await store.get("j") is None


# -- set_if_absent ---------------------------------------------------------------


async def test_set_if_absent(backend: Backend) -> None:
    store = backend.store
    assert await store.set_if_absent("id", b"first", TTL) is True
    assert await store.set_if_absent("id", b"second", TTL) is False
    assert await store.get("id") == b"first"


async def test_set_if_absent_treats_expired_as_absent(backend: Backend) -> None:
    store = backend.store
    assert await store.set_if_absent("id", b"first", TTL) is True
    await backend.pass_time(TTL)
    assert await store.set_if_absent("id", b"second", None) is True
    assert await store.get("id") == b"second"


async def test_set_if_absent_has_exactly_one_winner(backend: Backend) -> None:
    store = backend.store
    contenders = [f"contender-{i}".encode() for i in range(50)]
    results = await asyncio.gather(*(store.set_if_absent("id", c, None) for c in contenders))
    assert results.count(True) == 1
    assert await store.get("id") == contenders[results.index(True)]


# -- incr ------------------------------------------------------------------------


async def test_incr(backend: Backend) -> None:
    store = backend.store
    assert await store.incr("n", ttl_seconds=None) == 1
    assert await store.incr("n", ttl_seconds=None) == 2
    assert await store.incr("n", 10, ttl_seconds=None) == 12
    assert await store.incr("n", -20, ttl_seconds=None) == -8
    assert await store.get("n") == b"-8"
    assert await store.incr("zero", 0, ttl_seconds=None) == 0


async def test_incr_sets_the_ttl_on_creation_only(backend: Backend) -> None:
    store = backend.store
    assert await store.incr("window", ttl_seconds=TTL * 2) == 1
    await backend.pass_time(TTL)
    # A later increment with another TTL does not extend the window.
    assert await store.incr("window", ttl_seconds=100.0) == 2
    await backend.pass_time(TTL)
    assert await store.get("window") is None
    assert await store.incr("window", ttl_seconds=TTL) == 1


async def test_touch_extends_a_live_key_and_keeps_its_value(backend: Backend) -> None:
    store = backend.store
    assert await store.incr("slots", ttl_seconds=TTL * 2) == 1
    await store.set("blob", b"v", TTL * 2)
    await backend.pass_time(TTL)
    assert await store.touch("slots", TTL * 3) is True
    assert await store.touch("blob", TTL * 3) is True
    await backend.pass_time(TTL * 2)  # past the creation-time TTL, within the new one
    assert await store.get("slots") == b"1"
    assert await store.get("blob") == b"v"
    assert await store.incr("slots", ttl_seconds=TTL) == 2
    await backend.pass_time(TTL)
    assert await store.get("slots") is None


async def test_touch_never_creates_a_key(backend: Backend) -> None:
    store = backend.store
    assert await store.touch("absent", TTL) is False
    assert await store.get("absent") is None
    await store.set("gone", b"v", TTL)
    await backend.pass_time(TTL)
    assert await store.touch("gone", 100.0) is False
    assert await store.get("gone") is None


async def test_touch_gives_a_key_without_expiry_a_ttl(backend: Backend) -> None:
    store = backend.store
    await store.set("forever", b"v", None)
    assert await store.touch("forever", TTL) is True
    await backend.pass_time(TTL)
    assert await store.get("forever") is None


async def test_touch_validates_its_arguments(backend: Backend) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        await backend.store.touch("k", 0)
    with pytest.raises(ValueError, match="key"):
        await backend.store.touch("", TTL)


async def test_incr_is_atomic_under_concurrency(backend: Backend) -> None:
    store = backend.store
    results = await asyncio.gather(*(store.incr("hits", ttl_seconds=60.0) for _ in range(100)))
    assert sorted(results) == list(range(1, 101))
    assert await store.get("hits") == b"100"


async def test_incr_on_a_non_integer_is_a_store_error(backend: Backend) -> None:
    await backend.store.set("text", b"not a number", None)
    with pytest.raises(StoreError):
        await backend.store.incr("text", ttl_seconds=None)
    assert await backend.store.get("text") == b"not a number"


async def test_incr_stays_within_64_bits(backend: Backend) -> None:
    store = backend.store
    assert await store.incr("big", 2**63 - 1, ttl_seconds=None) == 2**63 - 1
    with pytest.raises(StoreError):
        await store.incr("big", 1, ttl_seconds=None)
    assert await store.get("big") == str(2**63 - 1).encode()
    with pytest.raises(ValueError, match="64-bit"):
        await store.incr("big", 2**63, ttl_seconds=None)


# -- gcra ------------------------------------------------------------------------

# One request per 0.5 s with a burst of 3: long enough that real Redis cannot earn
# a token back between the calls of a burst.
INTERVAL = 0.5
TOLERANCE = 1.0


async def _gcra(store: Store, key: str = "rl", cost: int = 1) -> tuple[bool, int, float, float]:
    result = await store.gcra(
        key, emission_interval_seconds=INTERVAL, burst_tolerance_seconds=TOLERANCE, cost=cost
    )
    assert result.limit == 3
    return result.allowed, result.remaining, result.retry_after_seconds, result.reset_after_seconds


async def test_gcra_burst_then_refusal_then_recovery(backend: Backend) -> None:
    store = backend.store
    burst = [await _gcra(store) for _ in range(3)]
    assert [(allowed, remaining) for allowed, remaining, _, _ in burst] == [
        (True, 2),
        (True, 1),
        (True, 0),
    ]
    assert all(retry == 0 for _, _, retry, _ in burst)
    allowed, remaining, retry_after, reset_after = await _gcra(store)
    assert (allowed, remaining) == (False, 0)
    assert 0 < retry_after <= INTERVAL
    assert INTERVAL * 2 < reset_after <= INTERVAL * 3
    if backend.exact_time:
        assert burst[-1][3] == INTERVAL * 3  # reset: three intervals to refill
        assert (retry_after, reset_after) == (INTERVAL, INTERVAL * 3)
        # A refused request costs nothing: asking again gives the same answer.
        assert await _gcra(store) == (False, 0, INTERVAL, INTERVAL * 3)
        await backend.pass_time(INTERVAL - 0.001)
        assert (await _gcra(store))[0] is False
        await backend.pass_time(0.001)
    else:
        await backend.pass_time(retry_after)
    allowed, remaining, _, _ = await _gcra(store)
    assert (allowed, remaining) == (True, 0)


async def test_gcra_refills_after_idle_and_the_key_expires(backend: Backend) -> None:
    store = backend.store
    for _ in range(3):
        assert (await _gcra(store))[0]
    await backend.pass_time(INTERVAL * 3)
    assert await store.get("rl") is None  # a full bucket needs no state
    results = [(await _gcra(store))[0] for _ in range(4)]
    assert results == [True, True, True, False]


async def test_gcra_cost(backend: Backend) -> None:
    store = backend.store
    assert (await _gcra(store, cost=2))[:2] == (True, 1)
    allowed, remaining, retry_after, _ = await _gcra(store, cost=2)
    assert (allowed, remaining) == (False, 1)
    assert 0 < retry_after <= INTERVAL
    assert (await _gcra(store, cost=1))[:2] == (True, 0)
    with pytest.raises(ValueError, match="never allowed"):
        await _gcra(store, cost=4)


async def test_gcra_cost_zero_peeks_without_consuming(backend: Backend) -> None:
    store = backend.store
    assert (await _gcra(store, cost=0))[:2] == (True, 3)
    assert await store.get("rl") is None
    assert (await _gcra(store))[:2] == (True, 2)
    assert (await _gcra(store, cost=0))[:2] == (True, 2)


async def test_gcra_is_exact_under_concurrency(backend: Backend) -> None:
    store = backend.store
    results = await asyncio.gather(
        *(
            store.gcra("burst", emission_interval_seconds=60.0, burst_tolerance_seconds=240.0)
            for _ in range(30)
        )
    )
    assert sum(result.allowed for result in results) == 5
    assert sorted(result.remaining for result in results if result.allowed) == [0, 1, 2, 3, 4]


async def test_gcra_keys_are_independent(backend: Backend) -> None:
    store = backend.store
    for _ in range(3):
        assert (await _gcra(store, "client-a"))[0]
    assert not (await _gcra(store, "client-a"))[0]
    assert (await _gcra(store, "client-b"))[0]


async def test_gcra_on_a_corrupted_state_is_a_store_error(backend: Backend) -> None:
    await backend.store.set("rl", b"garbage", None)
    with pytest.raises(StoreError):
        await _gcra(backend.store)


@pytest.mark.parametrize("state", [b"1.5", b"0x10", b" 5", b"1e3", b""])
async def test_gcra_accepts_only_an_integer_state(backend: Backend, state: bytes) -> None:
    await backend.store.set("rl", state, None)
    with pytest.raises(StoreError):
        await _gcra(backend.store)


@pytest.mark.parametrize(
    ("interval", "tolerance"),
    [
        pytest.param(0.0, 1.0, id="zero-interval"),
        pytest.param(-1.0, 1.0, id="negative-interval"),
        pytest.param(1.0, -1.0, id="negative-tolerance"),
        pytest.param(math.nan, 1.0, id="nan"),
        pytest.param(math.inf, 1.0, id="infinite"),
    ],
)
async def test_gcra_rejects_bad_parameters(
    backend: Backend, interval: float, tolerance: float
) -> None:
    with pytest.raises(ValueError, match="_seconds"):
        await backend.store.gcra(
            "rl", emission_interval_seconds=interval, burst_tolerance_seconds=tolerance
        )


# -- owner index -----------------------------------------------------------------


async def test_delete_owned_deletes_exactly_the_owners_keys(backend: Backend) -> None:
    store = backend.store
    for key in ("s1", "s2", "s3"):
        await store.set(key, b"alice", 60.0)
        await store.add_to_owner("alice", key, 60.0)
    await store.set("s4", b"bob", 60.0)
    await store.add_to_owner("bob", "s4", 60.0)
    await store.set("unowned", b"x", 60.0)
    assert await store.delete_owned("alice") == 3
    assert [await store.get(key) for key in ("s1", "s2", "s3")] == [None, None, None]
    assert await store.get("s4") == b"bob"
    assert await store.get("unowned") == b"x"
    assert await store.delete_owned("alice") == 0
    assert await store.delete_owned("nobody") == 0
    assert await store.delete_owned("bob") == 1


async def test_delete_owned_counts_only_live_keys(backend: Backend) -> None:
    store = backend.store
    await store.set("gone", b"x", 60.0)
    await store.add_to_owner("alice", "gone", 60.0)
    await store.delete("gone")  # logged out one session by itself
    await store.set("live", b"x", 60.0)
    await store.add_to_owner("alice", "live", 60.0)
    await store.add_to_owner("alice", "live", 60.0)  # re-adding is harmless
    assert await store.delete_owned("alice") == 1


async def test_owner_index_entries_expire(backend: Backend) -> None:
    store = backend.store
    await store.set("s1", b"x", TTL)
    await store.add_to_owner("alice", "s1", TTL)
    await backend.pass_time(TTL)
    assert await store.delete_owned("alice") == 0


async def test_re_adding_extends_and_never_shortens(backend: Backend) -> None:
    store = backend.store
    await store.set("s1", b"x", None)
    await store.add_to_owner("alice", "s1", TTL)
    await store.add_to_owner("alice", "s1", 60.0)
    await store.add_to_owner("alice", "s1", TTL)
    await backend.pass_time(TTL)
    assert await store.delete_owned("alice") == 1


async def test_owner_bound_deletes_the_keys_that_expire_first(backend: Backend) -> None:
    store = backend.make(max_keys_per_owner=3)
    for index, ttl in enumerate((10.0, 20.0, 30.0, 40.0)):
        await store.set(f"s{index}", b"x", ttl)
        await store.add_to_owner("alice", f"s{index}", ttl)
    assert await store.get("s0") is None  # over the bound: fail safe, the oldest ends
    assert [await store.get(f"s{i}") for i in (1, 2, 3)] == [b"x", b"x", b"x"]
    assert await store.delete_owned("alice") == 3


# -- limits ----------------------------------------------------------------------

BAD_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("k" * (MAX_KEY_BYTES + 1), id="too-long"),
    pytest.param("é" * (MAX_KEY_BYTES // 2 + 1), id="too-long-in-utf8"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\x7fb", id="del"),
    pytest.param("a\x85b", id="c1-control"),
    pytest.param("a\ud800b", id="lone-surrogate"),
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_refused(backend: Backend, key: str) -> None:
    store = backend.store
    with pytest.raises(ValueError, match="store key"):
        await store.set(key, b"v", None)
    with pytest.raises(ValueError, match="store key"):
        await store.get(key)
    with pytest.raises(ValueError, match="store key"):
        await store.incr(key, ttl_seconds=None)
    with pytest.raises(ValueError, match="store key"):
        await store.gcra(key, emission_interval_seconds=1.0, burst_tolerance_seconds=0.0)
    for guard, bucket in ((key, "rl:k"), ("ban:k", key)):
        with pytest.raises(ValueError, match="store key"):
            await store.gcra_unless(
                guard, bucket, emission_interval_seconds=1.0, burst_tolerance_seconds=0.0
            )
    with pytest.raises(ValueError, match="store owner"):
        await store.add_to_owner(key, "k", 1.0)
    with pytest.raises(ValueError, match="store owner"):
        await store.delete_owned(key)


async def test_longest_keys_are_accepted(backend: Backend) -> None:
    store = backend.store
    for key in ("k" * MAX_KEY_BYTES, "é" * (MAX_KEY_BYTES // 2)):
        await store.set(key, b"v", None)
        assert await store.get(key) == b"v"


async def test_value_size_limit(backend: Backend) -> None:
    store = backend.store
    largest = b"x" * MAX_VALUE_BYTES
    await store.set("big", largest, None)
    assert await store.get("big") == largest
    with pytest.raises(ValueError, match="at most"):
        await store.set("big", largest + b"x", None)
    with pytest.raises(ValueError, match="at most"):
        await store.set_if_absent("other", largest + b"x", None)
    with pytest.raises(TypeError):
        await store.set("text", "not bytes", None)  # type: ignore[arg-type]  # the point


@pytest.mark.parametrize(
    "ttl",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1.0, id="negative"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="infinite"),
        pytest.param(1e12, id="absurd"),
    ],
)
async def test_bad_ttls_are_refused(backend: Backend, ttl: float) -> None:
    store = backend.store
    with pytest.raises(ValueError, match="ttl_seconds"):
        await store.set("k", b"v", ttl)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await store.incr("k", ttl_seconds=ttl)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await store.add_to_owner("o", "k", ttl)
    assert await store.get("k") is None


# -- lifecycle -------------------------------------------------------------------


async def test_closed_store_raises_store_error(backend: Backend) -> None:
    store = backend.make()
    await store.set("k", b"v", None)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError):
        await store.get("k")
    with pytest.raises(StoreError):
        await store.touch("k", 1.0)
    with pytest.raises(StoreError):
        await store.ping()


# -- gcra_unless -------------------------------------------------------------------


async def _gcra_unless(store: Store, guard: str = "ban") -> bool | None:
    result = await store.gcra_unless(
        guard, "guarded", emission_interval_seconds=INTERVAL, burst_tolerance_seconds=TOLERANCE
    )
    return None if result is None else result.allowed


async def test_gcra_unless_steps_while_the_guard_is_absent(backend: Backend) -> None:
    store = backend.store
    assert [await _gcra_unless(store) for _ in range(4)] == [True, True, True, False]


async def test_gcra_unless_refuses_without_spending_while_the_guard_is_live(
    backend: Backend,
) -> None:
    store = backend.store
    await store.set("ban", b"1", TTL)
    assert [await _gcra_unless(store) for _ in range(5)] == [None] * 5
    await store.delete("ban")
    # Nothing was spent while the guard held: the whole burst is still there.
    assert [await _gcra_unless(store) for _ in range(4)] == [True, True, True, False]


async def test_gcra_unless_ignores_an_expired_guard(backend: Backend) -> None:
    store = backend.store
    await store.set("ban", b"1", TTL)
    await backend.pass_time(TTL)
    assert await _gcra_unless(store) is True


async def test_gcra_unless_guards_are_independent(backend: Backend) -> None:
    store = backend.store
    await store.set("ban-a", b"1", TTL)
    assert await _gcra_unless(store, "ban-a") is None
    assert await _gcra_unless(store, "ban-b") is True
