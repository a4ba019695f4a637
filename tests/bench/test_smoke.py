"""The benchmark's smoke mode runs, covers every variant and fails loudly on a failed request.

Never asserts on timings: they depend on the machine.
"""

from __future__ import annotations

import pytest
from bench.inprocess import (
    ROUTES,
    SMOKE,
    BenchmarkError,
    build_variants,
    render_table,
    run_benchmark,
)

from bastion.types import Receive, Scope, Send


def test_smoke_table_has_every_variant_and_route() -> None:
    results = run_benchmark(SMOKE)
    table = render_table(results)
    variants = list(build_variants())
    assert results.variants == variants
    assert len(variants) == 16
    for variant in variants:
        for route in ROUTES:
            assert f"| {variant} | {route.name} |" in table
            cell = results.cells[(variant, route.name)]
            assert cell.requests == SMOKE.rounds * SMOKE.calls
            assert cell.calls_per_request > 0
    assert "Every response was 200." in table


def test_failed_request_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    monkeypatch.setattr("bench.inprocess.build_variants", lambda: {"raw ASGI": failing})
    with pytest.raises(BenchmarkError, match="status 500"):
        run_benchmark(SMOKE)
