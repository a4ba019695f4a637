"""The storage protocol every Bastion store implements, and its input bounds.

Sessions, rate limits, bans and token revocation all keep small pieces of state
that must be shared by every worker and survive a request. One `Store` protocol
serves them all, with three implementations: memory (the default, one process),
SQLite (one host), Redis (a fleet, Cluster included).

Threats the stores handle themselves:

* Races between workers: every read-modify-write step (`set_if_absent`, `replace`,
  `delete_if_equal`, `incr`, `touch`, `gcra`, `gcra_unless`, `add_to_owner`,
  `delete_owned`) is atomic inside the store (a Lua script or one command, one
  SQLite transaction, or no `await` between read and write), never a process-local
  lock around get-then-set, which is not atomic across workers.
* Resource exhaustion: keys and values are bounded (`MAX_KEY_BYTES`,
  `MAX_VALUE_BYTES`); the memory store is bounded in entries and bytes; owner
  indexes are bounded per owner and shed expired entries.
* Secret leakage: a backend failure becomes one `StoreError` whose message never
  holds a password; the original exception is chained for the operator.

Not covered: attacker-controlled key material. Callers hash what a client chose (a
session id, an API key) before it becomes part of a key; the store only enforces the
bounds.

Contract common to every method (the contract suite in `tests/stores` checks it
against every implementation):

* Keys are `str` of 1 to `MAX_KEY_BYTES` UTF-8 bytes without control characters;
  values are `bytes` of at most `MAX_VALUE_BYTES`. A violation is the caller's bug
  and raises `ValueError` (so no fail-open handler swallows it), never `StoreError`.
* `ttl_seconds` is a positive number of seconds, or `None` for no expiry where the
  method allows it. A key is gone from the moment its TTL has elapsed: reads never
  see an expired value, whenever the backend reclaims the space.
* One key namespace: `get` of a key written by `incr` or `gcra` returns its decimal
  ASCII value; `incr` or `gcra` on a key that holds something else raises
  `StoreError`. Callers keep kinds apart with key prefixes (`rl:`, `session:`).
* Any backend failure (unreachable, timed out, corrupted) raises `StoreError`, and
  so does any call after `close()`. The calling layer applies its fail mode.

References: Django `SessionBase.create()`/`clear_expired()` (stated atomicity and
expiry contracts); litestar `litestar/stores/base.py`; limits `limits/storage/base.py`.
"""

from __future__ import annotations

import math
import re
from typing import Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

from bastion.exceptions import ConfigurationError, StoreError
from bastion.stores.gcra import GCRAResult

# Redis allows 512 MB keys; ours name a thing, and callers hash attacker-chosen
# parts into 64 hex characters, so 512 bytes is room for any prefix plus a few
# hashes while bounding the memory one key can take.
MAX_KEY_BYTES: Final = 512
# A session payload or a cached JWKS: Django's signed-cookie sessions stop at 4 KiB,
# a large JWKS is a few tens of KiB. 1 MiB is far above both and far below what
# would let a few writes exhaust memory.
MAX_VALUE_BYTES: Final = 1024 * 1024
# Ten years: a TTL longer than that is a units mistake (milliseconds passed as seconds).
MAX_TTL_SECONDS: Final = 10 * 365 * 24 * 3600.0
# Redis INCRBY works on signed 64-bit integers; every store keeps to the same range.
MIN_COUNTER: Final = -(2**63)
MAX_COUNTER: Final = 2**63 - 1
# Most live keys one owner may hold. A user signed in on every device they own has
# tens of sessions; a script that logs in without keeping its cookie makes one per
# request, and this caps what such a client can pile up. Beyond it the owner's
# keys that expire first are deleted (fail safe: the oldest session ends), so every
# live owned key stays in the index and `delete_owned` still reaches all of them.
DEFAULT_MAX_KEYS_PER_OWNER: Final = 1000

_INTEGER: Final = re.compile(rb"-?[0-9]{1,19}")


@runtime_checkable
class Store(Protocol):
    """Asynchronous key-value storage with the atomic steps Bastion's layers need."""

    async def get(self, key: str) -> bytes | None:
        """The live value of `key`, or None if it is absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        """Write `value`, replacing any value and TTL; `None` means no expiry.

        Atomic as a single write: a concurrent reader sees the old or the new value.
        """
        ...

    async def delete(self, key: str) -> bool:
        """Delete `key`; True if a live value was there."""
        ...

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        """Create `key` only if it holds no live value; True if this call created it.

        Atomic: of any number of concurrent callers, in any number of processes,
        exactly one gets True. An expired value counts as absent. Sessions use this
        so that a freshly drawn id can never overwrite someone else's session.
        """
        ...

    async def replace(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        """Write `value` and its TTL only if `key` holds a live value; True if written.

        Atomic: the check and the write are one step, so a key deleted or expired
        before the call is never created again, whatever the delay between a
        caller's read and its write. An expired value counts as absent. Sessions
        write back an existing session with this, so that a request still in flight
        when its session ended (a logout, a revocation) cannot bring it back.
        """
        ...

    async def delete_if_equal(self, key: str, value: bytes) -> bool:
        """Delete `key` only if it holds the live value `value`; True if this call deleted it.

        Atomic: the comparison and the delete are one step, so a value written over
        the key since the caller wrote its own (after its own expired, say) is never
        deleted, whatever the delay between the two calls. An absent or expired key,
        or one holding anything else, is left as it is. The value is compared as
        `get` returns it (a counter as its decimal ASCII). The login guard releases
        an attempt's claim with this, so that a release arriving after the claim
        expired cannot lift a lockout written in its place.
        """
        ...

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None) -> int:
        """Add `amount` to the counter at `key` and return the new value.

        Atomic: concurrent increments are never lost. An absent or expired key
        starts at 0 and gets `ttl_seconds`; an existing counter keeps its TTL, so a
        fixed window ends on time however often it is hit. The result must fit a
        signed 64-bit integer, and the key must hold an integer, else `StoreError`.
        """
        ...

    async def touch(self, key: str, ttl_seconds: float) -> bool:
        """Give a live `key` a new TTL of `ttl_seconds` from now; True if it was live.

        Atomic: the key's value is untouched, and an absent or expired key stays
        absent (never created). The new TTL replaces the old one, longer or shorter.
        Long-lived holders of a counter (a WebSocket's connection slot) call this so
        that the counter outlives `incr`'s creation-time TTL while they hold it.
        """
        ...

    async def gcra(
        self,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult:
        """One atomic GCRA step (see `bastion.stores.gcra`) on the TAT stored at `key`.

        Read, decide and write happen as one step, so concurrent requests from
        several workers are counted exactly. The key expires when its bucket is full
        again. Time is the store's clock; Redis uses the server's `TIME`, so every
        host agrees on it. Invalid parameters raise `ValueError`.
        """
        ...

    async def gcra_unless(
        self,
        guard_key: str,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult | None:
        """`gcra(key, ...)` unless `guard_key` holds a live value: then None, nothing written.

        One atomic step and one round trip: the rate-limit layer checks a client's ban
        (`guard_key`) and spends from its first bucket (`key`) at once. Redis keeps the
        state of `key` in the slot of `guard_key` (so one script runs on Cluster too),
        apart from what `gcra(key)` uses: a bucket is stepped through one of the two
        methods only, never both.
        """
        ...

    async def add_to_owner(self, owner: str, key: str, ttl_seconds: float) -> None:
        """Record that `key` belongs to `owner` for `ttl_seconds` (give the key's TTL).

        Atomic per owner. Re-adding a key extends its entry, never shortens it. The
        index sheds entries once they expire, and holds at most `max_keys_per_owner`
        live entries: adding beyond that deletes the owner's keys that expire first,
        so no live owned key is ever missing from the index.
        """
        ...

    async def delete_owned(self, owner: str) -> int:
        """Delete every live key recorded for `owner`; return how many existed.

        Every key whose `add_to_owner` finished before this call started is deleted
        ("log out everywhere"); a key added concurrently may survive. If the call
        fails part-way, the index still lists what was not yet deleted, so calling
        again finishes the job. Other owners are untouched.
        """
        ...

    async def ping(self) -> None:
        """Raise `StoreError` unless the backend answers (a health check)."""
        ...

    async def close(self) -> None:
        """Release connections and threads. Idempotent; later calls raise `StoreError`."""
        ...


# Every method of the protocol, as `check_store` requires them.
STORE_METHODS: Final = tuple(
    sorted(name for name, value in vars(Store).items() if callable(value) and name[0] != "_")
)


def check_store(store: object) -> None:
    """Raise `ConfigurationError` unless `store` has every method of `Store`, naming
    those it lacks.

    For everything that takes a `store=` (`Shield`, every layer, the login guard,
    API keys, OIDC), at construction: a store of the user's own, written against an earlier protocol
    (before `delete_if_equal`, or `replace`), otherwise started and failed with an
    `AttributeError` on the first request that needed the method, after the
    application had answered (a login that succeeded, and its unit of the client's
    budget never given back). Checks that each method is there (as `isinstance`
    with the runtime-checkable protocol does), not its signature or that it is a
    coroutine function.
    """
    missing = [name for name in STORE_METHODS if not callable(getattr(store, name, None))]
    if missing:
        raise ConfigurationError(
            f"store {type(store).__name__} does not implement the Store protocol: "
            f"missing {', '.join(missing)}"
        )


def check_key(key: str, what: str = "key") -> str:
    """Validate a key (or owner name); raises ValueError naming the rule, not the key."""
    if not isinstance(key, str):
        raise TypeError(f"store {what} must be str, not {type(key).__name__}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"store {what} is not valid UTF-8 (lone surrogate)") from None
    if not 0 < size <= MAX_KEY_BYTES:
        raise ValueError(f"store {what} must be 1 to {MAX_KEY_BYTES} UTF-8 bytes, not {size}")
    if not key.isprintable() and any(_is_control(char) for char in key):
        raise ValueError(f"store {what} must not contain control characters")
    return key


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0


def check_value(value: bytes) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"store value must be bytes, not {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise ValueError(f"store value must be at most {MAX_VALUE_BYTES} bytes")
    return value


def check_ttl(ttl_seconds: float | None) -> float | None:
    """A TTL in seconds, or None for no expiry; raises for anything else."""
    if ttl_seconds is None:
        return None
    return check_required_ttl(ttl_seconds)


def check_required_ttl(ttl_seconds: float) -> float:
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int | float):
        raise TypeError("ttl_seconds must be a number of seconds")
    if not (math.isfinite(ttl_seconds) and 0 < ttl_seconds <= MAX_TTL_SECONDS):
        raise ValueError(f"ttl_seconds must be positive and at most {MAX_TTL_SECONDS:g}")
    return float(ttl_seconds)


def check_amount(amount: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError("amount must be an int")
    if not MIN_COUNTER <= amount <= MAX_COUNTER:
        raise ValueError("amount must fit a signed 64-bit integer")
    return amount


def parse_counter(raw: bytes | int) -> int:
    """The integer a counter key holds; StoreError if it holds anything else."""
    if isinstance(raw, int):
        return raw
    if not _INTEGER.fullmatch(raw):
        raise StoreError("store key does not hold an integer")
    return int(raw)


def check_counter(value: int) -> int:
    if not MIN_COUNTER <= value <= MAX_COUNTER:
        raise StoreError("store counter would overflow a signed 64-bit integer")
    return value


def public_url(url: str) -> str:
    """`url` without credentials or query: safe for messages, logs and reprs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"
