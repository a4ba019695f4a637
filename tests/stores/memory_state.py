"""What the memory store's parity tests share: a store whose periodic work (sweeps,
rebuilds, cold-end snapshots) comes every few writes, and the comparison of two
stores' whole internal state, so that a fast path is held to the general one in
everything it leaves behind, not only in what it returns."""

from __future__ import annotations

import pytest

from bastion.stores import memory
from bastion.stores.memory import MemoryStore


def make_periodic_work_frequent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sweeps, rebuilds and cold-end snapshots every few writes, not every thousand."""
    monkeypatch.setattr(memory, "_COLD_SNAPSHOT", 2)
    monkeypatch.setattr(memory, "_COMPACT_MIN_DELETIONS", 3)
    monkeypatch.setattr(memory, "_SWEEP_EVERY_WRITES", 3)
    monkeypatch.setattr(memory, "_SWEEP_BATCH", 2)


def assert_same_state(a: MemoryStore, b: MemoryStore) -> None:
    """The two stores hold the same entries in the same order, with the same
    accounting and the same state of their periodic work."""
    assert list(a._data.items()) == list(b._data.items())
    assert (len(a), a.size_bytes, a._newest) == (len(b), b.size_bytes, b._newest)
    assert (a._deleted, a._compact_at, a._writes_to_sweep) == (
        b._deleted,
        b._compact_at,
        b._writes_to_sweep,
    )
    assert (a._cold, a._cold_next, a._cold_live) == (b._cold, b._cold_next, b._cold_live)
