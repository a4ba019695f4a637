"""The HTTP budget's paired comparison (`bench.http`): the statistic, the order of the
runs, and a short paired run against real uvicorn servers.

The statistic and the order are pure and tested on made-up cells: a run of this
machine's "slow phase" (the same code about 1.5x slower for seconds at a time) is
modelled by dividing one run's req/s by 1.5. Never asserts on measured timings.
"""

from __future__ import annotations

import dataclasses

import pytest
from bench.inprocess import Paired, summarise
from bench.report import Parts, budget_lines

from bench import http
from tests.bench.test_smoke import require_wrk

BASE = http.PAIR_BASE
STACK = http.PAIR_STACK
IMPLEMENTATION = http.PAIR_IMPLEMENTATION
ROUTE = "GET /hello"
SLOW = 1.5  # how much slower the machine runs in a slow phase
STARLETTE_RATE = 12_000.0
BASTION_RATE = 9_600.0  # 0.8x Starlette when both run at the same speed


def cell(stack: str, requests_per_second: float, cpu_us: float = 100.0) -> http.Cell:
    return http.Cell(
        implementation=IMPLEMENTATION,
        stack=stack,
        route=ROUTE,
        requests=int(requests_per_second * 3),
        requests_per_second=requests_per_second,
        p50_ms=5.0,
        p99_ms=9.0,
        cpu_us_per_request=cpu_us,
        timeouts=0,
    )


def pair_of(speeds: list[tuple[float, float]]) -> http.Pair:
    """A pair whose repetitions ran at `(stack's, base's)` slowdowns (1.0: normal speed)."""
    repetitions = tuple(
        http.Repetition(
            first=BASE if index % 2 == 0 else STACK,
            stack=cell(STACK, BASTION_RATE / stack_slowdown, 80.0 * stack_slowdown),
            base=cell(BASE, STARLETTE_RATE / base_slowdown, 50.0 * base_slowdown),
        )
        for index, (stack_slowdown, base_slowdown) in enumerate(speeds)
    )
    return http.Pair(IMPLEMENTATION, STACK, BASE, ROUTE, repetitions)


def test_spread_is_the_median_with_min_and_max() -> None:
    assert summarise([3.0, 1.0, 2.0]) == Paired(2.0, 1.0, 3.0, 3)
    assert summarise([4.0, 1.0, 2.0, 3.0]) == Paired(2.5, 1.0, 4.0, 4)


def test_one_slow_reference_repetition_leaves_the_paired_ratio_alone() -> None:
    """The POST 1.00x of the last single-cell run: plain Starlette's one cell landed in
    a slow phase. In pairs, that spoils one repetition's ratio, not the median."""
    pair = pair_of([(1, 1), (1, 1), (1, SLOW), (1, 1), (1, 1)])
    slow = pair.repetitions[2]
    # What one cell each reported when the reference's cell was the slow one.
    assert slow.ratio == pytest.approx(0.8 * SLOW)
    single_cells = http.Results(http.FULL, [slow.stack, slow.base])
    assert http.ratio(single_cells, IMPLEMENTATION, STACK, ROUTE, BASE) == pytest.approx(1.2)
    # The same cells in the table, the pair beside them: the budget takes the pair.
    results = http.Results(http.FULL, [slow.stack, slow.base], (pair,))
    assert http.ratio(results, IMPLEMENTATION, STACK, ROUTE, BASE) == pytest.approx(0.8)
    assert http.paired(results, IMPLEMENTATION, STACK, ROUTE, BASE) is pair
    rate = pair.ratio
    assert (rate.median, rate.low, rate.high) == pytest.approx((0.8, 0.8, 1.2))
    # Server CPU per request, paired the same way: 80 over 50 µs.
    assert pair.cpu_ratio.median == pytest.approx(1.6)
    assert pair.cpu_ratio.low == pytest.approx(1.6 / SLOW)


def test_a_phase_over_both_runs_of_a_pair_cancels_in_its_ratio() -> None:
    """Ratios taken within each pair, not medians taken per stack and then divided:
    with phases scattered over the runs, each stack's median cell can come from a
    different speed (here Bastion's from a slow run, Starlette's from a normal one)."""
    pair = pair_of([(SLOW, 1), (SLOW, SLOW), (1, SLOW), (1, 1), (SLOW, 1)])
    assert pair.ratio.median == pytest.approx(0.8)
    bastion, starlette = pair.cells()
    assert bastion.requests_per_second / starlette.requests_per_second == pytest.approx(0.8 / SLOW)


def test_pair_cells_are_medians_over_the_runs() -> None:
    pair = pair_of([(1, 1), (SLOW, 1), (1, SLOW)])
    bastion, starlette = pair.cells()
    assert (bastion.stack, starlette.stack) == (STACK, BASE)
    assert bastion.requests_per_second == BASTION_RATE
    assert starlette.requests_per_second == STARLETTE_RATE
    assert starlette.cpu_us_per_request == 50.0
    assert bastion.requests == sum(r.stack.requests for r in pair.repetitions)


def test_ratio_without_a_pair_divides_the_cells() -> None:
    """The other stacks and h11 keep one cell each, and their ratios as before."""
    pair = pair_of([(1, 1)])
    peer = dataclasses.replace(cell("peer stack + Starlette", 840.0), route="POST /submit")
    reference = dataclasses.replace(cell(BASE, 12_000.0), route="POST /submit")
    results = http.Results(http.FULL, [peer, reference], (pair,))
    ratio = http.ratio(results, IMPLEMENTATION, "peer stack + Starlette", "POST /submit", BASE)
    assert ratio == pytest.approx(0.07)
    assert http.ratio(results, "h11+asyncio", STACK, ROUTE, BASE) is None


def test_schedule_alternates_which_server_goes_first() -> None:
    order = list(http.schedule(4, ("GET /hello", "POST /submit"), "B", "S"))
    assert order == [
        ("GET /hello", ("S", "B")),
        ("POST /submit", ("S", "B")),
        ("GET /hello", ("B", "S")),
        ("POST /submit", ("B", "S")),
        ("GET /hello", ("S", "B")),
        ("POST /submit", ("S", "B")),
        ("GET /hello", ("B", "S")),
        ("POST /submit", ("B", "S")),
    ]


def test_full_counts_pair_within_the_time_budget() -> None:
    """The pairs add well under two minutes to the full run: their runs, less the four
    single cells they replace."""
    full = http.FULL
    assert full.paired_repetitions % 2 == 1  # the median is one repetition's ratio
    paired = len(http.PAIR_ROUTES) * full.paired_repetitions * 2 * full.paired_seconds
    replaced = len(http.PAIR_ROUTES) * 2 * full.duration_seconds
    assert paired + 2 * full.warmup_seconds - replaced < 60
    assert http.SMOKE.concurrent  # smoke: every stack at once, no pairs


SHORT = dataclasses.replace(
    http.SMOKE,
    concurrent=False,
    warmup_seconds=1,
    paired_repetitions=2,
    paired_seconds=1,
)


@pytest.mark.server
def test_paired_run_against_real_servers() -> None:
    """The two budget stacks through `run_http` with short counts: the pairs ran
    alternately, every cell of the table is there once, and the budget's ratio is the
    pairs' median."""
    require_wrk()
    results = http.run_http(SHORT, stacks=(BASE, STACK), implementations=(IMPLEMENTATION,))
    routes = ("GET /hello", "POST /submit", "GET /api")
    assert [(c.stack, c.route) for c in results.cells] == [
        (stack, route) for stack in (BASE, STACK) for route in routes
    ]
    assert all(c.requests > 0 and c.cpu_us_per_request > 0 for c in results.cells)
    assert [pair.route for pair in results.pairs] == list(http.PAIR_ROUTES)
    cells = {(c.implementation, c.stack, c.route): c for c in results.cells}
    for pair in results.pairs:
        assert [r.first for r in pair.repetitions] == [BASE, STACK]
        for repetition in pair.repetitions:
            assert (repetition.stack.stack, repetition.base.stack) == (STACK, BASE)
            assert repetition.stack.route == repetition.base.route == pair.route
        assert cells[(IMPLEMENTATION, STACK, pair.route)] == pair.cells()[0]
        assert cells[(IMPLEMENTATION, BASE, pair.route)] == pair.cells()[1]
        budget = http.ratio(results, IMPLEMENTATION, STACK, pair.route, BASE)
        assert budget == pair.ratio.median > 0
    table = http.render_http(results)
    assert table.count(f"| {STACK} over {BASE} |") == len(http.PAIR_ROUTES)
    # One row per cell, one per pair.
    assert table.count(f"| {IMPLEMENTATION} |") == 2 * len(routes) + len(http.PAIR_ROUTES)


@pytest.mark.server
def test_no_pairs_without_both_stacks_or_their_server() -> None:
    """A run without the budget's stacks or implementation measures single cells only."""
    require_wrk()
    only_once = dataclasses.replace(SHORT, warmup_seconds=0, duration_seconds=1)
    results = http.run_http(only_once, stacks=(BASE,), implementations=(IMPLEMENTATION,))
    assert results.pairs == ()
    assert len(results.cells) == 3


def test_the_budget_line_quotes_the_paired_median_and_its_spread() -> None:
    """The report's HTTP verdict is the pairs' median, with their spread beside it."""
    pair = pair_of([(1.0, 1.0), (1.0, SLOW), (1.0, 1.0)])  # one slow reference run
    results = http.Results(
        http.FULL, [pair.repetitions[0].stack, pair.repetitions[0].base], (pair,)
    )
    line = next(
        line
        for line in budget_lines(Parts(smoke=False, http=results))
        if line.budget.startswith(f"HTTP {ROUTE}")
    )
    assert line.measured.startswith("0.80x (paired, median of 3 repetitions; 0.80 to 1.20;")
    assert line.passed is True
