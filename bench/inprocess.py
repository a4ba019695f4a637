"""In-process benchmark: direct ASGI calls, no server, no sockets.

Each variant (an application, with or without Bastion around it) gets the same three
requests, built once as scopes and copied fresh for every call. Every response's
status is checked: a variant whose requests fail aborts the run, since its timing
would measure a refusal, not the stack.

Timing: the variants run round-robin (round 1 of every variant and route, then round
2, ...) so that drift in the machine (frequency scaling, other load) spreads over all
of them instead of landing on one. Each call is timed alone with `perf_counter_ns`;
a cell reports the median over all calls of all rounds, and the min-max of the
per-round medians (how stable the figure was, not the outliers of single calls).

Call counts: the number of Python 'call' profile events per request (function entries
and coroutine resumptions; C functions excluded), counted with `sys.setprofile` over
a few requests. Deterministic, so it does not drift with the machine.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final

from bastion.auth.middleware import AuthenticationMiddleware
from bastion.auth.policy import AuthorizationMiddleware
from bastion.cors import CORSMiddleware
from bastion.csrf import CSRFMiddleware
from bastion.errors import ErrorsMiddleware
from bastion.events import EventEmitter
from bastion.headers import HeadersMiddleware
from bastion.limits import LimitsMiddleware
from bastion.ratelimit import RateLimitMiddleware
from bastion.sessions import SessionMiddleware
from bastion.stores.memory import MemoryStore
from bastion.transport import TransportMiddleware
from bastion.types import ASGIApp, Message, Scope
from bench.apps import raw_app
from bench.client import Request, bearer_token, build_requests
from bench.stacks import SECRET_KEYS, STACKS, bastion_settings

ORIGIN: Final = "https://localhost"
CLIENT: Final = ("127.0.0.1", 50000)
# The stacks of the in-process table, in its order (WebSocket-only variants left out).
INPROCESS_STACKS: Final = (
    "raw ASGI",
    "Starlette",
    "FastAPI",
    "peer stack + Starlette",
    "peer stack + FastAPI",
    "Django",
    "Bastion + raw ASGI",
    "Bastion + Starlette",
    "Bastion + FastAPI",
)


@dataclass(frozen=True, slots=True)
class Counts:
    """How much to run: `rounds` x `calls` per variant and route, interleaved."""

    rounds: int
    calls: int
    warmup: int
    profiled: int


FULL: Final = Counts(rounds=5, calls=1000, warmup=100, profiled=5)
SMOKE: Final = Counts(rounds=2, calls=5, warmup=2, profiled=2)

Route = Request
ROUTES: Final = build_requests(ORIGIN, bearer_token())


def build_scope(route: Route) -> Scope:
    """An HTTPS request to localhost: served by every layer's defaults."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": route.method,
        "scheme": "https",
        "path": route.path,
        "raw_path": route.path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"user-agent", b"bench"), *route.headers],
        "client": CLIENT,
        "server": ("localhost", 443),
        "state": {},
    }


def _quiet() -> EventEmitter:
    # No sinks: the benchmark measures the layers, not the logging of their events.
    return EventEmitter([])


# Each layer alone, with the section of the settings the full stack uses.
_SETTINGS = bastion_settings()
LAYERS: Final[dict[str, Callable[[ASGIApp], ASGIApp]]] = {
    "errors": lambda app: ErrorsMiddleware(app, _SETTINGS.errors, events=_quiet()),
    "transport": lambda app: TransportMiddleware(app, _SETTINGS.transport, events=_quiet()),
    "limits": lambda app: LimitsMiddleware(app, _SETTINGS.limits, events=_quiet()),
    "headers": lambda app: HeadersMiddleware(app, _SETTINGS.headers, events=_quiet()),
    "cors": lambda app: CORSMiddleware(app, _SETTINGS.cors, events=_quiet()),
    "ratelimit": lambda app: RateLimitMiddleware(
        app, _SETTINGS.ratelimit, store=MemoryStore(), events=_quiet()
    ),
    "sessions": lambda app: SessionMiddleware(
        app, _SETTINGS.sessions, store=MemoryStore(), secret_keys=SECRET_KEYS, events=_quiet()
    ),
    "csrf": lambda app: CSRFMiddleware(
        app, _SETTINGS.csrf, secret_keys=SECRET_KEYS, events=_quiet()
    ),
    "auth": lambda app: AuthenticationMiddleware(
        app, _SETTINGS.auth, store=MemoryStore(), events=_quiet()
    ),
    "policy": lambda app: AuthorizationMiddleware(app, events=_quiet()),
}


def build_variants() -> dict[str, ASGIApp]:
    """Variant name -> application, in the order of the table."""
    variants = {name: STACKS[name]() for name in INPROCESS_STACKS}
    for name, build in LAYERS.items():
        variants[f"{name} alone + raw ASGI"] = build(raw_app)
    return variants


class BenchmarkError(RuntimeError):
    """A request did not succeed: the numbers would be meaningless."""


async def call_once(app: ASGIApp, scope: Scope, body: bytes) -> int:
    """One request through `app`; the status of its response (0 when none started)."""
    # A fresh copy per call: layers write into the scope (`bastion`, `session`, `user`).
    fresh = dict(scope)
    fresh["headers"] = list(scope["headers"])
    fresh["state"] = {}
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> Message:
        if messages:
            return messages.pop()
        # As a server does: `http.disconnect` only when the client leaves, which it
        # does not. Django listens for it while the view runs and cancels the wait.
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}  # pragma: no cover - never reached

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(fresh, receive, send)
    return status


def _check(variant: str, route: Route, status: int) -> None:
    if status != 200:
        raise BenchmarkError(
            f"{variant}, {route.name}: status {status}, expected 200. The benchmark stops: "
            "a stack that refuses or fails its requests does not measure the stack."
        )


@dataclass(slots=True)
class Cell:
    """Measurements of one variant on one route."""

    timings_ns: list[int] = field(default_factory=list)
    round_medians_ns: list[float] = field(default_factory=list)
    requests: int = 0
    calls_per_request: float = 0.0

    @property
    def median_us(self) -> float:
        return statistics.median(self.timings_ns) / 1000

    @property
    def spread_us(self) -> tuple[float, float]:
        return min(self.round_medians_ns) / 1000, max(self.round_medians_ns) / 1000


@dataclass(slots=True)
class Results:
    counts: Counts
    variants: list[str]
    cells: dict[tuple[str, str], Cell]


async def _count_calls(
    variant: str, app: ASGIApp, route: Route, scope: Scope, requests: int
) -> int:
    calls = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profile)
    try:
        for _ in range(requests):
            status = await call_once(app, scope, route.body)
            _check(variant, route, status)
    finally:
        sys.setprofile(None)
    return calls


async def _run(counts: Counts) -> Results:
    variants = build_variants()
    scopes = {route.name: build_scope(route) for route in ROUTES}
    cells = {(v, r.name): Cell() for v in variants for r in ROUTES}
    # Warm-up: first-call costs (imports, caches, session creation) out of the timings,
    # and a first check that every variant answers every route.
    for name, app in variants.items():
        for route in ROUTES:
            for _ in range(counts.warmup):
                _check(name, route, await call_once(app, scopes[route.name], route.body))
    for _ in range(counts.rounds):
        for name, app in variants.items():
            for route in ROUTES:
                scope, body, cell = scopes[route.name], route.body, cells[(name, route.name)]
                timings = []
                for _ in range(counts.calls):
                    start = time.perf_counter_ns()
                    status = await call_once(app, scope, body)
                    timings.append(time.perf_counter_ns() - start)
                    _check(name, route, status)
                cell.timings_ns.extend(timings)
                cell.round_medians_ns.append(statistics.median(timings))
                cell.requests += len(timings)
    for name, app in variants.items():
        for route in ROUTES:
            calls = await _count_calls(name, app, route, scopes[route.name], counts.profiled)
            cells[(name, route.name)].calls_per_request = calls / counts.profiled
    return Results(counts, list(variants), cells)


def run_benchmark(counts: Counts = FULL) -> Results:
    """Run every variant on every route; raises `BenchmarkError` if any request fails."""
    return asyncio.run(_run(counts))


def render_table(results: Results) -> str:
    """The results as a markdown table, one row per variant and route."""
    c = results.counts
    lines = [
        f"In-process ASGI calls: {c.rounds} rounds x {c.calls} calls per variant and route, "
        f"interleaved; Python {sys.version.split()[0]}. Every response was 200.",
        "",
        "| variant | route | median µs | round medians min-max µs | x raw | x Starlette "
        "| Python calls/req |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for variant in results.variants:
        for route in ROUTES:
            cell = results.cells[(variant, route.name)]
            raw = results.cells[("raw ASGI", route.name)].median_us
            starlette = results.cells[("Starlette", route.name)].median_us
            low, high = cell.spread_us
            lines.append(
                f"| {variant} | {route.name} | {cell.median_us:.1f} | {low:.1f}-{high:.1f} "
                f"| {cell.median_us / raw:.2f} | {cell.median_us / starlette:.2f} "
                f"| {cell.calls_per_request:.0f} |"
            )
    return "\n".join(lines) + "\n"
