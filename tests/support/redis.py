"""Real Redis servers and a real Redis Cluster, started by the test suite itself.

Each server is a `redis-server` process on 127.0.0.1, on a free port, with its files
in a temporary directory, no persistence, in the foreground, and is stopped by its
own process id when the `with` block ends, whatever happened. A server can be
stopped and started again on the same port (the store's recovery tests).

With `CI=true` in the environment a missing `redis-server` fails the test (CI must
install it: Debian's `redis-server` package, which brings `redis-tools`); elsewhere
it skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

_START_TIMEOUT_SECONDS = 20.0
_STOP_TIMEOUT_SECONDS = 10.0
_CLUSTER_TIMEOUT_SECONDS = 30.0
_PORT_ATTEMPTS = 5


def require_tool(name: str) -> str:
    """The path of a Redis tool; fails under CI, skips elsewhere, when it is missing."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed (Debian: apt-get install redis-server redis-tools)"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class RedisServer:
    """One `redis-server` process; `start()` and `stop()` may be called repeatedly."""

    directory: Path
    port: int = 0
    extra_args: tuple[str, ...] = ()
    password: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def client(self) -> redis.Redis:
        """A synchronous client for assertions; use it in a `with` block (it closes)."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5
        )

    def start(self) -> None:
        """Start on `self.port` (a free one the first time); wait until it answers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        choose_port = self.port == 0
        for _attempt in range(_PORT_ATTEMPTS):
            if choose_port:
                self.port = free_port()
            if self._launch():
                return
            if not choose_port:
                break
        raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}")

    def _launch(self) -> bool:
        command = [
            require_tool("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / f"redis-{self.port}.log"),
            *(("--requirepass", self.password) if self.password else ()),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=self.directory
        )
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:  # e.g. the port was taken meanwhile
                self.process = None
                return False
            try:
                with self.client() as client:
                    if client.ping():
                        return True
            except redis.RedisError:
                time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        """Stop the process by its pid (SIGTERM, then SIGKILL) and reap it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=_STOP_TIMEOUT_SECONDS)


@contextmanager
def redis_server(
    directory: Path, *extra_args: str, password: str | None = None
) -> Iterator[RedisServer]:
    """A running standalone Redis on a free port, stopped on exit."""
    server = RedisServer(directory, extra_args=extra_args, password=password)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class RedisClusterNodes:
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"


def _cluster_port() -> int:
    """A free client port P whose cluster bus port P + 10000 is free too."""
    for _attempt in range(100):
        port = free_port()
        if port + 10000 <= 65535 and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _cluster_ready(nodes: list[RedisServer]) -> bool:
    for node in nodes:
        with node.client() as client:
            info = client.cluster("INFO")
        if not isinstance(info, dict):
            text = info.decode() if isinstance(info, bytes) else str(info)
            info = dict(line.split(":", 1) for line in text.split() if ":" in line)
        if (
            str(info.get("cluster_state")) != "ok"
            or str(info.get("cluster_slots_ok")) != "16384"
            or str(info.get("cluster_known_nodes")) != str(len(nodes))
        ):
            return False
    return True


@contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[RedisClusterNodes]:
    """A running Redis Cluster of `masters` primaries and no replicas, stopped on exit."""
    redis_cli = require_tool("redis-cli")
    with ExitStack() as stack:
        nodes: list[RedisServer] = []
        for index in range(masters):
            port = _cluster_port()
            node = RedisServer(
                directory / f"node{index}",
                port=port,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "5000",
                ),
            )
            stack.callback(node.stop)
            node.start()
            nodes.append(node)
        subprocess.run(
            [
                redis_cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            timeout=_CLUSTER_TIMEOUT_SECONDS,
        )
        deadline = time.monotonic() + _CLUSTER_TIMEOUT_SECONDS
        while not _cluster_ready(nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        yield RedisClusterNodes(nodes)
