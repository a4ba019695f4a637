"""The WebSocket budget's paired comparison (`bench.ws`): the order of a round and the
statistic, on made-up rates. This machine's "slow phase" (the same code about 1.5x
slower for seconds at a time) is modelled by dividing a round's rate by `SLOW`.
Never asserts on measured rates."""

from __future__ import annotations

import pytest
from bench.inprocess import Paired
from bench.report import Parts, budget_lines

from bench import ws

SLOW = 1.5
OTHERS = [stack for stack in ws.WS_STACKS if stack not in (ws.UNGUARDED, ws.GUARDED)]


@pytest.mark.parametrize("round_index", range(4))
def test_a_round_measures_the_pair_back_to_back_on_each_figure(round_index: int) -> None:
    order = list(ws.schedule(ws.WS_STACKS, round_index))
    assert sorted(order) == sorted((stack, what) for stack in ws.WS_STACKS for what in ws.FIGURES)
    leader, follower = (
        (ws.UNGUARDED, ws.GUARDED) if round_index % 2 == 0 else (ws.GUARDED, ws.UNGUARDED)
    )
    assert order[:4] == [
        (leader, "messages"),
        (follower, "messages"),
        (leader, "handshakes"),
        (follower, "handshakes"),
    ]
    assert [stack for stack, _ in order[4:]] == [stack for stack in OTHERS for _ in ws.FIGURES]


def _results(unguarded: list[float], guarded: list[float]) -> ws.Results:
    cells = {stack: ws.Cell(stack) for stack in ws.WS_STACKS}
    for stack, rates in ((ws.UNGUARDED, unguarded), (ws.GUARDED, guarded)):
        cells[stack].messages_per_second.extend(rates)
        cells[stack].handshakes_per_second.extend(rates)
    for stack in OTHERS:
        cells[stack].messages_per_second.extend(unguarded)
        cells[stack].handshakes_per_second.extend(unguarded)
    return ws.Results(ws.Counts(rounds=len(unguarded), messages=1, handshakes=1), cells)


@pytest.mark.parametrize(
    ("unguarded", "guarded", "expected"),
    [
        pytest.param([1000.0] * 3, [850.0] * 3, Paired(0.85, 0.85, 0.85, 3), id="steady"),
        pytest.param(
            [1000.0, 1000 / SLOW, 1000 / SLOW],
            [850.0, 850 / SLOW, 850 / SLOW],
            Paired(0.85, 0.85, 0.85, 3),
            id="both-slow-in-two-rounds",
        ),
        # A slow phase that caught the unguarded app in rounds 1-2 and Bastion in round
        # 2 only: the ratio of the cells' medians would read 850 / 667 = 1.27x.
        pytest.param(
            [1000.0, 1000 / SLOW, 1000 / SLOW],
            [850.0, 850.0, 850 / SLOW],
            Paired(0.85, 0.85, 1.275, 3),
            id="phases-not-shared",
        ),
    ],
)
def test_the_ratio_is_the_median_of_each_rounds_ratio(
    unguarded: list[float], guarded: list[float], expected: Paired
) -> None:
    results = _results(unguarded, guarded)
    for what in ws.FIGURES:
        got = results.paired(ws.GUARDED, ws.UNGUARDED, what)
        assert (got.median, got.low, got.high) == pytest.approx(
            (expected.median, expected.low, expected.high)
        )
        assert got.rounds == expected.rounds
        assert results.ratio(ws.GUARDED, ws.UNGUARDED, what) == pytest.approx(expected.median)


def test_the_table_quotes_the_spread_of_the_rounds() -> None:
    table = ws.render_ws(_results([1000.0, 1000.0, 900.0], [850.0, 800.0, 810.0]))
    assert f"| {ws.GUARDED} | 810 | 0.85 (0.80-0.90) | 810 | 0.85 (0.80-0.90) |" in table
    assert f"| {ws.UNGUARDED} | 1,000 | 1.00 | 1,000 | 1.00 |" in table


def test_the_budget_lines_quote_the_paired_median_and_its_spread() -> None:
    results = _results([1000.0, 1000.0, 900.0], [850.0, 790.0, 810.0])
    lines = {line.budget: line for line in budget_lines(Parts(smoke=False, ws=results))}
    handshakes = lines["WebSocket handshakes/s, Bastion (guard on) >= 0.8x the unguarded app"]
    assert handshakes.measured == "0.85x (paired, median of 3 rounds; rounds 0.79 to 0.90)"
    assert handshakes.passed is True
    messages = lines["WebSocket messages/s, Bastion (guard on) >= 0.9x the unguarded app"]
    assert messages.passed is False
