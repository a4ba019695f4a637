"""In-process benchmark: direct ASGI calls, no server, no sockets.

Each variant (an application, with or without Bastion around it) gets the same three
requests, built once as scopes and copied fresh for every call. Every response's
status is checked: a variant whose requests fail aborts the run, since its timing
would measure a refusal, not the stack.

Timing: many short rounds; in each, every variant runs every route once, each call
timed alone with `perf_counter_ns` after a few untimed ones (`Counts.settle`). The
virtual machines this runs on have slow phases: for seconds at a time the same code
runs some 1.5 times slower, starting and ending at arbitrary moments. A ratio of two
cells measured seconds apart can land in two phases, so the budget's comparisons are
paired (`BUDGET_PAIRS`): within a round, the reference and Bastion on it run
adjacently on the same route, in blocks that alternate which goes first (ABBA in one
round, BAAB in the next) so a drift within the pair cancels. A round gives one ratio
(or difference) of the two round medians; the figure is the median of those over the
rounds, with their min-max. Every other ratio of the table is taken the same way,
per round, though only the pairs are adjacent. A cell's own "median" is over all its
calls, and its min-max that of its per-round medians (how stable the figure was, not
the outliers of single calls).

Call counts: the number of Python 'call' profile events per request (function entries
and coroutine resumptions; C functions excluded), counted with `sys.setprofile` over
a few requests. Deterministic, so it does not drift with the machine.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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
# The budget's comparisons, (reference, Bastion on it): timed adjacently in each round.
BUDGET_PAIRS: Final = (
    ("Starlette", "Bastion + Starlette"),
    ("raw ASGI", "Bastion + raw ASGI"),
)
# About 2 ms per call against tens of µs for the rest: fewer calls per round keep a
# round short (a reference only, in no budget pair).
SLOW_VARIANTS: Final = frozenset({"Django"})


@dataclass(frozen=True, slots=True)
class Counts:
    """How much to run: `rounds` x `calls` per variant and route (`slow_calls` for
    `SLOW_VARIANTS`); a budget pair's calls of a round in `blocks` alternating blocks.

    `settle` untimed calls open every stretch of timed calls: a stack that runs after
    another takes a few tens of calls to get back to its steady speed (Bastion +
    Starlette's first calls on GET /hello some 25% slower, Starlette's some 5%), a
    cost of the benchmark's switching that a server running one stack never pays."""

    rounds: int
    calls: int
    slow_calls: int
    blocks: int
    settle: int
    warmup: int
    profiled: int


# Many rounds, so the median over rounds stays put when a few straddle a change of
# phase; few calls, so a pair's round on GET /hello lasts some 10 ms, inside a phase.
FULL: Final = Counts(
    rounds=20, calls=300, slow_calls=50, blocks=2, settle=50, warmup=100, profiled=5
)
SMOKE: Final = Counts(rounds=2, calls=5, slow_calls=5, blocks=2, settle=1, warmup=2, profiled=2)

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


@dataclass(frozen=True, slots=True)
class Slot:
    """One stretch of a round: `calls` timed calls of one variant on one route."""

    variant: str
    route: Route
    calls: int


def _blocks(calls: int, blocks: int) -> list[int]:
    """`calls` split into `blocks` sizes as equal as can be."""
    size, extra = divmod(calls, blocks)
    return [size + 1 if index < extra else size for index in range(blocks)]


def schedule(variants: Sequence[str], round_index: int, counts: Counts) -> Iterator[Slot]:
    """The order of one round: the budget pairs first, each pair adjacent on each
    route in alternating blocks (the first block's leader alternates from round to
    round, and the leader alternates from block to block); then every other variant
    on every route, in the table's order."""
    paired = [pair for pair in BUDGET_PAIRS if set(pair) <= set(variants)]
    for reference, ours in paired:
        for route in ROUTES:
            for block, calls in enumerate(_blocks(counts.calls, counts.blocks)):
                order = (reference, ours) if (round_index + block) % 2 == 0 else (ours, reference)
                for variant in order:
                    yield Slot(variant, route, calls)
    in_pairs = {variant for pair in paired for variant in pair}
    for variant in variants:
        if variant in in_pairs:
            continue
        calls = counts.slow_calls if variant in SLOW_VARIANTS else counts.calls
        for route in ROUTES:
            yield Slot(variant, route, calls)


@dataclass(frozen=True, slots=True)
class Paired:
    """One figure per round (a ratio or a difference of two cells' round medians),
    summarised: the median over rounds and the min-max."""

    median: float
    low: float
    high: float
    rounds: int


def summarise(per_round: Sequence[float]) -> Paired:
    """The median of `per_round`, with the min, the max and how many there were."""
    return Paired(statistics.median(per_round), min(per_round), max(per_round), len(per_round))


def paired_ratio(ours: Sequence[float], reference: Sequence[float]) -> Paired:
    """Per round, `ours` over `reference` (their round medians), over the rounds.

    Each round's two medians were measured close in time, so a slow phase of the
    machine lifts both; a median of all calls of each cell instead compares whatever
    phases each cell happened to fall in."""
    return summarise([o / r for o, r in zip(ours, reference, strict=True)])


def paired_difference_us(ours_ns: Sequence[float], reference_ns: Sequence[float]) -> Paired:
    """Per round, `ours` minus `reference` (round medians in ns), in µs, over the rounds."""
    return summarise([(o - r) / 1000 for o, r in zip(ours_ns, reference_ns, strict=True)])


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

    def ratio(self, variant: str, reference: str, route: str) -> Paired:
        """`variant` over `reference` on `route`, round by round."""
        return paired_ratio(
            self.cells[(variant, route)].round_medians_ns,
            self.cells[(reference, route)].round_medians_ns,
        )

    def added_us(self, variant: str, reference: str, route: str) -> Paired:
        """What `variant` adds to `reference` on `route`, in µs, round by round."""
        return paired_difference_us(
            self.cells[(variant, route)].round_medians_ns,
            self.cells[(reference, route)].round_medians_ns,
        )


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
    for round_index in range(counts.rounds):
        this_round: dict[tuple[str, str], list[int]] = {key: [] for key in cells}
        for slot in schedule(list(variants), round_index, counts):
            app, route = variants[slot.variant], slot.route
            scope, body = scopes[route.name], route.body
            timings = this_round[(slot.variant, route.name)]
            for _ in range(counts.settle):
                _check(slot.variant, route, await call_once(app, scope, body))
            for _ in range(slot.calls):
                start = time.perf_counter_ns()
                status = await call_once(app, scope, body)
                timings.append(time.perf_counter_ns() - start)
                _check(slot.variant, route, status)
        for key, timings in this_round.items():
            cell = cells[key]
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
    """The results as markdown: one row per variant and route, then the budget pairs."""
    c = results.counts
    slow = ", ".join(sorted(SLOW_VARIANTS & set(results.variants)))
    lines = [
        f"In-process ASGI calls: {c.rounds} rounds x {c.calls} calls per variant and route"
        f"{f' ({slow}: {c.slow_calls})' if slow else ''}, interleaved; "
        f"Python {sys.version.split()[0]}. Every response was 200. "
        '"median": over all calls; "x raw", "x Starlette": median over rounds of '
        "the ratio of the two round medians.",
        "",
        "| variant | route | median µs | round medians min-max µs | x raw | x Starlette "
        "| Python calls/req |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for variant in results.variants:
        for route in ROUTES:
            cell = results.cells[(variant, route.name)]
            raw = results.ratio(variant, "raw ASGI", route.name).median
            starlette = results.ratio(variant, "Starlette", route.name).median
            low, high = cell.spread_us
            lines.append(
                f"| {variant} | {route.name} | {cell.median_us:.1f} | {low:.1f}-{high:.1f} "
                f"| {raw:.2f} | {starlette:.2f} | {cell.calls_per_request:.0f} |"
            )
    lines += [
        "",
        f"Budget pairs, timed adjacently in each round ({c.blocks} blocks alternating "
        "which goes first): per round, the ratio and the difference of the two round "
        f"medians; the median of {c.rounds} rounds, and their min-max.",
        "",
        "| pair | route | ratio | rounds min-max | added µs | rounds min-max µs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for reference, ours in BUDGET_PAIRS:
        for route in ROUTES:
            ratio = results.ratio(ours, reference, route.name)
            added = results.added_us(ours, reference, route.name)
            lines.append(
                f"| {ours} vs {reference} | {route.name} | {ratio.median:.2f}x "
                f"| {ratio.low:.2f}-{ratio.high:.2f} | {added.median:+.1f} "
                f"| {added.low:+.1f} to {added.high:+.1f} |"
            )
    return "\n".join(lines) + "\n"
