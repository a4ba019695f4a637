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

This kind of machine has slow phases (the same code about 1.5x slower for seconds at
a time, `bench.inprocess`), so the ratios are paired, as in the other timed parts:
in every round the budget's two stacks (the unguarded app and Bastion with the guard)
are measured back to back on each figure, the leader alternating from round to round,
and a ratio is the median over rounds of each round's own ratio (`Results.paired`).
The other stacks run after the pair in each round, their ratios taken per round too.
A cell's rate is the median of its rounds. Any refused handshake, wrong echo or early
close stops the run.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException
from websockets.typing import Origin

from bench.client import WS_MESSAGE
from bench.inprocess import BenchmarkError, Paired, paired_ratio
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


# Many short rounds, so that the median over rounds stays put when a few straddle a
# change of the machine's phase (a pair of cells lasts about a second).
FULL: Final = Counts(rounds=9, messages=4000, handshakes=200)
SMOKE: Final = Counts(rounds=2, messages=20, handshakes=5)

Figure = Literal["messages", "handshakes"]
FIGURES: Final[tuple[Figure, ...]] = ("messages", "handshakes")


@dataclass(slots=True)
class Cell:
    stack: str
    messages_per_second: list[float] = field(default_factory=list)
    handshakes_per_second: list[float] = field(default_factory=list)

    def rates(self, what: Figure) -> list[float]:
        """One rate per round, in round order."""
        return self.messages_per_second if what == "messages" else self.handshakes_per_second

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

    def paired(self, stack: str, base: str, what: Figure) -> Paired:
        """`stack`'s rate over `base`'s, round by round, summarised over the rounds."""
        return paired_ratio(self.cells[stack].rates(what), self.cells[base].rates(what))

    def ratio(self, stack: str, base: str, what: Figure) -> float:
        """The median over rounds of each round's ratio (`paired`)."""
        return self.paired(stack, base, what).median


def schedule(stacks: Sequence[str], round_index: int) -> Iterator[tuple[str, Figure]]:
    """The order of one round: on each figure, the budget's pair back to back (the
    unguarded app first in even rounds, Bastion first in odd ones), then every other
    stack in the table's order."""
    pair = (UNGUARDED, GUARDED) if round_index % 2 == 0 else (GUARDED, UNGUARDED)
    for what in FIGURES:
        for stack in pair:
            if stack in stacks:
                yield stack, what
    for stack in stacks:
        if stack not in pair:
            for what in FIGURES:
                yield stack, what


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
    by_stack = {server.stack: server for server in servers}
    for server in servers:  # warm-up, and a first check that every stack echoes
        await message_rate(server, min(counts.messages, 50))
        await handshake_rate(server, min(counts.handshakes, 5))
    for round_index in range(counts.rounds):
        for stack, what in schedule(list(by_stack), round_index):
            server = by_stack[stack]
            if what == "messages":
                rate = await message_rate(server, counts.messages)
            else:
                rate = await handshake_rate(server, counts.handshakes)
            cells[stack].rates(what).append(rate)
    return cells


def run_ws(counts: Counts = FULL) -> Results:
    with serving([(stack, IMPLEMENTATION) for stack in WS_STACKS]) as servers:
        return Results(counts, asyncio.run(_measure(servers, counts)))


def render_ws(results: Results) -> str:
    c = results.counts
    lines = [
        f"uvicorn {IMPLEMENTATION}, `websockets` client on the same machine; {c.rounds} "
        f"rounds of {c.messages} echo round trips on one connection and {c.handshakes} "
        "sequential handshakes per stack; rates are medians of rounds. Ratios are over the "
        "raw ASGI echo app (no guard): the median over rounds of each round's ratio, the "
        "unguarded app and Bastion measured back to back in every round (min-max over "
        "rounds in brackets). Every handshake was accepted and every echo matched.",
        "",
        "| stack | messages/s | x unguarded | handshakes/s | x unguarded |",
        "|---|---:|---:|---:|---:|",
    ]
    for stack, cell in results.cells.items():
        messages = results.paired(stack, UNGUARDED, "messages")
        handshakes = results.paired(stack, UNGUARDED, "handshakes")
        lines.append(
            f"| {stack} | {cell.messages_median:,.0f} | {_ratio_cell(messages)} "
            f"| {cell.handshakes_median:,.0f} | {_ratio_cell(handshakes)} |"
        )
    return "\n".join(lines) + "\n"


def _ratio_cell(paired: Paired) -> str:
    if paired.low == paired.high:
        return f"{paired.median:.2f}"
    return f"{paired.median:.2f} ({paired.low:.2f}-{paired.high:.2f})"
