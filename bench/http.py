"""Over HTTP: `wrk` against uvicorn on 127.0.0.1, one server process per stack.

For each server implementation (uvicorn with httptools + uvloop, and with h11 +
asyncio) and each stack, one uvicorn process serves the stack; the benchmark then:

1. sends each request once with `http.client` and requires a 200 (a 3xx would pass
   wrk's own check, which counts only answers outside 2xx and 3xx);
2. warms the server up with wrk over all routes (full mode);
3. runs wrk on each route for a fixed time (threads and connections in `Counts`),
   reading the server's CPU time (`psutil`, user + system) before and after.

wrk runs a generated Lua script: the request (method, path, headers, body: the same
bytes as in-process, see `bench.client`) and a `done` hook that prints the totals,
the status-error count and the latency percentiles as one line. A cell with any
non-2xx/3xx answer, or any connect, read or write error, stops the run.

The smoke mode starts every server at once and runs every wrk at once, for one
second, over all routes in turn: it proves each stack answers 200 under wrk, and
its figures mean nothing.

Not covered: HTTP/2, TLS, several workers, keep-alive off (wrk keeps connections
open). wrk and the server share the machine's cores, as they would in most CI runs.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

from bench.client import Request, bearer_token, build_requests
from bench.inprocess import INPROCESS_STACKS, BenchmarkError
from bench.servers import IMPLEMENTATIONS, Server, serving

# The in-process stacks, in their order, less Bastion + FastAPI, which only the
# in-process table measures.
HTTP_STACKS: Final = tuple(name for name in INPROCESS_STACKS if name != "Bastion + FastAPI")
ALL_ROUTES: Final = "all routes"
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


FULL: Final = Counts(
    duration_seconds=5, warmup_seconds=1, threads=2, connections=64, concurrent=False
)
SMOKE: Final = Counts(
    duration_seconds=1, warmup_seconds=0, threads=1, connections=4, concurrent=True
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
class Results:
    counts: Counts
    cells: list[Cell]


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


def run_http(counts: Counts = FULL, stacks: Sequence[str] = HTTP_STACKS) -> Results:
    """Every stack on every server implementation; raises `BenchmarkError` on a failure."""
    wrk_path()
    token = bearer_token()
    pairs = [(stack, impl) for impl in IMPLEMENTATIONS for stack in stacks]
    if counts.concurrent:
        with serving(pairs) as servers:
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
    cells: list[Cell] = []
    for pair in pairs:
        with serving([pair]) as (server,):
            requests = _requests_for(server, token)
            preflight(server, requests)
            if counts.warmup_seconds:
                _WrkRun(server, requests, ALL_ROUTES, counts, counts.warmup_seconds).finish()
            for request in requests:
                run = _WrkRun(server, [request], request.name, counts, counts.duration_seconds)
                cells.append(run.finish())
    return Results(counts, cells)


def ratio(results: Results, implementation: str, stack: str, route: str, base: str) -> float | None:
    """`stack`'s req/s over `base`'s, same server implementation and route."""
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
    return "\n".join(lines) + "\n"


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
