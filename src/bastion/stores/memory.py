"""The in-process store: bounded, LRU with TTL, the default.

Threat: a client sprays distinct keys (a new rate-limit bucket, a new session per
request) until the process runs out of memory.
Defence: the store holds at most `max_entries` entries and `max_bytes` of keys and
values; past either bound it evicts the least recently used entry. Expired entries
are dropped when touched, and a batch from the cold end every few writes, with no
background thread. Spraying any number of keys leaves it at its bound.

Eviction is fail safe: an evicted session logs its user out, an evicted rate-limit
bucket starts full (which a sprayer could exploit only by evicting the buckets it
wants reset, so size the store above the working set). An owner index evicted
while live takes its owned keys with it, so a key is never live while unreachable
by `delete_owned`. An index that expired is not evicted: it goes alone, as in the
SQLite and Redis stores. It expires with its last entry, so a key of it still live
was kept alive past its entry (a caller gives `add_to_owner` the key's longest
life, as sessions do, to keep it in reach), and it stays live, as there.

Atomicity: every method runs without an `await` between its read and its write, so
on one event loop each step is indivisible. The store is per process: several
workers each have their own, which is why production deployments with more than
one worker use SQLite or Redis.

Layout, kept small because a spray fills the store to its bound (under 200 bytes
per rate-limit bucket): one plain `dict`, in recency order (a used entry is taken
out and put back last), from a 15-byte BLAKE2b digest of the key (whatever the
key's length; 120 bits, so no two keys collide in practice and nobody can make
them) to the entry. A GCRA bucket is a bare `float`, its TAT in microseconds (whole,
and exact: a double holds every integer below 2**53, 285 years of microseconds),
which is also when it expires; everything else is an `(expires_at, value)` tuple,
the value `bytes`, an `int` counter (`get` prints both numbers as decimal ASCII), or
for an owner index a dict from owned key digest to its expiry, stored under the
digest of a name starting with NUL, which no caller's key can (control characters
are refused).

What an entry costs (tracemalloc, 1,000,000 buckets sprayed at the default bound):
the digest (48 bytes), the float (24) and its share of the dict's table (about 52:
a slot of 24 bytes, a 4-byte index, room to spare). Three choices keep it there:

* No `OrderedDict`: its linked list and node index cost another 53 bytes per entry.
  Without it, the least recently used entry is the dict's first, but a dict keeps
  the slots of deleted keys until it resizes, and finding the first live one walks
  them. So `_oldest` reads a snapshot of the first `_COLD_SNAPSHOT` keys at once
  and serves evictions from it, skipping keys that moved or went since (a set of
  them); keys put in since come after all of them, so the first key of the
  snapshot still in place is the oldest of the store.
* A dict never reuses the slot of a deleted key, and when its slots run out it
  resizes to three times the live entries: a store at its bound that keeps
  evicting would settle at twice the table a fresh fill needs. So once deletions
  since the last rebuild reach half the entries held, `_compact` copies the
  dict into a fresh one sized for what is live, before its own resize would double
  it: an O(n) copy amortised over n/2 deletions, the order (hence LRU) unchanged.
* A write to the most recently used key (the rate limiter's read then write)
  replaces its entry in place, spending no slot; so does a new bucket under the
  most recently used key whose old one expired (a lone client back after a pause).

Speed: a rate-limit check (`gcra_unless`, `gcra`) runs on every request, so it
validates and digests each key once, does the GCRA arithmetic inline (`_gcra`, held
to `gcra_step` by a hypothesis test), builds its result with one C call
(`_new_tuple`), and calls out only for what is due: the sweep
every `_SWEEP_EVERY_WRITES` writes, an eviction at the bound, a rebuild. Nothing in
it waits, so the store also offers it synchronously (`get_now`, `gcra_now`,
`gcra_unless_now`: the rate-limit layer then makes no coroutine per request), with
the digests of recent keys remembered (`_DIGEST_MEMO_ENTRIES`: BLAKE2b was the
largest part of a step); a caller that remembers them itself (the rate-limit
layer, with each client's key parts) steps by digest (`digest_now`,
`gcra_unless_digest_now`, which also inlines `_gcra` for a bucket that is the most
recently used entry, one client's requests in a row, and answers a step on an
empty bucket, whose result never varies, with one shared result: `_full_step`).
A subclass that overrides `get`, `gcra` or `gcra_unless` is never stepped that way
(`steps_synchronously`), so its overrides stay in play. `incr` on a live counter
(the WebSocket guard's connection slots, twice per socket) is inlined likewise, on
a remembered digest.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

from bastion.exceptions import StoreError
from bastion.stores.base import (
    DEFAULT_MAX_KEYS_PER_OWNER,
    MAX_COUNTER,
    MAX_KEY_BYTES,
    MAX_TTL_SECONDS,
    MAX_VALUE_BYTES,
    MIN_COUNTER,
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
    GCRALimit,
    GCRAResult,
    gcra_step,
    parse_limit,
)

# 100,000 entries of a typical size (a 60-character key, up to a few hundred bytes
# of value) take 20-60 MB: fine for a laptop or a container, and above the working
# set of a single process (one rate-limit bucket per active client and route, one
# session per signed-in user).
DEFAULT_MAX_ENTRIES: Final = 100_000
# Bounds memory when values are large: 100,000 sessions of 1 KiB, with room to spare.
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024
# Every `_SWEEP_EVERY_WRITES` writes, up to `_SWEEP_BATCH` expired entries are
# dropped from the cold end (as the SQLite store sweeps): two per write on average,
# enough to keep ahead of expiry under steady load (each write adds at most one
# entry), while most writes skip the sweep and no write pays for a backlog.
_SWEEP_EVERY_WRITES: Final = 16
_SWEEP_BATCH: Final = 32
# Rebuild the dict once deletions since the last rebuild reach the entries held
# divided by this (module docstring): early enough that the dict's own resize never
# comes first at the default bound (100,000 entries leave 74,762 spare slots in a
# compact table), late enough that the copy costs well under a microsecond per
# deletion. The floor keeps tiny stores from rebuilding on every write.
_COMPACT_SHARE: Final = 2
_COMPACT_MIN_DELETIONS: Final = 1024
# Keys `_oldest` reads from the cold end at once. Reading them skips the dead slots
# at the head of the dict (up to the deletions since the last rebuild), so a longer
# snapshot spreads that scan over more evictions; 1,024 digests cost about 40 KB.
_COLD_SNAPSHOT: Final = 1024
# Digests the synchronous steps (`get_now`, `gcra_now`, `gcra_unless_now`) and
# `incr` remember: a rate-limit key recurs on every request of its client, a
# connection counter on every socket of its client, and BLAKE2b is the largest part
# of a step. Cleared when full, so a spray of distinct keys only churns it: at most
# this many keys (each at most `MAX_KEY_BYTES`) and their digests, about 1 MB with
# the rate limiter's keys of 60 characters.
_DIGEST_MEMO_ENTRIES: Final = 4096
_OWNER_PREFIX: Final = "\x00owner:"
_NEVER: Final = math.inf
# 120 bits: a collision needs about 2**60 keys (birthday bound), far beyond any bound,
# and a 15-byte `bytes` is one 48-byte allocation (16 bytes would take 49).
_DIGEST_BYTES: Final = 15
_INT_COST: Final = 8  # bytes charged for a counter, like a C int64
_MEMBER_COST: Final = 8  # bytes charged per owner-index member on top of its digest
_GCRA_SIZE: Final = (1, _DIGEST_BYTES + _INT_COST)

_Digest: TypeAlias = bytes
_Index: TypeAlias = dict[_Digest, float]
_Value: TypeAlias = bytes | int | _Index
# A bare float is a GCRA TAT in microseconds (it expires then); else (expires_at, value).
_Entry: TypeAlias = float | tuple[float, _Value]

# A rate (None: none yet), what a step on its empty bucket adds to now (in
# microseconds), and that step's result (None: not a plain write; `_full_step`).
_FullStep: TypeAlias = tuple[GCRALimit | None, int, GCRAResult | None]

_blake2b = hashlib.blake2b


def _digest(key: str, what: str = "key") -> _Digest:
    """The validated key's digest, the name the store keeps it under.

    The usual key (a printable `str`, which also rules out lone surrogates, short
    enough) passes without a Python call; anything else goes through `check_key`, which
    raises with the rule broken, or passes a key with harmless unprintable
    characters (a no-break space is not a control character).
    """
    if isinstance(key, str) and key.isprintable():
        raw = key.encode("utf-8")
        if 0 < len(raw) <= MAX_KEY_BYTES:
            return _blake2b(raw, digest_size=_DIGEST_BYTES).digest()
    check_key(key, what)
    return _blake2b(key.encode("utf-8"), digest_size=_DIGEST_BYTES).digest()


def _index_digest(owner: str) -> _Digest:
    """The digest an owner's index is kept under (the owner already validated)."""
    name = _OWNER_PREFIX + owner
    return _blake2b(name.encode("utf-8"), digest_size=_DIGEST_BYTES).digest()


def _size(value: _Value) -> tuple[int, int]:
    """(entries, bytes) charged for one stored item, its digest included."""
    if isinstance(value, bytes):
        return 1, _DIGEST_BYTES + len(value)
    if isinstance(value, int):
        return 1, _DIGEST_BYTES + _INT_COST
    return 1 + len(value), _DIGEST_BYTES + len(value) * (_DIGEST_BYTES + _MEMBER_COST)


def _split(entry: _Entry) -> tuple[float, _Value]:
    if isinstance(entry, float):
        return entry / MICROSECONDS, int(entry)
    return entry


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
        # Insertion order is recency order: a used entry is taken out and put back.
        self._data: dict[_Digest, _Entry] = {}
        self._newest: _Digest | None = None  # the last key put in (so, if held, the last)
        # The cold end, as `_oldest` sees it: a snapshot of the first keys in order,
        # where it has read up to, and which of them have not moved or gone since.
        self._cold: list[_Digest] = []
        self._cold_next = 0
        self._cold_live: set[_Digest] = set()
        self._entries = 0
        self._bytes = 0
        self._deleted = 0  # deletions since the last `_compact`
        self._compact_at = _COMPACT_MIN_DELETIONS
        self._writes_to_sweep = _SWEEP_EVERY_WRITES
        self._closed = False
        # Validated key to its digest, for the synchronous steps and `incr`
        # (`_DIGEST_MEMO_ENTRIES`).
        self._digests: dict[str, _Digest] = {}
        # The digest step's empty-bucket step of the last rate it saw (`_full_step`).
        self._full: _FullStep = (None, 0, None)

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
        value = self._live(_digest(key), self._now())
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode("ascii")

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        digest = _digest(key)
        check_value(value)
        ttl = check_ttl(ttl_seconds)
        now = self._now()
        self._put(digest, (_expiry(now, ttl), value), now)

    async def delete(self, key: str) -> bool:
        digest = _digest(key)
        now = self._now()
        present = self._live(digest, now) is not None
        self._discard(digest)
        return present

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        digest = _digest(key)
        check_value(value)
        ttl = check_ttl(ttl_seconds)
        now = self._now()
        if self._live(digest, now) is not None:
            return False
        self._put(digest, (_expiry(now, ttl), value), now)
        return True

    async def replace(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        """`Store.replace`: `set` on a live key, so it leaves the store (recency,
        accounting, the bounds, the periodic work) exactly as `set` would; nothing
        on a key that is absent or expired (dropped then, as `_live` drops it)."""
        digest = _digest(key)
        check_value(value)
        ttl = check_ttl(ttl_seconds)
        now = self._now()
        entry = self._data.get(digest)
        if entry is None or _split(entry)[0] <= now:
            self._discard(digest)
            return False
        self._put(digest, (_expiry(now, ttl), value), now)
        return True

    async def delete_if_equal(self, key: str, value: bytes) -> bool:
        """`Store.delete_if_equal`: `delete` of a live entry whose value reads back
        (as `get` prints it) as `value`; otherwise only the read (`_live`)."""
        digest = _digest(key)
        check_value(value)
        current = self._live(digest, self._now())
        if current is None:
            return False
        if (current if isinstance(current, bytes) else str(current).encode("ascii")) != value:
            return False
        self._discard(digest)
        return True

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None) -> int:
        """`Store.incr`. Its usual step, a live counter stepped by a plain `int` (a
        WebSocket's connection slot, taken then given back), is `_live` then `_put`
        inlined, on the key's remembered digest (`_remember`), with the amount and a
        numeric TTL checked in line (anything else through `check_amount` and
        `check_ttl`, which raise as before); every other step goes the general way
        below. tests/stores/test_memory_incr.py holds the two to the same results,
        errors and store state."""
        digest = self._digests.get(key) if key.__class__ is str else None
        if digest is None:
            digest = self._remember(key)  # validated: a bad key raises, as `_digest`
        if amount.__class__ is not int or not MIN_COUNTER <= amount <= MAX_COUNTER:
            check_amount(amount)
        ttl = ttl_seconds
        if not (
            (ttl_seconds.__class__ is float or ttl_seconds.__class__ is int)
            and 0 < ttl_seconds <= MAX_TTL_SECONDS
        ):
            ttl = check_ttl(ttl_seconds)  # None, or raises (NaN and inf fail the test above)
        now = self._now()
        data = self._data
        entry = data.get(digest)
        if isinstance(entry, tuple) and isinstance(entry[1], int) and entry[0] > now:
            if digest != self._newest:  # as `_live`
                self._mark_newest(digest, entry)
                data = self._data  # rebuilt, should the move have compacted it
            result = entry[1] + amount
            if not MIN_COUNTER <= result <= MAX_COUNTER:
                check_counter(result)  # raises
            # As `_put` on the most recently used key: in place, at the same size.
            data[digest] = (entry[0], result)
            self._settle(digest, now)
            return result
        current = self._live(digest, now)
        if current is None or entry is None:
            result = check_counter(amount)
            expires_at = _expiry(now, ttl)
        else:
            if isinstance(current, dict):  # pragma: no cover - unreachable: NUL keys
                raise StoreError("store key does not hold an integer")
            result = check_counter(parse_counter(current) + amount)
            expires_at = _split(entry)[0]
        self._put(digest, (expires_at, result), now)
        return result

    async def touch(self, key: str, ttl_seconds: float) -> bool:
        digest = _digest(key)
        ttl = check_required_ttl(ttl_seconds)
        now = self._now()
        current = self._live(digest, now)
        if current is None:
            return False
        self._put(digest, (now + ttl, current), now)
        return True

    async def gcra(
        self,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult:
        digest = _digest(key)
        limit = parse_limit(emission_interval_seconds, burst_tolerance_seconds, cost)
        if self._closed:
            raise StoreError("memory store is closed")
        return self._gcra(digest, limit, self._clock())

    async def gcra_unless(
        self,
        guard_key: str,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult | None:
        # No await suspends between the two steps, so they are one atomic step. A
        # subclass that overrides `get` or `gcra` (fault injection, counting) is
        # served through them, so its override stays in play.
        cls = self.__class__
        if cls.get is not _MEMORY_GET or cls.gcra is not _MEMORY_GCRA:
            if await self.get(guard_key) is not None:
                return None
            return await self.gcra(
                key,
                emission_interval_seconds=emission_interval_seconds,
                burst_tolerance_seconds=burst_tolerance_seconds,
                cost=cost,
            )
        guard = _digest(guard_key)
        digest = _digest(key)
        limit = parse_limit(emission_interval_seconds, burst_tolerance_seconds, cost)
        if self._closed:
            raise StoreError("memory store is closed")
        now = self._clock()
        if guard in self._data and self._live(guard, now) is not None:
            return None
        return self._gcra(digest, limit, now)

    async def add_to_owner(self, owner: str, key: str, ttl_seconds: float) -> None:
        check_key(owner, "owner")
        digest = _digest(key)
        ttl = check_required_ttl(ttl_seconds)
        now = self._now()
        index_digest = _index_digest(owner)
        current = self._live(index_digest, now)
        index: _Index = current if isinstance(current, dict) else {}
        self._discard(index_digest)
        expires_at = now + ttl
        if index.get(digest, -_NEVER) < expires_at:
            index[digest] = expires_at
        if len(index) > self.max_keys_per_owner:
            self._shed(index, now)
        self._put(index_digest, (max(index.values()), index), now)

    async def delete_owned(self, owner: str) -> int:
        check_key(owner, "owner")
        now = self._now()
        index_digest = _index_digest(owner)
        current = self._live(index_digest, now)
        self._discard(index_digest)
        if not isinstance(current, dict):
            return 0
        deleted = 0
        for digest in current:
            if self._live(digest, now) is not None:
                deleted += 1
            self._discard(digest)
        return deleted

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True
        self._data.clear()
        self._digests.clear()
        self._cold, self._cold_live, self._cold_next = [], set(), 0
        self._newest = None
        self._entries = self._bytes = self._deleted = 0
        self._compact_at = _COMPACT_MIN_DELETIONS
        self._writes_to_sweep = _SWEEP_EVERY_WRITES

    # -- the synchronous steps -----------------------------------------------------

    @property
    def steps_synchronously(self) -> bool:
        """Whether `get_now`, `gcra_now` and `gcra_unless_now` do exactly what `get`,
        `gcra` and `gcra_unless` do, without a coroutine.

        False for a subclass, or an instance, that overrides any of the three
        (fault injection, counting test doubles): a caller must then await them, so
        that the overrides stay in play. The rate-limit layer asks once, when it is
        built.

        Each step is looked up as an attribute, never in `vars(self)`: reading the
        instance's `__dict__` makes CPython 3.11 build it as a real dict, after
        which no attribute load of the store is specialised (about 4,000
        instructions more per rate-limit step).
        """
        return all(
            getattr(bound, "__func__", None) is method and getattr(bound, "__self__", None) is self
            for bound, method in (
                (self.get, _MEMORY_GET),
                (self.gcra, _MEMORY_GCRA),
                (self.gcra_unless, _MEMORY_GCRA_UNLESS),
            )
        )

    @property
    def steps_by_digest(self) -> bool:
        """Whether `digest_now` and `gcra_unless_digest_now` may stand for `gcra_now`
        and `gcra_unless_now`: `steps_synchronously`, and none of the synchronous
        steps (nor `_gcra`, which the digest step inlines) overridden by a subclass or
        the instance. A store that overrides one of them (a fault injected in
        `gcra_unless_now`, say) is stepped through it, as before the digest steps.
        """
        return self.steps_synchronously and all(
            getattr(bound, "__func__", None) is method and getattr(bound, "__self__", None) is self
            for bound, method in (
                (self.get_now, _MEMORY_GET_NOW),
                (self.gcra_now, _MEMORY_GCRA_NOW),
                (self.gcra_unless_now, _MEMORY_GCRA_UNLESS_NOW),
                (self.digest_now, _MEMORY_DIGEST_NOW),
                (self.gcra_unless_digest_now, _MEMORY_GCRA_UNLESS_DIGEST_NOW),
                (self._gcra, _MEMORY_STEP),
            )
        )

    def get_now(self, key: str) -> bytes | None:
        """`get`, synchronously (see `steps_synchronously`)."""
        digest = self._digests.get(key)
        if digest is None:
            digest = self._remember(key)
        value = self._live(digest, self._now())
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode("ascii")

    def gcra_now(self, key: str, limit: GCRALimit) -> GCRAResult:
        """`gcra`, synchronously, with the rate already validated (`parse_limit`)."""
        digest = self._digests.get(key)
        if digest is None:
            digest = self._remember(key)
        if self._closed:
            raise StoreError("memory store is closed")
        clock = self._clock  # an attribute, not a method: `self._clock()` is not specialised
        return self._gcra(digest, limit, clock())

    def gcra_unless_now(self, guard_key: str, key: str, limit: GCRALimit) -> GCRAResult | None:
        """`gcra_unless`, synchronously, with the rate already validated (`parse_limit`).

        The rate-limit layer's step on every request: a ban check and a GCRA step, one
        atomic step (no await at all), no coroutine, and the two keys' digests
        remembered (`_DIGEST_MEMO_ENTRIES`).
        """
        digests = self._digests
        guard = digests.get(guard_key)
        if guard is None:
            guard = self._remember(guard_key)
        digest = digests.get(key)
        if digest is None:
            digest = self._remember(key)
        if self._closed:
            raise StoreError("memory store is closed")
        clock = self._clock  # as in `gcra_now`
        now = clock()
        if guard in self._data and self._live(guard, now) is not None:
            return None
        return self._gcra(digest, limit, now)

    def digest_now(self, key: str) -> bytes:
        """The name the store keeps `key` under, for a caller that steps the same key
        on every request and remembers it (`gcra_unless_digest_now`). Validated as
        every step validates its key: a bad key raises `ValueError`."""
        return _digest(key)

    def gcra_unless_digest_now(
        self, guard: bytes | None, digest: bytes, limit: GCRALimit
    ) -> GCRAResult | None:
        """`gcra_unless_now` on keys already digested (`digest_now`), with no guard when
        `guard` is None: the rate-limit layer's step when its client memo holds them.

        The usual step, a bucket that is the most recently used entry (one client's
        requests in a row), is `_gcra`'s, inlined here: no Python call; anything else
        is `_gcra` itself. When that bucket is empty again (its TAT has passed: a
        client that keeps below the rate), the result is the same every time, and
        the one built by `_full_step` is returned, equal to what `_gcra` builds. Held
        to `gcra_unless_now` by tests over every case (tests/stores/
        test_memory_digest_step.py, tests/stores/test_fast_full_bucket.py).
        """
        if self._closed:
            raise StoreError("memory store is closed")
        clock = self._clock  # as in `gcra_now`
        now = clock()
        data = self._data
        if guard is not None and guard in data and self._live(guard, now) is not None:
            return None
        entry = data.get(digest)
        if entry.__class__ is not float or digest != self._newest:
            return self._gcra(digest, limit, now)
        # `_gcra` inlined for a bucket that is the most recently used entry: it is
        # written in place (no recency to move, no dict slot spent), as there.
        now_us = _round_float(now * _MICROSECONDS_FLOAT)  # `round(now * MICROSECONDS)`
        if entry / MICROSECONDS <= now:  # expired: `_gcra`'s stale bucket, a fresh one
            full = self._full
            if full[0] is not limit:
                full = self._full_step(limit)
            result = full[2]
            if result is None:
                return self._gcra(digest, limit, now)  # dropped, not replaced: the general way
            data[digest] = float(now_us + full[1])
            # As `_settle` (the write counts towards the sweep, as in `_gcra`):
            self._writes_to_sweep -= 1
            if self._writes_to_sweep <= 0:
                self._sweep(now)
            if self._entries > self.max_entries or self._bytes > self.max_bytes:
                self._shrink(digest, now)
            if self._deleted >= self._compact_at:
                self._compact()
            return result
        interval = limit.emission_interval_us
        window = limit.burst_tolerance_us + interval
        cost = limit.cost
        tat = int(entry) if entry > now_us else now_us
        new_tat = tat + cost * interval
        if new_tat - window > now_us:  # refused: nothing stored, nothing moves
            return _refused(tat, new_tat, now_us, window, interval)
        if cost:
            data[digest] = float(new_tat)  # in place, with no settling (as `_gcra`)
        return _new_tuple(
            GCRAResult,
            (
                True,
                window // interval,
                (now_us + window - new_tat) // interval,
                0.0,
                (new_tat - now_us) / MICROSECONDS,
            ),
        )

    def _full_step(self, limit: GCRALimit) -> _FullStep:
        """What a step of `limit` on an empty bucket does (`gcra_step` with no state):
        it stores now plus `cost * interval`, and its result is the same whenever it
        is taken, so it is built once and shared (a `GCRAResult` is immutable). None
        for a rate whose empty bucket is not simply written (cost 0, or a cost over
        the burst). Remembered for the last rate asked (`_full`)."""
        interval = limit.emission_interval_us
        window = limit.burst_tolerance_us + interval
        step = limit.cost * interval
        result = None
        if step - window <= 0 and limit.cost:
            result = _new_tuple(
                GCRAResult,
                (True, window // interval, (window - step) // interval, 0.0, step / MICROSECONDS),
            )
        self._full = full = (limit, step, result)
        return full

    def _remember(self, key: str) -> _Digest:
        """The key's digest (`_digest`: validated, so a bad key raises and is not
        remembered), kept in the bounded memo of the synchronous steps."""
        digest = _digest(key)
        digests = self._digests
        if len(digests) >= _DIGEST_MEMO_ENTRIES:
            digests.clear()  # a spray churns the memo, never grows it
        digests[key] = digest
        return digest

    # -- internals: no await below, so each public step is atomic ----------------

    def _now(self) -> float:
        if self._closed:
            raise StoreError("memory store is closed")
        return self._clock()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory store is closed")

    def _live(self, digest: _Digest, now: float) -> _Value | None:
        """The value under `digest` if live (marking it recently used); drops it if expired."""
        entry = self._data.get(digest)
        if entry is None:
            return None
        if isinstance(entry, float):
            expires_at: float = entry / MICROSECONDS
            value: _Value = int(entry)
        else:
            expires_at, value = entry
        if expires_at <= now:
            self._discard(digest)
            return None
        if digest != self._newest:
            self._mark_newest(digest, entry)
        return value

    def _mark_newest(self, digest: _Digest, entry: _Entry) -> None:
        """Mark a live entry the most recently used: out of the dict, and back in last
        (the deletion counted toward the next rebuild, which may happen now)."""
        data = self._data
        del data[digest]
        data[digest] = entry
        self._newest = digest
        self._cold_live.discard(digest)
        self._deleted += 1
        if self._deleted >= self._compact_at:
            self._compact()

    def _put(self, digest: _Digest, entry: _Entry, now: float) -> None:
        data = self._data
        previous = data.get(digest)
        if previous is not None and digest == self._newest:
            # Already the most recently used: replace in place, no dict slot spent.
            entries, size = _GCRA_SIZE if isinstance(previous, float) else _size(previous[1])
            self._entries -= entries
            self._bytes -= size
            data[digest] = entry
        else:
            self._discard(digest)
            self._insert(digest, entry)
        entries, size = _GCRA_SIZE if isinstance(entry, float) else _size(entry[1])
        self._entries += entries
        self._bytes += size
        self._settle(digest, now)

    def _settle(self, digest: _Digest, now: float) -> None:
        """After a write of `digest`: the sweep when due, the bounds, the rebuild when due
        (`_gcra` inlines the three tests, so that a write pays only for what is due)."""
        self._writes_to_sweep -= 1
        if self._writes_to_sweep <= 0:
            self._sweep(now)
        if self._entries > self.max_entries or self._bytes > self.max_bytes:
            self._shrink(digest, now)
        if self._deleted >= self._compact_at:
            self._compact()

    def _shrink(self, digest: _Digest, now: float) -> None:
        """Evict least recently used entries until the store is within its bounds."""
        while self._entries > self.max_entries or self._bytes > self.max_bytes:
            oldest = self._oldest()
            if oldest is None or oldest == digest:  # the new entry alone is over the bound
                break
            self._evict(oldest, now)

    def _gcra(self, digest: _Digest, limit: GCRALimit, now: float) -> GCRAResult:
        """One GCRA step on the bucket `digest`: `gcra_step` and `_put`, inlined.

        The hot path of every rate-limited request, so it makes no Python call but
        the result's (`_new_tuple`, a C call): the arithmetic is `gcra_step`'s line for line (a
        hypothesis test holds the two to the same verdicts and TATs), the entry's
        recency moves as `_live` moves it, and the write settles as `_put` would,
        calling out only for a sweep, an eviction or a rebuild that is due. A key
        holding anything but a bucket goes the general way, `_gcra_held`.
        """
        data = self._data
        entry = data.get(digest)
        if entry is not None and entry.__class__ is not float:
            return self._gcra_held(digest, limit, now)
        now_us = _round_float(now * _MICROSECONDS_FLOAT)  # `round(now * MICROSECONDS)`
        tat = now_us
        stale = False  # an expired bucket, the most recently used: replaced in place
        if entry is not None:
            if entry / MICROSECONDS <= now:  # expired (its TAT has passed): no state
                if digest == self._newest:
                    stale = True
                else:
                    self._discard(digest)
                entry = None
            elif entry > now_us:
                tat = int(entry)
        interval = limit.emission_interval_us
        window = limit.burst_tolerance_us + interval
        new_tat = tat + limit.cost * interval
        if new_tat - window > now_us or limit.cost == 0:
            # Nothing stored; a bucket that is there was used, so it becomes the
            # most recently used, as `_live` makes it.
            if stale:
                self._discard(digest)
            elif entry is not None and digest != self._newest:
                self._mark_newest(digest, entry)
            if new_tat - window > now_us:
                return _refused(tat, new_tat, now_us, window, interval)
        elif entry is not None and digest == self._newest:
            data[digest] = float(new_tat)  # already the most recently used: in place
        else:
            if stale:
                # As `_discard` then a new entry put in last, where it already is:
                # in place, so no dict slot is spent (module docstring).
                data[digest] = float(new_tat)
            else:
                if entry is None:
                    self._entries += _GCRA_SIZE[0]
                    self._bytes += _GCRA_SIZE[1]
                else:  # out, and back in last (as `_live` then `_put`)
                    del data[digest]
                    self._cold_live.discard(digest)
                    self._deleted += 1
                data[digest] = float(new_tat)
                self._newest = digest
            # As `_settle`:
            self._writes_to_sweep -= 1
            if self._writes_to_sweep <= 0:
                self._sweep(now)
            if self._entries > self.max_entries or self._bytes > self.max_bytes:
                self._shrink(digest, now)
            if self._deleted >= self._compact_at:
                self._compact()
        return _new_tuple(
            GCRAResult,
            (
                True,
                window // interval,
                (now_us + window - new_tat) // interval,
                0.0,
                (new_tat - now_us) / MICROSECONDS,
            ),
        )

    def _gcra_held(self, digest: _Digest, limit: GCRALimit, now: float) -> GCRAResult:
        """A GCRA step on a key that holds a counter or a value written by `set`."""
        current = self._live(digest, now)
        if isinstance(current, dict):  # pragma: no cover - unreachable: NUL keys
            raise StoreError("store key does not hold a GCRA state")
        stored = None if current is None else parse_counter(current)
        step = gcra_step(stored, round(now * MICROSECONDS), limit)
        if step.tat_us is not None:
            self._put(digest, float(step.tat_us), now)
        return step.result()

    def _insert(self, digest: _Digest, entry: _Entry) -> None:
        """Put `digest` in last, as the most recently used (the caller counts it)."""
        self._data[digest] = entry
        self._newest = digest

    def _discard(self, digest: _Digest) -> None:
        entry = self._data.pop(digest, None)
        if entry is not None:
            self._deleted += 1
            self._cold_live.discard(digest)
            entries, size = _GCRA_SIZE if isinstance(entry, float) else _size(entry[1])
            self._entries -= entries
            self._bytes -= size

    def _oldest(self) -> _Digest | None:
        """The least recently used digest (None when empty), from the snapshot of
        the cold end; a new snapshot when every key in it has moved or gone."""
        cold, live, position = self._cold, self._cold_live, self._cold_next
        if position < len(cold) and cold[position] in live:
            return cold[position]  # the usual case: the same oldest as last time
        while True:
            while position < len(cold):
                if cold[position] in live:
                    self._cold_next = position
                    return cold[position]
                position += 1
            if not self._data:
                return None
            cold = self._cold = list(itertools.islice(self._data, _COLD_SNAPSHOT))
            live = self._cold_live = set(cold)
            position = 0

    def _compact(self) -> None:
        """Copy the dict into a fresh one sized for its live entries, same order
        (module docstring); the next rebuild is due after a share of what it holds."""
        self._data = dict(self._data)
        self._deleted = 0
        self._compact_at = max(len(self._data) // _COMPACT_SHARE, _COMPACT_MIN_DELETIONS)

    def _evict(self, digest: _Digest, now: float) -> None:
        """Drop an entry for space. A live owner index takes its keys along (fail
        safe: keys whose index is gone could no longer be revoked); one that has
        expired is only dropped, as `_live`, `_sweep` and the other stores drop it:
        it expires with its last entry, so a key of it still live was kept alive
        past its entry, out of `delete_owned`'s reach on every store already."""
        entry = self._data.get(digest)
        self._discard(digest)
        if isinstance(entry, tuple) and isinstance(entry[1], dict) and entry[0] > now:
            for owned in entry[1]:
                self._discard(owned)

    def _sweep(self, now: float) -> None:
        """Drop up to `_SWEEP_BATCH` expired entries from the cold end. Expiry, not
        eviction: an expired owner index goes alone, its live keys stay (`_evict`)."""
        self._writes_to_sweep = _SWEEP_EVERY_WRITES
        for _ in range(_SWEEP_BATCH):
            oldest = self._oldest()
            if oldest is None:
                return
            entry = self._data[oldest]
            if (entry / MICROSECONDS if isinstance(entry, float) else entry[0]) > now:
                return
            self._discard(oldest)

    def _shed(self, index: _Index, now: float) -> None:
        """Bring an over-full owner index back to its bound, fail safe."""
        for digest, expires_at in list(index.items()):
            entry = self._data.get(digest)
            if expires_at <= now or entry is None or _split(entry)[0] <= now:
                del index[digest]
        overflow = len(index) - self.max_keys_per_owner
        if overflow > 0:
            for digest in sorted(index, key=index.__getitem__)[:overflow]:
                del index[digest]
                self._discard(digest)


# `GCRAResult(...)` without its Python-level `__new__`: one C call (gcra.py).
_new_tuple: Final = tuple.__new__


def _refused(tat: int, new_tat: int, now_us: int, window: int, interval: int) -> GCRAResult:
    """A refused step's result, as `gcra_step` gives it (off the hot path: a refusal)."""
    return _new_tuple(
        GCRAResult,
        (
            False,
            window // interval,
            max(0, (now_us + window - tat) // interval),
            (new_tat - window - now_us) / MICROSECONDS,
            (tat - now_us) / MICROSECONDS,
        ),
    )


# `round(x)` of a float, called directly: the builtin looks `__round__` up and binds
# it first, twice the cost. Its argument is a float even from a clock that reads
# whole seconds as an `int` (times the float `_MICROSECONDS_FLOAT`), and the same
# float as `now * MICROSECONDS` when `now` is one (the int converts exactly).
_round_float: Final = float.__round__
_MICROSECONDS_FLOAT: Final = float(MICROSECONDS)

_MEMORY_GET: Final = MemoryStore.get
_MEMORY_GCRA: Final = MemoryStore.gcra
_MEMORY_GCRA_UNLESS: Final = MemoryStore.gcra_unless
_MEMORY_GET_NOW: Final = MemoryStore.get_now
_MEMORY_GCRA_NOW: Final = MemoryStore.gcra_now
_MEMORY_GCRA_UNLESS_NOW: Final = MemoryStore.gcra_unless_now
_MEMORY_DIGEST_NOW: Final = MemoryStore.digest_now
_MEMORY_GCRA_UNLESS_DIGEST_NOW: Final = MemoryStore.gcra_unless_digest_now
_MEMORY_STEP: Final = MemoryStore._gcra


def _expiry(now: float, ttl: float | None) -> float:
    return _NEVER if ttl is None else now + ttl


async def bytes_per_entry(
    store: MemoryStore, fill: Callable[[MemoryStore, int], Awaitable[object]]
) -> float:
    """Heap bytes one entry costs, once `await fill(store, i)` has written entry i
    for i up to `store.max_entries` (for the benchmark of a key spray).

    `store` should start empty; the figure is the growth of the traced heap over
    the entries held at the end, which is what a spray leaves behind at the bound.
    """
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(store.max_entries):
            await fill(store, i)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return grown / max(1, len(store))
