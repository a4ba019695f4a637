"""The pure GCRA core: named tables, then properties checked by hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.stores.gcra import GCRALimit, GCRAStep, gcra_step

S = 1_000_000  # one second in microseconds
T0 = 1_700_000_000 * S

# One request a second, burst of 3 (tolerance 2 s).
LIMIT = GCRALimit(emission_interval_us=S, burst_tolerance_us=2 * S)


def run(times_us: list[int], limit: GCRALimit = LIMIT) -> list[GCRAStep]:
    tat: int | None = None
    steps = []
    for now in times_us:
        step = gcra_step(tat, now, limit)
        if step.tat_us is not None:
            tat = step.tat_us
        steps.append(step)
    return steps


# (times in seconds after T0, expected (allowed, remaining, retry_after s, reset_after s))
CASES = [
    pytest.param([0], [(True, 2, 0, 1)], id="first-request"),
    pytest.param(
        [0, 0, 0, 0],
        [(True, 2, 0, 1), (True, 1, 0, 2), (True, 0, 0, 3), (False, 0, 1, 3)],
        id="burst-then-refused",
    ),
    pytest.param(
        [0, 0, 0, 0.5, 1],
        [(True, 2, 0, 1), (True, 1, 0, 2), (True, 0, 0, 3), (False, 0, 0.5, 2.5), (True, 0, 0, 3)],
        id="retry-after-is-exact",
    ),
    pytest.param(
        [0, 1, 2, 3, 4],
        [(True, 2, 0, 1)] * 5,
        id="steady-rate-always-allowed",
    ),
    pytest.param(
        [0, 0, 0, 100, 100, 100, 100],
        [(True, 2, 0, 1), (True, 1, 0, 2), (True, 0, 0, 3)] * 2 + [(False, 0, 1, 3)],
        id="idle-earns-no-more-than-a-full-bucket",
    ),
]


@pytest.mark.parametrize(("seconds", "expected"), CASES)
def test_table(seconds: list[float], expected: list[tuple[bool, int, float, float]]) -> None:
    steps = run([T0 + round(s * S) for s in seconds])
    got = [
        (step.allowed, step.remaining, step.retry_after_us / S, step.reset_after_us / S)
        for step in steps
    ]
    assert got == expected


def test_cost_counts_several_units() -> None:
    limit = GCRALimit(S, 2 * S, cost=2)
    first = gcra_step(None, T0, limit)
    assert (first.allowed, first.remaining, first.tat_us) == (True, 1, T0 + 2 * S)
    second = gcra_step(first.tat_us, T0, limit)
    assert (second.allowed, second.remaining, second.retry_after_us) == (False, 1, S)


def test_cost_zero_reads_without_writing() -> None:
    step = gcra_step(T0 + S, T0, GCRALimit(S, 2 * S, cost=0))
    assert (step.allowed, step.tat_us, step.remaining, step.reset_after_us) == (True, None, 2, S)


def test_refused_never_writes() -> None:
    step = gcra_step(T0 + 3 * S, T0, LIMIT)
    assert not step.allowed
    assert step.tat_us is None


def test_result_in_seconds() -> None:
    result = gcra_step(T0 + 3 * S, T0 + S // 2, LIMIT).result()
    assert result.allowed is False
    assert result.limit == 3
    assert result.retry_after_seconds == 0.5
    assert result.reset_after_seconds == 2.5


@pytest.mark.parametrize(
    ("count", "period", "burst", "interval_us", "tolerance_us", "limit"),
    [
        pytest.param(100, 60.0, None, 600_000, 59_400_000, 100, id="100-per-minute"),
        pytest.param(10, 1.0, 1, 100_000, 0, 1, id="no-burst"),
        pytest.param(5, 1.0, 20, 200_000, 3_800_000, 20, id="burst-above-rate"),
    ],
)
def test_from_rate(
    count: int, period: float, burst: int | None, interval_us: int, tolerance_us: int, limit: int
) -> None:
    parsed = GCRALimit.from_rate(count, period, burst=burst)
    assert (parsed.emission_interval_us, parsed.burst_tolerance_us) == (interval_us, tolerance_us)
    assert parsed.burst == limit


@pytest.mark.parametrize(
    ("interval", "tolerance", "cost"),
    [
        pytest.param(0.0, 1.0, 1, id="zero-interval"),
        pytest.param(1e-7, 1.0, 1, id="below-a-microsecond"),
        pytest.param(-1.0, 0.0, 1, id="negative-interval"),
        pytest.param(1.0, -0.5, 1, id="negative-tolerance"),
        pytest.param(float("nan"), 0.0, 1, id="nan"),
        pytest.param(1e10, 0.0, 1, id="longer-than-a-year"),
        pytest.param(1.0, 1.0, 3, id="cost-above-burst"),
        pytest.param(1.0, 1.0, -1, id="negative-cost"),
        pytest.param(1.0, 1.0, True, id="bool-cost"),
    ],
)
def test_from_seconds_rejects(interval: float, tolerance: float, cost: int) -> None:
    with pytest.raises(ValueError, match=r"_seconds|cost"):
        GCRALimit.from_seconds(interval, tolerance, cost)


@pytest.mark.parametrize(
    ("count", "period", "burst"),
    [
        pytest.param(0, 1.0, None, id="zero-count"),
        pytest.param(1, 0.0, None, id="zero-period"),
        pytest.param(1, 1.0, 0, id="zero-burst"),
    ],
)
def test_from_rate_rejects(count: int, period: float, burst: int | None) -> None:
    with pytest.raises(ValueError, match="must be"):
        GCRALimit.from_rate(count, period, burst=burst)


# -- properties ------------------------------------------------------------------

limits = st.builds(
    lambda interval, burst, cost: GCRALimit(interval, interval * (burst - 1), min(cost, burst)),
    st.integers(min_value=1, max_value=10 * S),
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=0, max_value=3),
)
gaps = st.lists(st.integers(min_value=0, max_value=5 * S), min_size=1, max_size=60)


def _times(start: int, deltas: list[int]) -> list[int]:
    times, now = [], start
    for delta in deltas:
        now += delta
        times.append(now)
    return times


@settings(max_examples=300, deadline=None)
@given(limit=limits, deltas=gaps, start=st.integers(min_value=0, max_value=T0))
def test_never_allows_more_than_burst_plus_rate(
    limit: GCRALimit, deltas: list[int], start: int
) -> None:
    # Over any run of requests from a fresh key: allowed units * T <= elapsed + tau + T.
    times = _times(start, deltas)
    steps = run(times, limit)
    for end in range(len(times)):
        allowed_units = sum(limit.cost for step in steps[: end + 1] if step.allowed)
        elapsed = times[end] - times[0]
        window = limit.burst_tolerance_us + limit.emission_interval_us
        assert allowed_units * limit.emission_interval_us <= elapsed + window


@settings(max_examples=300, deadline=None)
@given(limit=limits, deltas=gaps, start=st.integers(min_value=0, max_value=T0))
def test_retry_after_is_exact(limit: GCRALimit, deltas: list[int], start: int) -> None:
    # A refused request is refused one microsecond before `retry_after`, allowed at it.
    tat: int | None = None
    for now in _times(start, deltas):
        step = gcra_step(tat, now, limit)
        if not step.allowed:
            at = now + step.retry_after_us
            assert not gcra_step(tat, at - 1, limit).allowed
            assert gcra_step(tat, at, limit).allowed
        elif step.tat_us is not None:
            tat = step.tat_us


@settings(max_examples=300, deadline=None)
@given(limit=limits, deltas=gaps, start=st.integers(min_value=0, max_value=T0))
def test_monotonic_and_consistent(limit: GCRALimit, deltas: list[int], start: int) -> None:
    tat: int | None = None
    for now in _times(start, deltas):
        step = gcra_step(tat, now, limit)
        assert step.remaining >= 0
        assert step.reset_after_us >= 0
        assert step.limit == limit.burst
        if step.allowed:
            assert step.retry_after_us == 0
            if step.tat_us is not None:
                assert tat is None or step.tat_us > tat  # the TAT only moves forward
                assert step.reset_after_us == step.tat_us - now
                tat = step.tat_us
        else:
            assert step.retry_after_us > 0
            assert step.tat_us is None


@settings(max_examples=200, deadline=None)
@given(limit=limits, start=st.integers(min_value=0, max_value=T0))
def test_remaining_counts_exactly_what_is_left(limit: GCRALimit, start: int) -> None:
    # After an allowed request says `remaining=r`, exactly r more unit requests pass now.
    unit = GCRALimit(limit.emission_interval_us, limit.burst_tolerance_us, 1)
    first = gcra_step(None, start, unit)
    tat = first.tat_us
    allowed = 0
    while True:
        step = gcra_step(tat, start, unit)
        if not step.allowed:
            break
        allowed += 1
        tat = step.tat_us
    assert allowed == first.remaining
    assert first.remaining == unit.burst - 1


@settings(max_examples=200, deadline=None)
@given(limit=limits, count=st.integers(min_value=1, max_value=50))
def test_requests_spaced_by_the_interval_always_pass(limit: GCRALimit, count: int) -> None:
    interval = limit.emission_interval_us * max(limit.cost, 1)
    steps = run([T0 + i * interval for i in range(count)], limit)
    assert all(step.allowed for step in steps)


@given(st.integers(1, 1000), st.floats(0.001, 3600), st.integers(1, 1000))
def test_from_rate_allows_exactly_the_burst(count: int, period: float, burst: int) -> None:
    limit = GCRALimit.from_rate(count, period, burst=burst)
    assert limit.burst == burst


def test_from_rate_six_per_second_burst_three() -> None:
    assert GCRALimit.from_rate(6, 1.0, burst=3).burst == 3
