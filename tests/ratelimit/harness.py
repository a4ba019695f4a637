"""Builds the layer around the shared test app, plus two routes of its own:

* `POST /login` answers 200 for the password "right" and 401 otherwise;
* `GET /slow` waits until the test opens `Gate`, then answers 200 (or raises on
  `/slow?boom`), to hold a request in flight.

These two are raw ASGI in front of each framework's app (the same for all three),
so the rest of every request goes through raw ASGI, Starlette or FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from bastion.events import EventEmitter
from bastion.ratelimit import JailSink, RateLimitMiddleware, RateLimitSettings
from bastion.stores import Store
from bastion.transport import TransportMiddleware, TransportSettings
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.conftest import asgi_client

ATTACKER = ("198.51.100.66", 40000)
USER = ("203.0.113.5", 50000)


class Gate:
    """Holds `/slow` requests until `open` is set; counts those that entered."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = 0
        self._changed = asyncio.Condition()

    async def enter(self) -> None:
        async with self._changed:
            self.entered += 1
            self._changed.notify_all()

    async def wait_entered(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.entered >= count)


def with_test_routes(app: ASGIApp, gate: Gate) -> ASGIApp:
    async def routed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/login":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            ok = b"password=right" in body
            await send({"type": "http.response.start", "status": 200 if ok else 401})
            await send({"type": "http.response.body", "body": b"ok" if ok else b"no"})
            return
        if scope["type"] == "http" and scope["path"] == "/slow":
            await gate.enter()
            await gate.open.wait()
            if scope["query_string"] == b"boom":
                raise RuntimeError("boom")
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"slow"})
            return
        await app(scope, receive, send)

    return routed


def build(
    app: ASGIApp,
    store: Store,
    events: EventEmitter,
    *,
    transport: bool = False,
    jail_sink: bool = False,
    **settings: Any,
) -> tuple[ASGIApp, RateLimitMiddleware, Gate]:
    """The layer (and optionally transport outside it, and the JailSink)."""
    gate = Gate()
    layer = RateLimitMiddleware(
        with_test_routes(app, gate),
        RateLimitSettings.model_validate(settings),
        store=store,
        events=events,
    )
    outer: ASGIApp = layer
    if transport:
        outer = TransportMiddleware(
            layer,
            TransportSettings(allowed_hosts=("testserver",), insecure_allow_http=True),
            events=events,
        )
    if jail_sink:
        assert layer.jail is not None
        events.sinks = (*events.sinks, JailSink(layer.jail))
    return outer, layer, gate


def jail_sink_of(events: EventEmitter) -> JailSink:
    return next(sink for sink in events.sinks if isinstance(sink, JailSink))


async def request(
    app: ASGIApp,
    method: str,
    path: str,
    client: tuple[str, int] = USER,
    **kwargs: Any,
) -> httpx.Response:
    async with asgi_client(app, client=client) as http:
        return await http.request(method, path, **kwargs)


@contextlib.contextmanager
def django_asgi(urlconf: object) -> Iterator[ASGIApp]:
    """Django's own ASGI handler serving `urlconf` (an object with `urlpatterns`), with
    no middleware (no CSRF check: the views are reached as the layer lets them) and
    UTF-8 as its default charset, for the differential tests of the login guard."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DEBUG=False, SECRET_KEY="t" * 50)
        django.setup()
    from django.core.handlers.asgi import ASGIHandler
    from django.test import override_settings

    with override_settings(
        ROOT_URLCONF=urlconf,
        ALLOWED_HOSTS=["testserver"],
        MIDDLEWARE=[],
        DEFAULT_CHARSET="utf-8",
    ):
        yield ASGIHandler()
