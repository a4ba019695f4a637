from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx
import pytest

from bastion.events import EventEmitter
from bastion.types import ASGIApp
from tests.support.apps import FRAMEWORKS, make_app


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingSink:
    """Keeps every redacted record an emitter produces (a real sink, in memory)."""

    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    def handle(self, record: Mapping[str, object]) -> None:
        self.records.append(dict(record))

    def reasons(self) -> list[str]:
        return [str(r["reason"]) for r in self.records]


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def events(sink: RecordingSink) -> EventEmitter:
    return EventEmitter([sink])


@pytest.fixture(params=FRAMEWORKS)
def framework_app(request: pytest.FixtureRequest) -> ASGIApp:
    """The test application as a raw ASGI callable, a Starlette app and a FastAPI app."""
    return make_app(str(request.param))


ClientFactory = Callable[..., httpx.AsyncClient]


def asgi_client(
    app: ASGIApp,
    base_url: str = "http://testserver",
    client: tuple[str, int] = ("127.0.0.1", 5000),
) -> httpx.AsyncClient:
    """An in-process httpx client for an ASGI app, seen as coming from `client`."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=client), base_url=base_url
    )
