"""The markdown document: the machine, the budget of issue #8 against the figures,
and each part's table.

The "What was tried" section is kept from the file being overwritten, so rerunning
the suite refreshes the numbers without losing the notes written by hand.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Final

from bench import http, http_instructions, inprocess, instructions, memory, ratelimit, ws

PACKAGES: Final = (
    "bastion-asgi",
    "starlette",
    "fastapi",
    "uvicorn",
    "httptools",
    "uvloop",
    "h11",
    "websockets",
    "django",
    "secure",
    "starlette-csrf",
    "slowapi",
    "limits",
    "pyjwt",
    "redis",
)
TRIED_HEADING: Final = "## What was tried"
TRIED_PLACEHOLDER: Final = (
    f"{TRIED_HEADING}\n\n_To be filled from the optimiser's notes: each attempt, its "
    "profile (py-spy, pyinstrument) and its effect on the figures above._\n"
)
# The budget's ceiling for the added cost of Bastion on a raw ASGI app, per GET.
RAW_GET_BUDGET_US: Final = 10.0
MEMORY_BUDGET_BYTES_PER_ENTRY: Final = 200
# The budget's HTTP floors: Bastion + Starlette's req/s over plain Starlette's.
HTTP_FLOORS: Final = (("GET /hello", 0.7), ("POST /submit", 0.6))
# The budget's WebSocket floors: Bastion (guard on) over the unguarded app.
WS_FLOORS: Final[tuple[tuple[ws.Figure, float], ...]] = (("messages", 0.9), ("handshakes", 0.8))


@dataclass(frozen=True, slots=True)
class Parts:
    """What ran; None for a part left out (`--only`)."""

    smoke: bool
    inprocess: inprocess.Results | None = None
    instructions: instructions.Results | None = None
    http: http.Results | None = None
    http_instructions: http_instructions.Results | None = None
    ws: ws.Results | None = None
    ratelimit: ratelimit.Results | None = None
    memory: memory.Results | None = None


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(  # noqa: S603  # fixed tool, fixed arguments
            command, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def describe_machine() -> str:
    model = "unknown"
    memory_total = "unknown"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        model = found.group(1).strip() if found else model
        meminfo = Path("/proc/meminfo").read_text()
        total = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
        memory_total = f"{int(total.group(1)) / 1024 / 1024:.1f} GiB" if total else memory_total
    except OSError:
        pass
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    wrk = shutil.which("wrk")
    redis_server = shutil.which("redis-server")
    wrk_version = _first_line([wrk, "-v"]) if wrk else "wrk not found"
    redis_version = _first_line([redis_server, "--version"]) if redis_server else "no redis"
    return "\n".join(
        [
            f"* CPU: {os.cpu_count()} logical cores (nproc), {model}; memory {memory_total}",
            f"* OS: {platform.system()} {platform.release()}; "
            f"Python {sys.version.split()[0]} ({platform.python_implementation()})",
            f"* Packages: {', '.join(versions)}",
            f"* Tools: {wrk_version}; {redis_version}",
        ]
    )


@dataclass(frozen=True, slots=True)
class BudgetLine:
    budget: str
    measured: str
    passed: bool | None  # None: the part did not run


def _paired_text(figure: inprocess.Paired, spec: str, unit: str) -> str:
    return (
        f"{figure.median:{spec}}{unit} (paired, median of {figure.rounds} rounds; "
        f"rounds {figure.low:{spec}} to {figure.high:{spec}})"
    )


def budget_lines(parts: Parts) -> list[BudgetLine]:
    lines: list[BudgetLine] = []
    ip = parts.inprocess
    if ip is not None:
        # Paired figures (bench/inprocess.py): each round's ratio of Bastion to its
        # reference timed adjacently, so a slow phase of the machine lifts both.
        for route, ceiling in (("GET /hello", 2.0), ("POST /submit", 1.5)):
            ratio = ip.ratio("Bastion + Starlette", "Starlette", route)
            lines.append(
                BudgetLine(
                    f"In-process {route}, Bastion + Starlette <= {ceiling:.1f}x plain Starlette",
                    _paired_text(ratio, ".2f", "x"),
                    ratio.median <= ceiling,
                )
            )
        added = ip.added_us("Bastion + raw ASGI", "raw ASGI", "GET /hello")
        lines.append(
            BudgetLine(
                f"In-process GET /hello, Bastion on raw ASGI adds <= {RAW_GET_BUDGET_US:.0f} µs",
                _paired_text(added, "+.1f", " µs"),
                added.median <= RAW_GET_BUDGET_US,
            )
        )
    else:
        lines.append(BudgetLine("In-process ratios and µs", "not run", None))
    counted = parts.instructions
    if counted is not None:
        # The in-process ratios again, in instructions: the same on every run and
        # machine of the same interpreter (bench/instructions.py). Not the budget's
        # own terms (medians of time), so shown beside them.
        for route, ceiling in (("GET /hello", 2.0), ("POST /submit", 1.5)):
            ours = counted.per_request[("Bastion + Starlette", route)]
            base = counted.per_request[("Starlette", route)]
            lines.append(
                BudgetLine(
                    f"The same in instructions (callgrind): {route}, Bastion + Starlette "
                    f"<= {ceiling:.1f}x plain Starlette",
                    f"{ours / base:.2f}x ({ours / 1000:,.0f}k vs {base / 1000:,.0f}k)",
                    ours / base <= ceiling,
                )
            )
    hp = parts.http
    if hp is not None and not hp.counts.concurrent:
        for route, floor in HTTP_FLOORS:
            value = http.ratio(hp, "httptools+uvloop", "Bastion + Starlette", route, "Starlette")
            pair = http.paired(hp, "httptools+uvloop", "Bastion + Starlette", route, "Starlette")
            measured = "not run" if value is None else f"{value:.2f}x"
            if pair is not None:
                spread, cpu = pair.ratio, pair.cpu_ratio
                measured += (
                    f" (paired, median of {spread.rounds} repetitions; "
                    f"{spread.low:.2f} to {spread.high:.2f}; server CPU per request "
                    f"{cpu.median:.2f}x)"
                )
            lines.append(
                BudgetLine(
                    f"HTTP {route} (uvicorn httptools+uvloop), Bastion + Starlette req/s "
                    f">= {floor:.1f}x plain Starlette",
                    measured,
                    None if value is None else value >= floor,
                )
            )
    else:
        lines.append(BudgetLine("HTTP req/s ratios", "not run (or smoke)", None))
    counted_http = parts.http_instructions
    if counted_http is not None:
        # The HTTP floors again, in instructions inside the server process: Starlette's
        # count over Bastion + Starlette's is the req/s ratio of a server whose time
        # goes into them (bench/http_instructions.py), the same on every run.
        for route, floor in HTTP_FLOORS:
            ours = counted_http.per_request[(http_instructions.BASTION_STARLETTE, route)]
            base = counted_http.per_request[(http_instructions.STARLETTE, route)]
            lines.append(
                BudgetLine(
                    f"The same in instructions inside uvicorn: HTTP {route}, Bastion + "
                    f"Starlette >= {floor:.1f}x",
                    f"{base / ours:.2f}x ({ours / 1000:,.0f}k vs {base / 1000:,.0f}k per request)",
                    base / ours >= floor,
                )
            )
    wp = parts.ws
    if wp is not None:
        for what, floor in WS_FLOORS:
            paired = wp.paired(ws.GUARDED, ws.UNGUARDED, what)
            lines.append(
                BudgetLine(
                    f"WebSocket {what}/s, Bastion (guard on) >= {floor:.1f}x the unguarded app",
                    _paired_text(paired, ".2f", "x"),
                    paired.median >= floor,
                )
            )
    else:
        lines.append(BudgetLine("WebSocket ratios", "not run", None))
    rp = parts.ratelimit
    if rp is not None:
        trips = rp.round_trips.per_check
        lines.append(
            BudgetLine(
                "Rate limiting on Redis: one round trip per check",
                f"{trips:.2f} round trips per check",
                trips <= 1.0,
            )
        )
    else:
        lines.append(BudgetLine("Redis round trips per check", "not run", None))
    mp = parts.memory
    if mp is not None:
        row = mp.rows[0]
        at_bound = row.entries <= (row.bound or 0)
        small = row.bytes_per_entry < MEMORY_BUDGET_BYTES_PER_ENTRY
        lines.append(
            BudgetLine(
                f"Memory store after {row.keys:,} sprayed keys: at its bound, "
                f"< {MEMORY_BUDGET_BYTES_PER_ENTRY} bytes per entry",
                f"{row.entries:,} entries (bound {row.bound or 0:,}), "
                f"{row.bytes_per_entry:.0f} bytes/entry",
                at_bound and small,
            )
        )
    else:
        lines.append(BudgetLine("Memory store bound and bytes per entry", "not run", None))
    return lines


def render_budget(parts: Parts) -> str:
    verdicts = {True: "pass", False: "**miss**", None: "-"}
    rows = [
        f"| {line.budget} | {line.measured} | {verdicts[line.passed]} |"
        for line in budget_lines(parts)
    ]
    note = "Smoke mode: tiny counts, so these verdicts mean nothing.\n\n" if parts.smoke else ""
    return (
        note
        + "| budget (issue #8) | measured | verdict |\n|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def render_document(parts: Parts, tried: str = TRIED_PLACEHOLDER) -> str:
    sections = [
        "# Benchmarks\n",
        f"Run with `python -m bench{' --smoke' if parts.smoke else ''}` on {date.today()}; "
        "how to rerun and how to read the tables: `bench/README.md`.\n",
        "## Machine\n",
        describe_machine() + "\n",
        "## Budget\n",
        render_budget(parts),
    ]
    if parts.inprocess is not None:
        sections += ["## In-process (direct ASGI calls)\n", inprocess.render_table(parts.inprocess)]
    if parts.instructions is not None:
        sections += [
            "## In-process, in instructions (callgrind)\n",
            instructions.render_instructions(parts.instructions),
        ]
    if parts.http is not None:
        sections += ["## Over HTTP (wrk against uvicorn)\n", http.render_http(parts.http)]
    if parts.http_instructions is not None:
        sections += [
            "## Over HTTP, in instructions (callgrind inside uvicorn)\n",
            http_instructions.render_http_instructions(parts.http_instructions),
        ]
    if parts.ws is not None:
        sections += ["## WebSocket\n", ws.render_ws(parts.ws)]
    if parts.ratelimit is not None:
        sections += ["## Rate limiting\n", ratelimit.render_ratelimit(parts.ratelimit)]
    if parts.memory is not None:
        sections += ["## Memory: sprayed client keys\n", memory.render_memory(parts.memory)]
    sections.append(tried)
    return "\n".join(sections)


def kept_tried_section(existing: str) -> str:
    """The "What was tried" section of an earlier document, else the placeholder."""
    start = existing.find(TRIED_HEADING)
    if start < 0:
        return TRIED_PLACEHOLDER
    rest = existing[start + len(TRIED_HEADING) :]
    following = re.search(r"^## ", rest, re.MULTILINE)
    end = len(existing) if following is None else start + len(TRIED_HEADING) + following.start()
    return existing[start:end].rstrip() + "\n"
