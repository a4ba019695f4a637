"""Over HTTP, in instructions: callgrind inside a real uvicorn server.

The HTTP budget (Bastion + Starlette's req/s over plain Starlette's, uvicorn with
httptools + uvloop) is measured with wrk, and its ratio drifts on a shared virtual
machine (`bench/http.py`). The machine instructions the server process executes per
request do not drift: they repeat within half a percent on the same interpreter and
packages, whatever else the machine does, and their ratio tracks the server-CPU ratio
of the wrk runs (1.66x against 1.64x on GET /hello when this part was written). This
part counts them, stack by stack, for the budget's stacks and two references:

* "raw ASGI + Bastion's lines" (`bench.stacks.bastion_lines`): the raw app, sending
  the response header lines Bastion adds. Its difference from the raw app is what
  uvicorn spends on those lines (httptools' `send` runs two regular expressions over
  every header line, and a Python loop), a cost of the server's that Bastion's own
  code does not pay; the line under the table splits Bastion's cost in two with it.
* "Bastion + raw ASGI" and "raw ASGI": Bastion's cost with no framework around it.

How, for each stack: uvicorn starts as `bench.servers` starts it (same options, a
random port on 127.0.0.1, a log file) under `valgrind --tool=callgrind
--instr-atstart=no`, so nothing is counted until asked. For each route, the client
opens `Counts.connections` keep-alive connections and sends the warm-up requests in
rounds: one request on every connection, then every answer read (the status must be
200, the body read by its Content-Length). Then `callgrind_control -i on` turns the
count on, the measured rounds run the same way, `callgrind_control -d` writes the
count to a file of its own and resets it, `-i off` stops counting. Several
connections, so the server interleaves them as it does under wrk, which keeps many
open. Each request is the bytes wrk sends to that server,
taken from wrk itself (`wrk_request`).

The count covers everything the server process runs between `-i on` and `-d`: the
event loop, httptools, uvicorn's protocol, the stack, callgrind_control's own visits,
and uvicorn's main loop waking every 0.1 s (together some 200k instructions per
second of an idle server). That last part follows the clock, not the requests: the
600 counted requests of Bastion + Starlette take some 2 s, so it is a few tenths of
a percent of a figure, more on a machine busy enough to stretch the window. System
calls are not counted: the kernel's side of the sockets is the same for every stack.
With the hash seed fixed, two full runs agreed within half a percent on every stack
and route (Starlette, GET /hello: 184,233 and 184,200; the widest, Bastion + raw
ASGI on POST /submit: 351,277 and 349,549).

Not covered: h11 + asyncio (the budget names httptools + uvloop), WebSocket, the
price of an instruction (`bench/instructions.py` says why that is left out).

`python -m bench.http_instructions [--smoke]` prints the table alone.
"""

from __future__ import annotations

import itertools
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench import instructions, servers
from bench.client import Request, bearer_token, build_requests
from bench.http import lua_script, wrk_path
from bench.inprocess import ROUTES, BenchmarkError
from bench.servers import HOST, Server, stop
from bench.stacks import LINES_STACK, bastion_lines

IMPLEMENTATION: Final = "httptools+uvloop"
RAW: Final = "raw ASGI"
STARLETTE: Final = "Starlette"
BASTION_RAW: Final = "Bastion + raw ASGI"
BASTION_STARLETTE: Final = "Bastion + Starlette"
COUNTED_STACKS: Final = (RAW, LINES_STACK, STARLETTE, BASTION_RAW, BASTION_STARLETTE)
ROUTE_NAMES: Final = tuple(route.name for route in ROUTES)

# Under valgrind the interpreter starts some ten times slower than without it.
START_TIMEOUT_SECONDS: Final = 180.0
# One answer, or one callgrind_control command, under valgrind: seconds at most.
SOCKET_TIMEOUT_SECONDS: Final = 60.0
CONTROL_TIMEOUT_SECONDS: Final = 60.0
CAPTURE_TIMEOUT_SECONDS: Final = 30.0
_HEAD_END: Final = b"\r\n\r\n"
_CONTENT_LENGTH: Final = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Counts:
    """Per stack and route: `connections` keep-alive connections, `warmup_rounds`
    uncounted rounds of one request on each, then `rounds` counted rounds, in each of
    `windows` counted windows, of which the least count is kept.

    The least, because what the count takes in besides the requests only ever adds
    to it: uvicorn's main loop waking every 0.1 s costs some 250k instructions per
    second of the window (on 3.11 and 3.13 alike), and a busy machine stretches the
    window. Over a few smoke requests a window stretched by two seconds adds more per
    request than Bastion costs; the least of three windows drops such a one.
    """

    connections: int
    warmup_rounds: int
    rounds: int
    windows: int = 1

    @property
    def requests(self) -> int:
        """The counted requests per stack and route."""
        return self.connections * self.rounds


# 240 warm-up requests, ample: 80 or 480 gave Bastion + Starlette the same counts to
# 0.03%. 600 counted: the clock's share (module docstring) stays below a percent.
FULL: Final = Counts(connections=8, warmup_rounds=30, rounds=75)
SMOKE: Final = Counts(connections=2, warmup_rounds=1, rounds=2, windows=3)


@dataclass(frozen=True, slots=True)
class Results:
    counts: Counts
    per_request: dict[tuple[str, str], float]
    """(stack, route) -> instructions per request."""
    added_lines: dict[str, int]
    """Route -> how many response header lines Bastion adds on it."""
    python: str

    def ratio(self, stack: str, route: str, reference: str) -> float:
        """`stack`'s count over `reference`'s on `route`."""
        return self.per_request[(stack, route)] / self.per_request[(reference, route)]

    def equivalent_rate(self, stack: str, route: str) -> float:
        """Starlette's count over `stack`'s: the req/s ratio to plain Starlette of a
        server whose time goes into these instructions (the budget's HTTP terms)."""
        return 1 / self.ratio(stack, route, STARLETTE)


@dataclass(frozen=True, slots=True)
class Decomposition:
    """Bastion's instructions per request over HTTP on one route, and their part that
    is uvicorn writing the lines Bastion adds."""

    route: str
    bastion: float
    """Bastion + raw ASGI - raw ASGI."""
    server_lines: float
    """raw ASGI + Bastion's lines - raw ASGI."""

    @property
    def share(self) -> float:
        return self.server_lines / self.bastion


def decompose(results: Results, route: str) -> Decomposition:
    raw = results.per_request[(RAW, route)]
    return Decomposition(
        route,
        bastion=results.per_request[(BASTION_RAW, route)] - raw,
        server_lines=results.per_request[(LINES_STACK, route)] - raw,
    )


def missing_tools() -> list[str]:
    """What this part needs and the machine lacks (Debian packages `valgrind`, `wrk`)."""
    found = {
        "valgrind": instructions.valgrind(),
        "callgrind_control": shutil.which("callgrind_control"),
        "wrk": shutil.which("wrk"),
    }
    return [tool for tool, path in found.items() if path is None]


def _read_message(connection: socket.socket, *, response: bool) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message's head and body, the body read by its Content-Length.

    One message at a time is outstanding on a connection, so nothing may follow it.
    A response must state its length (every stack's answers here do)."""
    data = b""
    while _HEAD_END not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise BenchmarkError(f"the peer closed the connection after {len(data)} bytes")
        data += chunk
    head, _, body = data.partition(_HEAD_END)
    length = _CONTENT_LENGTH.search(head + b"\r\n")
    if length is None and response:
        raise BenchmarkError(f"a response without Content-Length: {head[:200]!r}")
    expected = 0 if length is None else int(length.group(1))
    while len(body) < expected:
        chunk = connection.recv(65536)
        if not chunk:
            raise BenchmarkError("the peer closed the connection within a body")
        body += chunk
    if len(body) > expected:
        raise BenchmarkError(f"{len(body) - expected} unexpected bytes after a message")
    return head, body


def response_status(head: bytes) -> int:
    """The status code of a response head (`HTTP/1.1 200 OK`)."""
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise BenchmarkError(f"not an HTTP response: {head[:200]!r}")
    return int(parts[1])


def exchange(connections: Sequence[socket.socket], wire: bytes, rounds: int, where: str) -> None:
    """`rounds` rounds of one request on each connection, then each answer read;
    raises `BenchmarkError` naming `where` at an answer other than 200."""
    for _ in range(rounds):
        for connection in connections:
            connection.sendall(wire)
        for connection in connections:
            head, _ = _read_message(connection, response=True)
            status = response_status(head)
            if status != 200:
                raise BenchmarkError(
                    f"{where}: status {status}, expected 200. The count stops: a stack "
                    "that refuses its requests is not being measured."
                )


def wrk_request(request: Request, port: int) -> bytes:
    """The bytes wrk sends for `request` (`bench.http.lua_script`) to a server on
    `port` of 127.0.0.1: its request line, header lines and body, taken from wrk
    itself, the header lines in `bench.client`'s order.

    wrk runs against a listening socket of our own, on another port, until its first
    request has arrived; the Host line it wrote for that port is set to `port`'s.
    wrk writes the header lines in the order of a Lua table's traversal, which
    changes from one wrk run to the next (LuaJIT seeds its string hashes): the count
    would change with it by a little, so the lines are put in one order, the Host
    line first, then the order in which `bench.client` lists them."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
        tempfile.TemporaryDirectory(prefix="bench-wrk-") as folder,
    ):
        listener.bind((HOST, 0))
        listener.listen(1)
        listener.settimeout(CAPTURE_TIMEOUT_SECONDS)
        own_port: int = listener.getsockname()[1]
        script = Path(folder) / "script.lua"
        script.write_text(lua_script([request]), encoding="utf-8")
        seconds = f"{int(CAPTURE_TIMEOUT_SECONDS)}s"
        url = f"http://{HOST}:{own_port}{request.path}"
        wrk = subprocess.Popen(  # noqa: S603  # wrk, fixed arguments
            [wrk_path(), "-t", "1", "-c", "1", "-d", seconds, "-s", str(script), url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            head, body = _first_request(listener)
        except TimeoutError as error:
            raise BenchmarkError(f"wrk sent no request within {seconds}") from error
        finally:
            wrk.kill()
            wrk.wait(timeout=CAPTURE_TIMEOUT_SECONDS)
    request_line, *lines = head.split(b"\r\n")
    own_host = b"Host: %s:%d" % (HOST.encode(), own_port)
    if lines.count(own_host) != 1:
        raise BenchmarkError(f"wrk sent no single Host line for port {own_port}: {head!r}")
    lines[lines.index(own_host)] = b"Host: %s:%d" % (HOST.encode(), port)
    order = [b"host", b"user-agent", *(name for name, _ in request.headers)]
    names = [line.partition(b":")[0].lower() for line in lines]
    if sorted(names) != sorted(order):
        raise BenchmarkError(f"wrk sent other header lines than {order!r}: {head!r}")
    lines.sort(key=lambda line: order.index(line.partition(b":")[0].lower()))
    return b"\r\n".join([request_line, *lines]) + _HEAD_END + body


def _first_request(listener: socket.socket) -> tuple[bytes, bytes]:
    """The first request sent to `listener`. wrk first opens and closes a connection
    to check the address (`wrk.resolve`): connections that close before sending
    anything are skipped."""
    while True:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(CAPTURE_TIMEOUT_SECONDS)
            if connection.recv(1, socket.MSG_PEEK):
                return _read_message(connection, response=False)


def _start(stack: str, folder: Path) -> Server:
    """A counted server for `stack`, serving: `bench.servers`' uvicorn (same command,
    options and environment) under callgrind with counting off, the hash seed fixed
    (the same dict layouts, so the same counts, every run)."""
    tool = instructions.valgrind()
    if tool is None:
        raise BenchmarkError("valgrind is not installed (Debian: apt-get install valgrind)")
    prefix = (
        tool,
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={folder}/callgrind.%p",
    )
    server = servers.start(
        stack, IMPLEMENTATION, folder, prefix=prefix, environment={"PYTHONHASHSEED": "0"}
    )
    try:
        servers.wait_until_serving(server, timeout=START_TIMEOUT_SECONDS)
    except RuntimeError as error:
        servers.stop(server)
        raise BenchmarkError(str(error)) from None
    return server


def _control(server: Server, *arguments: str) -> None:
    done = subprocess.run(  # noqa: S603  # callgrind's own tool, fixed arguments
        ["callgrind_control", *arguments, str(server.pid)],  # noqa: S607  # beside valgrind
        capture_output=True,
        text=True,
        timeout=CONTROL_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise BenchmarkError(
            f"callgrind_control {' '.join(arguments)} failed on {server.name}: "
            f"{(done.stdout + done.stderr).strip()[-1000:]}"
        )


def _totals(path: Path) -> int:
    if not path.exists():
        raise BenchmarkError(f"callgrind wrote no {path.name}")
    found = re.search(r"^totals:\s*(\d+)", path.read_text(encoding="utf-8"), re.MULTILINE)
    if found is None:
        raise BenchmarkError(f"callgrind wrote no totals in {path.name}")
    return int(found.group(1))


def _count_stack(
    stack: str, routes: Sequence[str], counts: Counts, token: str, folder: Path
) -> dict[str, float]:
    """Route name -> instructions per request, for `stack` in one counted server."""
    per_request: dict[str, float] = {}
    server = _start(stack, folder)
    try:
        # As the wrk runs send them: the `Origin` names the server's own port
        # (`bench.http`), as a page served from there would send it.
        every = build_requests(f"http://{server.host}:{server.port}", token)
        requests = [request for request in every if request.name in routes]
        dumps = itertools.count(1)
        for request in requests:
            wire = wrk_request(request, server.port)
            where = f"{stack} on uvicorn {IMPLEMENTATION} under callgrind, {request.name}"
            connections = [
                socket.create_connection((HOST, server.port), timeout=SOCKET_TIMEOUT_SECONDS)
                for _ in range(counts.connections)
            ]
            totals = []
            try:
                exchange(connections, wire, counts.warmup_rounds, where)
                for dump in itertools.islice(dumps, counts.windows):
                    _control(server, "--instr=on")
                    exchange(connections, wire, counts.rounds, where)
                    _control(server, "--dump")  # writes callgrind.<pid>.<dump>, resets
                    _control(server, "--instr=off")
                    totals.append(_totals(folder / f"callgrind.{server.pid}.{dump}"))
            finally:
                for connection in connections:
                    connection.close()
            per_request[request.name] = min(totals) / counts.requests
    finally:
        stop(server)
    return per_request


def run_http_instructions(
    counts: Counts = FULL,
    stacks: Sequence[str] = COUNTED_STACKS,
    routes: Sequence[str] = ROUTE_NAMES,
) -> Results:
    """Count `stacks` on `routes`, one counted server at a time; raises
    `BenchmarkError` when a tool is missing, a request failed, or a count is unreadable."""
    missing = missing_tools()
    if missing:
        raise BenchmarkError(
            f"{', '.join(missing)} not installed (Debian: apt-get install valgrind wrk)"
        )
    token = bearer_token()
    per_request: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-http-callgrind-") as folder:
        for stack in stacks:
            counted = _count_stack(stack, routes, counts, token, Path(folder))
            per_request.update({(stack, route): value for route, value in counted.items()})
    added = {route: len(lines) for route, lines in bastion_lines().items() if route in routes}
    return Results(counts, per_request, added, sys.version.split()[0])


def _thousands(value: float) -> str:
    return f"{value / 1000:+,.1f}k"


def decomposition_line(results: Results) -> str:
    """Bastion's instructions over HTTP on each route, and their part that is uvicorn
    handling the lines Bastion adds."""
    parts = []
    for route in ROUTE_NAMES:
        if (BASTION_RAW, route) not in results.per_request:
            continue
        split = decompose(results, route)
        parts.append(
            f"{route} {_thousands(split.bastion)}, of which {_thousands(split.server_lines)} "
            f"({split.share:.0%}) for its {results.added_lines[route]} lines"
        )
    return (
        "Bastion's instructions per request over HTTP (Bastion + raw ASGI - raw ASGI), and "
        "the part of them that is uvicorn handling the response header lines Bastion adds "
        "(raw ASGI + Bastion's lines - raw ASGI), not Bastion's code: " + "; ".join(parts) + "."
    )


def render_http_instructions(results: Results) -> str:
    """The counts as a markdown table, route by route, and the decomposition line."""
    c = results.counts
    least = f"; the least of {c.windows} counted windows" if c.windows > 1 else ""
    lines = [
        f"Machine instructions per request inside the uvicorn server process ({IMPLEMENTATION})"
        ", under `valgrind --tool=callgrind` (user space, no system calls): "
        f"{c.requests} requests per stack and route over {c.connections} keep-alive "
        f"connections, after {c.warmup_rounds} per connection of warm-up, each the bytes wrk "
        f"sends{least}; Python {results.python}, PYTHONHASHSEED=0. Repeats within half a percent "
        "(see `bench/http_instructions.py`). Every response was 200. 'req/s equivalent vs "
        "Starlette' is Starlette's count over the stack's: the req/s ratio of a server whose "
        "time goes into these instructions.",
        "",
        "| stack | route | instructions/request | x Starlette | x raw "
        "| req/s equivalent vs Starlette |",
        "|---|---|---:|---:|---:|---:|",
    ]
    stacks = list(dict.fromkeys(stack for stack, _ in results.per_request))
    for route in ROUTE_NAMES:
        for stack in stacks:
            count = results.per_request.get((stack, route))
            if count is None:
                continue
            lines.append(
                f"| {stack} | {route} | {count:,.0f} "
                f"| {results.ratio(stack, route, STARLETTE):.2f} "
                f"| {results.ratio(stack, route, RAW):.2f} "
                f"| {results.equivalent_rate(stack, route):.2f} |"
            )
    lines += ["", decomposition_line(results)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    smoke = argv[:1] == ["--smoke"]
    try:
        results = run_http_instructions(SMOKE if smoke else FULL)
    except BenchmarkError as error:
        print(f"benchmark aborted: {error}", file=sys.stderr)
        return 1
    print(render_http_instructions(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
