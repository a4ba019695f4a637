"""`Store.delete_if_equal`, the atomic compare-and-delete, on every store (memory,
SQLite, Redis, Redis Cluster), with the memory store's bookkeeping.

Threat: a caller releases a key it wrote (a login attempt's claim on its pair's
gate) after its own value expired and someone else wrote the key again (a lockout):
a plain `delete` then removes what it never wrote. `delete_if_equal` compares and
deletes in one store step, so only the caller's own value is ever deleted, whichever
worker wrote the other one and however late the release.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bastion.exceptions import StoreError
from bastion.stores import MAX_KEY_BYTES, MAX_VALUE_BYTES, Store
from bastion.stores.memory import MemoryStore
from tests.stores.conftest import Backend
from tests.stores.memory_state import assert_same_state, make_periodic_work_frequent
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio

TTL = 0.2
OWN = b"claim 5f0c"


# -- another value, or none, is never deleted -----------------------------------------


async def _expired_then_rewritten(store: Store, backend: Backend) -> bytes | None:
    """The caller's value expired, and another caller wrote the key since."""
    await store.set("k", OWN, TTL)
    await backend.pass_time(TTL)
    await store.set("k", b"locked", 60.0)
    return b"locked"


async def _overwritten(store: Store, backend: Backend) -> bytes | None:
    await store.set("k", OWN, 60.0)
    await store.set("k", b"claim 9a1e", 60.0)
    return b"claim 9a1e"


async def _prefix(store: Store, backend: Backend) -> bytes | None:
    """A value that only starts with the caller's (or that it only starts with)."""
    await store.set("k", OWN + b"0", None)
    return OWN + b"0"


async def _counter(store: Store, backend: Backend) -> bytes | None:
    await store.incr("k", 5, ttl_seconds=60.0)
    return b"5"


async def _expired(store: Store, backend: Backend) -> bytes | None:
    await store.set("k", OWN, TTL)
    await backend.pass_time(TTL)
    return None


async def _deleted(store: Store, backend: Backend) -> bytes | None:
    await store.set("k", OWN, None)
    assert await store.delete("k") is True
    return None


async def _absent(store: Store, backend: Backend) -> bytes | None:
    return None


@pytest.mark.parametrize(
    "before",
    [
        pytest.param(_expired_then_rewritten, id="delete-if-equal-rewritten-after-expiry-kept"),
        pytest.param(_overwritten, id="delete-if-equal-overwritten-kept"),
        pytest.param(_prefix, id="delete-if-equal-longer-value-kept"),
        pytest.param(_counter, id="delete-if-equal-counter-kept"),
        pytest.param(_expired, id="delete-if-equal-expired-false"),
        pytest.param(_deleted, id="delete-if-equal-deleted-false"),
        pytest.param(_absent, id="delete-if-equal-missing-false"),
    ],
)
async def test_only_the_callers_own_value_is_deleted(
    backend: Backend, before: Callable[[Store, Backend], Awaitable[bytes | None]]
) -> None:
    store = backend.store
    left = await before(store, backend)
    assert await store.delete_if_equal("k", OWN) is False
    assert await store.get("k") == left
    assert await store.delete_if_equal("k", OWN[:-1]) is False  # nor a shorter value
    assert await store.get("k") == left


# -- the caller's own value is deleted ------------------------------------------------


async def test_own_value_deleted_ok(backend: Backend) -> None:
    """`delete-if-equal-own-value-ok`: the legitimate release, with or without a TTL;
    the key is then free (a `set_if_absent` takes it) and a second call finds nothing."""
    store = backend.store
    for ttl in (60.0, None):
        await store.set("k", OWN, ttl)
        assert await store.delete_if_equal("k", OWN) is True
        assert await store.get("k") is None
        assert await store.delete_if_equal("k", OWN) is False
    assert await store.set_if_absent("k", b"next", 60.0) is True
    assert await store.get("k") == b"next"


async def test_a_counter_compares_as_get_reads_it_ok(backend: Backend) -> None:
    """`delete-if-equal-counter-as-read-ok`: one key namespace: a counter is
    compared as its decimal ASCII, as `get` returns it."""
    store = backend.store
    assert await store.incr("k", 12, ttl_seconds=60.0) == 12
    assert await store.delete_if_equal("k", b"012") is False
    assert await store.delete_if_equal("k", b"12") is True
    assert await store.get("k") is None


async def test_keys_are_independent(backend: Backend) -> None:
    """`delete-if-equal-other-key-untouched`: a neighbour of the key, or one that only
    looks like it on Redis (hash tags), holding the same value, is not deleted."""
    store = backend.store
    for key in ("a", "{a}", "a ", "A"):
        await store.set(key, OWN, 60.0)
    assert await store.delete_if_equal("a", OWN) is True
    assert [await store.get(key) for key in ("a", "{a}", "a ", "A")] == [None, OWN, OWN, OWN]


async def test_racing_releases_delete_once(backend: Backend) -> None:
    """`delete-if-equal-racing-once`: releases of one value from several store clients
    (workers) at once: exactly one deletes it; a write of another value racing them
    survives whenever it lands after the value was deleted or compared."""
    store = backend.store
    # Memory: one store per process, so the other worker is the same store.
    other = store if backend.name == "memory" else backend.make()
    await store.set("k", OWN, 60.0)
    results = await asyncio.gather(
        *(other.delete_if_equal("k", OWN) for _ in range(10)),
        store.delete_if_equal("k", OWN),
    )
    assert results.count(True) == 1
    await store.set("k", b"locked", 60.0)
    assert (
        await asyncio.gather(*(other.delete_if_equal("k", OWN) for _ in range(10))) == [False] * 10
    )
    assert await store.get("k") == b"locked"


# -- bad arguments change nothing ----------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        pytest.param("", OWN, ValueError, id="delete-if-equal-empty-key-refused"),
        pytest.param(
            "k" * (MAX_KEY_BYTES + 1), OWN, ValueError, id="delete-if-equal-long-key-refused"
        ),
        pytest.param("k\nx", OWN, ValueError, id="delete-if-equal-control-key-refused"),
        pytest.param(
            "k", b"v" * (MAX_VALUE_BYTES + 1), ValueError, id="delete-if-equal-huge-value-refused"
        ),
        pytest.param("k", OWN.decode(), TypeError, id="delete-if-equal-str-value-refused"),
        pytest.param("k", None, TypeError, id="delete-if-equal-none-value-refused"),
    ],
)
async def test_bad_arguments_are_refused_and_delete_nothing(
    backend: Backend, key: str, value: bytes, error: type[Exception]
) -> None:
    store = backend.store
    await store.set("k", OWN, 60.0)
    with pytest.raises(error):
        await store.delete_if_equal(key, value)
    assert await store.get("k") == OWN


async def test_a_closed_store_is_a_store_error(backend: Backend) -> None:
    """`delete-if-equal-closed-store`: a closed store raises `StoreError`, for the
    calling layer's fail mode."""
    store = backend.make()
    await store.set("k", OWN, None)
    await store.close()
    with pytest.raises(StoreError):
        await store.delete_if_equal("k", OWN)


async def test_a_binary_value_compares_byte_for_byte_ok(backend: Backend) -> None:
    """`delete-if-equal-binary-ok`: a value that is not text (NUL, bytes above
    0x7f) is compared byte for byte: deleted by itself only."""
    store = backend.store
    raw = bytes(range(256))
    await store.set("k", raw, 60.0)
    assert await store.delete_if_equal("k", raw[::-1]) is False
    assert await store.delete_if_equal("k", raw[:-1] + b"\x00") is False
    assert await store.delete_if_equal("k", raw) is True


# -- the memory store: a miss is a read, a hit is a delete ---------------------------


async def _fill(stores: tuple[MemoryStore, ...], clock: FakeClock) -> None:
    for store in stores:
        for i in range(8):
            await store.set(f"s{i}", b"v%d" % i, 5.0 if i % 3 else 50.0)
    clock.advance(6.0)  # some have expired


@pytest.mark.parametrize(
    ("key", "value", "reference"),
    [
        pytest.param("s3", b"v3", "delete", id="delete-if-equal-memory-hit-is-delete"),
        pytest.param("s3", b"other", "get", id="delete-if-equal-memory-miss-is-get"),
        pytest.param("s1", b"v1", "get", id="delete-if-equal-memory-expired-is-get"),
        pytest.param("absent", b"v", "get", id="delete-if-equal-memory-missing-is-get"),
    ],
)
async def test_memory_state_as_delete_or_get(
    key: str, value: bytes, reference: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the memory store a matching `delete_if_equal` leaves the state `delete`
    leaves, and any other leaves the state `get` leaves (recency included)."""
    make_periodic_work_frequent(monkeypatch)
    clock = FakeClock()
    compared, referenced = MemoryStore(clock=clock), MemoryStore(clock=clock)
    await _fill((compared, referenced), clock)
    deleted = await compared.delete_if_equal(key, value)
    if reference == "delete":
        assert deleted is True
        assert await referenced.delete(key) is True
    else:
        assert deleted is False
        await referenced.get(key)
    assert_same_state(compared, referenced)
