"""WebSocket: echo round trips and handshakes through uvicorn, guard on and off.

Stacks (each in its own uvicorn process, httptools + uvloop, `websockets` protocol):
the raw ASGI echo app alone (no guard); the WebSocket guard alone around it; Bastion's
full stack with the guard turned off (`websocket.enabled=False`); and the full stack
with the guard on. The guard is configured as in `bench.stacks`: `/ws` public, a
message rate no run reaches, so it checks and paces every message without refusing one.

* Messages per second: one connection (the `websockets` client, with the page's
  `Origin`), then `messages` sequential round trips: send a text frame, wait for the
  echo, check it is the same text.
* Handshakes per second: `handshakes` sequential connections, each opened (101
  checked by the client: anything else raises) and closed cleanly.

Rounds run round-robin over the stacks; a cell is the median of its rounds. Any
refused handshake, wrong echo or early close stops the run.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException
from websockets.typing import Origin

from bench.client import WS_MESSAGE
from bench.inprocess import BenchmarkError
from bench.servers import Server, serving

IMPLEMENTATION: Final = "httptools+uvloop"
UNGUARDED: Final = "raw ASGI"
GUARDED: Final = "Bastion + raw ASGI"
WS_STACKS: Final = (
    UNGUARDED,
    "WebSocket guard alone + raw ASGI",
    "Bastion, guard off + raw ASGI",
    GUARDED,
)
_OPEN_TIMEOUT_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class Counts:
    rounds: int
    messages: int
    handshakes: int


FULL: Final = Counts(rounds=3, messages=5000, handshakes=300)
SMOKE: Final = Counts(rounds=1, messages=20, handshakes=5)


@dataclass(slots=True)
class Cell:
    stack: str
    messages_per_second: list[float] = field(default_factory=list)
    handshakes_per_second: list[float] = field(default_factory=list)

    @property
    def messages_median(self) -> float:
        return statistics.median(self.messages_per_second)

    @property
    def handshakes_median(self) -> float:
        return statistics.median(self.handshakes_per_second)


@dataclass(frozen=True, slots=True)
class Results:
    counts: Counts
    cells: dict[str, Cell]

    def ratio(self, stack: str, base: str, what: str) -> float:
        cell, other = self.cells[stack], self.cells[base]
        if what == "messages":
            return cell.messages_median / other.messages_median
        return cell.handshakes_median / other.handshakes_median


def _uri(server: Server) -> tuple[str, Origin]:
    """The socket's URL, and the `Origin` of the page a browser would open it from."""
    return f"ws://{server.host}:{server.port}/ws", Origin(f"http://{server.host}:{server.port}")


async def message_rate(server: Server, messages: int) -> float:
    """Sequential echo round trips over one connection, per second."""
    uri, origin = _uri(server)
    try:
        async with connect(
            uri, origin=origin, open_timeout=_OPEN_TIMEOUT_SECONDS, compression=None
        ) as websocket:
            start = time.perf_counter()
            for _ in range(messages):
                await websocket.send(WS_MESSAGE)
                echo = await websocket.recv()
                if echo != WS_MESSAGE:
                    raise BenchmarkError(f"{server.name}: wrong echo {echo!r}")
            elapsed = time.perf_counter() - start
    except (WebSocketException, OSError) as error:
        raise BenchmarkError(f"{server.name}, WS /ws messages: {error!r}") from None
    return messages / elapsed


async def handshake_rate(server: Server, handshakes: int) -> float:
    """Sequential open + clean close, per second."""
    uri, origin = _uri(server)
    start = time.perf_counter()
    try:
        for _ in range(handshakes):
            async with connect(
                uri, origin=origin, open_timeout=_OPEN_TIMEOUT_SECONDS, compression=None
            ):
                pass
    except (WebSocketException, OSError) as error:
        raise BenchmarkError(f"{server.name}, WS /ws handshake: {error!r}") from None
    return handshakes / (time.perf_counter() - start)


async def _measure(servers: Sequence[Server], counts: Counts) -> dict[str, Cell]:
    cells = {server.stack: Cell(server.stack) for server in servers}
    for server in servers:  # warm-up, and a first check that every stack echoes
        await message_rate(server, min(counts.messages, 50))
        await handshake_rate(server, min(counts.handshakes, 5))
    for _ in range(counts.rounds):
        for server in servers:
            cell = cells[server.stack]
            cell.messages_per_second.append(await message_rate(server, counts.messages))
            cell.handshakes_per_second.append(await handshake_rate(server, counts.handshakes))
    return cells


def run_ws(counts: Counts = FULL) -> Results:
    with serving([(stack, IMPLEMENTATION) for stack in WS_STACKS]) as servers:
        return Results(counts, asyncio.run(_measure(servers, counts)))


def render_ws(results: Results) -> str:
    c = results.counts
    lines = [
        f"uvicorn {IMPLEMENTATION}, `websockets` client on the same machine; {c.rounds} "
        f"round(s) of {c.messages} echo round trips on one connection and {c.handshakes} "
        "sequential handshakes per stack, median of rounds. Ratios are over the raw ASGI "
        "echo app (no guard). Every handshake was accepted and every echo matched.",
        "",
        "| stack | messages/s | x unguarded | handshakes/s | x unguarded |",
        "|---|---:|---:|---:|---:|",
    ]
    for stack, cell in results.cells.items():
        lines.append(
            f"| {stack} | {cell.messages_median:,.0f} "
            f"| {results.ratio(stack, UNGUARDED, 'messages'):.2f} "
            f"| {cell.handshakes_median:,.0f} "
            f"| {results.ratio(stack, UNGUARDED, 'handshakes'):.2f} |"
        )
    return "\n".join(lines) + "\n"
