"""Memory: distinct client keys sprayed through the rate limiter's in-memory storage.

Threat measured: a client that rotates its address (or a botnet) creates one
rate-limit bucket per address; an unbounded store grows until the process dies.

* Bastion: `keys` requests, each from a new IPv4 address, through
  `RateLimitMiddleware` (the real key path: client address, grouping, hashed key,
  one GCRA step) on a `MemoryStore` with its default bound (in smoke mode a bound of
  a quarter of the keys, so eviction still happens).
* slowapi: the same addresses hit `limits`' `MemoryStorage` (what slowapi's
  `storage_uri="memory://"` builds) through `FixedWindowRateLimiter.hit(limit, key,
  scope)`, the call slowapi makes per request, with the key slowapi's
  `get_remote_address` returns.

Both use a rate of `100/day`, so no bucket expires during the spray (a per-second
rate would let both stores drop entries as they expire, hiding the growth).

Bytes are the memory `tracemalloc` sees still allocated after the spray (and a
garbage collection), over the entries held: Python objects of the store and
everything they keep, not the allocator's free lists (RSS would include those).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import time
import tracemalloc
from dataclasses import dataclass
from typing import Final

from bastion.events import EventEmitter
from bastion.ratelimit import RateLimitMiddleware
from bastion.ratelimit.settings import RateLimitSettings
from bastion.stores.memory import DEFAULT_MAX_ENTRIES, MemoryStore
from bastion.types import Receive, Scope, Send
from bench.inprocess import ROUTES, BenchmarkError, build_scope, call_once

SPRAY_RATE: Final = "100/day"
# First sprayed address: 11.0.0.0, then consecutive addresses (each its own /32 group).
_FIRST_ADDRESS: Final = 11 << 24
MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Counts:
    keys: int
    bound: int


FULL: Final = Counts(keys=1_000_000, bound=DEFAULT_MAX_ENTRIES)
SMOKE: Final = Counts(keys=2_000, bound=500)


@dataclass(frozen=True, slots=True)
class Row:
    storage: str
    keys: int
    entries: int
    bound: int | None
    traced_bytes: int
    seconds: float

    @property
    def bytes_per_entry(self) -> float:
        return self.traced_bytes / self.entries if self.entries else 0.0


@dataclass(frozen=True, slots=True)
class Results:
    counts: Counts
    rows: list[Row]


def _address(index: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", _FIRST_ADDRESS + index))


async def _ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _spray_bastion(counts: Counts) -> Row:
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        store = MemoryStore(max_entries=counts.bound)
        settings = RateLimitSettings.model_validate({"limits": {"*": [SPRAY_RATE]}})
        limiter = RateLimitMiddleware(_ok_app, settings, store=store, events=EventEmitter([]))
        route = ROUTES[0]
        scope = build_scope(route)
        start = time.perf_counter()
        for index in range(counts.keys):
            scope["client"] = (_address(index), 40000)
            status = await call_once(limiter, scope, route.body)
            if status != 200:
                raise BenchmarkError(f"memory spray, key {index}: status {status}")
        seconds = time.perf_counter() - start
        del scope
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - baseline
        row = Row(
            "Bastion MemoryStore", counts.keys, len(store), store.max_entries, traced, seconds
        )
        await store.close()
        return row
    finally:
        tracemalloc.stop()


def _spray_limits(counts: Counts) -> Row:
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter

    from limits import parse

    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        storage = MemoryStorage()
        limiter = FixedWindowRateLimiter(storage)
        limit = parse(SPRAY_RATE)
        start = time.perf_counter()
        for index in range(counts.keys):
            if not limiter.hit(limit, _address(index), "bench.apps.hello"):
                raise BenchmarkError(f"limits spray, key {index}: refused")
        seconds = time.perf_counter() - start
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - baseline
        entries = len(storage.storage)
        row = Row("slowapi / limits MemoryStorage", counts.keys, entries, None, traced, seconds)
        storage.reset()
        return row
    finally:
        tracemalloc.stop()


def run_memory(counts: Counts = FULL) -> Results:
    rows = [asyncio.run(_spray_bastion(counts)), _spray_limits(counts)]
    bastion = rows[0]
    if bastion.entries > counts.bound:
        raise BenchmarkError(
            f"the memory store holds {bastion.entries} entries, over its bound {counts.bound}"
        )
    return Results(counts, rows)


def render_memory(results: Results) -> str:
    lines = [
        f"{results.counts.keys:,} distinct client addresses, one request each, rate "
        f"`{SPRAY_RATE}`; memory still allocated afterwards (tracemalloc).",
        "",
        "| storage | keys sprayed | entries held | bound | MiB held | bytes/entry | spray s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results.rows:
        bound = "none" if row.bound is None else f"{row.bound:,}"
        lines.append(
            f"| {row.storage} | {row.keys:,} | {row.entries:,} | {bound} "
            f"| {row.traced_bytes / MIB:,.1f} | {row.bytes_per_entry:,.0f} | {row.seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"
