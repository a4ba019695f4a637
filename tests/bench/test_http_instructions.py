"""The instruction counts over HTTP (`bench/http_instructions.py`): their arithmetic,
their table, the lines "raw ASGI + Bastion's lines" adds, the request bytes taken from
wrk, and the refusal of an answer other than 200 by a real uvicorn.

The counted run itself (valgrind, uvicorn) is in `test_smoke.py`.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from bench.apps import Header, raw_app
from bench.client import bearer_token, build_requests
from bench.inprocess import BenchmarkError
from bench.servers import serving
from bench.stacks import LINES_STACK, STACKS, _response_lines, bastion_lines, shield

from bench import http_instructions as hi
from tests.bench.test_smoke import require_wrk

ROUTES = hi.ROUTE_NAMES


def _results() -> hi.Results:
    # Invented counts, round enough to check the arithmetic by eye.
    per_stack = {
        hi.RAW: 100_000,
        LINES_STACK: 136_000,
        hi.STARLETTE: 180_000,
        hi.BASTION_RAW: 220_000,
        hi.BASTION_STARLETTE: 300_000,
    }
    per_request = {
        (stack, route): float(count * (index + 1))
        for index, route in enumerate(ROUTES)
        for stack, count in per_stack.items()
    }
    return hi.Results(hi.SMOKE, per_request, dict.fromkeys(ROUTES, 6), "3.11.7")


def test_ratios_and_equivalent_rate() -> None:
    results = _results()
    assert results.ratio(hi.BASTION_STARLETTE, "GET /hello", hi.STARLETTE) == pytest.approx(5 / 3)
    assert results.ratio(hi.BASTION_RAW, "POST /submit", hi.RAW) == pytest.approx(2.2)
    # The budget's HTTP terms: Starlette's count over the stack's.
    assert results.equivalent_rate(hi.BASTION_STARLETTE, "GET /hello") == pytest.approx(0.6)
    assert results.equivalent_rate(hi.RAW, "GET /api") == pytest.approx(1.8)
    assert results.equivalent_rate(hi.STARLETTE, "GET /hello") == 1.0


def test_decomposition_of_bastions_cost() -> None:
    split = hi.decompose(_results(), "POST /submit")
    assert split.route == "POST /submit"
    assert split.bastion == pytest.approx(240_000)  # 2 x (220k - 100k)
    assert split.server_lines == pytest.approx(72_000)  # 2 x (136k - 100k)
    assert split.share == pytest.approx(0.3)


def test_table_has_every_stack_and_route_and_the_decomposition() -> None:
    table = hi.render_http_instructions(_results())
    for route in ROUTES:
        for stack in hi.COUNTED_STACKS:
            assert table.count(f"| {stack} | {route} |") == 1
    assert "| Bastion + Starlette | GET /hello | 300,000 | 1.67 | 3.00 | 0.60 |" in table
    assert "| raw ASGI + Bastion's lines | GET /api | 408,000 | 0.76 | 1.36 | 1.32 |" in table
    assert "GET /hello +120.0k, of which +36.0k (30%) for its 6 lines" in table
    assert "POST /submit +240.0k, of which +72.0k (30%)" in table
    # Rows go route by route: every GET /hello row before the first POST /submit row.
    rows = [line for line in table.splitlines() if line.startswith("| ") and "route" not in line]
    assert [row.split(" | ")[1] for row in rows] == [
        route for route in ROUTES for _ in hi.COUNTED_STACKS
    ]


async def _lines(app_name: str, route: str) -> tuple[int, list[Header]]:
    request = next(
        r for r in build_requests("http://127.0.0.1:8000", bearer_token()) if r.name == route
    )
    app = {"raw": raw_app, "bastion": shield(raw_app), "lines": STACKS[LINES_STACK]()}[app_name]
    return await _response_lines(app, request)


@pytest.mark.parametrize("route", ROUTES)
def test_captured_lines_are_bastions_not_the_apps(route: str) -> None:
    added = bastion_lines()[route]
    own_status, own = asyncio.run(_lines("raw", route))
    status, bastion = asyncio.run(_lines("bastion", route))
    assert (own_status, status) == (200, 200)
    names = {name for name, _ in added}
    # What Bastion adds on every route, and nothing the app sends itself; no
    # `RateLimit` lines, the bench's rate being far from its limit
    # (`ratelimit.response_headers="near_limit"`, the default).
    assert {b"x-content-type-options", b"content-security-policy"} <= names
    assert not names & {b"ratelimit", b"ratelimit-policy"}
    assert not names & {name for name, _ in own}
    assert all(line in bastion and line not in own for line in added)
    assert len(own) + len(added) == len(bastion)


@pytest.mark.parametrize("route", ROUTES)
def test_lines_stack_answers_as_bastion_does(route: str) -> None:
    """The raw app with Bastion's lines sends the very header lines Bastion's stack
    sends on that route, in the same order: the server has the same lines to write."""
    status, lines = asyncio.run(_lines("lines", route))
    bastion_status, bastion = asyncio.run(_lines("bastion", route))
    assert (status, bastion_status) == (200, 200)
    assert lines == bastion


def test_wrk_request_is_wrks_bytes_in_a_fixed_order() -> None:
    require_wrk()
    post = build_requests("http://127.0.0.1:41234", bearer_token())[1]
    wire = hi.wrk_request(post, 41234)
    # wrk orders its lines differently from run to run; ours does not.
    assert hi.wrk_request(post, 41234) == wire
    head, _, body = wire.partition(b"\r\n\r\n")
    request_line, *lines = head.split(b"\r\n")
    assert request_line == b"POST /submit HTTP/1.1"
    assert lines[:2] == [b"Host: 127.0.0.1:41234", b"user-agent: bench"]
    # wrk writes Content-Length itself, from the body it sends.
    assert b"Content-Length: %d" % len(post.body) in lines
    assert b"origin: http://127.0.0.1:41234" in lines
    assert len(lines) == 2 + len(post.headers)
    assert body == post.body


def test_response_status_rejects_what_is_not_a_response() -> None:
    assert hi.response_status(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0") == 403
    with pytest.raises(BenchmarkError, match="not an HTTP response"):
        hi.response_status(b"GET / HTTP/1.1")


def test_a_response_without_its_length_stops_the_count() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        with pytest.raises(BenchmarkError, match="without Content-Length"):
            hi.exchange([right], b"", 1, "here")


@pytest.mark.server
def test_a_refused_request_stops_the_count() -> None:
    """Bastion refuses a cross-site form post with 403: the count names stack, route,
    status; the same-origin post beside it gets its 200."""
    with serving([(hi.BASTION_RAW, hi.IMPLEMENTATION)]) as (server,):
        host = f"127.0.0.1:{server.port}".encode()
        post = build_requests(f"http://{host.decode()}", bearer_token())[1]

        def wire(fetch_site: bytes) -> bytes:
            lines = [b"POST /submit HTTP/1.1", b"Host: " + host]
            for name, value in post.headers:
                lines.append(name + b": " + (fetch_site if name == b"sec-fetch-site" else value))
            return b"\r\n".join(lines) + b"\r\n\r\n" + post.body

        with socket.create_connection((server.host, server.port), timeout=10) as connection:
            hi.exchange([connection], wire(b"same-origin"), 2, "legitimate")
            with pytest.raises(
                BenchmarkError, match=r"^Bastion \+ raw ASGI, POST /submit: status 403"
            ):
                hi.exchange(
                    [connection], wire(b"cross-site"), 1, "Bastion + raw ASGI, POST /submit"
                )
