"""A ban predicate that raises (not `StoreError`) during a live check: the same
failure refuses the handshake, so it must close the live socket too, not end the
watcher and with it every later check of that socket."""

from __future__ import annotations

import logging

import pytest

from bastion.events import KIND_SYS_CRASH, EventEmitter
from bastion.websocket import reasons as r
from tests.conftest import RecordingSink
from tests.websocket.test_middleware import (
    FAST,
    OK,
    FakeSession,
    connected,
    guard,
    only,
    wait_until,
    ws_scope,
)

pytestmark = pytest.mark.anyio


class FailingLater:
    """Not banned at the handshake; then the predicate breaks (or, `healthy`, never)."""

    def __init__(self, *, healthy: bool = False) -> None:
        self.calls = 0
        self.healthy = healthy

    async def __call__(self, client: str | None, principal: str | None) -> bool:
        self.calls += 1
        if self.calls > 1 and not self.healthy:
            raise RuntimeError("ban list unreadable: password=hunter2")
        return False


async def test_ws_ban_check_raising_closes_the_live_socket(
    sink: RecordingSink, events: EventEmitter, caplog: pytest.LogCaptureFixture
) -> None:
    check = FailingLater()
    app = guard(events, ban_checks=[check], **FAST)
    with caplog.at_level(logging.ERROR, logger="bastion.errors"):
        async with connected(app, ws_scope(session=FakeSession("bob"))) as client:
            assert await client.next() == {"type": "websocket.close", "code": 1011}
            await client.say(OK)  # after the close: never reaches the app
            await client.finish()
        assert client.outbox.empty()
    record = only(sink, r.REASON_CHECK_FAILED)
    assert (record["kind"], record["details"]) == (KIND_SYS_CRASH, {"close_code": 1011})
    (logged,) = [rec.getMessage() for rec in caplog.records]
    assert "RuntimeError" in logged
    assert "hunter2" not in logged


async def test_ws_ban_check_healthy_keeps_the_socket(
    sink: RecordingSink, events: EventEmitter
) -> None:
    check = FailingLater(healthy=True)
    app = guard(events, ban_checks=[check], **FAST)
    async with connected(app, ws_scope(session=FakeSession("bob"))) as client:
        await wait_until(lambda: check.calls >= 3)  # the watcher keeps checking
        await client.say(OK)
        assert (await client.next())["text"] == OK
    assert not [rec for rec in sink.records if rec["reason"] == r.REASON_CHECK_FAILED]
