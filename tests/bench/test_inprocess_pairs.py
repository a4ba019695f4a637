"""The in-process budget's paired comparison (`bench.inprocess`): the statistic, the
order of a round, the budget lines built from it, and a smoke run.

The statistic and the order are pure and tested on made-up round medians: this
machine's "slow phase" (the same code about 1.5x slower for seconds at a time) is
modelled by multiplying a round's median by `SLOW`. Never asserts on measured timings.
"""

from __future__ import annotations

import dataclasses

import pytest
from bench.inprocess import (
    BUDGET_PAIRS,
    FULL,
    ROUTES,
    SLOW_VARIANTS,
    SMOKE,
    Cell,
    Counts,
    Results,
    Slot,
    paired_difference_us,
    paired_ratio,
    render_table,
    run_benchmark,
    schedule,
)
from bench.report import Parts, budget_lines

from bastion.types import Receive, Scope, Send

SLOW = 1.5  # how much slower the machine runs in a slow phase
STARLETTE_NS = 8_600.0
BASTION_NS = 20_200.0  # 2.35x Starlette when both run at the same speed
RAW_NS = 1_700.0
BASTION_RAW_NS = 12_200.0  # adds 10.5 µs when both run at the same speed


def rounds(normal: float, slow_rounds: set[int], count: int = 5) -> list[float]:
    """Round medians of a cell at `normal` speed, `SLOW` times slower in `slow_rounds`."""
    return [normal * SLOW if index in slow_rounds else normal for index in range(count)]


@pytest.mark.parametrize(
    ("ours", "reference", "median", "low", "high"),
    [
        pytest.param(
            rounds(BASTION_NS, set()),
            rounds(STARLETTE_NS, set()),
            2.35,
            2.35,
            2.35,
            id="steady",
        ),
        pytest.param(
            rounds(BASTION_NS, {1, 3}),
            rounds(STARLETTE_NS, {1, 3}),
            2.35,
            2.35,
            2.35,
            id="slow-phase-lifts-both",
        ),
        # Round 2: the slow phase ended between the reference's calls and Bastion's.
        pytest.param(
            rounds(BASTION_NS, {0, 1}),
            rounds(STARLETTE_NS, {0, 1, 2}),
            2.35,
            1.57,
            2.35,
            id="reference-slow-alone-in-one-round",
        ),
        pytest.param(
            rounds(BASTION_NS, {0, 1, 2}),
            rounds(STARLETTE_NS, {0, 1}),
            2.35,
            2.35,
            3.52,
            id="ours-slow-alone-in-one-round",
        ),
    ],
)
def test_paired_ratio_is_the_median_of_round_ratios(
    ours: list[float], reference: list[float], median: float, low: float, high: float
) -> None:
    figure = paired_ratio(ours, reference)
    assert figure.rounds == len(ours)
    assert (figure.median, figure.low, figure.high) == pytest.approx((median, low, high), abs=0.01)


def test_paired_difference_is_in_microseconds() -> None:
    figure = paired_difference_us(rounds(BASTION_RAW_NS, {4}), rounds(RAW_NS, {4}))
    assert figure.rounds == 5
    assert (figure.median, figure.low, figure.high) == pytest.approx((10.5, 10.5, 15.75))


def test_paired_figures_need_the_same_rounds() -> None:
    with pytest.raises(ValueError, match="shorter"):
        paired_ratio([1.0, 2.0], [1.0])


def results_of(medians: dict[tuple[str, str], list[float]], calls: int = 3) -> Results:
    """Results whose cells ran `calls` calls per round, each at that round's median."""
    counts = dataclasses.replace(FULL, rounds=5, calls=calls)
    cells = {
        key: Cell(
            timings_ns=[int(median) for median in per_round for _ in range(calls)],
            round_medians_ns=per_round,
            requests=calls * len(per_round),
        )
        for key, per_round in medians.items()
    }
    return Results(counts, sorted({variant for variant, _ in medians}), cells)


def test_budget_uses_the_paired_figures_not_the_medians_of_all_calls() -> None:
    """The references ran in the slow phase in three rounds and Bastion in two (the
    phase ended between them in round 2). The median of all of a reference's calls is
    then a slow one and Bastion's a fast one: 1.57x Starlette and +9.7 µs over raw,
    two passes. Round by round, at one speed, Bastion costs 2.35x and +10.5 µs: misses.
    """
    medians = {
        ("Starlette", "GET /hello"): rounds(STARLETTE_NS, {0, 1, 2}),
        ("Bastion + Starlette", "GET /hello"): rounds(BASTION_NS, {0, 1}),
        ("Starlette", "POST /submit"): rounds(STARLETTE_NS, {0, 1, 2}),
        ("Bastion + Starlette", "POST /submit"): rounds(BASTION_NS, {0, 1}),
        ("raw ASGI", "GET /hello"): rounds(RAW_NS, {0, 1, 2}),
        ("Bastion + raw ASGI", "GET /hello"): rounds(BASTION_RAW_NS, {0, 1}),
    }
    lines = budget_lines(Parts(smoke=False, inprocess=results_of(medians)))
    get, post, raw = lines[:3]
    assert get.measured == "2.35x (paired, median of 5 rounds; rounds 1.57 to 2.35)"
    assert get.passed is False
    assert post.measured.startswith("2.35x (paired, median of 5 rounds;")
    assert post.passed is False
    assert raw.measured.startswith("+10.5 µs (paired, median of 5 rounds; rounds +9.")
    assert raw.passed is False


VARIANTS = (
    "raw ASGI",
    "Starlette",
    "FastAPI",
    "Django",
    "Bastion + raw ASGI",
    "Bastion + Starlette",
    "errors alone + raw ASGI",
)


def round_of(round_index: int, counts: Counts = FULL) -> list[Slot]:
    return list(schedule(list(VARIANTS), round_index, counts))


@pytest.mark.parametrize("round_index", [0, 1, 2, 3])
@pytest.mark.parametrize(("reference", "ours"), BUDGET_PAIRS)
def test_each_pair_runs_adjacently_alternating_which_goes_first(
    round_index: int, reference: str, ours: str
) -> None:
    slots = round_of(round_index)
    leader, follower = (reference, ours) if round_index % 2 == 0 else (ours, reference)
    for route in ROUTES:
        positions = [
            index
            for index, slot in enumerate(slots)
            if slot.route == route and slot.variant in (reference, ours)
        ]
        assert positions == list(range(positions[0], positions[0] + 2 * FULL.blocks))
        order = [slots[index].variant for index in positions]
        # ABBA in one round, BAAB in the next: blocks alternate the leader too.
        assert order == [leader, follower, follower, leader]
        assert sum(slots[index].calls for index in positions) == 2 * FULL.calls


@pytest.mark.parametrize("round_index", [0, 1])
def test_a_round_runs_every_variant_on_every_route_once(round_index: int) -> None:
    calls: dict[tuple[str, str], int] = {}
    for slot in round_of(round_index):
        key = (slot.variant, slot.route.name)
        calls[key] = calls.get(key, 0) + slot.calls
    assert calls == {
        (variant, route.name): FULL.slow_calls if variant in SLOW_VARIANTS else FULL.calls
        for variant in VARIANTS
        for route in ROUTES
    }


def test_blocks_split_the_calls_and_alternate_the_leader() -> None:
    counts = dataclasses.replace(FULL, calls=7, blocks=3)
    slots = [slot for slot in round_of(1, counts) if slot.route == ROUTES[0]][:6]
    assert [(slot.variant, slot.calls) for slot in slots] == [
        ("Bastion + Starlette", 3),
        ("Starlette", 3),
        ("Starlette", 2),
        ("Bastion + Starlette", 2),
        ("Bastion + Starlette", 2),
        ("Starlette", 2),
    ]


def test_a_reference_without_its_partner_runs_alone() -> None:
    slots = list(schedule(["raw ASGI", "Starlette"], 0, FULL))
    assert [(slot.variant, slot.route) for slot in slots] == [
        (variant, route) for variant in ("raw ASGI", "Starlette") for route in ROUTES
    ]


def test_inprocess_smoke_reports_the_paired_figures() -> None:
    results = run_benchmark(SMOKE)
    for cell in results.cells.values():
        assert len(cell.round_medians_ns) == SMOKE.rounds
    assert results.ratio("Bastion + Starlette", "Starlette", "GET /hello").rounds == SMOKE.rounds
    table = render_table(results)
    for reference, ours in BUDGET_PAIRS:
        for route in ROUTES:
            assert f"| {ours} vs {reference} | {route.name} |" in table
    lines = budget_lines(Parts(smoke=True, inprocess=results))
    assert all(f"(paired, median of {SMOKE.rounds} rounds;" in line.measured for line in lines[:3])


def test_every_stretch_opens_with_untimed_settling_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stack's first calls after another stack ran are slow: they run, untimed."""
    served: list[str] = []

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    monkeypatch.setattr("bench.inprocess.build_variants", lambda: {"raw ASGI": counting})
    counts = dataclasses.replace(SMOKE, settle=3)
    results = run_benchmark(counts)
    per_route = counts.warmup + counts.rounds * (counts.settle + counts.calls) + counts.profiled
    assert len(served) == per_route * len(ROUTES)
    for route in ROUTES:
        assert results.cells[("raw ASGI", route.name)].requests == counts.rounds * counts.calls
