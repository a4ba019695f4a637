"""An owner index that expires goes alone, on every store; one evicted for space
while live takes its keys along (the memory store's fail-safe bound).

Found in the audit: the memory store's sweep dropped an expired index through the
eviction path, which deletes every key the index lists, so a key still live (kept
alive past its index entry) was deleted when the sweep happened to reach its index,
and kept when a read did. SQLite (whose sweep deletes expired index rows) and Redis
(whose index is a sorted set that the server expires) leave such keys alone. Expiry
is not eviction for space: the three now agree.
"""

from __future__ import annotations

import pytest

from bastion.stores import MemoryStore, SQLiteStore
from bastion.stores import memory as memory_module
from bastion.stores.memory import _index_digest
from tests.stores.conftest import Backend
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio

TTL = 0.2


async def _reclaim_expired(backend: Backend) -> None:
    """Let the store reclaim what expired, as it does under load: the memory store's
    sweep (every so many writes, from the cold end), the SQLite sweep. Redis expires
    the index on the server; nothing to do."""
    store = backend.store
    if isinstance(store, MemoryStore):
        for i in range(memory_module._SWEEP_EVERY_WRITES):
            await store.set(f"traffic:{i}", b"x", None)
        assert _index_digest("alice") not in store._data  # the sweep reached the index
    elif isinstance(store, SQLiteStore):
        assert await store.sweep() >= 1


async def test_an_expired_index_leaves_its_live_keys_alone(backend: Backend) -> None:
    """`owner-index-expired-keeps-live-keys`: a key indexed for `TTL`, then kept alive
    (`touch`, as a used session is) past its entry: once the index has expired and
    been reclaimed, the key is still there with its value, on every store, and
    the index no longer reaches it (the caller's part is to index a key for its
    whole life, as the session layer does)."""
    store = backend.store
    await store.set("s1", b"alice", TTL)
    await store.add_to_owner("alice", "s1", TTL)
    assert await store.touch("s1", 60.0) is True  # used since: it lives on
    await backend.pass_time(TTL)
    await _reclaim_expired(backend)
    assert await store.get("s1") == b"alice"
    assert await store.delete_owned("alice") == 0
    assert await store.get("s1") == b"alice"


async def test_an_expired_index_goes_alone_but_its_expired_keys_go_too(backend: Backend) -> None:
    """`owner-index-expired-with-its-keys-ok`: the usual case, a key indexed for its
    whole life: key and index expire together and nothing of either is readable."""
    store = backend.store
    await store.set("s1", b"alice", TTL)
    await store.add_to_owner("alice", "s1", TTL)
    await backend.pass_time(TTL)
    await _reclaim_expired(backend)
    assert await store.get("s1") is None
    assert await store.delete_owned("alice") == 0


async def test_a_live_index_still_revokes_a_key_kept_alive_within_its_entry(
    backend: Backend,
) -> None:
    """`owner-index-live-revokes-ok`: the index lives as long as its longest entry;
    while it lives, `delete_owned` reaches its keys (the legitimate "log out
    everywhere" beside the expiry case)."""
    store = backend.store
    await store.set("s1", b"alice", TTL)
    await store.add_to_owner("alice", "s1", 60.0)
    assert await store.touch("s1", 30.0) is True
    await backend.pass_time(TTL)
    await store.set("other", b"x", None)
    assert await store.delete_owned("alice") == 1
    assert await store.get("s1") is None


@pytest.mark.parametrize(
    ("index_ttl", "key_kept"),
    [
        pytest.param(1.0, True, id="owner-index-expired-at-bound-keeps-live-keys"),
        pytest.param(60.0, False, id="owner-index-evicted-live-takes-keys-ok"),
    ],
)
async def test_memory_eviction_for_space_takes_only_a_live_index_keys(
    index_ttl: float, key_kept: bool
) -> None:
    """The memory store at its entry bound evicts its coldest entry, an owner index.
    Live, the index takes its keys along (fail safe: they could no longer be
    revoked); expired but not yet swept, it is only dropped, as the sweep drops it."""
    clock = FakeClock()
    store = MemoryStore(max_entries=4, clock=clock)
    await store.set("s1", b"alice", 60.0)
    await store.add_to_owner("alice", "s1", index_ttl)
    assert await store.get("s1") == b"alice"  # the index is now the coldest entry
    clock.advance(2.0)
    await store.set("filler:0", b"x", None)
    await store.set("filler:1", b"x", None)  # one over the bound: the index goes
    assert _index_digest("alice") not in store._data
    assert (await store.get("s1") == b"alice") is key_kept
    assert len(store) <= store.max_entries
