"""The interface every target implements, and what it answers with.

Threat: an auditor that lies because its transport quietly changed the request
(followed redirects, a client cookie jar, a normalised `Host`), or that is itself
harmful (it follows a redirect to another host, reads an endless body, hangs).
Defence: one small `Target` that sends exactly the request the probe built and
reports exactly what came back: header names lower-case with repeats kept, the
body capped at `MAX_BODY_BYTES`, every request under a timeout, and no redirect
followed (a probe that follows one asks again, only on the target's own host:
`owns`).

`Target` is a base class rather than a `Protocol` because its two targets share
more than their signatures: `async with` opens and closes each once, and both
fill in the default scheme the same way. A target implements the four
underscored hooks, as an httpx transport implements `handle_async_request`.

Not covered: HTTP/2 and HTTP/3 specifics, TLS configuration grading.

References: ASGI HTTP and WebSocket specs
https://asgi.readthedocs.io/en/latest/specs/www.html ; RFC 9110 section 15.4
(redirects) https://www.rfc-editor.org/rfc/rfc9110#section-15.4
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal, Self
from urllib.parse import urlsplit

from bastion.hosts import DEFAULT_PORTS, parse_host_header

Scheme = Literal["http", "https"]
Body = bytes | AsyncIterable[bytes]
Headers = Sequence[tuple[str, str]]

# A page larger than 1 MiB is not needed to grade headers or spot a traceback;
# the MDN HTTP Observatory reads at most the same.
MAX_BODY_BYTES: Final = 1024 * 1024
# Long enough for a cold app on a laptop, short enough that a hung route does not
# hold the audit (each probe sends few requests).
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
# After a WebSocket handshake is decided, how long the app may take to notice the
# disconnect before it is cancelled (a feed that never reads is cancelled here).
WEBSOCKET_GRACE_SECONDS: Final = 1.0
USER_AGENT: Final = "bastion-audit/0.1"


class TargetError(Exception):
    """The target could not be reached or run (startup failed, timeout, refused)."""


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


class Target(abc.ABC):
    """What every probe talks to. Paths are origin-relative (`/login?next=/`).

    Use it as `async with target:`; requests are sent only in between.
    """

    label: str
    """What is audited, for the report: `module:attr` or the URL."""
    host: str
    """The authority sent as `Host` by default (`bank.example`, `127.0.0.1:8000`)."""
    scheme: Scheme
    """The scheme of the main page."""
    is_live: bool = False
    """Whether this is a real server, whose state a request may really change (a URL),
    rather than an app driven in this process for the audit."""
    verify_tls: bool = True
    """Whether TLS certificates are verified; False only for a live URL opened with
    `verify_tls=False` (`--insecure`), and the report then says so."""

    @abc.abstractmethod
    def supports(self, scheme: Scheme) -> bool:
        """Whether requests over `scheme` can be sent (a live URL may lack one)."""

    def can_send(self, path: str) -> bool:
        """Whether a request to `path` can be built at all, as `request` builds it
        (a live URL's client refuses some paths an app in-process takes)."""
        return True

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Headers = (),
        body: Body = b"",
        scheme: Scheme | None = None,
    ) -> HTTPResponse:
        """Send one request; a `host` entry in `headers` replaces the default `Host`."""
        return await self._request(method, path, headers, body, scheme or self.scheme)

    async def websocket(
        self, path: str, *, headers: Headers = (), scheme: Scheme | None = None
    ) -> WebSocketResult:
        """Open a WebSocket handshake and close it again at once."""
        return await self._websocket(path, headers, scheme or self.scheme)

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._close()

    @abc.abstractmethod
    async def _open(self) -> None:
        """Get ready to send (start the app, open the client)."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release what `_open` took; a second call does nothing."""

    @abc.abstractmethod
    async def _request(
        self, method: str, path: str, headers: Headers, body: Body, scheme: Scheme
    ) -> HTTPResponse:
        """`request`, with the scheme decided."""

    @abc.abstractmethod
    async def _websocket(self, path: str, headers: Headers, scheme: Scheme) -> WebSocketResult:
        """`websocket`, with the scheme decided."""


def url_of(target: Target, path: str, scheme: Scheme | None = None) -> str:
    """The URL of `path` on the target's own host."""
    return f"{scheme or target.scheme}://{target.host}{path}"


def owns(target: Target, location: str, base_url: str) -> tuple[Scheme, str] | None:
    """The (scheme, path) of a redirect `location` when it stays on the target's host.

    Relative locations resolve against `base_url`. Anything on another host, with
    another port of the same scheme, or with a scheme we cannot speak is None.
    """
    base = urlsplit(base_url)
    try:
        parsed = urlsplit(location)
    except ValueError:  # `http://[unclosed`: the target wrote it, it leads nowhere
        return None
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
