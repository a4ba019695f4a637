"""The benchmark suite's smoke mode: every part runs, every request gets the expected status.

Real parts throughout: uvicorn servers on 127.0.0.1 (under valgrind for the counts
over HTTP), wrk, the `websockets` client, a real `redis-server`. Never asserts on
timings: they depend on the machine. With `CI=true` a missing wrk, valgrind or
redis-server fails the test; elsewhere it skips.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from bench.__main__ import main
from bench.client import Request, bearer_token, build_requests
from bench.inprocess import (
    ROUTES,
    SMOKE,
    BenchmarkError,
    build_variants,
    render_table,
    run_benchmark,
)
from bench.report import TRIED_HEADING
from bench.servers import IMPLEMENTATIONS, serving

from bastion.types import Receive, Scope, Send
from bench import http, http_instructions, inprocess, instructions, memory, ratelimit, ws
from tests.support.redis import require_tool


def require_wrk() -> None:
    if shutil.which("wrk") is not None:
        return
    reason = "wrk is not installed (Debian: apt-get install wrk)"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


def test_inprocess_smoke_has_every_variant_and_route() -> None:
    results = run_benchmark(SMOKE)
    table = render_table(results)
    variants = list(build_variants())
    assert results.variants == variants
    assert variants[:9] == list(inprocess.INPROCESS_STACKS)
    assert len(variants) == 9 + len(inprocess.LAYERS)
    for variant in variants:
        for route in ROUTES:
            assert f"| {variant} | {route.name} |" in table
            cell = results.cells[(variant, route.name)]
            assert cell.requests == SMOKE.rounds * SMOKE.calls
            assert cell.calls_per_request > 0
    assert "Every response was 200." in table


def require_valgrind() -> None:
    if instructions.valgrind() is not None:
        return
    reason = "valgrind is not installed (Debian: apt-get install valgrind)"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.mark.timeout(900)  # valgrind runs the interpreter's start-up some 50 times slower
def test_instructions_smoke_counts_every_stack_and_route() -> None:
    require_valgrind()
    results = instructions.run_instructions(instructions.SMOKE)
    assert set(results.per_request) == {
        (variant, route.name) for variant in instructions.VARIANTS for route in ROUTES
    }
    # Each stack runs more code than the application inside it, on every route.
    for route in ROUTES:
        counts = {
            variant: results.per_request[(variant, route.name)] for variant in instructions.VARIANTS
        }
        assert 0 < counts["raw ASGI"] < counts["Starlette"] < counts["peer stack + Starlette"]
        assert counts["raw ASGI"] < counts["Bastion + raw ASGI"]
        assert counts["Starlette"] < counts["Bastion + Starlette"] < counts["Bastion + FastAPI"]
    table = instructions.render_instructions(results)
    assert table.count("| Bastion + Starlette |") == len(ROUTES)


def test_instructions_child_aborts_on_a_failed_request(monkeypatch: pytest.MonkeyPatch) -> None:
    # The child's loop, in this process (no valgrind needed): a stack that answers 500
    # stops the count, as in the timed part.
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    monkeypatch.setattr("bench.instructions.STACKS", {"raw ASGI": lambda: failing})
    monkeypatch.setattr("bench.instructions.VARIANTS", ("raw ASGI",))
    with pytest.raises(BenchmarkError, match="status 500"):
        asyncio.run(instructions._child(instructions.SMOKE))


def test_default_parts_leave_out_the_counts_without_their_tools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench.__main__ import PARTS, default_parts

    counted = ("instructions", "httpinstructions")
    monkeypatch.setattr("bench.instructions.valgrind", lambda: None)
    assert "valgrind" in http_instructions.missing_tools()
    assert default_parts() == tuple(part for part in PARTS if part not in counted)
    monkeypatch.setattr("bench.instructions.valgrind", lambda: "/usr/bin/valgrind")
    monkeypatch.setattr("bench.http_instructions.missing_tools", lambda: ["wrk"])
    assert default_parts() == tuple(part for part in PARTS if part != "httpinstructions")
    monkeypatch.setattr("bench.http_instructions.missing_tools", list)
    assert default_parts() == PARTS


@pytest.mark.server
@pytest.mark.timeout(300)  # five servers started under valgrind, one after the other
def test_http_instructions_smoke_counts_every_stack_and_route() -> None:
    require_valgrind()
    require_wrk()
    results = http_instructions.run_http_instructions(http_instructions.SMOKE)
    assert set(results.per_request) == {
        (stack, route)
        for stack in http_instructions.COUNTED_STACKS
        for route in http_instructions.ROUTE_NAMES
    }
    raw, lines = http_instructions.RAW, "raw ASGI + Bastion's lines"
    for route in http_instructions.ROUTE_NAMES:
        counts = {
            stack: results.per_request[(stack, route)] for stack in http_instructions.COUNTED_STACKS
        }
        # The server writes more lines for the same app; Bastion does that and more.
        assert 0 < counts[raw] < counts[lines] < counts["Bastion + raw ASGI"]
        assert counts["Starlette"] < counts["Bastion + Starlette"]
        assert results.added_lines[route] >= 4
    table = http_instructions.render_http_instructions(results)
    assert table.count("| Bastion + Starlette |") == len(http_instructions.ROUTE_NAMES)
    assert "of which" in table


def test_instructions_without_valgrind_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.instructions.valgrind", lambda: None)
    with pytest.raises(BenchmarkError, match="valgrind is not installed"):
        instructions.run_instructions(instructions.SMOKE)


def test_inprocess_failed_request_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    monkeypatch.setattr("bench.inprocess.build_variants", lambda: {"raw ASGI": failing})
    with pytest.raises(BenchmarkError, match="status 500"):
        run_benchmark(SMOKE)


@pytest.mark.server
def test_http_smoke_every_stack_on_every_server() -> None:
    require_wrk()
    results = http.run_http(http.SMOKE)
    cells = {(cell.implementation, cell.stack) for cell in results.cells}
    assert cells == {(impl, stack) for impl in IMPLEMENTATIONS for stack in http.HTTP_STACKS}
    assert all(cell.requests > 0 and cell.route == http.ALL_ROUTES for cell in results.cells)
    table = http.render_http(results)
    assert table.count("| httptools+uvloop |") == len(http.HTTP_STACKS)


@pytest.mark.server
def test_http_refused_requests_fail_the_cell() -> None:
    """The peer stack refuses `GET /api` without its bearer token: preflight and wrk both stop."""
    require_wrk()
    with serving([("peer stack + Starlette", "httptools+uvloop")]) as (server,):
        origin = f"http://{server.host}:{server.port}"
        api = build_requests(origin, bearer_token())[2]
        anonymous = Request(api.name, api.method, api.path, (), b"")
        http.preflight(server, [api])  # the legitimate request passes
        with pytest.raises(BenchmarkError, match="status 403"):
            http.preflight(server, [anonymous])
        run = http._WrkRun(server, [anonymous], api.name, http.SMOKE, 1)
        with pytest.raises(BenchmarkError, match="non-2xx"):
            run.finish()


@pytest.mark.server
def test_ws_smoke_every_stack_echoes() -> None:
    results = ws.run_ws(ws.SMOKE)
    assert list(results.cells) == list(ws.WS_STACKS)
    for cell in results.cells.values():
        assert len(cell.messages_per_second) == ws.SMOKE.rounds
        assert len(cell.handshakes_per_second) == ws.SMOKE.rounds
    assert "| Bastion + raw ASGI |" in ws.render_ws(results)


def test_ratelimit_smoke_counts_redis_commands() -> None:
    require_tool("redis-server")
    results = ratelimit.run_ratelimit(ratelimit.SMOKE)
    assert {(row.store, row.what) for row in results.rows} == {
        (store, what)
        for store in ("memory", "redis")
        for what in ("RateLimitMiddleware check", "bare Store.gcra step")
    }
    trips = results.round_trips
    # Every check sent at least the GCRA script; nothing from the probe itself is counted.
    assert trips.client_commands["evalsha"] == ratelimit.SMOKE.probe_checks
    assert not set(trips.client_commands) & {"config", "info", "echo"}
    assert sum(trips.executed.values()) >= sum(trips.client_commands.values())


def test_memory_smoke_store_stays_at_its_bound() -> None:
    results = memory.run_memory(memory.SMOKE)
    bastion, limits = results.rows
    assert bastion.entries == memory.SMOKE.bound
    assert limits.entries == memory.SMOKE.keys  # unbounded: one entry per sprayed key
    assert bastion.traced_bytes > 0
    assert limits.traced_bytes > 0


def test_main_writes_the_document_and_keeps_what_was_tried(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    notes = f"{TRIED_HEADING}\n\n* fused the send wrappers (kept from the last run)\n"
    out.write_text(f"# Benchmarks\n\nold figures\n\n{notes}", encoding="utf-8")
    assert main(["--smoke", "--only", "memory", "--out", str(out)]) == 0
    document = out.read_text(encoding="utf-8")
    assert "old figures" not in document
    assert "## Memory: sprayed client keys" in document
    assert "## Budget" in document
    assert "## Machine" in document
    assert document.endswith(notes)


def test_main_rejects_an_unknown_part() -> None:
    with pytest.raises(SystemExit):
        main(["--smoke", "--only", "inprocess,gpu"])


def test_opcodes_name_the_functions_a_request_runs() -> None:
    """The opcode tracer attributes the stack's bytecodes to its functions: the
    flow's runner is among them for Bastion, and the bare app runs far fewer."""
    from bench.opcodes import count_opcodes
    from bench.stacks import STACKS

    route = next(r for r in ROUTES if r.name == "GET /hello")
    bastion = asyncio.run(count_opcodes(STACKS["Bastion + raw ASGI"](), route, requests=2))
    bare = asyncio.run(count_opcodes(STACKS["raw ASGI"](), route, requests=2))
    assert any(name == "run_stages" for _, _, name in bastion)
    assert not any(name == "run_stages" for _, _, name in bare)
    assert sum(bare.values()) * 5 < sum(bastion.values())


def test_opcodes_main_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.opcodes import main as opcodes_main

    assert opcodes_main(["raw ASGI", "POST /submit", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("bytecodes per request")
    assert len(lines) == 6  # total, blank, heading, three functions
