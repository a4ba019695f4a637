"""Faults and bounds: a real Redis stopped mid-run and restarted on the same port
(fail open and fail closed, with events, recovering without an app restart), and a
million distinct clients through the bounded memory store."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from bastion.events import EventEmitter
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings, client_key
from bastion.ratelimit.reasons import REASON_STORE_UNAVAILABLE
from bastion.stores import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.types import Message
from tests.conftest import RecordingSink
from tests.ratelimit.harness import request
from tests.support.apps import raw_app
from tests.support.clock import FakeClock
from tests.support.redis import redis_server

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
async def test_redis_stopped_and_restarted(
    fail_open: bool, tmp_path: Path, events: EventEmitter, sink: RecordingSink
) -> None:
    with redis_server(tmp_path / "redis") as server:
        store = RedisStore(
            server.url,
            key_prefix=f"t{uuid.uuid4().hex[:10]}:",
            connect_timeout_seconds=0.2,
            timeout_seconds=0.2,
        )
        clock = FakeClock()
        app = RateLimitMiddleware(
            raw_app,
            RateLimitSettings(limits={"*": ["2/hour"]}, fail_open=fail_open),
            store=store,
            events=events,
            clock=clock,
        )
        try:
            assert [(await request(app, "GET", "/")).status_code for _ in range(3)] == [
                200,
                200,
                429,
            ]
            server.stop()
            during = []
            for _ in range(3):
                during.append((await request(app, "GET", "/")).status_code)
                clock.advance(1)
            assert during == ([200] * 3 if fail_open else [503] * 3)
            outage = [r for r in sink.records if r["reason"] == REASON_STORE_UNAVAILABLE]
            assert len(outage) == 3
            server.start()  # same port, empty (no persistence): the bucket is fresh
            assert [(await request(app, "GET", "/")).status_code for _ in range(3)] == [
                200,
                200,
                429,
            ]
        finally:
            await store.close()


async def test_a_million_clients_stay_within_the_memory_bound() -> None:
    """A million distinct client networks, each through the layer's per-request work
    (bucket key, then the atomic GCRA step), leave the store at its bound."""
    bound = 10_000
    store = MemoryStore(max_entries=bound, clock=FakeClock())
    started = time.perf_counter()
    for i in range(1_000_000):
        key = "rl:k:" + client_key(f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1")
        result = await store.gcra(key, emission_interval_seconds=6.0, burst_tolerance_seconds=54.0)
        assert result.allowed
    assert len(store) <= bound
    assert time.perf_counter() - started < 30


async def test_many_clients_through_the_middleware_stay_within_the_bound() -> None:
    bound = 1_000
    store = MemoryStore(max_entries=bound, clock=FakeClock())
    app = RateLimitMiddleware(
        raw_app,
        RateLimitSettings(limits={"*": ["10/minute"]}),
        store=store,
        events=EventEmitter(()),
    )
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))

    for i in range(20_000):
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [],
            "query_string": b"",
            "client": (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 1),
        }
        await app(scope, receive, send)
    assert len(store) <= bound
    assert statuses == [200] * 20_000
