"""Rate limiting: checks per second on the memory store and a real Redis, and what
each check costs Redis.

A check is one request through `RateLimitMiddleware` (the settings of
`bench.stacks`: one never-tripping rate on every route, bans on as by default) in
front of an app that answers 200 at once, called in-process as in
`bench.inprocess`: the client key, the ban check, the GCRA step, the headers. A
second row per store times the bare store step (`Store.gcra` on one key).

Redis is a real `redis-server` on a random port in a temporary directory, started
and stopped by `tests/support/redis.py` (the test suite's helper). What a check costs
it is counted by the server itself, over a separate run of `probe_checks` checks:

* MONITOR lists every command a client sent (the commands a script runs inside
  Redis are marked `lua` and counted apart); each is one round trip, since the store
  sends its commands one at a time (no pipelining);
* `INFO commandstats`, reset first, counts every command executed, script-internal
  ones included.

Every check must answer 200; anything else stops the run.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

from bastion.ratelimit import RateLimitMiddleware
from bastion.stores import Store
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.types import Receive, Scope, Send
from bench.inprocess import ROUTES, BenchmarkError, build_scope, call_once
from bench.stacks import bastion_settings

_STOP_MARK: Final = "bench-monitor-stop"
# MONITOR sees at most this many commands per probe: far above a probe's share.
_MONITOR_MAX_COMMANDS: Final = 1_000_000
_MONITOR_JOIN_SECONDS: Final = 30.0
# What the probe itself sends on its own connection, left out of the count.
_ADMIN_COMMANDS: Final = frozenset({"config", "info", "echo"})
_GCRA_EMISSION_SECONDS: Final = 1e-6
_GCRA_BURST_SECONDS: Final = 1.0


@dataclass(frozen=True, slots=True)
class Counts:
    rounds: int
    checks: int
    probe_checks: int


FULL: Final = Counts(rounds=3, checks=5000, probe_checks=200)
SMOKE: Final = Counts(rounds=1, checks=20, probe_checks=5)


@dataclass(slots=True)
class Row:
    store: str
    what: str
    per_second: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.per_second)


@dataclass(frozen=True, slots=True)
class RoundTrips:
    checks: int
    client_commands: Counter[str]
    script_commands: Counter[str]
    executed: Counter[str]

    @property
    def per_check(self) -> float:
        return sum(self.client_commands.values()) / self.checks


@dataclass(frozen=True, slots=True)
class Results:
    counts: Counts
    rows: list[Row]
    round_trips: RoundTrips


async def _ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _limiter(store: Store) -> RateLimitMiddleware:
    from bastion.events import EventEmitter

    return RateLimitMiddleware(
        _ok_app, bastion_settings().ratelimit, store=store, events=EventEmitter([])
    )


async def _checks(limiter: RateLimitMiddleware, count: int) -> float:
    route = ROUTES[0]
    scope = build_scope(route)
    start = time.perf_counter()
    for _ in range(count):
        status = await call_once(limiter, scope, route.body)
        if status != 200:
            raise BenchmarkError(f"rate-limit check on {type(limiter.store).__name__}: {status}")
    return count / (time.perf_counter() - start)


async def _gcra_steps(store: Store, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        result = await store.gcra(
            "bench:gcra",
            emission_interval_seconds=_GCRA_EMISSION_SECONDS,
            burst_tolerance_seconds=_GCRA_BURST_SECONDS,
        )
        if not result.allowed:
            raise BenchmarkError("the bare GCRA step refused: the benchmark rate tripped")
    return count / (time.perf_counter() - start)


def _monitor(port: int, ready: threading.Event, seen: list[tuple[str, str]]) -> None:
    """Record (client type, command name) of every command until the stop mark."""
    import redis

    with (
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=10) as client,
        client.monitor() as monitor,
    ):
        ready.set()
        for _ in range(_MONITOR_MAX_COMMANDS):
            command = monitor.next_command()
            text = str(command["command"])
            if _STOP_MARK in text:
                return
            seen.append((str(command.get("client_type", "")), text.split(" ", 1)[0].lower()))


async def _probe_round_trips(
    server_port: int, limiter: RateLimitMiddleware, checks: int
) -> RoundTrips:
    import redis

    with redis.Redis(host="127.0.0.1", port=server_port, socket_timeout=10) as admin:
        admin.ping()  # connect now, so its handshake is not seen by MONITOR
        seen: list[tuple[str, str]] = []
        ready = threading.Event()
        watcher = threading.Thread(target=_monitor, args=(server_port, ready, seen), daemon=True)
        watcher.start()
        if not ready.wait(_MONITOR_JOIN_SECONDS):
            raise BenchmarkError("redis MONITOR did not start")
        await asyncio.sleep(0.1)  # MONITOR is registered once its reply is read
        admin.config_resetstat()
        await _checks(limiter, checks)
        stats = admin.info("commandstats")
        admin.echo(_STOP_MARK)
        watcher.join(_MONITOR_JOIN_SECONDS)
        if watcher.is_alive():
            raise BenchmarkError("redis MONITOR did not see the stop mark")
    executed: Counter[str] = Counter()
    for name, values in stats.items():
        command = name.removeprefix("cmdstat_")
        if not command.startswith(("config", "info")):
            executed[command] = int(values["calls"])
    client = Counter(name for kind, name in seen if kind != "lua" and name not in _ADMIN_COMMANDS)
    script = Counter(name for kind, name in seen if kind == "lua")
    return RoundTrips(checks, client, script, executed)


async def _run(counts: Counts, redis_url: str, redis_port: int) -> Results:
    memory = MemoryStore()
    redis_store = RedisStore(redis_url)
    stores: dict[str, Store] = {"memory": memory, "redis": redis_store}
    limiters = {name: _limiter(store) for name, store in stores.items()}
    rows = {
        (name, what): Row(name, what)
        for name in stores
        for what in ("RateLimitMiddleware check", "bare Store.gcra step")
    }
    jobs: dict[tuple[str, str], Callable[[], Awaitable[float]]] = {}
    for name in stores:
        limiter, store = limiters[name], stores[name]
        jobs[(name, "RateLimitMiddleware check")] = partial(_checks, limiter, counts.checks)
        jobs[(name, "bare Store.gcra step")] = partial(_gcra_steps, store, counts.checks)
    try:
        for job in jobs.values():  # warm-up: connections, script loading
            await job()
        for _ in range(counts.rounds):
            for key, job in jobs.items():
                rows[key].per_second.append(await job())
        round_trips = await _probe_round_trips(redis_port, limiters["redis"], counts.probe_checks)
    finally:
        await redis_store.close()
        await memory.close()
    return Results(counts, list(rows.values()), round_trips)


def run_ratelimit(counts: Counts = FULL) -> Results:
    if shutil.which("redis-server") is None:
        raise BenchmarkError("redis-server is not installed (Debian: apt-get install redis-server)")
    from tests.support.redis import RedisServer

    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        server = RedisServer(Path(directory))
        try:
            server.start()
            return asyncio.run(_run(counts, server.url, server.port))
        finally:
            server.stop()


def _counter_text(counter: Counter[str], checks: int) -> str:
    if not counter:
        return "none"
    return ", ".join(f"{name} {calls / checks:.2f}" for name, calls in counter.most_common())


def render_ratelimit(results: Results) -> str:
    c, trips = results.counts, results.round_trips
    lines = [
        f"In-process, {c.rounds} round(s) of {c.checks} sequential checks per row, median "
        "of rounds; Redis on 127.0.0.1 (real `redis-server`, one client connection). "
        "Every check answered 200.",
        "",
        "| store | what | per second | µs each |",
        "|---|---|---:|---:|",
    ]
    for row in results.rows:
        lines.append(f"| {row.store} | {row.what} | {row.median:,.0f} | {1e6 / row.median:.1f} |")
    lines += [
        "",
        f"Redis per `RateLimitMiddleware` check (counted by the server over {trips.checks} "
        "checks):",
        "",
        "| figure | per check | commands |",
        "|---|---:|---|",
        f"| round trips (commands the client sent, MONITOR) | {trips.per_check:.2f} "
        f"| {_counter_text(trips.client_commands, trips.checks)} |",
        f"| commands run inside scripts (MONITOR, `lua`) "
        f"| {sum(trips.script_commands.values()) / trips.checks:.2f} "
        f"| {_counter_text(trips.script_commands, trips.checks)} |",
        f"| commands executed (INFO commandstats) "
        f"| {sum(trips.executed.values()) / trips.checks:.2f} "
        f"| {_counter_text(trips.executed, trips.checks)} |",
    ]
    return "\n".join(lines) + "\n"
