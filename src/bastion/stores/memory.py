"""The in-process store: bounded, LRU with TTL, the default.

Threat: a client sprays distinct keys (a new rate-limit bucket, a new session per
request) until the process runs out of memory.
Defence: the store holds at most `max_entries` entries and `max_bytes` of keys and
values; past either bound it evicts the least recently used entry. Expired entries
are dropped when touched, and a few from the cold end on every write, with no
background thread. Spraying any number of keys leaves it at its bound.

Eviction is fail safe: an evicted session logs its user out, an evicted rate-limit
bucket starts full (which a sprayer could exploit only by evicting the buckets it
wants reset, so size the store above the working set). An evicted owner index
takes its owned keys with it, so a key is never live while unreachable by
`delete_owned`.

Atomicity: every method runs without an `await` between its read and its write, so
on one event loop each step is indivisible. The store is per process: several
workers each have their own, which is why production deployments with more than
one worker use SQLite or Redis.

Layout: one `OrderedDict` from key to an `(expires_at, value)` tuple, oldest first.
A value is `bytes`, an `int` (counters and GCRA TATs, printed as decimal ASCII by
`get`), or for an owner index a dict from owned key to its expiry, stored under a
key starting with NUL, which no caller's key can (control characters are refused).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, TypeAlias

from bastion.exceptions import StoreError
from bastion.stores.base import (
    DEFAULT_MAX_KEYS_PER_OWNER,
    MAX_VALUE_BYTES,
    check_amount,
    check_counter,
    check_key,
    check_required_ttl,
    check_ttl,
    check_value,
    parse_counter,
)
from bastion.stores.gcra import (
    MICROSECONDS,
    GCRAResult,
    gcra_step,
    parse_limit,
    to_microseconds,
)

# 100,000 entries of a typical size (a 60-character key, up to a few hundred bytes
# of value) take 20-60 MB: fine for a laptop or a container, and above the working
# set of a single process (one rate-limit bucket per active client and route, one
# session per signed-in user).
DEFAULT_MAX_ENTRIES: Final = 100_000
# Bounds memory when values are large: 100,000 sessions of 1 KiB, with room to spare.
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024
# Expired entries dropped from the cold end per write: enough to keep ahead of
# expiry under steady load, small enough that no write pays for a backlog.
_SWEEP_PER_WRITE: Final = 2
_OWNER_PREFIX: Final = "\x00owner:"
_NEVER: Final = math.inf
_INT_COST: Final = 8  # bytes charged for a counter, like a C int64
_MEMBER_COST: Final = 8  # bytes charged per owner-index member on top of its key

_Index: TypeAlias = dict[str, float]
_Value: TypeAlias = bytes | int | _Index
_Entry: TypeAlias = tuple[float, _Value]


def _size(key: str, value: _Value) -> tuple[int, int]:
    """(entries, bytes) charged for one stored item."""
    if isinstance(value, bytes):
        return 1, len(key) + len(value)
    if isinstance(value, int):
        return 1, len(key) + _INT_COST
    return 1 + len(value), len(key) + sum(len(k) + _MEMBER_COST for k in value)


class MemoryStore:
    """A bounded in-process `Store`; see the module docstring."""

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_keys_per_owner: int = DEFAULT_MAX_KEYS_PER_OWNER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if max_bytes < 2 * MAX_VALUE_BYTES:
            raise ValueError(f"max_bytes must be at least {2 * MAX_VALUE_BYTES} (two values)")
        if max_keys_per_owner < 1:
            raise ValueError("max_keys_per_owner must be at least 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_keys_per_owner = max_keys_per_owner
        self._clock = clock
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._entries = 0
        self._bytes = 0
        self._closed = False

    def __len__(self) -> int:
        """Entries held, counting each owner-index member as one."""
        return self._entries

    @property
    def size_bytes(self) -> int:
        """Bytes of keys and values held, as charged against `max_bytes`."""
        return self._bytes

    def __repr__(self) -> str:
        return f"MemoryStore(max_entries={self.max_entries}, entries={self._entries})"

    # -- the protocol ------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        check_key(key)
        value = self._live(key, self._now())
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode("ascii")

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        check_key(key)
        check_value(value)
        ttl = check_ttl(ttl_seconds)
        now = self._now()
        self._put(key, _expiry(now, ttl), value, now)

    async def delete(self, key: str) -> bool:
        check_key(key)
        now = self._now()
        present = self._live(key, now) is not None
        self._discard(key)
        return present

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        check_key(key)
        check_value(value)
        ttl = check_ttl(ttl_seconds)
        now = self._now()
        if self._live(key, now) is not None:
            return False
        self._put(key, _expiry(now, ttl), value, now)
        return True

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None) -> int:
        check_key(key)
        check_amount(amount)
        ttl = check_ttl(ttl_seconds)
        now = self._now()
        entry = self._data.get(key)
        current = self._live(key, now)
        if current is None or entry is None:
            result = check_counter(amount)
            expires_at = _expiry(now, ttl)
        else:
            if isinstance(current, dict):  # pragma: no cover - unreachable: NUL keys
                raise StoreError("store key does not hold an integer")
            result = check_counter(parse_counter(current) + amount)
            expires_at = entry[0]
        self._put(key, expires_at, result, now)
        return result

    async def touch(self, key: str, ttl_seconds: float) -> bool:
        check_key(key)
        ttl = check_required_ttl(ttl_seconds)
        now = self._now()
        current = self._live(key, now)
        if current is None:
            return False
        self._put(key, now + ttl, current, now)
        return True

    async def gcra(
        self,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult:
        check_key(key)
        limit = parse_limit(emission_interval_seconds, burst_tolerance_seconds, cost)
        now = self._now()
        current = self._live(key, now)
        if isinstance(current, dict):  # pragma: no cover - unreachable: NUL keys
            raise StoreError("store key does not hold a GCRA state")
        stored = None if current is None else parse_counter(current)
        step = gcra_step(stored, to_microseconds(now), limit)
        if step.tat_us is not None:
            self._put(key, step.tat_us / MICROSECONDS, step.tat_us, now)
        return step.result()

    async def add_to_owner(self, owner: str, key: str, ttl_seconds: float) -> None:
        check_key(owner, "owner")
        check_key(key)
        ttl = check_required_ttl(ttl_seconds)
        now = self._now()
        index_key = _OWNER_PREFIX + owner
        current = self._live(index_key, now)
        index: _Index = current if isinstance(current, dict) else {}
        self._discard(index_key)
        expires_at = now + ttl
        if index.get(key, -_NEVER) < expires_at:
            index[key] = expires_at
        if len(index) > self.max_keys_per_owner:
            self._shed(index, now)
        self._put(index_key, max(index.values()), index, now)

    async def delete_owned(self, owner: str) -> int:
        check_key(owner, "owner")
        now = self._now()
        index_key = _OWNER_PREFIX + owner
        current = self._live(index_key, now)
        self._discard(index_key)
        if not isinstance(current, dict):
            return 0
        deleted = 0
        for key in current:
            if self._live(key, now) is not None:
                deleted += 1
            self._discard(key)
        return deleted

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True
        self._data.clear()
        self._entries = self._bytes = 0

    # -- internals: no await below, so each public step is atomic ----------------

    def _now(self) -> float:
        self._check_open()
        return self._clock()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory store is closed")

    def _live(self, key: str, now: float) -> _Value | None:
        """The value of `key` if live (marking it recently used); drops it if expired."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            self._discard(key)
            return None
        self._data.move_to_end(key)
        return entry[1]

    def _put(self, key: str, expires_at: float, value: _Value, now: float) -> None:
        self._discard(key)
        self._data[key] = (expires_at, value)
        entries, size = _size(key, value)
        self._entries += entries
        self._bytes += size
        self._sweep(now)
        while self._entries > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._data))
            if oldest == key:  # the new entry alone is over the bound: keep it
                break
            self._evict(oldest)

    def _discard(self, key: str) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            entries, size = _size(key, entry[1])
            self._entries -= entries
            self._bytes -= size

    def _evict(self, key: str) -> None:
        entry = self._data.get(key)
        self._discard(key)
        if entry is not None and isinstance(entry[1], dict):
            # Fail safe: keys whose index is gone could no longer be revoked.
            for owned in entry[1]:
                self._discard(owned)

    def _sweep(self, now: float) -> None:
        for _ in range(_SWEEP_PER_WRITE):
            if not self._data:
                return
            oldest = next(iter(self._data))
            if self._data[oldest][0] > now:
                return
            self._evict(oldest)

    def _shed(self, index: _Index, now: float) -> None:
        """Bring an over-full owner index back to its bound, fail safe."""
        for key, expires_at in list(index.items()):
            entry = self._data.get(key)
            if expires_at <= now or entry is None or entry[0] <= now:
                del index[key]
        overflow = len(index) - self.max_keys_per_owner
        if overflow > 0:
            for key in sorted(index, key=index.__getitem__)[:overflow]:
                del index[key]
                self._discard(key)


def _expiry(now: float, ttl: float | None) -> float:
    return _NEVER if ttl is None else now + ttl
