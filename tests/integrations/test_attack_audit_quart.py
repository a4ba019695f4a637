"""Attacks on the Quart integration: a guard that never runs because of decorator order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from quart import Quart

from bastion.integrations.quart import requires_bastion_quart, use_bastion_sessions
from bastion.shield import Shield
from bastion.types import ASGIApp, Message, Scope
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio


async def _start(app: ASGIApp) -> Message:
    """Run the ASGI lifespan start-up, as a server does, and return its answer."""
    to_app, app_reads = anyio.create_memory_object_stream[Message](2)
    app_writes, from_app = anyio.create_memory_object_stream[Message](2)
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def serve() -> None:
        await app(scope, app_reads.receive, app_writes.send)

    async with to_app, app_reads, app_writes, from_app, anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        await to_app.send({"type": "lifespan.startup"})
        answer = await from_app.receive()
        await to_app.send({"type": "lifespan.shutdown"})
        if answer["type"] == "lifespan.startup.complete":
            await from_app.receive()
        tasks.cancel_scope.cancel()
    return answer


async def _admin() -> dict[str, object]:
    return {"admin": True}


def _route_then_guard(app: Quart) -> None:
    # The mistake: the decorator above the route wraps a view already registered.
    requires_bastion_quart(roles=["admin"])(app.get("/admin")(_copy(_admin)))


def _guard_then_route(app: Quart) -> None:
    app.get("/admin")(requires_bastion_quart(roles=["admin"])(_copy(_admin)))


def _copy(view: Callable[[], Awaitable[dict[str, object]]]) -> Callable[[], Any]:
    async def admin() -> dict[str, object]:
        return await view()

    return admin


def _shielded(register: Callable[[Quart], None]) -> ASGIApp:
    app = Quart(__name__)
    register(app)
    return Shield(use_bastion_sessions(app), mode="development")


async def test_a_guard_written_above_the_route_stops_start_up() -> None:
    app = _shielded(_route_then_guard)
    answer = await _start(app)
    assert answer["type"] == "lifespan.startup.failed", "quart-guard-above-route"
    assert "'admin'" in answer.get("message", "")
    assert "requires_bastion_quart" in answer.get("message", "")


async def test_a_guard_written_below_the_route_starts_and_refuses() -> None:
    app = _shielded(_guard_then_route)
    assert (await _start(app))["type"] == "lifespan.startup.complete"
    async with asgi_client(app, base_url="http://localhost") as client:
        assert (await client.get("/admin")).status_code == 401


async def test_the_same_view_guarded_on_one_route_and_public_on_another_starts() -> None:
    def register(app: Quart) -> None:
        view = _copy(_admin)
        app.get("/admin")(requires_bastion_quart(roles=["admin"])(view))
        app.add_url_rule("/preview", "preview", view)

    assert (await _start(_shielded(register)))["type"] == "lifespan.startup.complete"
