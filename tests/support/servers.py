"""Real ASGI servers on 127.0.0.1 for tests that need real sockets.

The test binds the listening socket itself (port 0, so the kernel picks a free port,
with no race) and hands the file descriptor to the server process. The process is
stopped by its own id when the test ends, whatever happened.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

_START_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class RunningServer:
    url: str
    host: str
    port: int
    pid: int


def _wait_until_serving(host: str, port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5) as probe:
                probe.sendall(b"GET /__bastion_probe__ HTTP/1.1\r\nHost: localhost\r\n\r\n")
                if probe.recv(16):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start in time")


@contextmanager
def serve(
    factory: str,
    *,
    server: str = "uvicorn",
    env: Mapping[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[RunningServer]:
    """Serve `module:factory` (a function returning the ASGI app) on 127.0.0.1."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # A server handed a socket by fd may take it for a Unix socket and never set
    # TCP_NODELAY; accepted sockets inherit it from the listener (Linux), so a
    # response written in two parts does not wait ~40 ms for a delayed ACK.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    host, port = listener.getsockname()
    fd = listener.fileno()
    if server == "uvicorn":
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--fd",
            str(fd),
            "--log-level",
            "warning",
            *extra_args,
        ]
    elif server == "hypercorn":
        module, attr = factory.split(":")
        command = [
            sys.executable,
            "-m",
            "hypercorn",
            f"{module}:{attr}()",
            "--bind",
            f"fd://{fd}",
            "--log-level",
            "warning",
            *extra_args,
        ]
    else:
        raise ValueError(server)
    process_env = {**os.environ, **(env or {})}
    process = subprocess.Popen(command, pass_fds=(fd,), env=process_env)
    listener.close()
    try:
        _wait_until_serving(host, port, process)
        yield RunningServer(f"http://{host}:{port}", host, port, process.pid)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
