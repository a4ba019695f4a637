"""The layer's reuse of the last allowed result on `_only`'s path
(`RateLimitMiddleware._only_last`).

When the store answers with the very result object the last allowed request got
(it shares the result of a step on an empty bucket: `MemoryStore._full_step`),
`enter` reuses what it derived from it (the state's results, the `RateLimit` lines
and their hook, or that it has none: `response_headers`). Held here to the general
synchronous path (`_only` cleared, which derives everything afresh) and to the
awaited path, request by request: statuses, headers, the state the app reads, the
events and the store's entries, over request sequences where buckets empty again
between requests, beside named attacks.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.ratelimit.test_only_path import _HOSTS, _requests, _run, _stores
from tests.ratelimit.test_sync_path import (
    RESPONSE_HEADERS,
    Request,
    has_lines,
    should_have_lines,
)

pytestmark = pytest.mark.anyio

# A burst of 3, then one every 0.2 seconds: a pause of 0.6 s or more empties a bucket.
# A full bucket leaves 2 of a quota of 5: near the limit (`response_headers`).
_SETTINGS: dict[str, Any] = {"limits": {"*": ["5/second; burst=3"]}}
# A burst of 6, one every 0.1 s: a full bucket leaves 5 of 10, far from the limit.
_FAR: dict[str, Any] = {"limits": {"*": ["10/second; burst=6"]}}


async def _agree(requests: list[Request], settings: dict[str, Any] = _SETTINGS) -> list[Any]:
    memory, overridden = _stores(100_000)
    short, short_events, short_store = await _run(memory, settings, requests)
    general, general_events, general_store = await _run(memory, settings, requests, general=True)
    awaited, awaited_events, _ = await _run(overridden, settings, requests)
    assert short == general == awaited
    assert short_events == general_events == awaited_events
    assert list(short_store._data.items()) == list(general_store._data.items())
    when = settings.get("response_headers", "near_limit")
    assert [has_lines(s) for s in short] == [should_have_lines(s, when) for s in short]
    return short


def _paced(seed: int, count: int) -> list[Request]:
    """Clients that mostly keep below the rate (empty buckets: the reused result),
    with bursts over it, clock steps backwards, and other clients in between."""
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        host = rng.choice(_HOSTS[:3])
        advance = rng.choice([0.7, 0.7, 1.0, 5.0, 0.0, 0.0, 0.1, -0.5, -3.0])
        requests.append(Request(client=(host, 1), advance=advance))
    return requests


@pytest.mark.parametrize("response_headers", RESPONSE_HEADERS)
@pytest.mark.parametrize("limits", [_SETTINGS, _FAR], ids=["near", "far"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_reuse_decides_as_the_general_paths(
    seed: int, limits: dict[str, Any], response_headers: str
) -> None:
    seen = await _agree(_paced(seed, 300), {**limits, "response_headers": response_headers})
    statuses = [s.status for s in seen]
    assert 200 in statuses
    assert 429 in statuses


async def test_reuse_with_bans_and_websockets_decides_as_the_general_paths() -> None:
    requests = [
        Request(client=r.client, advance=r.advance + 0.7, then=r.then, websocket=r.websocket)
        for r in _requests(5, 300)
    ]
    seen = await _agree(requests, {"limits": {"*": ["5/second; burst=3"]}})
    statuses = {s.status for s in seen}
    assert {200, 403, "websocket.accept"} <= statuses


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        pytest.param([1.0] * 6, [200] * 6, id="ratelimit-reuse-below-the-rate-ok"),
        pytest.param(
            [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            [200, 200, 200, 200, 200, 429, 429],
            id="ratelimit-reuse-burst-over-the-limit",
        ),
        pytest.param(
            [1.0, 1.0, 1.0, 0.0, 0.0, -10.0, 0.0],
            [200, 200, 200, 200, 200, 429, 429],
            id="ratelimit-reuse-clock-backwards",
        ),
    ],
)
async def test_named_cases(plan: list[float], expected: list[int]) -> None:
    seen = await _agree([Request(advance=advance) for advance in plan])
    assert [s.status for s in seen] == expected
    assert seen[2].state.results[0] is seen[1].state.results[0]  # reused, not rebuilt
    assert seen[2].headers == seen[1].headers == seen[0].headers


@pytest.mark.parametrize(
    ("response_headers", "lines"),
    [
        pytest.param("near_limit", False, id="ratelimit-reuse-far-no-lines-near_limit"),
        pytest.param("refused", False, id="ratelimit-reuse-far-no-lines-refused"),
        pytest.param("always", True, id="ratelimit-reuse-far-lines-always"),
    ],
)
async def test_reuse_of_a_response_without_lines(response_headers: str, lines: bool) -> None:
    """A client far from its limit, its bucket full again before each request: the
    reused result carries the lines as the setting says, and a burst still ends in
    429 with them."""
    plan = [1.0] * 4 + [0.0] * 6
    settings = {**_FAR, "response_headers": response_headers}
    seen = await _agree([Request(advance=advance) for advance in plan], settings)
    assert [s.status for s in seen] == [200] * 9 + [429]
    assert seen[3].state.results[0] is seen[1].state.results[0]  # reused, not rebuilt
    assert [has_lines(s) for s in seen[:4]] == [lines] * 4
    assert has_lines(seen[-1])


async def test_a_spray_of_clients_between_reuses_decides_as_the_general_paths() -> None:
    """ratelimit-reuse-many-clients-spray: each sprayed address gets its own bucket
    (and the shared result), and the user's burst still ends in 429."""
    spray = [Request(client=(f"10.0.{i >> 8}.{i & 255}", 1), advance=0.01) for i in range(300)]
    user = [Request(advance=1.0)] + [Request() for _ in range(4)]
    seen = await _agree(spray + user)
    assert [s.status for s in seen] == [200] * 300 + [200, 200, 200, 429, 429]
