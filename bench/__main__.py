"""`python -m bench [--smoke] [--only PARTS] [--out FILE]`: the whole benchmark suite.

Runs the selected parts (default: all) and prints one markdown document (machine,
budget verdicts, one table per part); `--out` also writes it, keeping that file's
"What was tried" section. Exit status 1, with the reason on stderr, when any request
failed: a stack that refuses its requests is not being measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from bench import http, http_instructions, inprocess, instructions, memory, ratelimit, ws
from bench.inprocess import BenchmarkError
from bench.report import Parts, kept_tried_section, render_document

PARTS: Final = (
    "inprocess",
    "instructions",
    "http",
    "httpinstructions",
    "ws",
    "ratelimit",
    "memory",
)


def _parts(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in chosen if part not in PARTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose among {','.join(PARTS)}")
    return chosen


def default_parts() -> tuple[str, ...]:
    """Every part, but the instruction counts when their tools are not installed
    (valgrind; and wrk for those over HTTP): a plain `python -m bench` then runs the
    rest (and says so); `--only instructions,httpinstructions` asks for them and fails
    without them."""
    left_out: set[str] = set()
    if instructions.valgrind() is None:
        print("bench: valgrind not found, instruction counts left out", file=sys.stderr)
        left_out.add("instructions")
    missing = http_instructions.missing_tools()
    if missing:
        print(
            f"bench: {', '.join(missing)} not found, instruction counts over HTTP left out",
            file=sys.stderr,
        )
        left_out.add("httpinstructions")
    return tuple(part for part in PARTS if part not in left_out)


def run(parts: tuple[str, ...], *, smoke: bool) -> Parts:
    """Run `parts` (full or smoke counts); raises `BenchmarkError` on a failed request."""

    def wanted(part: str) -> bool:
        if part in parts:
            print(f"bench: {part}{' (smoke)' if smoke else ''}", file=sys.stderr, flush=True)
        return part in parts

    return Parts(
        smoke=smoke,
        inprocess=inprocess.run_benchmark(inprocess.SMOKE if smoke else inprocess.FULL)
        if wanted("inprocess")
        else None,
        instructions=instructions.run_instructions(
            instructions.SMOKE if smoke else instructions.FULL
        )
        if wanted("instructions")
        else None,
        http=http.run_http(http.SMOKE if smoke else http.FULL) if wanted("http") else None,
        http_instructions=http_instructions.run_http_instructions(
            http_instructions.SMOKE if smoke else http_instructions.FULL
        )
        if wanted("httpinstructions")
        else None,
        ws=ws.run_ws(ws.SMOKE if smoke else ws.FULL) if wanted("ws") else None,
        ratelimit=ratelimit.run_ratelimit(ratelimit.SMOKE if smoke else ratelimit.FULL)
        if wanted("ratelimit")
        else None,
        memory=memory.run_memory(memory.SMOKE if smoke else memory.FULL)
        if wanted("memory")
        else None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny counts, for CI")
    parser.add_argument(
        "--only", type=_parts, default=None, help=f"comma-separated parts: {','.join(PARTS)}"
    )
    parser.add_argument("--out", type=Path, help="also write the markdown document here")
    args = parser.parse_args(argv)
    try:
        parts = run(args.only or default_parts(), smoke=args.smoke)
    except BenchmarkError as error:
        print(f"benchmark aborted: {error}", file=sys.stderr)
        return 1
    out: Path | None = args.out
    tried = kept_tried_section(out.read_text(encoding="utf-8")) if out and out.exists() else None
    document = render_document(parts) if tried is None else render_document(parts, tried)
    print(document, end="")
    if out is not None:
        out.write_text(document, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
