"""uvicorn servers on 127.0.0.1 for the HTTP and WebSocket benchmarks.

Each server is a `uvicorn` subprocess on 127.0.0.1 and a random free port, which
builds the stack named in `BENCH_STACK`. Unlike `tests/support/servers.py`, the
socket is not handed over as a file descriptor: uvicorn takes an inherited
descriptor for a Unix socket, so asyncio and uvloop leave Nagle's algorithm on, and
every response written in two parts then waits for the client's delayed ACK (a
40 ms stall per request that would measure the kernel, not the stack). A port taken
between the probe and uvicorn's bind makes the process exit; it is started again on
another port. Starting and waiting are separate, so the smoke mode can start every
server at once. Every process is stopped by its own id (SIGTERM, then SIGKILL), and
its output goes to a log file that a failure quotes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.stacks import STACK_VARIABLE

START_TIMEOUT_SECONDS: Final = 60.0
STOP_TIMEOUT_SECONDS: Final = 10.0
REPOSITORY: Final = Path(__file__).resolve().parent.parent
# Server implementation -> uvicorn options.
IMPLEMENTATIONS: Final[dict[str, tuple[str, ...]]] = {
    "httptools+uvloop": ("--http", "httptools", "--loop", "uvloop"),
    "h11+asyncio": ("--http", "h11", "--loop", "asyncio"),
}


HOST: Final = "127.0.0.1"
START_ATTEMPTS: Final = 5


@dataclass(slots=True)
class Server:
    stack: str
    implementation: str
    log: Path
    host: str = HOST
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    attempts: int = 0
    prefix: tuple[str, ...] = ()
    """A command uvicorn's runs under (`bench.http_instructions`: valgrind)."""
    environment: tuple[tuple[str, str], ...] = ()
    """Variables set for the server on top of ours."""

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("server not started")
        return self.process.pid

    @property
    def name(self) -> str:
        return f"{self.stack} on uvicorn {self.implementation}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def start(
    stack: str,
    implementation: str,
    log_directory: Path,
    *,
    prefix: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
) -> Server:
    """Start uvicorn serving `stack`, under the command `prefix` if any, with
    `environment` added to its variables; returns at once (see `wait_until_serving`)."""
    safe = "".join(c if c.isalnum() else "-" for c in f"{stack}-{implementation}")
    server = Server(
        stack,
        implementation,
        log_directory / f"{safe}.log",
        prefix=tuple(prefix),
        environment=tuple((environment or {}).items()),
    )
    _launch(server)
    return server


def _launch(server: Server) -> None:
    server.port = _free_port()
    server.attempts += 1
    command = [
        *server.prefix,
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "bench.stacks:app_from_environment",
        "--host",
        HOST,
        "--port",
        str(server.port),
        "--log-level",
        "warning",
        "--no-access-log",
        *IMPLEMENTATIONS[server.implementation],
    ]
    python_path = os.pathsep.join(
        p for p in (str(REPOSITORY), os.environ.get("PYTHONPATH", "")) if p
    )
    env = {
        **os.environ,
        STACK_VARIABLE: server.stack,
        "PYTHONPATH": python_path,
        **dict(server.environment),
    }
    with server.log.open("ab") as log:
        server.process = subprocess.Popen(  # noqa: S603  # our interpreter (and prefix), fixed arguments
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPOSITORY
        )


def _log_tail(server: Server) -> str:
    try:
        return server.log.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def wait_until_serving(server: Server, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Block until the server answers a request (any status); raise if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = server.process
        if process is None or process.poll() is not None:
            if server.attempts < START_ATTEMPTS:  # e.g. the port was taken meanwhile
                _launch(server)
                continue
            raise RuntimeError(f"{server.name} exited early:\n{_log_tail(server)}")
        try:
            with socket.create_connection((server.host, server.port), timeout=1) as probe:
                probe.sendall(b"GET /__bench_probe__ HTTP/1.1\r\nHost: localhost\r\n\r\n")
                if probe.recv(16):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} did not start:\n{_log_tail(server)}")


def stop(server: Server) -> None:
    """Stop the server by its pid and reap it."""
    process, server.process = server.process, None
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


@contextmanager
def serving(wanted: Sequence[tuple[str, str]]) -> Iterator[list[Server]]:
    """Start every `(stack, implementation)` at once, wait for all; stop all on exit."""
    servers: list[Server] = []
    stack_context = ExitStack()
    try:
        logs = stack_context.enter_context(tempfile.TemporaryDirectory(prefix="bench-servers-"))
        for stack, implementation in wanted:
            servers.append(start(stack, implementation, Path(logs)))
        for server in servers:
            wait_until_serving(server)
        yield servers
    finally:
        for server in servers:
            stop(server)
        stack_context.close()
