"""`Store.replace`, the atomic "write only over a live key", on every store (memory,
SQLite, Redis, Redis Cluster), with the memory store's bounds and bookkeeping.

Threat: a write that lands after its key was deleted or expired brings it back; the
session layer's write-back of a request still in flight after a logout would
resurrect the session. `replace` checks and writes in one store step, so a key
that is gone stays gone, whichever worker deleted it and however late the write.
"""

from __future__ import annotations

import asyncio
import math
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


# -- nothing is written over a key that is not live ---------------------------------


async def _absent(store: Store, backend: Backend) -> None:
    """The key was never written."""


async def _expired(store: Store, backend: Backend) -> None:
    await store.set("k", b"old", TTL)
    await backend.pass_time(TTL)


async def _deleted(store: Store, backend: Backend) -> None:
    await store.set("k", b"old", None)
    assert await store.delete("k") is True


async def _owner_revoked(store: Store, backend: Backend) -> None:
    await store.set("k", b"old", 60.0)
    await store.add_to_owner("alice", "k", 60.0)
    assert await store.delete_owned("alice") == 1


@pytest.mark.parametrize(
    "gone",
    [
        pytest.param(_absent, id="replace-missing-key-writes-nothing"),
        pytest.param(_expired, id="replace-expired-key-writes-nothing"),
        pytest.param(_deleted, id="replace-deleted-key-writes-nothing"),
        pytest.param(_owner_revoked, id="replace-revoked-key-writes-nothing"),
    ],
)
async def test_replace_never_brings_a_key_back(
    backend: Backend, gone: Callable[[Store, Backend], Awaitable[None]]
) -> None:
    store = backend.store
    await gone(store, backend)
    assert await store.replace("k", b"late write", 60.0) is False
    assert await store.get("k") is None
    # Nothing was left behind either: the key is free for a new owner.
    assert await store.set_if_absent("k", b"new", TTL) is True
    assert await store.get("k") == b"new"


# -- a live key is replaced, value and TTL ------------------------------------------


async def test_replace_live_key_ok(backend: Backend) -> None:
    """`replace-live-key-ok`: the legitimate write-back: value and TTL replaced."""
    store = backend.store
    await store.set("k", b"one", TTL * 2)
    assert await store.replace("k", b"two", TTL * 4) is True
    assert await store.get("k") == b"two"
    await backend.pass_time(TTL * 3)  # past the first TTL, within the new one
    assert await store.get("k") == b"two"
    assert await store.replace("k", b"three", TTL) is True  # a shorter TTL holds too
    assert await store.get("k") == b"three"
    await backend.pass_time(TTL)
    assert await store.get("k") is None


async def test_replace_live_key_without_expiry_ok(backend: Backend) -> None:
    """`replace-live-key-no-expiry-ok`: `None` means no expiry, as for `set`, and a
    key without expiry is live."""
    store = backend.store
    await store.set("k", b"one", TTL)
    assert await store.replace("k", b"two", None) is True
    await backend.pass_time(TTL)
    assert await store.get("k") == b"two"
    assert await store.replace("k", b"three", TTL) is True
    await backend.pass_time(TTL)
    assert await store.get("k") is None


async def test_replace_over_a_counter_writes_bytes_ok(backend: Backend) -> None:
    """`replace-live-counter-ok`: one key namespace: a counter is a live key, and
    the replaced value reads back as written, as after `set`."""
    store = backend.store
    assert await store.incr("k", 5, ttl_seconds=60.0) == 5
    assert await store.replace("k", b"\x00not a number", 60.0) is True
    assert await store.get("k") == b"\x00not a number"


async def test_replace_keys_are_independent(backend: Backend) -> None:
    """`replace-other-key-untouched`: a neighbour of the key, or one that only
    looks like it on Redis (hash tags), neither counts as live nor is written."""
    store = backend.store
    await store.set("a", b"a", 60.0)
    await store.set("{a}", b"tagged", 60.0)
    assert await store.replace("a ", b"x", 60.0) is False
    assert await store.replace("A", b"x", 60.0) is False
    assert await store.replace("a", b"new", 60.0) is True
    assert [await store.get(key) for key in ("a", "{a}", "a ", "A")] == [
        b"new",
        b"tagged",
        None,
        None,
    ]


async def test_replace_racing_a_delete_never_resurrects(backend: Backend) -> None:
    """`replace-racing-delete-never-resurrects`: write-backs from another store
    client (another worker) race one delete; whatever the order, once the delete
    has run no write lands, so the key ends absent (a `set` here could leave it)."""
    store = backend.store
    # Memory: one store per process, so the other worker is the same store.
    other = store if backend.name == "memory" else backend.make()
    await store.set("k", b"v0", 60.0)
    results = await asyncio.gather(
        *(other.replace("k", f"v{i}".encode(), 60.0) for i in range(1, 11)),
        store.delete("k"),
        *(other.replace("k", f"v{i}".encode(), 60.0) for i in range(11, 21)),
    )
    assert results[10] is True  # the delete found the key
    assert await store.get("k") is None
    assert await other.get("k") is None


# -- bad arguments change nothing ----------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "ttl", "error"),
    [
        pytest.param("", b"v", 60.0, ValueError, id="replace-empty-key-refused"),
        pytest.param(
            "k" * (MAX_KEY_BYTES + 1), b"v", 60.0, ValueError, id="replace-long-key-refused"
        ),
        pytest.param("k\nx", b"v", 60.0, ValueError, id="replace-control-key-refused"),
        pytest.param(
            "k", b"v" * (MAX_VALUE_BYTES + 1), 60.0, ValueError, id="replace-huge-value-refused"
        ),
        pytest.param("k", "text", 60.0, TypeError, id="replace-str-value-refused"),
        pytest.param("k", b"v", 0, ValueError, id="replace-zero-ttl-refused"),
        pytest.param("k", b"v", -1.0, ValueError, id="replace-negative-ttl-refused"),
        pytest.param("k", b"v", math.nan, ValueError, id="replace-nan-ttl-refused"),
        pytest.param("k", b"v", 1e12, ValueError, id="replace-absurd-ttl-refused"),
    ],
)
async def test_replace_refuses_bad_arguments_and_writes_nothing(
    backend: Backend, key: str, value: bytes, ttl: float, error: type[Exception]
) -> None:
    store = backend.store
    await store.set("k", b"kept", 60.0)
    with pytest.raises(error):
        await store.replace(key, value, ttl)
    assert await store.get("k") == b"kept"


async def test_replace_on_a_closed_store_is_a_store_error(backend: Backend) -> None:
    """`replace-closed-store`: a closed store raises `StoreError`, for the calling
    layer's fail mode (a session write-back then fails closed)."""
    store = backend.make()
    await store.set("k", b"v", None)
    await store.close()
    with pytest.raises(StoreError):
        await store.replace("k", b"w", 60.0)


# -- the memory store: as `set` on a live key, bounds and bookkeeping included --------


async def _run(write_back: str) -> tuple[MemoryStore, list[bool | None]]:
    """Sessions written, used, written back (by `set` or `replace`) past several
    sweeps, rebuilds and evictions; some keys expire on the way."""
    clock = FakeClock()
    store = MemoryStore(max_entries=10, clock=clock)
    answers: list[bool | None] = []
    for i in range(12):
        await store.set(f"s{i}", b"x" * i, 5.0 if i % 3 else 50.0)
    for round_ in range(4):
        clock.advance(2.0)
        for i in range(0, 12, 1 + round_ % 2):
            key, value = f"s{i}", b"y" * (i + round_)
            if await store.get(key) is None:
                answers.append(None)
            elif write_back == "set":
                await store.set(key, value, 30.0)
                answers.append(True)
            else:
                answers.append(await store.replace(key, value, 30.0))
    return store, answers


async def test_replace_of_a_live_key_leaves_the_state_set_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`replace-memory-same-state-as-set`: on a live key `replace` is `set`: the same
    entries in the same (recency) order, the same entry and byte counts, and the same
    state of the sweeps and rebuilds it triggers."""
    make_periodic_work_frequent(monkeypatch)
    by_set, answers = await _run("set")
    by_replace, replaced = await _run("replace")
    assert replaced == answers
    assert True in answers  # not vacuous: live keys were written back
    assert None in answers  # and some had expired or been evicted
    assert_same_state(by_set, by_replace)


async def test_replace_of_an_expired_key_leaves_the_state_get_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`replace-memory-expired-dropped`: an expired entry met by `replace` is dropped
    as a read drops it, and nothing else changes (no write, no sweep counted)."""
    make_periodic_work_frequent(monkeypatch)
    clock = FakeClock()
    read, replaced = MemoryStore(clock=clock), MemoryStore(clock=clock)
    for store in (read, replaced):
        await store.set("live", b"v", 60.0)
        await store.set("k", b"v", 1.0)
        await store.set("other", b"v", 60.0)
    clock.advance(2.0)
    assert await read.get("k") is None
    assert await replaced.replace("k", b"late", 60.0) is False
    assert_same_state(read, replaced)
    assert len(replaced) == 2


async def test_replace_respects_the_byte_bound(clock: FakeClock) -> None:
    """`replace-memory-byte-bound`: a write-back that grows a value past the byte
    bound evicts the least recently used entries, never the replaced key, and the
    store stays within its bound."""
    store = MemoryStore(max_bytes=2 * MAX_VALUE_BYTES, clock=clock)
    chunk = b"v" * (MAX_VALUE_BYTES // 4)
    for i in range(7):
        await store.set(f"k{i}", chunk, None)
    before = len(store)
    assert await store.replace("k3", b"w" * MAX_VALUE_BYTES, None) is True
    assert store.size_bytes <= store.max_bytes
    assert len(store) < before
    assert await store.get("k3") == b"w" * MAX_VALUE_BYTES
    assert await store.get("k0") is None  # the coldest went first
    assert await store.get("k6") == chunk


async def test_replace_never_adds_an_entry(clock: FakeClock) -> None:
    """`replace-memory-entry-bound`: a store at its entry bound stays there: a
    refused `replace` adds nothing, an accepted one replaces in place."""
    store = MemoryStore(max_entries=3, clock=clock)
    for key in ("a", "b", "c"):
        await store.set(key, b"1", None)
    assert await store.replace("d", b"1", None) is False
    assert len(store) == 3
    assert await store.replace("a", b"22", None) is True
    assert len(store) == 3
    assert [await store.get(key) for key in ("a", "b", "c", "d")] == [b"22", b"1", b"1", None]
