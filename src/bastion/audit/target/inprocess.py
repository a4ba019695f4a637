"""The in-process target: an ASGI application driven in this process, lifespan included.

Threat: an auditor that tests something other than what a server would run (no
lifespan, an exception that escapes instead of a 500, a request body held whole in
memory), or one that runs an unknown app's import without bounds.
Defence: the app runs as a server would run it: lifespan startup before the first
request (a failed startup stops the audit with `TargetError`), shutdown after the
last; an exception in the app is a 500, as uvicorn answers it; a request body may
be an async stream, fed in `_CHUNK_BYTES` pieces; every exchange has a timeout.

Not covered: HTTP/2 specifics; anything a real socket adds (TLS, slow clients).

References: ASGI HTTP and WebSocket specs
https://asgi.readthedocs.io/en/latest/specs/www.html ; lifespan
https://asgi.readthedocs.io/en/latest/specs/lifespan.html
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import inspect
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterable
from typing import Any, Final
from urllib.parse import unquote

from bastion.audit.target.base import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_BODY_BYTES,
    USER_AGENT,
    WEBSOCKET_GRACE_SECONDS,
    Body,
    Headers,
    HTTPResponse,
    Scheme,
    Target,
    TargetError,
    WebSocketResult,
)
from bastion.hosts import DEFAULT_PORTS, parse_host_header
from bastion.types import ASGIApp, Message, Scope

# Chunk size when streaming a request body to an in-process app: what uvicorn reads.
_CHUNK_BYTES: Final = 64 * 1024
_CLIENT: Final = ("127.0.0.1", 51000)


def load_app(spec: str) -> ASGIApp:
    """Import `module:attribute` (dotted attribute allowed); call it if it is a factory.

    A factory is a function or class that can be called with no argument; an ASGI
    callable needs three, so the two cannot be confused. The working directory is
    appended to `sys.path` (as `uvicorn` does for `uvicorn app:app`), after the
    installed packages, so it never shadows them.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise TargetError(f"expected module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    # Importing the module and calling a factory run the user's code: whatever it
    # raises becomes a `TargetError` naming only the exception's type, since its
    # message may quote a secret (a database URL, a key read from the environment).
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TargetError(f"cannot import {module_name!r}: no module {exc.name!r}") from None
    except Exception as exc:
        raise TargetError(f"importing {module_name!r} raised {type(exc).__name__}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise TargetError(f"{module_name!r} has no attribute {attribute!r}") from None
    if (inspect.isfunction(found) or inspect.isclass(found)) and _takes_no_arguments(found):
        try:
            found = found()
        except Exception as exc:
            raise TargetError(f"the factory {spec!r} raised {type(exc).__name__}") from None
    if not callable(found):
        raise TargetError(f"{spec!r} is not an ASGI application")
    app: ASGIApp = found
    return app


def _takes_no_arguments(function: Any) -> bool:
    try:
        inspect.signature(function).bind()
    except (TypeError, ValueError):
        return False
    return True


async def _body_chunks(body: Body) -> AsyncIterator[bytes]:
    if isinstance(body, bytes):
        for start in range(0, len(body), _CHUNK_BYTES):
            yield body[start : start + _CHUNK_BYTES]
        return
    async for chunk in body:
        yield chunk


class _HTTPExchange:
    """One request driven through an ASGI app: feeds the body, collects the answer."""

    def __init__(self, body: Body) -> None:
        self.chunks = _body_chunks(body)
        self.body_done = False
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.complete = asyncio.Event()
        self.failure = ""
        """The name of the exception the app raised, if it raised."""

    async def receive(self) -> Message:
        if not self.body_done and not self.complete.is_set():
            try:
                chunk = await anext(self.chunks)
            except StopAsyncIteration:
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}
        # The whole request is delivered: the client now waits for the answer, and
        # leaves once it is complete.
        await self.complete.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start" and self.status is None:
            self.status = int(message["status"])
            self.headers = [
                (bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1"))
                for k, v in message.get("headers", [])
            ]
        elif kind == "http.response.body" and self.status is not None:
            room = MAX_BODY_BYTES - len(self.body)
            if room > 0:
                self.body += bytes(message.get("body", b""))[:room]
            if not message.get("more_body", False):
                self.complete.set()

    def response(self) -> HTTPResponse:
        if self.status is None:
            # What uvicorn answers when the app fails before responding.
            return HTTPResponse(
                500, (("content-type", "text/plain; charset=utf-8"),), b"Internal Server Error"
            )
        return HTTPResponse(self.status, tuple(self.headers), bytes(self.body))


class _WebSocketExchange:
    """One handshake driven through an ASGI app's `websocket` scope."""

    def __init__(self) -> None:
        self.connected = False
        self.decided = asyncio.Event()
        self.result = WebSocketResult(accepted=False, status=500)
        self._response_status: int | None = None

    async def receive(self) -> Message:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        await self.decided.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, message: Message) -> None:
        if self.decided.is_set():
            return
        kind = message["type"]
        if kind == "websocket.accept":
            self._decide(WebSocketResult(accepted=True))
        elif kind == "websocket.close":
            code = int(message.get("code", 1000))
            self._decide(WebSocketResult(accepted=False, status=403, close_code=code))
        elif kind == "websocket.http.response.start":
            self._response_status = int(message["status"])
        elif kind == "websocket.http.response.body" and not message.get("more_body", False):
            self._decide(WebSocketResult(accepted=False, status=self._response_status or 500))

    def _decide(self, result: WebSocketResult) -> None:
        self.result = result
        self.decided.set()


def _scope_headers(
    host: str, headers: Headers, extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[bytes, bytes]]:
    names = {name.lower() for name, _ in headers}
    base = [("host", host)] if "host" not in names else []
    if "user-agent" not in names:
        base.append(("user-agent", USER_AGENT))
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in [*base, *headers, *extra]
    ]


def _server_of(host: str, scheme: str) -> tuple[str, int]:
    parsed = parse_host_header(host)
    if parsed is None:
        return ("127.0.0.1", DEFAULT_PORTS[scheme])
    return (parsed.host.strip("[]"), parsed.port or DEFAULT_PORTS[scheme])


class InProcessTarget(Target):
    """An ASGI application driven in this process, lifespan included.

    Requests are plain ASGI scopes built here (no network), so any method, any
    `Host` and either scheme can be sent; `scheme` defaults to `https`, as the app
    would see it behind a TLS-terminating server.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        label: str = "in-process app",
        host: str = "testserver",
        scheme: Scheme = "https",
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.label = label
        self.host = host
        self.scheme: Scheme = scheme
        self.timeout_seconds = timeout_seconds
        self._state: dict[str, Any] = {}
        self._lifespan: _Lifespan | None = None

    @classmethod
    def from_spec(cls, spec: str, *, host: str | None = None) -> InProcessTarget:
        """Import `module:attribute`; the host defaults to one the app allows."""
        app = load_app(spec)
        return cls(app, label=spec, host=host or default_host(app))

    def supports(self, scheme: Scheme) -> bool:
        return True

    async def _open(self) -> None:
        self._lifespan = _Lifespan(self.app, self._state, self.timeout_seconds)
        await self._lifespan.startup()

    async def _close(self) -> None:
        if self._lifespan is not None:
            lifespan, self._lifespan = self._lifespan, None
            await lifespan.shutdown()

    def _base_scope(
        self, kind: str, path: str, scheme: str, headers: list[tuple[bytes, bytes]]
    ) -> Scope:
        raw_path, _, query = path.partition("?")
        return {
            "type": kind,
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": scheme,
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1", "replace"),
            "query_string": query.encode("latin-1", "replace"),
            "root_path": "",
            "headers": headers,
            "client": _CLIENT,
            "server": _server_of(self.host, scheme),
            "state": dict(self._state),
        }

    async def _request(
        self, method: str, path: str, headers: Headers, body: Body, scheme: Scheme
    ) -> HTTPResponse:
        extra: list[tuple[str, str]] = []
        if isinstance(body, bytes) and body and "content-length" not in {n for n, _ in headers}:
            extra.append(("content-length", str(len(body))))
        scope = self._base_scope("http", path, scheme, _scope_headers(self.host, headers, extra))
        scope["method"] = method.upper()
        exchange = _HTTPExchange(body)
        try:
            await asyncio.wait_for(
                self.app(scope, exchange.receive, exchange.send), self.timeout_seconds
            )
        except TimeoutError:
            if not exchange.complete.is_set():
                raise TargetError(
                    f"{method} {path}: no answer in {self.timeout_seconds} s"
                ) from None
        except Exception as exc:
            # The app's failure is the observation, not the auditor's: a server
            # answers 500 (or cuts the stream), and what was sent is kept.
            exchange.failure = type(exc).__name__
        return exchange.response()

    async def _websocket(self, path: str, headers: Headers, scheme: Scheme) -> WebSocketResult:
        ws_scheme = "wss" if scheme == "https" else "ws"
        handshake = [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", base64.b64encode(secrets.token_bytes(16)).decode()),
        ]
        scope = self._base_scope(
            "websocket", path, ws_scheme, _scope_headers(self.host, headers, handshake)
        )
        protocols = [value for name, value in headers if name.lower() == "sec-websocket-protocol"]
        scope["subprotocols"] = [p.strip() for line in protocols for p in line.split(",")]
        scope["extensions"] = {"websocket.http.response": {}}
        exchange = _WebSocketExchange()
        task = asyncio.ensure_future(self.app(scope, exchange.receive, exchange.send))
        decided = asyncio.ensure_future(exchange.decided.wait())
        try:
            await asyncio.wait(
                {task, decided}, timeout=self.timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if not exchange.decided.is_set() and not task.done():
                raise TargetError(f"WS {path}: no handshake answer in {self.timeout_seconds} s")
            if not task.done():
                await asyncio.wait({task}, timeout=WEBSOCKET_GRACE_SECONDS)
        finally:
            for pending in (task, decided):
                await _cancel(pending)
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: an app failure is the observation
        return exchange.result


class _Lifespan:
    """The lifespan protocol, as a server runs it around the requests."""

    def __init__(self, app: ASGIApp, state: dict[str, Any], timeout_seconds: float) -> None:
        self.app = app
        self.state = state
        self.timeout_seconds = timeout_seconds
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Future[None] | None = None
        self.supported = True

    async def _receive(self) -> Message:
        return await self.inbox.get()

    async def _send(self, message: Message) -> None:
        await self.outbox.put(message)

    async def _next(self) -> Message | None:
        """The app's next lifespan message, or None if the app returned instead."""
        assert self.task is not None
        getter = asyncio.ensure_future(self.outbox.get())
        waiting: set[asyncio.Future[Any]] = {getter, self.task}
        done, _ = await asyncio.wait(
            waiting, timeout=self.timeout_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            return getter.result()
        getter.cancel()
        if not done:
            raise TargetError(f"lifespan: no answer in {self.timeout_seconds} s")
        return None

    async def startup(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self.task = asyncio.ensure_future(self.app(scope, self._receive, self._send))
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self._next()
        if message is None:
            # The spec: an app that raises or returns on `lifespan` does not support it.
            self.supported = False
            if not self.task.cancelled():
                self.task.exception()  # retrieved, so asyncio does not warn
            return
        if message["type"] != "lifespan.startup.complete":
            raise TargetError(f"the application failed to start: {message.get('message', '')}")

    async def shutdown(self) -> None:
        if self.task is None or not self.supported or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        try:
            await self._next()
        finally:
            await _cancel(self.task)


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel `task` if it still runs and wait for it to end; what it raises is dropped."""
    if not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def unwrap(app: object) -> list[object]:
    """`app` and every application it wraps (`.app` of Shield and middlewares).

    Starlette and FastAPI keep their user middleware in `user_middleware` and build
    the stack lazily, so the router is reached through the app itself, not `.app`.
    """
    chain: list[object] = []
    current: object | None = app
    # Bounded: a wrapper chain longer than this is a cycle, not a stack.
    for _ in range(32):
        if current is None or any(current is seen for seen in chain):
            break
        chain.append(current)
        current = getattr(current, "app", None)
    return chain


def default_host(app: object) -> str:
    """A host the app serves: the first exact `allowed_hosts` entry of a Shield in it.

    A hardened app refuses hosts it does not serve, so auditing it as `testserver`
    would only test the refusal. Starlette's `add_middleware(Shield, ...)` keeps the
    settings in `user_middleware`, which is searched too.
    """
    for layer in unwrap(app):
        candidates: list[object] = [layer]
        for middleware in getattr(layer, "user_middleware", []) or []:
            candidates.append(getattr(middleware, "kwargs", {}).get("settings"))
        for candidate in candidates:
            settings = getattr(candidate, "settings", candidate)
            transport = getattr(settings, "transport", None)
            for host in getattr(transport, "allowed_hosts", ()) or ():
                if isinstance(host, str) and "*" not in host:
                    return host
    return "testserver"
