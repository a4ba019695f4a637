"""The Redis store: shared state for a fleet of workers and hosts, Cluster included.

Needs the `redis` extra (`pip install 'bastion-asgi[redis]'`) and Redis 6 or newer.

Atomicity: every read-modify-write step is one command or one Lua script, which
Redis runs without interleaving anything else: one round trip per step. Scripts are
sent once and then called by their SHA1 (`EVALSHA`); after a Redis restart empties
the script cache, redis-py sees `NOSCRIPT`, loads the script again and retries.

Time: the GCRA script and the owner index read the server's clock (`TIME`), and TTLs
expire on the server, so hosts with skewed clocks still agree on every limit. Hence
this store takes no clock; its tests wait for real (short) TTLs instead.

Key layout: a logical key `k` lives at `<prefix>{k}` and the index of owner `o` at
`<prefix>owner:{o}` (the two forms cannot collide: a data key always has `{` right
after the prefix). Every command and script touches exactly one Redis key, so each
runs on Redis Cluster whatever slot its key hashes to; the `{...}` hash tag pins the
slot to the logical key alone. An owner's index and the keys it lists usually live
in different slots, so `delete_owned` never deletes across them in one script: it
reads the index (one key), deletes the listed keys (one `DEL`, which redis-py splits
per slot on Cluster), then removes exactly those members from the index (one key).
Should it fail midway, the index still lists every key not yet deleted. The one
two-key script, `gcra_unless` (a ban check and a rate step in one round trip),
keeps its bucket at `<prefix>gcra:{g}:k`, tagged with the guard `g` so that both
keys share a slot.

Failure: every call has a deadline (`connect_timeout_seconds + timeout_seconds`,
with `timeout_seconds` also the socket timeout), and any error (refused, timed out,
a script error on corrupted data) becomes `StoreError`, whose message never holds
the password; the original is chained. A connection that died (Redis restarted) is
retried once, immediately, on a new connection, so the store recovers on the first
call after Redis is back, without an application restart. A retry can repeat a
write whose reply was lost: a counter may then count one request twice (stricter,
never looser).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from bastion.exceptions import ConfigurationError, StoreError
from bastion.stores.base import (
    DEFAULT_MAX_KEYS_PER_OWNER,
    check_amount,
    check_key,
    check_required_ttl,
    check_ttl,
    check_value,
    public_url,
)
from bastion.stores.gcra import GCRALimit, GCRAResult, parse_limit

T = TypeVar("T")

DEFAULT_KEY_PREFIX: Final = "bastion:"
# A Redis on the same network connects in about a millisecond and answers in well
# under one; a second means it is down or overloaded, and the calling layer should
# apply its fail mode rather than hold the request.
DEFAULT_CONNECT_TIMEOUT_SECONDS: Final = 1.0
DEFAULT_TIMEOUT_SECONDS: Final = 1.0
# DEL is split into batches so one `delete_owned` cannot send a huge command.
_DELETE_BATCH: Final = 500
_MAX_MESSAGE_CHARS: Final = 200

SCHEMES: Final = ("redis", "rediss", "redis+cluster", "rediss+cluster")

# One GCRA step (see bastion.stores.gcra, whose lines this mirrors) in integer
# microseconds. KEYS[#KEYS] (the last key): the TAT. ARGV: emission interval, burst
# tolerance, cost, and `now` (empty: the server's TIME; tests pass it to compare with
# the Python core).
# floordiv corrects the rounding of a double division, so it is exact up to 2**53.
GCRA_SCRIPT: Final = """
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2]) + interval
local cost = tonumber(ARGV[3])
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function floordiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local tat = now
local stored = redis.call('GET', KEYS[#KEYS])
if stored then
  local parsed = nil
  if string.match(stored, '^%-?%d+$') then parsed = tonumber(stored) end
  if parsed == nil then
    return redis.error_reply('ERR bastion: key does not hold a GCRA state')
  end
  if parsed > now then tat = parsed end
end
local new_tat = tat + cost * interval
local allow_at = new_tat - window
if allow_at > now then
  local remaining = floordiv(now + window - tat, interval)
  if remaining < 0 then remaining = 0 end
  return {0, remaining, allow_at - now, tat - now}
end
if cost > 0 then
  redis.call('SET', KEYS[#KEYS], string.format('%.0f', new_tat),
             'PX', math.ceil((new_tat - now) / 1000))
end
return {1, floordiv(now + window - new_tat, interval), 0, new_tat - now}
"""

# The GCRA step unless a guard key (a ban) is live. KEYS[1]: the guard, KEYS[2]: the
# TAT, in one slot (see `RedisStore.guarded_key`). Returns -1 when the guard is set,
# else what GCRA_SCRIPT returns for ARGV.
GCRA_UNLESS_SCRIPT: Final = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
"""
    + GCRA_SCRIPT
)

# Counter with a TTL set on creation only. ARGV: amount, TTL in ms (empty: none).
# The amount stays a string and the result is read back as one, because Lua numbers
# are doubles and would round counters above 2**53.
INCR_SCRIPT: Final = """
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], '0', 'NX', 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], '0', 'NX')
end
redis.call('INCRBY', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[1])
"""

# Compare-and-delete. KEYS[1]: the key, ARGV[1]: the value it must hold. GET and
# DEL in one script, on one key (so it runs on Cluster): nothing runs between them.
# A key that holds another type than a string is a script error (StoreError).
DELETE_IF_EQUAL_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Owner index: a sorted set of owned keys scored by expiry (server ms). KEYS[1]: the
# index. ARGV: owned key, TTL in ms, most live members. Sheds expired members, never
# shortens an entry, lets the index expire with its last member, and returns the
# earliest-expiring members past the bound without removing them: the caller
# deletes their keys first and their entries after, so a failure in between leaves
# every live key still listed.
ADD_OWNER_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = now + tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not old) or tonumber(old) < expires then
  redis.call('ZADD', KEYS[1], expires, ARGV[1])
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
local overflow = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if overflow > 0 then
  return redis.call('ZRANGE', KEYS[1], 0, overflow - 1)
end
return {}
"""


def _ttl_ms(ttl_seconds: float) -> int:
    # PX takes whole milliseconds and refuses 0; round up so a key never dies early.
    return max(1, math.ceil(ttl_seconds * 1000))


def _gcra_result(reply: Sequence[int], limit: GCRALimit) -> GCRAResult:
    allowed, remaining, retry_after_us, reset_after_us = (int(item) for item in reply)
    return GCRAResult(
        allowed=allowed == 1,
        limit=limit.burst,
        remaining=remaining,
        retry_after_seconds=retry_after_us / 1_000_000,
        reset_after_seconds=reset_after_us / 1_000_000,
    )


class RedisStore:
    """A `Store` on Redis or Redis Cluster; see the module docstring.

    `url` is `redis://[[user]:password@]host:port/db` or `rediss://` (TLS); the
    schemes `redis+cluster://` and `rediss+cluster://` (or `cluster=True`) connect to
    a Cluster through any of its nodes. Query parameters are redis-py's.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        cluster: bool = False,
        connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_keys_per_owner: int = DEFAULT_MAX_KEYS_PER_OWNER,
    ) -> None:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in SCHEMES:
            raise ConfigurationError(f"redis store: url scheme must be one of {SCHEMES}")
        if connect_timeout_seconds <= 0 or timeout_seconds <= 0:
            raise ConfigurationError("redis store: timeouts must be positive")
        if max_keys_per_owner < 1:
            raise ConfigurationError("redis store: max_keys_per_owner must be at least 1")
        if any(char in key_prefix for char in "{}") or not key_prefix.isprintable():
            raise ConfigurationError("redis store: key_prefix must be printable, without braces")
        self.cluster = cluster or scheme.endswith("+cluster")
        plain_url = scheme.removesuffix("+cluster") + url[len(scheme) :]
        self.url = public_url(plain_url)
        self.key_prefix = key_prefix
        self.max_keys_per_owner = max_keys_per_owner
        self._deadline = connect_timeout_seconds + timeout_seconds
        # A password may come in the authority or as redis-py's `?password=`.
        parts = urlsplit(plain_url)
        passwords = [parts.password or ""]
        passwords += [value for name, value in parse_qsl(parts.query) if name == "password"]
        self._secrets = tuple({text for p in passwords for text in (p, unquote(p)) if text})
        options: dict[str, Any] = {
            "socket_timeout": timeout_seconds,
            "socket_connect_timeout": connect_timeout_seconds,
            "decode_responses": False,
            # One immediate retry on a dead connection (e.g. after a Redis restart).
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        }
        if self.cluster:
            # redis-py closes every connection of the client after a few MOVED
            # replies, failing commands already sent (and then retrying them, so a
            # script could run twice). Patching the one moved slot instead is enough.
            options["reinitialize_steps"] = 0
        try:
            self._client: Redis | RedisCluster = (
                RedisCluster.from_url(plain_url, **options)
                if self.cluster
                else Redis.from_url(plain_url, **options)
            )
        except (ValueError, RedisError, RedisClusterException) as exc:
            raise ConfigurationError(
                f"redis store: cannot use url {self.url}: {type(exc).__name__}"
            ) from None
        self._gcra_script: AsyncScript = self._client.register_script(GCRA_SCRIPT)
        self._gcra_unless_script: AsyncScript = self._client.register_script(GCRA_UNLESS_SCRIPT)
        self._incr_script: AsyncScript = self._client.register_script(INCR_SCRIPT)
        self._delete_if_equal_script: AsyncScript = self._client.register_script(
            DELETE_IF_EQUAL_SCRIPT
        )
        self._add_owner_script: AsyncScript = self._client.register_script(ADD_OWNER_SCRIPT)
        self._closed = False

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "single"
        return f"RedisStore({self.url!r}, {kind}, key_prefix={self.key_prefix!r})"

    def redis_key(self, key: str) -> str:
        """Where the logical `key` lives in Redis."""
        return f"{self.key_prefix}{{{key}}}"

    def owner_key(self, owner: str) -> str:
        """Where the index of `owner` lives in Redis."""
        return f"{self.key_prefix}owner:{{{owner}}}"

    # -- the protocol ------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        redis_key = self.redis_key(check_key(key))
        value = await self._call("get", lambda: self._client.get(redis_key))
        return value.encode("utf-8") if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        redis_key = self.redis_key(check_key(key))
        check_value(value)
        ttl = check_ttl(ttl_seconds)
        px = None if ttl is None else _ttl_ms(ttl)
        await self._call("set", lambda: self._client.set(redis_key, value, px=px))

    async def delete(self, key: str) -> bool:
        redis_key = self.redis_key(check_key(key))
        deleted: int = await self._call("delete", lambda: self._client.delete(redis_key))
        return deleted > 0

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        return await self._set_if("set_if_absent", key, value, ttl_seconds, nx=True)

    async def replace(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        # SET ... XX writes only over a key that exists (Redis never holds an
        # expired one) and answers nil otherwise.
        return await self._set_if("replace", key, value, ttl_seconds, xx=True)

    async def _set_if(
        self,
        operation: str,
        key: str,
        value: bytes,
        ttl_seconds: float | None,
        *,
        nx: bool = False,
        xx: bool = False,
    ) -> bool:
        """One conditional `SET` (`NX`: only a new key, `XX`: only a live one): one
        atomic command on one key; whether it wrote."""
        redis_key = self.redis_key(check_key(key))
        check_value(value)
        ttl = check_ttl(ttl_seconds)
        px = None if ttl is None else _ttl_ms(ttl)
        written = await self._call(
            operation, lambda: self._client.set(redis_key, value, px=px, nx=nx, xx=xx)
        )
        return bool(written)

    async def delete_if_equal(self, key: str, value: bytes) -> bool:
        redis_key = self.redis_key(check_key(key))
        check_value(value)
        deleted = await self._call(
            "delete_if_equal",
            lambda: self._delete_if_equal_script(keys=[redis_key], args=[value]),
        )
        return bool(deleted)

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None) -> int:
        redis_key = self.redis_key(check_key(key))
        check_amount(amount)
        ttl = check_ttl(ttl_seconds)
        args = [str(amount), "" if ttl is None else str(_ttl_ms(ttl))]
        raw = await self._call("incr", lambda: self._incr_script(keys=[redis_key], args=args))
        return int(raw)

    async def touch(self, key: str, ttl_seconds: float) -> bool:
        redis_key = self.redis_key(check_key(key))
        px = _ttl_ms(check_required_ttl(ttl_seconds))
        # PEXPIRE is one atomic command and never creates a key (0 when absent).
        changed = await self._call("touch", lambda: self._client.pexpire(redis_key, px))
        return bool(changed)

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
        return await self.gcra_at(key, limit, None)

    async def gcra_at(self, key: str, limit: GCRALimit, now_us: int | None) -> GCRAResult:
        """The GCRA step at `now_us` (None: the server's clock). Tests use `now_us`."""
        redis_key = self.redis_key(check_key(key))
        args: list[str | int] = [
            limit.emission_interval_us,
            limit.burst_tolerance_us,
            limit.cost,
            "" if now_us is None else now_us,
        ]
        reply: Sequence[int] = await self._call(
            "gcra", lambda: self._gcra_script(keys=[redis_key], args=args)
        )
        return _gcra_result(reply, limit)

    async def gcra_unless(
        self,
        guard_key: str,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult | None:
        guard = self.redis_key(check_key(guard_key))
        redis_key = self.guarded_key(guard_key, check_key(key))
        limit = parse_limit(emission_interval_seconds, burst_tolerance_seconds, cost)
        args: list[str | int] = [
            limit.emission_interval_us,
            limit.burst_tolerance_us,
            limit.cost,
            "",
        ]
        reply: int | Sequence[int] = await self._call(
            "gcra_unless", lambda: self._gcra_unless_script(keys=[guard, redis_key], args=args)
        )
        if isinstance(reply, int):
            return None
        return _gcra_result(reply, limit)

    def guarded_key(self, guard_key: str, key: str) -> str:
        """Where `gcra_unless` keeps the state of `key` guarded by `guard_key`.

        In the guard's hash slot, so that one script may touch both on Cluster: the
        `{...}` tag is the guard's, as in `redis_key(guard_key)`. The `gcra:` form
        collides with neither data keys (`{` right after the prefix) nor owner
        indexes (`owner:`).
        """
        return f"{self.key_prefix}gcra:{{{guard_key}}}:{key}"

    async def add_to_owner(self, owner: str, key: str, ttl_seconds: float) -> None:
        index_key = self.owner_key(check_key(owner, "owner"))
        check_key(key)
        args: list[str | int] = [
            key,
            _ttl_ms(check_required_ttl(ttl_seconds)),
            self.max_keys_per_owner,
        ]
        evicted: list[bytes] = await self._call(
            "add_to_owner", lambda: self._add_owner_script(keys=[index_key], args=args)
        )
        if evicted:
            # Past the bound, fail safe: the keys that expire first end now.
            await self._delete_keys([member.decode("utf-8") for member in evicted])
            await self._call("add_to_owner", lambda: self._client.zrem(index_key, *evicted))

    async def delete_owned(self, owner: str) -> int:
        index_key = self.owner_key(check_key(owner, "owner"))
        reply = await self._call("delete_owned", lambda: self._client.zrange(index_key, 0, -1))
        raw = [member for member in reply if isinstance(member, bytes)]
        if not raw:
            return 0
        deleted = await self._delete_keys([member.decode("utf-8") for member in raw])
        await self._call("delete_owned", lambda: self._client.zrem(index_key, *raw))
        return deleted

    async def ping(self) -> None:
        await self._call("ping", lambda: self._client.ping())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._client.aclose()
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"redis store: close failed: {self._describe(exc)}") from exc

    # -- internals ---------------------------------------------------------------

    async def _delete_keys(self, keys: Sequence[str]) -> int:
        deleted = 0
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [self.redis_key(key) for key in keys[start : start + _DELETE_BATCH]]
            deleted += await self._call("delete_owned", partial(self._client.delete, *batch))
        return deleted

    async def _call(self, operation: str, make: Callable[[], Awaitable[T]]) -> T:
        if self._closed:
            raise StoreError("redis store is closed")
        try:
            async with asyncio.timeout(self._deadline):
                if isinstance(self._client, RedisCluster):
                    # Learn the slot map before the first command: commands sent
                    # before it is known go to a default node and bounce (MOVED).
                    await self._client.initialize()
                return await make()
        except (RedisError, RedisClusterException, OSError) as exc:
            # TimeoutError (the deadline) is an OSError.
            raise StoreError(f"redis store: {operation} failed: {self._describe(exc)}") from exc

    def _describe(self, exc: BaseException) -> str:
        """The error's class and message, with any password replaced."""
        message = str(exc)
        for secret in self._secrets:
            message = message.replace(secret, "***")
        if len(message) > _MAX_MESSAGE_CHARS:
            message = message[:_MAX_MESSAGE_CHARS] + "..."
        return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
