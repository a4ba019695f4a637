"""Attack audit of the per-client concurrency counter and of the layer's exits.

* `concurrency-counter-expired-in-flight`: the counter expires
  `concurrency_ttl_seconds` after it was made, even under a request that still
  holds its slot; that request's release then made a new counter at -1, a free slot
  for the next TTL, and every such request added one more.
* `exit-cancelled-leaks-in-flight`: a task cancelled while the release awaits the
  store (the server cancels the request's task as the client goes away just after
  its response) raised out of the exit, and the unwinding stopped there: the limits
  layer's process-wide in-flight count was never given back, so enough such
  requests left every later request refused 503 (`overloaded`) until a restart.
* `concurrency-clamp-race`: the release that took an expired counter below zero
  added back all of the deficit it saw (`incr(-left)`), a second round trip:
  releases interleaving there each added back the others' decrements too, and k
  of them left k(k-1)/2 requests counted in flight with none, refusing the
  client's next requests 429 until the counter's TTL ran out.

Each beside the legitimate traffic that must still pass: a memory store on a fake
clock and a real Redis server (real expiry) for the first and the third, `Shield`
over a real SQLite store for the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion.events import EventEmitter
from bastion.ratelimit import client_key
from bastion.ratelimit.keys import hash_part
from bastion.shield import Shield
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from tests.ratelimit.harness import ATTACKER, USER, build, request
from tests.support.apps import raw_app
from tests.support.clock import FakeClock
from tests.support.redis import RedisServer
from tests.support.stores import SwitchableStore

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("case", ["concurrency-counter-expired-in-flight"])
async def test_a_request_that_outlives_its_counter_frees_no_extra_slot(
    case: str,
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
    framework_app: ASGIApp,
) -> None:
    app, _, gate = build(framework_app, store, events, limits={}, concurrency={"/slow": 1})
    long = asyncio.create_task(request(app, "GET", "/slow", ATTACKER))
    await gate.wait_entered(1)
    clock.advance(301)  # past `concurrency_ttl_seconds`: the counter is gone
    gate.open.set()
    assert (await long).status_code == 200
    counter = f"cc:{hash_part('/slow')[:16]}:" + client_key(ATTACKER[0])
    assert await store.get(counter) in (None, b"0")
    # Legitimate: one request at a time still goes; a second at once is refused.
    gate.open.clear()
    first = asyncio.create_task(request(app, "GET", "/slow", ATTACKER))
    await gate.wait_entered(2)
    second = await request(app, "GET", "/slow", ATTACKER)
    assert second.status_code == 429
    other = asyncio.create_task(request(app, "GET", "/slow", USER))
    await gate.wait_entered(3)
    gate.open.set()
    assert (await first).status_code == 200
    assert (await other).status_code == 200


class CancelledWhileReleasing(SQLiteStore):
    """A real SQLite store, under a server that cancels the request's task (once, as
    the client goes away right after its response) while the concurrency release
    waits for the store: the moment the cancellation lands is the one under test.
    (redis-py 8 finishes a command it was cancelled in and drops the cancellation,
    so over Redis the release is never interrupted there.)"""

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None) -> int:
        if amount < 0:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        return await super().incr(key, amount, ttl_seconds=ttl_seconds)


@pytest.fixture
async def cancelled_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = CancelledWhileReleasing(tmp_path / "store.db")
    yield store
    await store.close()


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def _call(shield: Shield, path: str) -> list[Message]:
    """One request through `shield`, in a task of its own, as a server runs it."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ATTACKER,
        "server": ("testserver", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.create_task(shield(scope, receive, send))
    return sent


@pytest.mark.parametrize("case", ["exit-cancelled-leaks-in-flight"])
async def test_a_cancelled_release_still_gives_back_the_in_flight_slot(
    case: str, cancelled_store: SQLiteStore
) -> None:
    shield = Shield(
        _hello,
        mode="development",
        store=cancelled_store,
        limits={"max_concurrent_requests": 2},
        ratelimit={"limits": {}, "concurrency": {"/counted": 5}},
    )
    for _ in range(3):  # more than the process-wide cap, each cancelled in its release
        assert (await _call(shield, "/counted"))[0]["status"] == 200
    # Legitimate: the next request is served, not shed as overload.
    assert (await _call(shield, "/"))[0]["status"] == 200


@pytest.mark.parametrize("case", ["concurrency-counter-expired-in-flight-redis"])
async def test_a_request_that_outlives_its_counter_on_redis(
    case: str, redis_standalone: RedisServer, events: EventEmitter, framework_app: ASGIApp
) -> None:
    store = RedisStore(redis_standalone.url, key_prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        app, _, gate = build(
            framework_app,
            store,
            events,
            limits={},
            concurrency={"/slow": 1},
            concurrency_ttl_seconds=0.2,
        )
        long = asyncio.create_task(request(app, "GET", "/slow", ATTACKER))
        await gate.wait_entered(1)
        await asyncio.sleep(0.4)  # Redis expires the counter under the request
        gate.open.set()
        assert (await long).status_code == 200
        counter = f"cc:{hash_part('/slow')[:16]}:" + client_key(ATTACKER[0])
        assert await store.get(counter) in (None, b"0")
        # Legitimate: the next request goes.
        assert (await request(app, "GET", "/slow", ATTACKER)).status_code == 200
    finally:
        await store.close()


@pytest.mark.parametrize("case", ["concurrency-clamp-race"])
async def test_interleaved_releases_of_an_expired_counter_end_at_zero(
    case: str, redis_standalone: RedisServer, events: EventEmitter
) -> None:
    store = RedisStore(redis_standalone.url, key_prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        app, _, gate = build(
            raw_app, store, events, limits={}, concurrency={"/slow": 3}, concurrency_ttl_seconds=1
        )
        slow = [asyncio.create_task(request(app, "GET", "/slow", ATTACKER)) for _ in range(3)]
        await gate.wait_entered(3)
        await asyncio.sleep(1.3)  # Redis expires the counter under the three requests
        gate.open.set()  # their three releases now run at once
        assert [(await task).status_code for task in slow] == [200] * 3
        counter = f"cc:{hash_part('/slow')[:16]}:" + client_key(ATTACKER[0])
        assert await store.get(counter) in (None, b"0")
        # Legitimate: the client's three slots are all free again, and a fourth
        # request at once is refused.
        gate.open.clear()
        again = [asyncio.create_task(request(app, "GET", "/slow", ATTACKER)) for _ in range(3)]
        await gate.wait_entered(6)
        assert (await request(app, "GET", "/slow", ATTACKER)).status_code == 429
        gate.open.set()
        assert [(await task).status_code for task in again] == [200] * 3
        assert await store.get(counter) in (None, b"0")
    finally:
        await store.close()
