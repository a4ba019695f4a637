"""Streaming limits through real servers on 127.0.0.1, over raw sockets.

Raw sockets, because these tests must send what well-behaved clients never do: a
body that never ends, a body that trickles, a body longer than its Content-Length.
Every loop is bounded in iterations and every read in time.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.support.servers import RunningServer, serve

pytestmark = pytest.mark.server

MiB = 1024 * 1024
IDLE_TIMEOUT_SECONDS = 0.3
SETTINGS = {"max_body_bytes": MiB, "body_idle_timeout_seconds": IDLE_TIMEOUT_SECONDS}
READ_TIMEOUT_SECONDS = 10.0


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn"])
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with serve(
        "tests.limits.app_factory:create_app",
        server=str(request.param),
        env={"BASTION_TEST_LIMITS": json.dumps(SETTINGS)},
    ) as running:
        yield running


def connect(server: RunningServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=READ_TIMEOUT_SECONDS)


def request_head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", *headers, "", ""]
    return "\r\n".join(lines).encode()


class ResponseReader:
    """Reads Content-Length framed responses off one connection, within a time limit."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"") -> None:
        self.sock = sock
        self.buffer = buffered
        self.deadline = time.monotonic() + READ_TIMEOUT_SECONDS

    def _fill(self, needed: int) -> None:
        while len(self.buffer) < needed and time.monotonic() < self.deadline:
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            self.buffer += chunk

    def response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer and time.monotonic() < self.deadline:
            size = len(self.buffer)
            self._fill(size + 1)
            if len(self.buffer) == size:
                break
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 "), self.buffer[:200]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        self.buffer = rest
        self._fill(length)
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(head.split(b" ")[1]), body


def read_response(sock: socket.socket, buffered: bytes = b"") -> tuple[int, bytes]:
    return ResponseReader(sock, buffered).response()


def test_50_mb_chunked_upload_is_refused_in_bounded_memory(server: RunningServer) -> None:
    process = psutil.Process(server.pid)
    chunk = b"x" * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    frames = 50 * MiB // len(chunk)

    def upload() -> tuple[int, int]:
        """Send up to 50 MiB chunked; (status, bytes sent before the answer came)."""
        with connect(server) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            sock.sendall(request_head("/submit", "Transfer-Encoding: chunked"))
            answered_after: int | None = None
            buffered = b""
            for index in range(frames):
                if answered_after is None and select.select([sock], [], [], 0)[0]:
                    answered_after = index * len(chunk)
                    buffered = sock.recv(65536)
                try:
                    sock.sendall(frame)
                except OSError:  # the server may close once it has answered
                    break
            status, _ = read_response(sock, buffered)
        return status, answered_after if answered_after is not None else frames * len(chunk)

    upload()  # warm up: imports, buffers and allocator arenas settle
    before = process.memory_info().rss
    status, answered_after = upload()
    after = process.memory_info().rss
    assert status == 413
    # Refused while streaming, not after reading it all. What was sent before the
    # answer could be read sits in kernel buffers (a few MiB on loopback).
    assert answered_after < 25 * MiB
    assert after - before < 10 * MiB


def test_trickling_body_gets_408(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(request_head("/submit", "Content-Length: 100") + b"x" * 10)
        started = time.monotonic()
        status, _ = read_response(sock)  # we send nothing more: the body stalls
        elapsed = time.monotonic() - started
    assert status == 408
    assert IDLE_TIMEOUT_SECONDS * 0.8 <= elapsed < READ_TIMEOUT_SECONDS


def test_bytes_past_content_length_never_reach_the_app(server: RunningServer) -> None:
    """What follows the declared length is the next request, never more of this body."""
    head = request_head("/echo", "Content-Length: 5", "Content-Type: text/plain")
    smuggled = request_head("/echo", "Content-Length: 8", "Content-Type: text/plain")
    with connect(server) as sock:
        sock.sendall(head + b"hello" + smuggled + b"SMUGGLED")
        reader = ResponseReader(sock)
        first = reader.response()
        second = reader.response()
    assert first == (200, b"hello")
    assert second == (200, b"SMUGGLED")


def test_declared_length_over_the_limit_is_refused_before_reading(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(request_head("/submit", f"Content-Length: {50 * MiB}"))
        status, _ = read_response(sock)  # no body sent at all
    assert status == 413
