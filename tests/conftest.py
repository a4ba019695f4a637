from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import httpx
import pytest

from bastion.events import EventEmitter
from bastion.types import ASGIApp
from tests.support.apps import FRAMEWORKS, make_app
from tests.support.secret_watch import NEVER_LOGGED, RecordKeeper, find_leaks


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


_KEEPER = RecordKeeper()


def pytest_configure(config: pytest.Config) -> None:
    # Every record of the run, at every level, is kept and searched at the end.
    logging.getLogger().addHandler(_KEEPER)
    logging.getLogger("bastion").setLevel(logging.DEBUG)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logging.getLogger().removeHandler(_KEEPER)
    leaks = find_leaks(_KEEPER.texts, NEVER_LOGGED)
    if leaks:
        for secret, text in leaks:
            print(f"\nSECRET IN LOGS: {secret} in {text!r}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif session.config.option.verbose >= 0 and NEVER_LOGGED:
        print(
            f"\nsecret watch: {len(NEVER_LOGGED)} secrets, none in {len(_KEEPER.texts)} log records"
        )


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
