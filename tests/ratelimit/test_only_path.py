"""The layer's shortest path (`RateLimitMiddleware._only`) against its general paths.

When the limits are one catch-all rule of one rate counted by client, over a memory
store stepped synchronously, `enter` steps the digests of the client's ban and
bucket keys remembered in its client memo (`MemoryStore.gcra_unless_digest_now`),
with no key joined or digested per request. The same requests, on the same fake
clock, go through that path, through the general synchronous path (the same layer
with `_only` cleared) and through the awaited path (a store whose `gcra` is
overridden), and must agree request by request: statuses, headers, the state the
app reads, the events, and (between the two synchronous paths) the store's entries
in recency order. Many clients, bans that start and expire, a store bound that
evicts buckets, a client memo churned past its bound, a closed store.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from bastion.events import EventEmitter
from bastion.exceptions import StoreError
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings
from bastion.ratelimit.middleware import CLIENT_MEMO_ENTRIES
from bastion.ratelimit.reasons import REASON_BANNED, REASON_RATE_LIMITED
from bastion.stores import MemoryStore, Store
from tests.conftest import RecordingSink
from tests.ratelimit.harness import ATTACKER, USER
from tests.ratelimit.test_sync_path import (
    RESPONSE_HEADERS,
    OverriddenStore,
    Request,
    Seen,
    app,
    call,
    has_lines,
    should_have_lines,
)
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio

_HOSTS = [f"198.51.100.{i}" for i in range(6)] + [f"2001:db8:{i}::1" for i in range(4)]


@pytest.mark.parametrize(
    ("settings", "taken"),
    [
        pytest.param({"limits": {"*": ["3/minute"]}}, True, id="ratelimit-only-catch-all"),
        pytest.param(
            {"limits": {"*": ["3/minute"]}, "ban_enabled": False},
            True,
            id="ratelimit-only-no-bans",
        ),
        pytest.param(
            {"limits": {"*": ["3/minute", "10/hour"]}}, False, id="ratelimit-only-two-rates"
        ),
        pytest.param({"limits": {"*": ["3/minute; key=route"]}}, False, id="ratelimit-only-route"),
        pytest.param({"limits": {"/": ["3/minute"]}}, False, id="ratelimit-only-one-route"),
        pytest.param({"limits": {"GET *": ["3/minute"]}}, False, id="ratelimit-only-one-method"),
    ],
)
async def test_the_short_path_is_taken_only_where_it_applies(
    settings: dict[str, Any], taken: bool
) -> None:
    store = MemoryStore(clock=FakeClock())
    layer = RateLimitMiddleware(app, RateLimitSettings.model_validate(settings), store=store)
    assert (layer._only is not None) is taken
    awaited = RateLimitMiddleware(
        app, RateLimitSettings.model_validate(settings), store=OverriddenStore()
    )
    assert awaited._only is None  # never over a store that is awaited


def _requests(seed: int, count: int) -> list[Request]:
    """A mix of clients, pauses, bans and WebSockets, the same for every path."""
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        host = rng.choice(_HOSTS)
        advance = rng.choice([0.0, 0.0, 0.0, 0.5, 1.0, 5.0, 21.0, 61.0])
        then = None
        if rng.random() < 0.05:
            banned, seconds = rng.choice(_HOSTS), rng.choice([1.0, 10.0, 90.0])

            async def then(
                layer: RateLimitMiddleware, store: Store, h: str = banned, s: float = seconds
            ) -> None:
                assert layer.jail is not None
                await layer.jail.ban(h, s)

        websocket = rng.random() < 0.05
        requests.append(Request(client=(host, 1), advance=advance, then=then, websocket=websocket))
    return requests


async def _close(layer: RateLimitMiddleware, store: Store) -> None:
    await store.close()


async def _run(
    make: Any, settings: dict[str, Any], requests: list[Request], *, general: bool = False
) -> tuple[list[Seen], list[tuple[object, object]], MemoryStore]:
    clock = FakeClock()
    store = make(clock)
    sink = RecordingSink()
    layer = RateLimitMiddleware(
        app,
        RateLimitSettings.model_validate(settings),
        store=store,
        events=EventEmitter([sink]),
        clock=clock,
    )
    if general:
        layer._only = None  # the general synchronous path, for comparison
    seen = []
    for request in requests:
        clock.advance(request.advance)
        if request.then is not None:
            await request.then(layer, store)
        seen.append(await call(layer, request))
    return seen, [(r["reason"], r.get("client")) for r in sink.records], store


def _stores(bound: int) -> tuple[Any, Any]:
    return (
        lambda clock: MemoryStore(max_entries=bound, clock=clock),
        lambda clock: OverriddenStore(max_entries=bound, clock=clock),
    )


@pytest.mark.parametrize(
    ("settings", "bound", "seed"),
    [
        pytest.param({"limits": {"*": ["3/minute"]}}, 100_000, 1, id="only-parity-clients"),
        pytest.param({"limits": {"*": ["3/minute"]}}, 8, 2, id="only-parity-eviction-at-the-bound"),
        pytest.param(
            {"limits": {"*": ["10/minute; burst=2"]}}, 5, 3, id="only-parity-short-rate-evicting"
        ),
        pytest.param(
            {"limits": {"*": ["3/minute"]}, "monitor_only": True}, 8, 4, id="only-parity-monitor"
        ),
    ],
)
@pytest.mark.parametrize("response_headers", RESPONSE_HEADERS)
async def test_the_short_path_decides_as_the_general_paths(
    settings: dict[str, Any], bound: int, seed: int, response_headers: str
) -> None:
    settings = {**settings, "response_headers": response_headers}
    requests = _requests(seed, 400)
    requests.append(Request(client=(_HOSTS[0], 1), then=_close))  # the store goes down
    requests.append(Request(client=(_HOSTS[1], 1)))
    memory, overridden = _stores(bound)
    short, short_events, short_store = await _run(memory, settings, requests)
    general, general_events, general_store = await _run(memory, settings, requests, general=True)
    awaited, awaited_events, _ = await _run(overridden, settings, requests)
    statuses = [s.status for s in short]
    # Agreement on something: every kind of answer is there.
    assert 200 in statuses
    assert "websocket.accept" in statuses
    if not settings.get("monitor_only"):
        assert 429 in statuses
        assert 403 in statuses
        reasons = {reason for reason, _ in short_events}
        assert {REASON_BANNED, REASON_RATE_LIMITED} <= reasons
    assert short == general == awaited
    assert short_events == general_events == awaited_events
    assert list(short_store._data.items()) == list(general_store._data.items())
    assert [has_lines(s) for s in short] == [should_have_lines(s, response_headers) for s in short]


@pytest.mark.parametrize("fail_open", [True, False], ids=["open", "closed"])
async def test_a_closed_store_fails_as_on_the_general_paths(fail_open: bool) -> None:
    settings = {"limits": {"*": ["3/minute"]}, "fail_open": fail_open}
    requests = [
        Request(),
        Request(client=USER),
        Request(then=_close),
        Request(client=USER),
        Request(client=("192.0.2.9", 1)),  # a client never seen: keyed after the outage
    ]
    memory, overridden = _stores(100_000)
    short, short_events, _ = await _run(memory, settings, requests)
    general, general_events, _ = await _run(memory, settings, requests, general=True)
    awaited, awaited_events, _ = await _run(overridden, settings, requests)
    assert [s.status for s in short] == [200, 200] + ([200] * 3 if fail_open else [503] * 3)
    assert all(s.state is not None and s.state.store_unavailable for s in short[2:])
    assert short == general == awaited
    assert short_events == general_events == awaited_events


@pytest.mark.parametrize("case", ["ratelimit-only-memo-bounded-spray"])
async def test_a_spray_churns_the_memo_and_the_digests_stay_right(case: str) -> None:
    """Twice as many addresses as the client memo holds, then the user again, then
    a ban of the user: the digests remembered after the churn still count the user's
    bucket and see its ban."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    layer = RateLimitMiddleware(app, RateLimitSettings(limits={"*": ["3/minute"]}), store=store)
    assert layer._only is not None
    assert (await call(layer, Request(client=USER))).status == 200
    for i in range(2 * CLIENT_MEMO_ENTRIES):
        attacker = (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 1)
        assert (await call(layer, Request(client=attacker))).status == 200
        assert len(layer._clients) <= CLIENT_MEMO_ENTRIES
    statuses = [(await call(layer, Request(client=USER))).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert layer.jail is not None
    await layer.jail.ban(ATTACKER[0], 60.0)
    assert (await call(layer, Request())).status == 403
    clock.advance(61)  # the ban is over
    assert (await call(layer, Request())).status == 200


class _ReadOnly(MemoryStore):
    """A store under maintenance: its synchronous steps fail (a fault injected there)."""

    def gcra_unless_now(self, guard_key: str, key: str, limit: Any) -> Any:
        raise StoreError("maintenance")

    def gcra_now(self, key: str, limit: Any) -> Any:
        raise StoreError("maintenance")


class _CountingStep(MemoryStore):
    """A store that counts its inlined step (`_gcra`), and otherwise steps as usual."""

    steps = 0

    def _gcra(self, digest: Any, limit: Any, now: float) -> Any:
        type(self).steps += 1
        return super()._gcra(digest, limit, now)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_ReadOnly, id="ratelimit-only-overridden-sync-steps"),
        pytest.param(_CountingStep, id="ratelimit-only-overridden-inlined-step"),
    ],
)
def test_a_store_that_overrides_a_synchronous_step_is_stepped_through_it(make: Any) -> None:
    store = make(clock=FakeClock())
    assert store.steps_synchronously
    assert not store.steps_by_digest
    layer = RateLimitMiddleware(
        app, RateLimitSettings.model_validate({"limits": {"*": ["3/minute"]}}), store=store
    )
    assert layer._only is None  # the general synchronous path, which calls the overrides
    instance = MemoryStore(clock=FakeClock())
    instance.gcra_now = lambda key, limit: MemoryStore.gcra_now(instance, key, limit)  # type: ignore[method-assign]
    assert not instance.steps_by_digest
    assert MemoryStore().steps_by_digest


@pytest.mark.parametrize("fail_open", [True, False], ids=["open", "closed"])
async def test_a_fault_injected_in_the_synchronous_step_is_honoured(fail_open: bool) -> None:
    settings = {"limits": {"*": ["3/minute"]}, "fail_open": fail_open}
    seen, _, _ = await _run(lambda clock: _ReadOnly(clock=clock), settings, [Request(), Request()])
    assert [s.status for s in seen] == ([200, 200] if fail_open else [503, 503])
    assert all(s.state is not None and s.state.store_unavailable for s in seen)
