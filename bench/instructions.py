"""Instructions per request: the in-process requests counted by callgrind.

A timing on a shared virtual machine drifts by a third from one run to the next, and
machines of the same kind differ by twice in speed and more in how they treat a large
code path (docs/benchmarks.md). The number of machine instructions a request executes
does neither: under `valgrind --tool=callgrind` it is the same on every run of the
same interpreter and packages, whatever else the machine is doing. This part counts
them for the in-process requests of the budget's stacks, as the ratios the budget
states (to plain Starlette, to the raw app), and `python -m bench` reports it next to
the timings when valgrind is installed (Debian: `valgrind`; without it, the other parts
run and this one is left out, `bench.__main__.default_parts`).

How: one child process, under callgrind, builds the stacks and, for each stack and
route, sends warm-up requests, then the measured ones, calling `os.getppid()` (a C
function nothing else here calls) after each phase; callgrind writes and resets its
counts before each such call (`--dump-before`), so every second dump holds exactly the
measured requests. Every response's status is checked, as in the timed part. The
counts include the harness's own call (`call_once`, a few hundred instructions, the
same for every stack) and exclude nothing the stack does. With the hash seed fixed,
two runs agree to a few dozen instructions per request (the garbage collector's
passes are part of it, and fall at the same requests).

`python -m bench.instructions` prints the table alone.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.inprocess import ROUTES, BenchmarkError, _check, build_scope, call_once
from bench.stacks import STACKS

VARIANTS: Final = (
    "raw ASGI",
    "Starlette",
    "FastAPI",
    "peer stack + Starlette",
    "Bastion + raw ASGI",
    "Bastion + Starlette",
    "Bastion + FastAPI",
)
"""The stacks counted: the budget's and their references (Django, at some 2,000
Python calls per request, would take minutes under callgrind and is no reference)."""

_MARKER: Final = "os_getppid*"
"""The C function whose calls delimit the phases (`os.getppid`'s, in CPython)."""
_TIMEOUT_SECONDS: Final = 1800


@dataclass(frozen=True, slots=True)
class Counts:
    """Requests per stack and route: `warmup` uncounted, then `requests` counted."""

    requests: int
    warmup: int
    collect_first: bool = False
    """Collect garbage before each measured phase. A full collection costs about a
    million instructions, which in the smoke run's two requests swamps the stacks'
    differences: where one falls moves with every change to start-up, and the smoke
    test compares stacks. The full run leaves collections where they fall (over 200
    requests, the same on every run of the same code)."""


FULL: Final = Counts(requests=200, warmup=50)
SMOKE: Final = Counts(requests=2, warmup=1, collect_first=True)


@dataclass(frozen=True, slots=True)
class Results:
    counts: Counts
    per_request: dict[tuple[str, str], float]
    """(stack, route) -> instructions per request."""
    python: str

    def ratio(self, variant: str, route: str, reference: str) -> float:
        return self.per_request[(variant, route)] / self.per_request[(reference, route)]


def valgrind() -> str | None:
    return shutil.which("valgrind")


async def _child(counts: Counts) -> list[tuple[str, str]]:
    """The measured phases, in order (runs under callgrind)."""
    scopes = {route.name: build_scope(route) for route in ROUTES}
    order: list[tuple[str, str]] = []
    for name in VARIANTS:
        app = STACKS[name]()
        for route in ROUTES:
            scope = scopes[route.name]
            for _ in range(counts.warmup):
                _check(name, route, await call_once(app, scope, route.body))
            if counts.collect_first:
                gc.collect()  # in the dump that is thrown away (see `Counts.collect_first`)
            os.getppid()  # the count so far (start-up, warm-up) is dumped and reset
            for _ in range(counts.requests):
                _check(name, route, await call_once(app, scope, route.body))
            os.getppid()  # the measured requests are dumped
            order.append((name, route.name))
    return order


def _totals(path: Path) -> int:
    found = re.search(r"^totals:\s*(\d+)", path.read_text(encoding="utf-8"), re.MULTILINE)
    if found is None:
        raise BenchmarkError(f"callgrind wrote no totals in {path.name}")
    return int(found.group(1))


def run_instructions(counts: Counts = FULL) -> Results:
    """Count the requests of `VARIANTS` under callgrind; raises `BenchmarkError` when
    valgrind is missing, a request failed, or the counts cannot be read."""
    tool = valgrind()
    if tool is None:
        raise BenchmarkError("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as folder:
        out = Path(folder) / "callgrind.out"
        done = subprocess.run(  # noqa: S603  # fixed tool, fixed arguments
            [
                tool,
                "--tool=callgrind",
                f"--dump-before={_MARKER}",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.instructions",
                "--child",
                str(counts.requests),
                str(counts.warmup),
                "collect" if counts.collect_first else "as-they-fall",
            ],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_SECONDS,
            check=False,
            # A fixed hash seed: the same dict layouts, so the same counts, every run.
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        if done.returncode != 0:
            raise BenchmarkError(f"the counted run failed: {done.stderr.strip()[-2000:]}")
        order = [tuple(pair) for pair in json.loads(done.stdout.strip().splitlines()[-1])]
        dumps = sorted(Path(folder).glob("callgrind.out.*"), key=lambda path: int(path.suffix[1:]))
        if len(dumps) < 2 * len(order):
            raise BenchmarkError(f"callgrind wrote {len(dumps)} dumps for {len(order)} phases")
        per_request = {
            (variant, route): _totals(dumps[2 * index + 1]) / counts.requests
            for index, (variant, route) in enumerate(order)
        }
    return Results(counts, per_request, sys.version.split()[0])


def render_instructions(results: Results) -> str:
    """The counts as a markdown table, one row per stack and route."""
    c = results.counts
    lines = [
        f"Machine instructions per request under `valgrind --tool=callgrind` (user space, "
        f"no system calls), {c.requests} requests per stack and route after {c.warmup} "
        f"of warm-up; Python {results.python}, PYTHONHASHSEED=0. The same on every run "
        "(see `bench/instructions.py`). Every response was 200.",
        "",
        "| stack | route | instructions/request | x raw | x Starlette |",
        "|---|---|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        for route in ROUTES:
            count = results.per_request[(variant, route.name)]
            lines.append(
                f"| {variant} | {route.name} | {count:,.0f} "
                f"| {results.ratio(variant, route.name, 'raw ASGI'):.2f} "
                f"| {results.ratio(variant, route.name, 'Starlette'):.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        counts = Counts(
            requests=int(argv[1]), warmup=int(argv[2]), collect_first=argv[3:4] == ["collect"]
        )
        order = asyncio.run(_child(counts))
        print(json.dumps(order))
        return 0
    smoke = argv[:1] == ["--smoke"]
    try:
        results = run_instructions(SMOKE if smoke else FULL)
    except BenchmarkError as error:
        print(f"benchmark aborted: {error}", file=sys.stderr)
        return 1
    print(render_instructions(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
