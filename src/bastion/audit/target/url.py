"""The live target: an `http(s)://` server reached over the network.

Threat: an auditor that is itself harmful to the server or the person running it:
it follows a redirect to another host (an HTTP one, or a WebSocket handshake's),
is sent to another host by a path the target chose (`@internal.example/` from its
OpenAPI document), reads an endless or decompression-bomb body, hangs on a slow
answer (a byte every few seconds resets any per-read timeout), sends cookies where
they do not belong, or goes through a proxy the environment names.
Defence: only the origin of the URL (and its other scheme on the default ports) is
ever contacted: a path must start with "/", and neither client follows a redirect;
each request, body included, must finish within `timeout_seconds`; bodies are read
up to `MAX_BODY_BYTES` raw and decoded with the same cap; the client keeps no
cookies, ignores the environment (`trust_env=False`, no proxy) and verifies TLS
unless told not to.

Not covered: TLS configuration grading; HTTP/2 and HTTP/3 specifics.

References: httpx clients https://www.python-httpx.org/advanced/clients/ ;
websockets client https://websockets.readthedocs.io/en/stable/reference/asyncio/client.html
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import zlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

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
from bastion.hosts import parse_host_header

if TYPE_CHECKING:
    import httpx
    from websockets.asyncio.client import connect


class URLTarget(Target):
    """A live `http(s)://` server, reached with httpx and `websockets`.

    Only the origin of `url` (and its other scheme on the default ports) is ever
    contacted. TLS is verified unless `verify_tls=False` (a development
    certificate); the transport keeps no cookies and follows no redirects.
    Credentials in the URL (`user:password@`) and its query are never sent and
    never shown: the label and every error name only scheme, host and path.
    """

    is_live = True

    def __init__(
        self,
        url: str,
        *,
        verify_tls: bool = True,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        parts = urlsplit(url)
        shown = redact_url(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TargetError(f"expected an http:// or https:// URL, got {shown!r}")
        host = _authority(parts.netloc)
        if parse_host_header(host) is None:
            raise TargetError(f"{shown!r} has no valid host")
        self.label = shown
        self.scheme: Scheme = "https" if parts.scheme == "https" else "http"
        self.host = host
        self.verify_tls = verify_tls
        self.timeout_seconds = timeout_seconds
        self._client: httpx.AsyncClient | None = None

    def supports(self, scheme: Scheme) -> bool:
        # The other scheme is reachable only where it lives by default: the host
        # with no explicit port, as a browser would try it.
        parsed = parse_host_header(self.host)
        return scheme == self.scheme or (parsed is not None and parsed.port is None)

    def can_send(self, path: str) -> bool:
        import httpx

        try:
            self._http_url(path, self.scheme)
        except (TargetError, httpx.InvalidURL, UnicodeEncodeError):
            return False
        return True

    def _http_url(self, path: str, scheme: Scheme) -> httpx.URL:
        """The URL `_request` sends to: httpx refuses a control character
        (InvalidURL) and cannot encode a lone surrogate (UnicodeEncodeError)."""
        import httpx

        return httpx.URL(self._url(path, scheme))

    def _url(self, path: str, scheme: Scheme) -> str:
        if not self.supports(scheme):
            raise TargetError(f"{self.label}: {scheme} is not reachable from this URL")
        # Appended to the authority, anything else would name another one:
        # `@internal.example/` or `:6379/` after `https://bank.example`.
        if not path.startswith("/"):
            raise TargetError("a path must start with '/'")
        return f"{scheme}://{self.host}{path}"

    async def _open(self) -> None:
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

    async def _close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _request(
        self, method: str, path: str, headers: Headers, body: Body, scheme: Scheme
    ) -> HTTPResponse:
        import httpx

        if self._client is None:
            raise TargetError("URLTarget used outside `async with`")
        try:
            request = self._client.build_request(
                method.upper(), self._http_url(path, scheme), headers=list(headers), content=body
            )
            # httpx's timeout bounds each read; this bounds the whole answer, which
            # a server dripping a byte just inside the read timeout would stretch
            # for days.
            async with asyncio.timeout(self.timeout_seconds):
                response = await self._client.send(request, stream=True)
                try:
                    received = bytearray()
                    async for chunk in response.aiter_raw():
                        received += chunk[: MAX_BODY_BYTES - len(received)]
                        if len(received) >= MAX_BODY_BYTES:
                            break
                finally:
                    await response.aclose()
        except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, UnicodeEncodeError) as exc:
            # InvalidURL: a path with a control character, from a route the target named;
            # UnicodeEncodeError: one with a lone surrogate (`\ud800` in its OpenAPI JSON).
            raise TargetError(f"{method} {path}: {type(exc).__name__}") from exc
        finally:
            # The transport keeps no cookies: the probes' jars decide.
            self._client.cookies.clear()
        pairs = tuple(
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers.raw
        )
        return HTTPResponse(response.status_code, pairs, _decode_content(bytes(received), pairs))

    async def _websocket(self, path: str, headers: Headers, scheme: Scheme) -> WebSocketResult:
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

        url = self._url(path, scheme).replace("http", "ws", 1)
        context: ssl.SSLContext | None = None
        if scheme == "https":
            context = ssl.create_default_context()
            if not self.verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        origin = next((v for k, v in headers if k.lower() == "origin"), None)
        others = [(k, v) for k, v in headers if k.lower() != "origin"]
        try:
            async with _connect_once()(
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
        except (OSError, TimeoutError, InvalidURI, UnicodeEncodeError) as exc:
            raise TargetError(f"WS {path}: {type(exc).__name__}") from exc


@functools.cache
def _connect_once() -> type[connect]:
    """`websockets`' `connect`, without its redirect following: it would go to any
    host a `Location` names, and report a refused handshake as accepted."""
    from websockets.asyncio.client import connect

    class ConnectOnce(connect):
        def process_redirect(self, exc: Exception) -> Exception | str:
            return exc  # the 3xx ends the handshake, as `InvalidStatus`

    return ConnectOnce


def _authority(netloc: str) -> str:
    """`host[:port]` of a URL's authority, without any `userinfo@` (RFC 3986 3.2)."""
    return netloc.rpartition("@")[2]


def redact_url(url: str) -> str:
    """`url` fit to show: no `user:password@`, no query, no fragment (either may
    carry a credential, as `?token=` does). Anything that does not parse as a URL
    is cut to its scheme."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.partition(":")[0] + "://(unparseable)"
    return urlunsplit((parts.scheme, _authority(parts.netloc), parts.path, "", ""))


def _decode_content(raw: bytes, headers: Headers) -> bytes:
    """Undo gzip/deflate so bodies can be scanned; capped like the raw read."""
    encoding = next((v.strip().lower() for k, v in headers if k == "content-encoding"), "")
    if encoding not in ("gzip", "deflate"):
        return raw
    decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)
    try:
        return decoder.decompress(raw, MAX_BODY_BYTES)
    except zlib.error:
        return raw
