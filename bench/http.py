"""Over HTTP: `wrk` against uvicorn on 127.0.0.1, one server process per stack.

For each server implementation (uvicorn with httptools + uvloop, and with h11 +
asyncio) and each stack, one uvicorn process serves the stack; the benchmark then:

1. sends each request once with `http.client` and requires a 200 (a 3xx would pass
   wrk's own check, which counts only answers outside 2xx and 3xx);
2. warms the server up with wrk over all routes (full mode);
3. runs wrk on each route for a fixed time (threads and connections in `Counts`),
   reading the server's CPU time (`psutil`, user + system) before and after.

The budget's pairs (Bastion + Starlette over plain Starlette, httptools + uvloop,
GET /hello and POST /submit) are measured apart, in pairs. This machine has slow
phases: for seconds at a time, at arbitrary moments, the same code runs about 1.5x
slower. Two cells measured minutes apart, once each, can land one in a slow phase
and the other not, and their ratio then moves by a third from run to run. So both
servers stay up at once (one wrk at a time, never both loaded), and each route is
measured in adjacent pairs of shorter runs, alternating which server goes first;
a repetition's ratio comes from its own pair, and the budget figure is the median
of those ratios (`ratio`), with their min-max (`paired`). A slow phase that hits
one run of one pair moves that repetition's ratio, not the median. The per-stack
table keeps one cell for every stack, route and implementation: for the paired
ones, the medians over their repetitions.

wrk runs a generated Lua script: the request (method, path, headers, body: the same
bytes as in-process, see `bench.client`) and a `done` hook that prints the totals,
the status-error count and the latency percentiles as one line. A cell with any
non-2xx/3xx answer, or any connect, read or write error, stops the run.

The smoke mode starts every server at once and runs every wrk at once, for one
second, over all routes in turn: it proves each stack answers 200 under wrk, and
its figures mean nothing (so it measures no pairs).

Not covered: HTTP/2, TLS, several workers, keep-alive off (wrk keeps connections
open). wrk and the server share the machine's cores, as they would in most CI runs.
"""

from __future__ import annotations

import http.client
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

from bench.client import Request, bearer_token, build_requests
from bench.inprocess import INPROCESS_STACKS, BenchmarkError, Paired, summarise
from bench.servers import IMPLEMENTATIONS, Server, serving

# The in-process stacks, in their order, less Bastion + FastAPI, which only the
# in-process table measures.
HTTP_STACKS: Final = tuple(name for name in INPROCESS_STACKS if name != "Bastion + FastAPI")
ALL_ROUTES: Final = "all routes"
# The budget's pairs (issue #8): `PAIR_STACK`'s req/s over `PAIR_BASE`'s.
PAIR_IMPLEMENTATION: Final = "httptools+uvloop"
PAIR_STACK: Final = "Bastion + Starlette"
PAIR_BASE: Final = "Starlette"
PAIR_ROUTES: Final = ("GET /hello", "POST /submit")
_RESULT_MARK: Final = "BENCH_RESULT"
_WRK_TIMEOUT_MARGIN_SECONDS: Final = 60


@dataclass(frozen=True, slots=True)
class Counts:
    duration_seconds: int
    warmup_seconds: int
    threads: int
    connections: int
    concurrent: bool
    """Smoke mode: every server and every wrk at once, all routes in one run."""
    paired_repetitions: int
    """Adjacent pairs per budget route (0: the budget pairs get single cells too)."""
    paired_seconds: int
    """wrk's time for each run of a pair."""


# Nine pairs of 2 s per route: an odd count, so the median is one repetition's ratio,
# an unspoilt one while at most four are spoilt by slow phases; short runs, so a pair
# spans 4 s and a phase more often covers both of its runs or neither. (Simulated
# with 1.5x slow phases of 2-10 s on average over 20-50% of the time, the median of
# 9 x 2 s fell within 5% of the true ratio in 66-100% of runs, of 4 x 3 s in
# 41-93%, of one 5 s cell each in 24-76%.) 2 routes x 9 pairs x 2 runs x 2 s = 72 s,
# in place of the four 5 s cells (20 s) they replace.
FULL: Final = Counts(
    duration_seconds=5,
    warmup_seconds=1,
    threads=2,
    connections=64,
    concurrent=False,
    paired_repetitions=9,
    paired_seconds=2,
)
SMOKE: Final = Counts(
    duration_seconds=1,
    warmup_seconds=0,
    threads=1,
    connections=4,
    concurrent=True,
    paired_repetitions=0,
    paired_seconds=0,
)


@dataclass(frozen=True, slots=True)
class Cell:
    implementation: str
    stack: str
    route: str
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    timeouts: int


@dataclass(frozen=True, slots=True)
class Repetition:
    """One adjacent pair of runs on one route: the stack's cell and the base's."""

    first: str
    """The stack whose wrk ran first."""
    stack: Cell
    base: Cell

    @property
    def ratio(self) -> float:
        return self.stack.requests_per_second / self.base.requests_per_second

    @property
    def cpu_ratio(self) -> float:
        return self.stack.cpu_us_per_request / self.base.cpu_us_per_request


@dataclass(frozen=True, slots=True)
class Pair:
    """`stack` against `base` on one route and implementation, in repetitions."""

    implementation: str
    stack: str
    base: str
    route: str
    repetitions: tuple[Repetition, ...]

    @property
    def ratio(self) -> Paired:
        """The stack's req/s over the base's: each repetition's own ratio, then the median."""
        return summarise([repetition.ratio for repetition in self.repetitions])

    @property
    def cpu_ratio(self) -> Paired:
        """The stack's server CPU per request over the base's, paired the same way."""
        return summarise([repetition.cpu_ratio for repetition in self.repetitions])

    def cells(self) -> tuple[Cell, Cell]:
        """The stack's and the base's cell for the per-stack table: medians over the runs."""
        return (
            _median_cell([repetition.stack for repetition in self.repetitions]),
            _median_cell([repetition.base for repetition in self.repetitions]),
        )


def _median_cell(cells: Sequence[Cell]) -> Cell:
    first = cells[0]
    return Cell(
        implementation=first.implementation,
        stack=first.stack,
        route=first.route,
        requests=sum(cell.requests for cell in cells),
        requests_per_second=statistics.median(cell.requests_per_second for cell in cells),
        p50_ms=statistics.median(cell.p50_ms for cell in cells),
        p99_ms=statistics.median(cell.p99_ms for cell in cells),
        cpu_us_per_request=statistics.median(cell.cpu_us_per_request for cell in cells),
        timeouts=sum(cell.timeouts for cell in cells),
    )


def schedule(
    repetitions: int, routes: Sequence[str], stack: str, base: str
) -> Iterator[tuple[str, tuple[str, str]]]:
    """`(route, (first, second))` in run order.

    Repetition by repetition, every route in turn, so each route's pairs spread over
    the whole phase rather than sharing one stretch of it; the base goes first on
    even repetitions and the stack on odd ones, so whatever going first or second
    does (a phase starting or ending within the pair) does not always fall on the
    same side.
    """
    for repetition in range(repetitions):
        order = (base, stack) if repetition % 2 == 0 else (stack, base)
        for route in routes:
            yield route, order


@dataclass(frozen=True, slots=True)
class Results:
    counts: Counts
    cells: list[Cell]
    pairs: tuple[Pair, ...] = ()


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchmarkError("wrk is not installed (Debian: apt-get install wrk)")
    return path


def _lua_string(value: str | bytes) -> str:
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _lua_headers(request: Request) -> str:
    pairs = [
        f"[{_lua_string(name)}] = {_lua_string(value)}"
        for name, value in ((b"user-agent", b"bench"), *request.headers)
        if name != b"content-length"  # wrk.format sets it from the body
    ]
    return "{" + ", ".join(pairs) + "}"


_DONE: Final = f"""
done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format("{_RESULT_MARK} %d %d %d %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def lua_script(requests: Sequence[Request]) -> str:
    """A wrk script sending `requests` in turn (one request: wrk's static fast path)."""
    if len(requests) == 1:
        (only,) = requests
        body = f"wrk.body = {_lua_string(only.body)}\n" if only.body else ""
        lines = (
            f"wrk.method = {_lua_string(only.method)}\n"
            f"wrk.path = {_lua_string(only.path)}\n{body}"
            f"for k, v in pairs({_lua_headers(only)}) do wrk.headers[k] = v end\n"
        )
        return lines + _DONE
    formats = "\n".join(
        f"  requests[{i}] = wrk.format({_lua_string(r.method)}, {_lua_string(r.path)}, "
        f"{_lua_headers(r)}, {_lua_string(r.body) if r.body else 'nil'})"
        for i, r in enumerate(requests, start=1)
    )
    return (
        "local requests = {}\nlocal index = 0\n"
        f"init = function(args)\n{formats}\nend\n"
        "request = function()\n  index = index % #requests + 1\n  return requests[index]\nend\n"
        + _DONE
    )


@dataclass(frozen=True, slots=True)
class _WrkTotals:
    requests: int
    duration_us: int
    status_errors: int
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    p50_us: int
    p99_us: int


def parse_wrk_output(output: str) -> _WrkTotals:
    for line in output.splitlines():
        if line.startswith(_RESULT_MARK):
            fields = [int(float(f)) for f in line.split()[1:]]
            return _WrkTotals(*fields)
    raise BenchmarkError(f"wrk printed no result line:\n{output}")


def preflight(server: Server, requests: Sequence[Request]) -> None:
    """Each request once with http.client: exactly 200, or the run stops."""
    for request in requests:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        try:
            connection.putrequest(request.method, request.path)
            for name, value in ((b"user-agent", b"bench"), *request.headers):
                connection.putheader(name.decode(), value.decode("latin-1"))
            if not request.body and request.method == "POST":
                connection.putheader("content-length", "0")
            connection.endheaders(request.body or None)
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise BenchmarkError(
                f"{server.stack} on uvicorn {server.implementation}, {request.name}: "
                f"status {response.status}, expected 200"
            )


def _requests_for(server: Server, token: str) -> tuple[Request, ...]:
    return build_requests(f"http://{server.host}:{server.port}", token)


class _WrkRun:
    """One wrk process against one server, with the server's CPU time around it."""

    def __init__(
        self, server: Server, requests: Sequence[Request], route: str, counts: Counts, seconds: int
    ) -> None:
        self.server = server
        self.route = route
        self._directory = tempfile.TemporaryDirectory(prefix="bench-wrk-")
        script = Path(self._directory.name) / "script.lua"
        script.write_text(lua_script(requests), encoding="utf-8")
        self._seconds = seconds
        self._server_process = psutil.Process(server.pid)
        self._cpu_before = self._cpu_seconds()
        self._process = subprocess.Popen(  # noqa: S603  # wrk, fixed arguments
            [
                wrk_path(),
                "-t",
                str(counts.threads),
                "-c",
                str(counts.connections),
                "-d",
                f"{seconds}s",
                "--latency",
                "-s",
                str(script),
                f"http://{server.host}:{server.port}{requests[0].path}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def _cpu_seconds(self) -> float:
        times = self._server_process.cpu_times()
        return float(times.user + times.system)

    def finish(self) -> Cell:
        try:
            output, _ = self._process.communicate(
                timeout=self._seconds + _WRK_TIMEOUT_MARGIN_SECONDS
            )
        finally:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            self._directory.cleanup()
        cpu = self._cpu_seconds() - self._cpu_before
        totals = parse_wrk_output(output)
        where = f"{self.server.stack} on uvicorn {self.server.implementation}, {self.route}"
        if totals.status_errors:
            raise BenchmarkError(f"{where}: {totals.status_errors} non-2xx/3xx answers under wrk")
        if totals.connect_errors or totals.read_errors or totals.write_errors:
            raise BenchmarkError(
                f"{where}: socket errors under wrk (connect {totals.connect_errors}, "
                f"read {totals.read_errors}, write {totals.write_errors})"
            )
        if totals.requests == 0:
            raise BenchmarkError(f"{where}: wrk completed no request")
        return Cell(
            implementation=self.server.implementation,
            stack=self.server.stack,
            route=self.route,
            requests=totals.requests,
            requests_per_second=totals.requests / (totals.duration_us / 1e6),
            p50_ms=totals.p50_us / 1000,
            p99_ms=totals.p99_us / 1000,
            cpu_us_per_request=cpu * 1e6 / totals.requests,
            timeouts=totals.timeouts,
        )


def run_http(
    counts: Counts = FULL,
    stacks: Sequence[str] = HTTP_STACKS,
    implementations: Sequence[str] = tuple(IMPLEMENTATIONS),
) -> Results:
    """Every stack on every server implementation; raises `BenchmarkError` on a failure.

    The budget's pairs are measured when the counts ask for them and the stacks and
    implementations include them."""
    wrk_path()
    token = bearer_token()
    wanted = [(stack, impl) for impl in implementations for stack in stacks]
    if counts.concurrent:
        with serving(wanted) as servers:
            for server in servers:
                preflight(server, _requests_for(server, token))
            runs = [
                _WrkRun(
                    server,
                    _requests_for(server, token),
                    ALL_ROUTES,
                    counts,
                    counts.duration_seconds,
                )
                for server in servers
            ]
            return Results(counts, [run.finish() for run in runs])
    pairs = (
        run_pairs(counts, token)
        if counts.paired_repetitions
        and {PAIR_STACK, PAIR_BASE} <= set(stacks)
        and PAIR_IMPLEMENTATION in implementations
        else ()
    )
    paired_cells = {
        (cell.implementation, cell.stack, cell.route): cell
        for pair in pairs
        for cell in pair.cells()
    }
    cells: list[Cell] = []
    for stack, implementation in wanted:
        with serving([(stack, implementation)]) as (server,):
            requests = _requests_for(server, token)
            preflight(server, requests)
            if counts.warmup_seconds:
                _WrkRun(server, requests, ALL_ROUTES, counts, counts.warmup_seconds).finish()
            for request in requests:
                cell = paired_cells.get((implementation, stack, request.name))
                if cell is None:
                    run = _WrkRun(server, [request], request.name, counts, counts.duration_seconds)
                    cell = run.finish()
                cells.append(cell)
    return Results(counts, cells, pairs)


def run_pairs(counts: Counts, token: str) -> tuple[Pair, ...]:
    """The budget's pairs: both servers up, each checked and warmed up as in `run_http`,
    then `counts.paired_repetitions` adjacent pairs per route in `schedule`'s order,
    one wrk at a time."""
    stacks = (PAIR_BASE, PAIR_STACK)
    repetitions: dict[str, list[Repetition]] = {route: [] for route in PAIR_ROUTES}
    with serving([(stack, PAIR_IMPLEMENTATION) for stack in stacks]) as servers:
        by_stack = {server.stack: server for server in servers}
        requests = {
            server.stack: {request.name: request for request in _requests_for(server, token)}
            for server in servers
        }
        for server in servers:
            everything = list(requests[server.stack].values())
            preflight(server, everything)
            if counts.warmup_seconds:
                _WrkRun(server, everything, ALL_ROUTES, counts, counts.warmup_seconds).finish()
        for route, order in schedule(counts.paired_repetitions, PAIR_ROUTES, PAIR_STACK, PAIR_BASE):
            measured = {
                stack: _WrkRun(
                    by_stack[stack], [requests[stack][route]], route, counts, counts.paired_seconds
                ).finish()
                for stack in order
            }
            repetitions[route].append(
                Repetition(order[0], measured[PAIR_STACK], measured[PAIR_BASE])
            )
    return tuple(
        Pair(PAIR_IMPLEMENTATION, PAIR_STACK, PAIR_BASE, route, tuple(runs))
        for route, runs in repetitions.items()
    )


def paired(results: Results, implementation: str, stack: str, route: str, base: str) -> Pair | None:
    """The paired measurement of `stack` against `base`, if this run made one."""
    key = (implementation, stack, route, base)
    return next(
        (p for p in results.pairs if (p.implementation, p.stack, p.route, p.base) == key), None
    )


def ratio(results: Results, implementation: str, stack: str, route: str, base: str) -> float | None:
    """`stack`'s req/s over `base`'s, same server implementation and route: the median
    of the paired repetitions' ratios where the two were measured in pairs, else the
    ratio of their cells."""
    pair = paired(results, implementation, stack, route, base)
    if pair is not None:
        return pair.ratio.median
    index = {(c.implementation, c.stack, c.route): c for c in results.cells}
    cell, other = (
        index.get((implementation, stack, route)),
        index.get((implementation, base, route)),
    )
    if cell is None or other is None:
        return None
    return cell.requests_per_second / other.requests_per_second


def render_http(results: Results) -> str:
    c = results.counts
    mode = (
        "smoke: every server and wrk at once, all routes in turn; figures meaningless"
        if c.concurrent
        else f"{c.duration_seconds} s per cell after a {c.warmup_seconds} s warm-up"
    )
    lines = [
        f"wrk, {c.threads} threads, {c.connections} connections, {mode}. Ratios are req/s over "
        "plain Starlette's (and raw ASGI's) on the same uvicorn implementation and route. "
        "Every answer was 2xx (each request checked for exactly 200 first).",
        "",
        "| uvicorn | stack | route | req/s | x Starlette | x raw | p50 ms | p99 ms "
        "| server CPU µs/req |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in results.cells:
        starlette = ratio(results, cell.implementation, cell.stack, cell.route, "Starlette")
        raw = ratio(results, cell.implementation, cell.stack, cell.route, "raw ASGI")
        lines.append(
            f"| {cell.implementation} | {cell.stack} | {cell.route} "
            f"| {cell.requests_per_second:,.0f} | {_ratio_text(starlette)} | {_ratio_text(raw)} "
            f"| {cell.p50_ms:.2f} | {cell.p99_ms:.2f} | {cell.cpu_us_per_request:.0f} |"
        )
    timeouts = sum(cell.timeouts for cell in results.cells)
    if timeouts:
        lines += ["", f"wrk counted {timeouts} timeouts (requests slower than 2 s)."]
    if results.pairs:
        lines += ["", *_pair_lines(results)]
    return "\n".join(lines) + "\n"


def _pair_lines(results: Results) -> list[str]:
    c = results.counts
    lines = [
        f"The budget's pairs: both servers up at once, {c.paired_repetitions} repetitions of "
        f"{c.paired_seconds} s per route, one wrk at a time, the base first in the 1st, 3rd, "
        "... repetition and second in the others. A repetition's ratio comes from its own "
        "adjacent pair of runs; the figure is their median (the x Starlette above), and "
        "these stacks' cells above on these routes show medians over their runs.",
        "",
        "| uvicorn | stack over base | route | req/s ratio | min-max | each repetition "
        "| server CPU µs/req ratio | min-max |",
        "|---|---|---|---:|---:|---|---:|---:|",
    ]
    for pair in results.pairs:
        rate, cpu = pair.ratio, pair.cpu_ratio
        each = ", ".join(f"{repetition.ratio:.2f}" for repetition in pair.repetitions)
        lines.append(
            f"| {pair.implementation} | {pair.stack} over {pair.base} | {pair.route} "
            f"| {rate.median:.2f} | {rate.low:.2f}-{rate.high:.2f} | {each} "
            f"| {cpu.median:.2f} | {cpu.low:.2f}-{cpu.high:.2f} |"
        )
    return lines


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
