"""Python bytecodes per request, by function: where a stack's time goes, without noise.

`python -m bench.opcodes [STACK] [ROUTE] [--top N]` runs a few requests of one
in-process variant (default: Bastion's full stack on the raw app, GET /hello) under
an opcode tracer (`sys.settrace` with `f_trace_opcodes`) and prints the bytecodes
each function executed per request, most first, and their total.

A companion to the call counts of the in-process table: exact and the same on every
run, whatever else the machine does, and it says which function a cost is in. It
counts bytecodes, not their price: a call, an allocation or a dict probe costs more
than a jump, and C functions (a regular expression, a hash) count as the one
bytecode that calls them. Measure what a change buys with the timings (or with
instruction counts under `valgrind --tool=callgrind`, see `docs/benchmarks.md`),
and find where to look with this.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any, Final

from bastion.types import ASGIApp
from bench.inprocess import ROUTES, Route, _check, build_scope, call_once
from bench.stacks import STACKS

DEFAULT_STACK: Final = "Bastion + raw ASGI"
DEFAULT_ROUTE: Final = "GET /hello"
WARMUP: Final = 20
TRACED: Final = 20

# (file, first line, function name) of a code object
Function = tuple[str, int, str]


async def count_opcodes(
    app: ASGIApp, route: Route, *, requests: int = TRACED, warmup: int = WARMUP
) -> collections.Counter[Function]:
    """Bytecodes executed per function over `requests` requests (after `warmup`
    untraced ones, which fill the caches and memos a running server has full)."""
    scope = build_scope(route)
    for _ in range(warmup):
        _check("traced stack", route, await call_once(app, scope, route.body))
    counts: collections.Counter[Function] = collections.Counter()

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            counts[(code.co_filename, code.co_firstlineno, code.co_name)] += 1
        return local

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return local

    for _ in range(requests):
        sys.settrace(trace)
        try:
            status = await call_once(app, scope, route.body)
        finally:
            sys.settrace(None)
        _check("traced stack", route, status)
    return counts


def render(counts: collections.Counter[Function], requests: int, top: int) -> str:
    """The table: bytecodes per request by function, and the total."""
    total = sum(counts.values()) / requests
    lines = [f"{total:,.0f} bytecodes per request", "", "per request  function"]
    for (filename, line, name), count in counts.most_common(top):
        where = filename.rsplit("/site-packages/", 1)[-1].rsplit("/src/", 1)[-1]
        lines.append(f"{count / requests:11,.0f}  {where}:{line} {name}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.opcodes", description=__doc__)
    parser.add_argument("stack", nargs="?", default=DEFAULT_STACK, choices=sorted(STACKS))
    parser.add_argument("route", nargs="?", default=DEFAULT_ROUTE, choices=[r.name for r in ROUTES])
    parser.add_argument("--top", type=int, default=30, help="functions to list (default 30)")
    args = parser.parse_args(argv)
    route = next(r for r in ROUTES if r.name == args.route)
    counts = asyncio.run(count_opcodes(STACKS[args.stack](), route))
    print(render(counts, TRACED, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
