"""Streaming limits through real servers on 127.0.0.1, over raw sockets.

Raw sockets, because these tests must send what well-behaved clients never do: a
body that never ends, a body that trickles, a body longer than its Content-Length.
Every loop is bounded in iterations and every read in time. Each server appends its
events to a file, so a test can check the reason behind a status.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from bastion.limits.reasons import REASON_BODY_TIMEOUT, REASON_JSON_TOO_DEEP
from tests.support.servers import RunningServer, serve

pytestmark = pytest.mark.server

MiB = 1024 * 1024
IDLE_TIMEOUT_SECONDS = 0.3
SETTINGS = {"max_body_bytes": MiB, "body_idle_timeout_seconds": IDLE_TIMEOUT_SECONDS}
READ_TIMEOUT_SECONDS = 10.0
# A trickle: every gap well inside the idle timeout, their sum past the total one.
TRICKLE_GAP_SECONDS = 0.1
TRICKLE_SETTINGS = {"body_idle_timeout_seconds": 0.5, "body_timeout_seconds": 0.8}
TRICKLE_MAX_PIECES = 40  # 4 s of gaps at most: five times the total timeout
SERVERS = ["uvicorn", "hypercorn"]


@dataclass(frozen=True)
class EventLog:
    """The events file of one test server."""

    path: Path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def reasons_since(self, mark: int) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as file:
            file.seek(mark)
            return [json.loads(line)["reason"] for line in file.read().splitlines()]


@dataclass(frozen=True)
class Served:
    server: RunningServer
    events: EventLog


def serve_limits(server: str, settings: Mapping[str, object], directory: Path) -> Iterator[Served]:
    events = EventLog(directory / "events.jsonl")
    with serve(
        "tests.limits.app_factory:create_app",
        server=server,
        env={"BASTION_TEST_LIMITS": json.dumps(settings), "BASTION_TEST_EVENTS": str(events.path)},
    ) as running:
        yield Served(running, events)


@pytest.fixture(scope="module", params=SERVERS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    yield from serve_limits(str(request.param), SETTINGS, tmp_path_factory.mktemp("events"))


@pytest.fixture(scope="module")
def server(served: Served) -> RunningServer:
    return served.server


# uvicorn alone: the pace is the layer's (`asyncio.timeout` around `receive`), and
# the stall test already runs it under both servers.
@pytest.fixture(scope="module", params=["uvicorn"])
def paced(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    yield from serve_limits(str(request.param), TRICKLE_SETTINGS, tmp_path_factory.mktemp("events"))


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
    sample_every = MiB // len(chunk)

    def upload() -> tuple[int, int, int]:
        """Send up to 50 MiB chunked: (status, bytes sent before the answer came, the
        server's largest RSS seen while sending, sampled every MiB and at the end)."""
        peak = 0
        with connect(server) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            sock.sendall(request_head("/submit", "Transfer-Encoding: chunked"))
            answered_after: int | None = None
            buffered = b""
            for index in range(frames):
                if index % sample_every == 0:
                    peak = max(peak, process.memory_info().rss)
                if answered_after is None and select.select([sock], [], [], 0)[0]:
                    answered_after = index * len(chunk)
                    buffered = sock.recv(65536)
                try:
                    sock.sendall(frame)
                except OSError:  # the server closed after answering, before we looked
                    if answered_after is None:
                        answered_after = index * len(chunk)
                    break
            status, _ = read_response(sock, buffered)
        peak = max(peak, process.memory_info().rss)
        sent = answered_after if answered_after is not None else frames * len(chunk)
        return status, sent, peak

    # Warm up first: imports, buffers and allocator arenas settle, so the baseline
    # taken after it is the server's steady state, not its start-up.
    assert upload()[0] == 413
    baseline = process.memory_info().rss
    status, answered_after, peak = upload()
    assert status == 413
    # Refused while streaming, not after reading it all. What was sent before the
    # answer could be read sits in kernel buffers (a few MiB on loopback).
    assert answered_after < 25 * MiB
    # Peak, not just the end: a body buffered and freed again would show only there.
    assert peak - baseline < 5 * MiB


def test_stalled_body_gets_408(served: Served) -> None:
    """The client sends part of the body, then nothing: the idle timeout ends it."""
    mark = served.events.mark()
    with connect(served.server) as sock:
        sock.sendall(request_head("/submit", "Content-Length: 100") + b"x" * 10)
        started = time.monotonic()
        status, _ = read_response(sock)  # we send nothing more: the body stalls
        elapsed = time.monotonic() - started
    assert status == 408
    assert served.events.reasons_since(mark) == [REASON_BODY_TIMEOUT]
    assert IDLE_TIMEOUT_SECONDS * 0.8 <= elapsed < READ_TIMEOUT_SECONDS


def test_trickling_body_gets_408(paced: Served) -> None:
    """The client sends a byte every TRICKLE_GAP_SECONDS, always well inside the idle
    timeout: only the total body timeout can end it (slow POST / slow loris)."""
    total = TRICKLE_SETTINGS["body_timeout_seconds"]
    mark = paced.events.mark()
    with connect(paced.server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request_head("/submit", "Content-Length: 1000"))
        started = time.monotonic()
        pieces = 0
        # select() is the gap: it waits TRICKLE_GAP_SECONDS unless the answer comes.
        while (
            pieces < TRICKLE_MAX_PIECES
            and not select.select([sock], [], [], TRICKLE_GAP_SECONDS)[0]
        ):
            sock.sendall(b"x")
            pieces += 1
        elapsed = time.monotonic() - started
        status, _ = read_response(sock)
    assert status == 408
    assert paced.events.reasons_since(mark) == [REASON_BODY_TIMEOUT]
    # It kept trickling past the idle timeout, and was cut off soon after the total.
    assert pieces >= int(TRICKLE_SETTINGS["body_idle_timeout_seconds"] / TRICKLE_GAP_SECONDS)
    assert pieces < TRICKLE_MAX_PIECES
    assert total * 0.9 <= elapsed < total + 1.0


ONE_BYTE_CHUNKS = [
    pytest.param(b"", "", id="json-empty-body-ok"),
    pytest.param(b"[" * 100 + b"]" * 100, "", id="json-depth-at-limit-1-byte-chunks-ok"),
    # Nothing follows the violating byte but the last chunk: hypercorn 0.18 blocks its
    # connection for good once more than `max_app_queue_size` (10) chunks arrive after
    # the application has returned, which would only slow this test's teardown.
    pytest.param(b"[" * 101, REASON_JSON_TOO_DEEP, id="json-depth-over-limit-1-byte-chunks"),
]


@pytest.mark.parametrize(("body", "reason"), ONE_BYTE_CHUNKS)
def test_json_sent_one_byte_per_chunk(served: Served, body: bytes, reason: str) -> None:
    """Chunk boundaries on the wire never change the verdict."""
    mark = served.events.mark()
    with connect(served.server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = ("Transfer-Encoding: chunked", "Content-Type: application/json")
        sock.sendall(request_head("/submit", *head))
        try:
            for byte in body:
                sock.sendall(b"1\r\n%c\r\n" % byte)
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server may close once it has answered
            pass
        status, payload = read_response(sock)
    assert served.events.reasons_since(mark) == ([reason] if reason else [])
    if reason:
        assert status == 400
    else:
        assert (status, payload) == (200, str(len(body)).encode())


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
