"""`python -m bench [--smoke] [--out FILE]`: the in-process benchmark table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.inprocess import FULL, SMOKE, BenchmarkError, render_table, run_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny counts, for CI")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    try:
        results = run_benchmark(SMOKE if args.smoke else FULL)
    except BenchmarkError as error:
        print(f"benchmark aborted: {error}", file=sys.stderr)
        return 1
    table = render_table(results)
    print(table, end="")
    if args.out is not None:
        args.out.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
