"""`ratelimit.response_headers`: which responses carry `RateLimit-Policy` and `RateLimit`.

Over real stores (the memory store's synchronous paths, SQLite and a real Redis, both
awaited), one client spends a quota, and each named position is checked under each
value: a response far from the limit, the last one with half the burst (here the
quota) or more left and the first one with less (the boundary, `2 * remaining <
burst`), and the 429, which
carries the lines with `Retry-After` whatever the setting. The lines, when sent, are
byte for byte those every response carried before the setting (`always`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion import Settings
from bastion.exceptions import ConfigurationError
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings
from bastion.ratelimit.headers import lines_below, policy_value, ratelimit_value
from bastion.ratelimit.rates import MAX_COUNT, Rate
from bastion.stages import EXTEND, Flow
from bastion.stores import MemoryStore, Store
from bastion.stores.sqlite import SQLiteStore
from bastion.types import Message, Scope
from tests.ratelimit.test_sync_path import (
    LOGIN,
    RIGHT,
    OverriddenStore,
    Request,
    Seen,
    app,
    call,
    has_lines,
)
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio

VALUES = ["always", "near_limit", "refused"]

# A quota of 10 an hour (an hour: Redis's own clock moves a few milliseconds during
# the test, which the rounded-up `t` hides). After request k: r = 10 - k, t = 360 k.
# `2 * r < 10` first holds at r = 4, the sixth request; the eleventh is refused.
_RATE = "10/hour; name=q"
_POLICY = '"q";q=10;w=3600'

# Request number (1-based) -> (name, which values carry the lines there).
_POSITIONS = {
    1: ("far", {"always"}),
    5: ("last-far", {"always"}),  # r = 5: 2 * 5 < 10 does not hold
    6: ("near", {"always", "near_limit"}),  # r = 4
    11: ("refused", set(VALUES)),
}
CASES = [
    pytest.param(position, value, id=f"ratelimit-lines-{name}-{value}")
    for position, (name, _) in _POSITIONS.items()
    for value in VALUES
]

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A factory of fresh stores of one kind (closed at the end)."""
    made: list[Store] = []

    def make() -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore(clock=FakeClock())
        elif request.param == "sqlite":
            store = SQLiteStore(tmp_path / f"{uuid.uuid4().hex}.db", clock=FakeClock())
        else:
            from bastion.stores.redis import RedisStore

            url = request.getfixturevalue("redis_standalone").url
            store = RedisStore(url, key_prefix=f"t{uuid.uuid4().hex[:10]}:")
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def _spend(
    store: Store, settings: dict[str, Any], count: int, request: Request | None = None
) -> list[Seen]:
    layer = RateLimitMiddleware(app, RateLimitSettings.model_validate(settings), store=store)
    return [await call(layer, request or Request()) for _ in range(count)]


@pytest.mark.parametrize("pattern", ["*", "GET /"], ids=["catch-all", "one-route"])
@pytest.mark.parametrize(("position", "value"), CASES)
async def test_lines_at_each_position(
    make_store: StoreFactory, pattern: str, position: int, value: str
) -> None:
    settings = {"limits": {pattern: [_RATE]}, "response_headers": value}
    seen = (await _spend(make_store(), settings, position))[-1]
    name, carried_by = _POSITIONS[position]
    assert seen.status == (429 if name == "refused" else 200)
    if value not in carried_by:
        assert not has_lines(seen)
        return
    k = min(position, 10)
    expected = {"ratelimit-policy": _POLICY, "ratelimit": f'"q";r={10 - k};t={360 * k}'}
    if name == "refused":
        expected["ratelimit"] = '"q";r=0;t=3600'
        expected["retry-after"] = "360"
    assert seen.headers == expected
    assert seen.state is not None  # the app reads the same state whatever the setting
    assert [r.remaining for r in seen.state.results] == [max(0, 10 - position)]


# Two rates, one of which nears its limit: (the rates, the `RateLimit` line of the
# first response with less than half of a quota left, that of the refusal).
MULTI = [
    pytest.param(
        ["100/hour; name=a", "4/hour; name=b"],
        '"a";r=97;t=108, "b";r=1;t=2700',
        '"a";r=95;t=180, "b";r=0;t=3600',
        id="ratelimit-lines-multi-second-near",
    ),
    pytest.param(
        ["4/hour; name=b", "100/hour; name=a"],
        '"b";r=1;t=2700, "a";r=97;t=108',
        '"b";r=0;t=3600',
        id="ratelimit-lines-multi-first-near",
    ),
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize(("rates", "near", "refused"), MULTI)
async def test_lines_of_a_rule_of_two_rates(
    make_store: StoreFactory, rates: list[str], near: str, refused: str, value: str
) -> None:
    """`b` (a quota of 4) leaves 3, 2, 1: less than half first at the third request;
    `a` stays far. The fifth request is refused by `b`."""
    settings = {"limits": {"*": rates}, "response_headers": value}
    seen = await _spend(make_store(), settings, 5)
    assert [s.status for s in seen] == [200, 200, 200, 200, 429]
    assert [has_lines(s) for s in seen] == {
        "always": [True] * 5,
        "near_limit": [False, False, True, True, True],
        "refused": [False] * 4 + [True],
    }[value]
    if value != "refused":
        assert seen[2].headers["ratelimit"] == near
    assert seen[4].headers["ratelimit"] == refused
    assert seen[4].headers["retry-after"] == "900"


@pytest.mark.parametrize("value", VALUES)
async def test_lines_on_a_login_route(make_store: StoreFactory, value: str) -> None:
    """A login route's rate, with the login step after it (the app answers 200 to the
    right password): the lines as on any route, and the rate's 429 carries them."""
    settings = {
        "limits": {"POST /login": ["4/hour; name=login"]},
        "login_routes": ["POST /login"],
        "response_headers": value,
    }
    login = Request("/login", method="POST", headers=(LOGIN,), body=RIGHT)
    seen = await _spend(make_store(), settings, 5, login)
    assert [s.status for s in seen] == [200, 200, 200, 200, 429]
    assert [has_lines(s) for s in seen] == {
        "always": [True] * 5,
        "near_limit": [False, False, True, True, True],
        "refused": [False] * 4 + [True],
    }[value]
    assert seen[4].headers["ratelimit"] == '"login";r=0;t=3600'


def _flow() -> Flow:
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [],
        "query_string": b"",
        "client": ("192.0.2.1", 1),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    return Flow(scope, receive, send)


@pytest.mark.parametrize(
    ("limits", "store"),
    [
        pytest.param({"*": ["10/hour"]}, MemoryStore, id="ratelimit-lines-no-hook-only-path"),
        pytest.param({"GET /": ["10/hour"]}, MemoryStore, id="ratelimit-lines-no-hook-sync"),
        pytest.param(
            {"*": ["100/hour", "10/hour"]}, MemoryStore, id="ratelimit-lines-no-hook-two-rates"
        ),
        pytest.param({"*": ["10/hour"]}, OverriddenStore, id="ratelimit-lines-no-hook-awaited"),
    ],
)
async def test_a_response_without_lines_registers_no_hook(
    limits: dict[str, list[str]], store: type[MemoryStore]
) -> None:
    """Far from the limit under `near_limit`, no header hook at all (not an empty
    one), the first time and when `_only_last` is reused; near it, the one hook that
    extends the response with the two lines."""
    clock = FakeClock()
    layer = RateLimitMiddleware(app, RateLimitSettings(limits=limits), store=store(clock=clock))
    # Full buckets (the result the memory store shares, reused by `_only_last`), then
    # r = 8 down to 5 of 10: far.
    for advance in [3600.0, 3600.0, 3600.0, 0.0, 0.0, 0.0, 0.0]:
        clock.advance(advance)
        flow = _flow()
        pending = layer.enter(flow)
        assert pending is None or await pending is False
        assert flow.hooks == []
        assert flow.scope["bastion"].rate_limit.results  # the state as ever
    flow = _flow()
    pending = layer.enter(flow)
    assert pending is None or await pending is False
    state = flow.scope["bastion"].rate_limit
    lines = (
        (b"ratelimit-policy", policy_value(state.rates)),
        (b"ratelimit", ratelimit_value(state.rates, state.results)),
    )
    assert flow.hooks == [(EXTEND, lines)]


@pytest.mark.parametrize("value", ["sometimes", "never", "", "Always"])
def test_an_unknown_value_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="'always', 'near_limit' or 'refused'"):
        RateLimitSettings(response_headers=value)
    with pytest.raises(ConfigurationError, match=r"ratelimit\.response_headers: Input should"):
        Settings(mode="development", ratelimit={"response_headers": value})


def test_the_default_is_near_limit() -> None:
    assert RateLimitSettings().response_headers == "near_limit"
    assert Settings(mode="development").ratelimit.response_headers == "near_limit"


@given(
    count=st.integers(1, MAX_COUNT),
    burst=st.integers(1, MAX_COUNT),
    remaining=st.integers(0, MAX_COUNT - 1),
)
def test_lines_below_is_the_half_burst_rule(count: int, burst: int, remaining: int) -> None:
    """`remaining < lines_below` holds exactly when the rule says."""
    rate = Rate(count, 60, burst=burst)
    assert (remaining < lines_below(rate, "near_limit")) is (2 * remaining < burst)
    assert remaining < lines_below(rate, "always")
    assert not remaining < lines_below(rate, "refused")


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        # A burst of 2 on a count of 10: 1 left, then 0, then refused.
        pytest.param(
            "10/hour; burst=2; name=q", [False, True, True], id="ratelimit-lines-small-burst"
        ),
        # A burst of 8 on a count of 2: 7, 6, 5, 4 left carry none, then 3.
        pytest.param(
            "2/hour; burst=8; name=q",
            [False, False, False, False, True],
            id="ratelimit-lines-large-burst",
        ),
    ],
)
async def test_near_is_half_the_burst(
    make_store: StoreFactory, rate: str, expected: list[bool]
) -> None:
    """A rate with a burst of its own: "near" is measured against the burst, the most
    a client can have left, not against the count."""
    settings = {"limits": {"*": [rate]}, "response_headers": "near_limit"}
    seen = await _spend(make_store(), settings, len(expected))
    assert [has_lines(s) for s in seen] == expected
