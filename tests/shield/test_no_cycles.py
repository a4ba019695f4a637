"""A request through the fused stack leaves no reference cycle behind.

The stages hang closures and wrappers on the flow that refer back to it (the
session's save hook, the limits layer's `receive`); `run_stages` unhooks them as the
request ends. Without that, every request's objects (scope, context, session, flow)
waited in cycles for the garbage collector: a gen-0 collection every few dozen
requests, and each one's memory held until then. Each case runs with the collector
off, then one collection saves whatever only it could free (`gc.DEBUG_SAVEALL`):
none of Bastion's per-request objects may be among it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bastion.context import RequestContext
from bastion.sessions import Session
from bastion.stages import Flow
from tests.shield.test_fused import CASES, scenario

pytestmark = pytest.mark.anyio

PER_REQUEST_TYPES = (Flow, RequestContext, Session)


@pytest.fixture
def collector_off() -> Iterator[None]:
    """No collection during the test but the one it runs itself."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def cyclic_request_objects() -> list[str]:
    """Run one collection keeping what it frees; the per-request objects among it."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [type(o).__name__ for o in gc.garbage if isinstance(o, PER_REQUEST_TYPES)]
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    return found


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    CASES,
)
async def test_a_request_leaves_no_cycle(
    collector_off: None, method: str, path: str, headers: object, body: bytes
) -> None:
    exchanges, _ = await scenario(True, method, path, headers, body)
    assert exchanges  # the scenario ran, its requests answered
    del exchanges
    assert cyclic_request_objects() == []
