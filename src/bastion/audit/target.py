"""What the auditor talks to: an ASGI app in this process, or a live URL.

Threat: an auditor that is itself harmful (it follows a redirect to another host,
reads an endless body, hangs on a slow answer, or sends cookies where they do not
belong), or one that lies because its transport quietly changed the request
(followed redirects, a client cookie jar, a normalised `Host`).
Defence: one small `Target` interface that sends exactly the request the probe
built and reports exactly what came back.

* Redirects are never followed here; a probe that follows one asks again, and only
  on the target's own host (`Target.owns`).
* Every request has a timeout; a response body is read up to `MAX_BODY_BYTES` and
  the rest discarded; a request body may be an async stream (the oversized-body
  probe never holds it in memory).
* Cookies are never kept by the transport: the caller holds a `CookieJar` and puts
  its `Cookie` header on the requests it chooses.
* In-process, the app runs as a server would run it: lifespan startup before the
  first request (a failed startup stops the audit with `TargetError`), shutdown
  after the last; an exception in the app is a 500, as uvicorn answers it.

Not covered: HTTP/2 and HTTP/3 specifics, TLS configuration grading, and cookie
scoping by `Domain` and `Path` (an audit talks to one origin).

References: ASGI HTTP and WebSocket specs
https://asgi.readthedocs.io/en/latest/specs/www.html ; lifespan
https://asgi.readthedocs.io/en/latest/specs/lifespan.html ; RFC 6265 section 5.2
(`Set-Cookie` parsing) https://www.rfc-editor.org/rfc/rfc6265#section-5.2
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import inspect
import os
import secrets
import ssl
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, Self
from urllib.parse import unquote, urlsplit

from bastion.hosts import DEFAULT_PORTS, parse_host_header
from bastion.types import ASGIApp, Message, Scope

if TYPE_CHECKING:
    import httpx

Scheme = Literal["http", "https"]
Body = bytes | AsyncIterable[bytes]

# A page larger than 1 MiB is not needed to grade headers or spot a traceback;
# the MDN HTTP Observatory reads at most the same.
MAX_BODY_BYTES: Final = 1024 * 1024
# Long enough for a cold app on a laptop, short enough that a hung route does not
# hold the audit (each probe sends few requests).
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
# After a WebSocket handshake is decided, how long the app may take to notice the
# disconnect before it is cancelled (a feed that never reads is cancelled here).
WEBSOCKET_GRACE_SECONDS: Final = 1.0
# Chunk size when streaming a request body to an in-process app: what uvicorn reads.
_CHUNK_BYTES: Final = 64 * 1024
USER_AGENT: Final = "bastion-audit/0.1"
_CLIENT: Final = ("127.0.0.1", 51000)


class TargetError(Exception):
    """The target could not be reached or run (startup failed, timeout, refused)."""


# ---------------------------------------------------------------------------
# Plain data: responses, handshakes, cookies


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """One answer, as received: header names lower-case, repeats kept, body capped."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        """The value of `name`, its lines comma-joined, or None when absent."""
        values = self.header_all(name)
        return ", ".join(values) if values else None

    def header_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class WebSocketResult:
    """How a WebSocket handshake ended."""

    accepted: bool
    status: int | None = None
    """The HTTP status of a refused handshake, when one was sent."""
    close_code: int | None = None
    """The close code of an in-process app that closed before accepting."""

    def describe(self) -> str:
        if self.accepted:
            return "accepted"
        if self.close_code is not None:
            return f"closed before accepting (code {self.close_code})"
        return f"refused (HTTP {self.status})" if self.status else "refused"


@dataclass(frozen=True, slots=True)
class SetCookie:
    """One parsed `Set-Cookie` line. The value is never shown (`repr=False`)."""

    name: str
    value: str = field(repr=False)
    attributes: Mapping[str, str]
    """Attribute names lower-case; flags (`secure`, `httponly`) map to ""."""

    @property
    def secure(self) -> bool:
        return "secure" in self.attributes

    @property
    def http_only(self) -> bool:
        return "httponly" in self.attributes

    @property
    def same_site(self) -> str | None:
        value = self.attributes.get("samesite")
        return value.lower() if value is not None else None

    @property
    def is_deletion(self) -> bool:
        """Whether the line removes the cookie (`Max-Age=0` or less, or empty)."""
        max_age = self.attributes.get("max-age", "").strip()
        if max_age.lstrip("-").isdigit() and int(max_age) <= 0:
            return True
        return self.value == "" and "expires" in self.attributes

    def describe(self) -> str:
        """Name and attributes, without the value: safe for evidence."""
        flags = [
            f"{key}={value}" if value else key for key, value in sorted(self.attributes.items())
        ]
        return "; ".join([f"{self.name}=<redacted>", *flags])


def parse_set_cookie(line: str) -> SetCookie | None:
    """Parse one `Set-Cookie` value (RFC 6265 section 5.2); None when it has no name."""
    pair, *attribute_parts = line.split(";")
    name, separator, value = pair.partition("=")
    name = name.strip()
    if not separator or not name:
        return None
    attributes: dict[str, str] = {}
    for part in attribute_parts:
        key, _, attribute_value = part.partition("=")
        key = key.strip().lower()
        if key:
            attributes[key] = attribute_value.strip()
    return SetCookie(name, value.strip().strip('"'), attributes)


class CookieJar:
    """The cookies of one browsing session against one target (names and values).

    The auditor decides which requests carry them; values never leave this object
    except in the `Cookie` header sent to the target itself.
    """

    def __init__(self) -> None:
        self._cookies: dict[str, str] = {}

    def update(self, response: HTTPResponse) -> list[SetCookie]:
        """Apply the response's `Set-Cookie` lines; returns what they set."""
        parsed = [parse_set_cookie(line) for line in response.header_all("set-cookie")]
        cookies = [cookie for cookie in parsed if cookie is not None]
        for cookie in cookies:
            if cookie.is_deletion:
                self._cookies.pop(cookie.name, None)
            else:
                self._cookies[cookie.name] = cookie.value
        return cookies

    def header(self) -> tuple[tuple[str, str], ...]:
        """The `Cookie` header to send, or no header when the jar is empty."""
        if not self._cookies:
            return ()
        return (("cookie", "; ".join(f"{k}={v}" for k, v in self._cookies.items())),)

    def get(self, name: str) -> str | None:
        return self._cookies.get(name)

    def names(self) -> list[str]:
        return list(self._cookies)

    def copy(self) -> CookieJar:
        other = CookieJar()
        other._cookies = dict(self._cookies)
        return other

    def __len__(self) -> int:
        return len(self._cookies)

    def __repr__(self) -> str:
        return f"CookieJar(names={self.names()!r})"


# ---------------------------------------------------------------------------
# The interface


class Target(Protocol):
    """What every probe talks to. Paths are origin-relative (`/login?next=/`)."""

    label: str
    """What is audited, for the report: `module:attr` or the URL."""
    host: str
    """The authority sent as `Host` by default (`bank.example`, `127.0.0.1:8000`)."""
    scheme: Scheme
    """The scheme of the main page."""

    def supports(self, scheme: Scheme) -> bool:
        """Whether requests over `scheme` can be sent (a live URL may lack one)."""
        ...

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: Body = b"",
        scheme: Scheme | None = None,
    ) -> HTTPResponse:
        """Send one request; a `host` entry in `headers` replaces the default `Host`."""
        ...

    async def websocket(
        self,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        scheme: Scheme | None = None,
    ) -> WebSocketResult:
        """Open a WebSocket handshake and close it again at once."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


def url_of(target: Target, path: str, scheme: Scheme | None = None) -> str:
    """The URL of `path` on the target's own host."""
    return f"{scheme or target.scheme}://{target.host}{path}"


def owns(target: Target, location: str, base_url: str) -> tuple[Scheme, str] | None:
    """The (scheme, path) of a redirect `location` when it stays on the target's host.

    Relative locations resolve against `base_url`. Anything on another host, with
    another port of the same scheme, or with a scheme we cannot speak is None.
    """
    base = urlsplit(base_url)
    parsed = urlsplit(location)
    scheme = (parsed.scheme or base.scheme).lower()
    netloc = parsed.netloc if parsed.scheme or parsed.netloc else base.netloc
    if scheme not in ("http", "https"):
        return None
    mine = parse_host_header(target.host)
    theirs = parse_host_header(netloc)
    if mine is None or theirs is None or mine.host != theirs.host:
        return None
    if scheme == target.scheme and (mine.port or DEFAULT_PORTS[scheme]) != (
        theirs.port or DEFAULT_PORTS[scheme]
    ):
        return None
    path = parsed.path or "/"
    if not path.startswith("/"):
        path = base.path.rsplit("/", 1)[0] + "/" + path
    query = f"?{parsed.query}" if parsed.query else ""
    checked: Scheme = "https" if scheme == "https" else "http"
    return checked, path + query


# ---------------------------------------------------------------------------
# In-process ASGI target


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
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise TargetError(f"{module_name!r} has no attribute {attribute!r}") from None
    if (inspect.isfunction(found) or inspect.isclass(found)) and _takes_no_arguments(found):
        found = found()
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
    host: str, headers: Sequence[tuple[str, str]], extra: Iterable[tuple[str, str]] = ()
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


class InProcessTarget:
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

    async def __aenter__(self) -> Self:
        self._lifespan = _Lifespan(self.app, self._state, self.timeout_seconds)
        await self._lifespan.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
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

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: Body = b"",
        scheme: Scheme | None = None,
    ) -> HTTPResponse:
        extra: list[tuple[str, str]] = []
        if isinstance(body, bytes) and body and "content-length" not in {n for n, _ in headers}:
            extra.append(("content-length", str(len(body))))
        scope = self._base_scope(
            "http", path, scheme or self.scheme, _scope_headers(self.host, headers, extra)
        )
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

    async def websocket(
        self,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        scheme: Scheme | None = None,
    ) -> WebSocketResult:
        ws_scheme = "wss" if (scheme or self.scheme) == "https" else "ws"
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
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(BaseException):
                        await pending
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
            if not self.task.done():
                self.task.cancel()
                with contextlib.suppress(BaseException):
                    await self.task


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


# ---------------------------------------------------------------------------
# Live URL target


class URLTarget:
    """A live `http(s)://` server, reached with httpx and `websockets`.

    Only the origin of `url` (and its other scheme on the default ports) is ever
    contacted. TLS is verified unless `verify_tls=False` (a development
    certificate); the transport keeps no cookies and follows no redirects.
    """

    def __init__(
        self,
        url: str,
        *,
        verify_tls: bool = True,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TargetError(f"expected an http:// or https:// URL, got {url!r}")
        if parse_host_header(parts.netloc) is None:
            raise TargetError(f"{url!r} has no valid host")
        self.label = url
        self.scheme: Scheme = "https" if parts.scheme == "https" else "http"
        self.host = parts.netloc
        self.verify_tls = verify_tls
        self.timeout_seconds = timeout_seconds
        self._client: httpx.AsyncClient | None = None

    def supports(self, scheme: Scheme) -> bool:
        # The other scheme is reachable only where it lives by default: the host
        # with no explicit port, as a browser would try it.
        parsed = parse_host_header(self.host)
        return scheme == self.scheme or (parsed is not None and parsed.port is None)

    def _url(self, path: str, scheme: Scheme) -> str:
        if not self.supports(scheme):
            raise TargetError(f"{self.label}: {scheme} is not reachable from this URL")
        return f"{scheme}://{self.host}{path}"

    async def __aenter__(self) -> Self:
        import httpx

        self._client = httpx.AsyncClient(
            verify=self.verify_tls,
            timeout=self.timeout_seconds,
            follow_redirects=False,
            trust_env=False,
            # No keep-alive: probes provoke errors, after which servers close the
            # connection, and a request sent on it as it closes would be lost.
            limits=httpx.Limits(max_keepalive_connections=0),
            # Only encodings `_decode_content` undoes, with a bounded output.
            headers={"user-agent": USER_AGENT, "accept-encoding": "gzip, deflate"},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: Body = b"",
        scheme: Scheme | None = None,
    ) -> HTTPResponse:
        import httpx

        if self._client is None:
            raise TargetError("URLTarget used outside `async with`")
        url = self._url(path, scheme or self.scheme)
        request = self._client.build_request(
            method.upper(), url, headers=list(headers), content=body
        )
        try:
            response = await self._client.send(request, stream=True)
            try:
                received = bytearray()
                async for chunk in response.aiter_raw():
                    received += chunk[: MAX_BODY_BYTES - len(received)]
                    if len(received) >= MAX_BODY_BYTES:
                        break
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise TargetError(f"{method} {path}: {type(exc).__name__}") from exc
        finally:
            # The transport keeps no cookies: the probes' jars decide.
            self._client.cookies.clear()
        pairs = tuple(
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers.raw
        )
        return HTTPResponse(response.status_code, pairs, _decode_content(bytes(received), pairs))

    async def websocket(
        self,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        scheme: Scheme | None = None,
    ) -> WebSocketResult:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus

        http_scheme = scheme or self.scheme
        url = self._url(path, http_scheme).replace("http", "ws", 1)
        context: ssl.SSLContext | None = None
        if http_scheme == "https":
            context = ssl.create_default_context()
            if not self.verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        origin = next((v for k, v in headers if k.lower() == "origin"), None)
        others = [(k, v) for k, v in headers if k.lower() != "origin"]
        try:
            async with connect(
                url,
                additional_headers=others,
                origin=origin,  # type: ignore[arg-type]  # any text, as an attacker sends
                ssl=context,
                open_timeout=self.timeout_seconds,
                close_timeout=WEBSOCKET_GRACE_SECONDS,
                proxy=None,
                user_agent_header=USER_AGENT,
            ):
                return WebSocketResult(accepted=True)
        except InvalidStatus as exc:
            return WebSocketResult(accepted=False, status=exc.response.status_code)
        except InvalidHandshake:
            return WebSocketResult(accepted=False)
        except (OSError, TimeoutError) as exc:
            raise TargetError(f"WS {path}: {type(exc).__name__}") from exc


def _decode_content(raw: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    """Undo gzip/deflate so bodies can be scanned; capped like the raw read."""
    encoding = next((v.strip().lower() for k, v in headers if k == "content-encoding"), "")
    if encoding not in ("gzip", "deflate"):
        return raw
    import zlib

    decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)
    try:
        return decoder.decompress(raw, MAX_BODY_BYTES)
    except zlib.error:
        return raw


def open_target(
    spec: str, *, host: str | None = None, verify_tls: bool = True
) -> InProcessTarget | URLTarget:
    """A target from what the user typed: a URL, or `module:attribute`."""
    if spec.startswith(("http://", "https://")):
        return URLTarget(spec, verify_tls=verify_tls)
    return InProcessTarget.from_spec(spec, host=host)
