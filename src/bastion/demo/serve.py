"""Serving the demo: HTTPS on the loopback address, an HTTP port that only redirects.

Threat: a reader or changer of traffic on the way (weak TLS: versions before 1.2,
CBC suites, static RSA key exchange without forward secrecy, old curves); a client
that trickles its request head a byte at a time, or its body, to hold a connection
and a task for ever (slowloris: a few hundred such clients exhaust a process); an
HTTP redirect built from the request's `Host` header, which sends the user wherever
the attacker names (redirect and cache poisoning).
Defence:
* TLS 1.2 and 1.3 only, forward-secret AEAD suites only (ECDHE with AES-GCM or
  ChaCha20-Poly1305; the TLS 1.3 suites), modern groups only: Mozilla's
  "intermediate" profile without its DHE suites. hypercorn (the default) and
  uvicorn get it from `build_tls_context` (group P-256 alone); granian from rustls,
  which implements nothing weaker (groups X25519, P-256, P-384), with its minimum
  version set to 1.2.
* The server cuts a request head that is not complete in
  `DemoSettings.header_timeout_seconds`: granian's HTTP/1 `header_read_timeout`;
  hypercorn's keep-alive timer, which runs from the connection's start until a
  request head is complete and is not reset by data. Only HTTP/1.1 is offered
  (ALPN): granian's HTTP/2 has no such timeout (a connection that sent its preface
  and then nothing stays open). uvicorn cuts no header trickle at all; the demo
  says so when started on it (docs/deployment-servers.md: put a proxy in front).
* A slow body is cut by Bastion's limits layer (`limits.body_idle_timeout_seconds`,
  `limits.body_timeout_seconds`, 408) in the application, on every server.
* The HTTP port is a listener of our own (asyncio, whatever the HTTPS server): it
  reads the request line alone, within the header timeout and 8 KiB, and answers
  308 to the configured host and HTTPS port; the request's `Host` is never read, and
  the path is percent-encoded into the `Location`.

Not covered: HTTP/2 (not offered, see above); a TLS handshake that stalls is cut by
granian after 10 s (its TLS listener's fixed timeout), by hypercorn after the header
timeout, by uvicorn after asyncio's 60 s; many connections opened at once (no per-
address connection cap in any of the three: a proxy's job, or the kernel's);
Windows (the signal handling is POSIX).

hypercorn is the default: pure Python, no private hooks, and it cuts header
trickles. granian (optional, `pip install granian`) runs embedded, in this process's
event loop, on a listening socket bound here: ports of 0 resolve before the banner
is printed, and both listeners share one loop and one Ctrl+C. That uses granian's
embedded server (marked experimental) and one private hook (`_init_shared_socket`),
kept to the few lines of `_granian_runner`; tests/demo/test_serve.py fails if a
granian release moves it. Its stop has two races, both bounded here: the worker may
never report that it stopped (a stop that overruns `STOP_TIMEOUT_SECONDS` is
cancelled), and an interpreter that exits while its Rust runtime winds down aborts
(a short wait, `GRANIAN_WIND_DOWN_SECONDS`). Running granian's regular (multi-
process) server in a child process would avoid both, at the cost of choosing ports
before binding.

References: Mozilla server-side TLS guidelines
https://wiki.mozilla.org/Security/Server_Side_TLS ; RFC 9325 (TLS recommendations);
RFC 9110 section 15.4.9 (308); rustls cipher suites
https://docs.rs/rustls/latest/rustls/#cipher-suites ; granian's HTTP/1 settings
https://github.com/emmett-framework/granian#options ; slowloris
https://en.wikipedia.org/wiki/Slowloris_(cyber_attack) .
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import importlib.util
import ipaddress
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import quote

from bastion.demo.settings import DemoSettings, Server
from bastion.demo.tls import ServerCertificate, ensure_certificate
from bastion.exceptions import ConfigurationError
from bastion.types import ASGIApp

if TYPE_CHECKING:
    from pathlib import Path

# RFC 9110 section 15.4.9: permanent, and the method and body are kept (a form POSTed
# to the HTTP port is POSTed again to HTTPS, not turned into a GET as 301 may be).
REDIRECT_STATUS: Final = 308
# TLS 1.2 suites in OpenSSL's syntax: ECDHE key exchange with an AEAD. The TLS 1.3
# suites (all AEAD, all forward-secret) are configured apart and left at OpenSSL's
# default. `!aNULL` keeps out anonymous ECDH, which authenticates nobody.
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
# The key-exchange group of the Python `ssl` path (see `build_tls_context`).
TLS_GROUP: Final = "prime256v1"
# HTTP/1.1 alone: it is the protocol whose request-head timeout the servers enforce.
ALPN_PROTOCOLS: Final = ("http/1.1",)
# The kernel's queue of connections not yet accepted (granian's own minimum).
LISTEN_BACKLOG: Final = 128
# Ctrl+C waits this long for open requests and WebSockets to finish, then closes them.
GRACEFUL_SHUTDOWN_SECONDS: Final = 5
# A server still stopping after its graceful timeout and this margin is cancelled:
# granian's embedded server sometimes never reports its worker stopped (about one stop
# in fifteen here), and Ctrl+C must still end the demo.
STOP_TIMEOUT_SECONDS: Final = GRACEFUL_SHUTDOWN_SECONDS + 2
# See `_granian_runner`.
GRANIAN_WIND_DOWN_SECONDS: Final = 0.5

# Measured in tests/demo/test_serve.py (a client sending one header byte a second).
CUTS_HEADER_TRICKLE: Final[Mapping[Server, bool]] = {
    "granian": True,
    "hypercorn": True,
    "uvicorn": False,
}

AppFactory = Callable[[DemoSettings], ASGIApp]


@dataclass(frozen=True, slots=True)
class DemoLogin:
    """A seeded demo account, printed at start-up (demo data, not a secret)."""

    username: str
    password: str
    role: str = ""


@dataclass(frozen=True, slots=True)
class DemoEndpoints:
    """Where the demo listens, known once the sockets are bound."""

    https_url: str
    http_url: str | None
    certificate: ServerCertificate
    server: Server


# --- the core: URLs and the TLS profile -------------------------------------------


def origin(scheme: str, host: str, port: int) -> str:
    """`scheme://host[:port]`, with an IPv6 literal in brackets and a default port left out."""
    literal = f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    default_port = 443 if scheme == "https" else 80
    return f"{scheme}://{literal}" if port == default_port else f"{scheme}://{literal}:{port}"


# RFC 3986 section 3.3: pchar = unreserved / pct-encoded / sub-delims / ":" / "@".
# `%` stays, so a path the client already encoded is not encoded twice.
_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE: Final = _PATH_SAFE + "?"


def redirect_location(https_origin: str, untrusted_path: bytes, untrusted_query: bytes) -> str:
    """The `Location` for a request on the HTTP port: same path, our origin.

    The origin comes from the settings alone. The path is the client's, so it is made
    harmless: anything but an origin-form path (`/...`; RFC 9112 section 3.2.1) is
    replaced by `/`, and every byte outside the path characters of RFC 3986 (CR, LF,
    space, quotes, backslash, non-ASCII) is percent-encoded. A path such as
    `//evil.example` then stays a path: the `Location` is absolute, and its authority
    is ours.
    """
    path = untrusted_path if untrusted_path.startswith(b"/") else b"/"
    location = https_origin + quote(path, safe=_PATH_SAFE)
    if untrusted_query:
        location += "?" + quote(untrusted_query, safe=_QUERY_SAFE)
    return location


def build_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The server `SSLContext` for uvicorn and hypercorn: the demo's TLS profile.

    Python's `ssl` sets one key-exchange group, not a list (`set_ecdh_curve`), and
    OpenSSL's default list reaches beyond modern curves (for TLS 1.3 it includes the
    RFC 7919 finite-field groups). The one group is P-256: RFC 8446 section 9.1 makes
    it mandatory to implement, so every TLS 1.3 client has it (a client that led with
    an X25519 key share pays one extra round trip).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.set_ecdh_curve(TLS_GROUP)
    # No TLS compression (CRIME) and no client-initiated renegotiation (a cheap way
    # to make the server do expensive handshakes).
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    context.load_cert_chain(cert_file, key_file)
    return context


# HTTP/1.1 request line and head of the redirect port: the request line is all it
# reads, and 8 KiB is the most common server limit for it (Apache's
# LimitRequestLine is 8190 bytes, nginx's large_client_header_buffers 8k).
MAX_REDIRECT_HEAD_BYTES: Final = 8 * 1024
_BAD_REQUEST: Final = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def parse_request_target(untrusted_head: bytes) -> tuple[bytes, bytes] | None:
    """The path and query of an HTTP/1.x request head; None when the request line is malformed.

    RFC 9112 section 3: `method SP request-target SP HTTP-version`. Only the shape is
    checked; the target is made harmless by `redirect_location`.
    """
    request_line = untrusted_head.split(b"\r\n", 1)[0]
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith(b"HTTP/1."):
        return None
    path, _, query = parts[1].partition(b"?")
    return path, query


def redirect_response(location: str) -> bytes:
    """The whole answer of the HTTP port: 308 to `location`, then the connection closes.

    `Cache-Control: no-store`: a 308 is cacheable by default (RFC 9111 section 4.2.2),
    and a browser that cached it would keep sending users to a port the demo may no
    longer use.
    """
    return (
        f"HTTP/1.1 {REDIRECT_STATUS} Permanent Redirect\r\n"
        f"Location: {location}\r\n"
        "Content-Length: 0\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


# --- the servers: one runner per server, each serving one app on one socket ----------


class _Runner(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Listener:
    sock: socket.socket
    header_timeout_seconds: float
    tls: ServerCertificate


class _RunnerFromCallables:
    def __init__(self, run: Callable[[], Awaitable[None]], stop: Callable[[], None]) -> None:
        self._run, self._stop = run, stop

    async def run(self) -> None:
        await self._run()

    def stop(self) -> None:
        self._stop()


def _granian_runner(app: ASGIApp, listener: _Listener) -> _Runner:
    from granian._granian import SocketHolder
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server as EmbeddedServer

    descriptor = os.dup(listener.sock.fileno())  # granian owns (and closes) its copy

    class _OnOurSocket(EmbeddedServer):
        # granian binds its own socket from (address, port); serve the one bound
        # here instead, as it does on platforms without SO_REUSEPORT.
        def _init_shared_socket(self) -> None:
            # The stub leaves out the constructor: (fd, is_unix_socket, backlog).
            holder: Any = SocketHolder(descriptor, False, LISTEN_BACKLOG)  # type: ignore[call-arg]
            self._ssp = None
            self._shd = holder
            self._sfd = holder.get_fd()

    tls = listener.tls
    server = _OnOurSocket(
        app,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=True,
        backlog=LISTEN_BACKLOG,
        http1_settings=HTTP1Settings(
            header_read_timeout=round(listener.header_timeout_seconds * 1000)
        ),
        log_level=LogLevels.warning,
        ssl_cert=tls.cert_file,
        ssl_key=tls.key_file,
        # rustls offers only AEAD suites with ECDHE (TLS 1.2) and the TLS 1.3 suites,
        # over X25519, P-256 and P-384; granian's default minimum is 1.3, and 1.2 is
        # what Mozilla's intermediate profile (and older clients) ask for.
        ssl_protocol_min=SSLProtocols.tls12,
    )

    async def run() -> None:
        await server.serve()
        # serve() returns once the worker was told to stop, while granian's Rust
        # runtime may still be winding down on its own threads; an interpreter that
        # exits under it aborts ("panic in a function that cannot unwind", about one
        # stop in fifteen here). Waiting a moment made 60 stops in 60 clean.
        await asyncio.sleep(GRANIAN_WIND_DOWN_SECONDS)

    return _RunnerFromCallables(run, server.stop)


def _uvicorn_runner(app: ASGIApp, listener: _Listener) -> _Runner:
    import uvicorn

    tls = listener.tls
    context = build_tls_context(tls.cert_file, tls.key_file)

    class _WithoutSignals(uvicorn.Server):
        # serve() stops both listeners on Ctrl+C itself; uvicorn would otherwise take
        # over SIGINT for one of them and re-raise it when that one stops.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        app,
        lifespan="on",
        # The transport layer is the one place that resolves proxies, and the headers
        # layer strips `Server`, which uvicorn would add after it.
        proxy_headers=False,
        server_header=False,
        log_level="warning",
        # Not a header timeout: uvicorn has none (see CUTS_HEADER_TRICKLE).
        timeout_keep_alive=max(1, round(listener.header_timeout_seconds)),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ssl_context_factory=lambda _config, _default: context,
    )
    server = _WithoutSignals(config)

    def stop() -> None:
        server.should_exit = True

    return _RunnerFromCallables(functools.partial(server.serve, sockets=[listener.sock]), stop)


def _hypercorn_runner(app: ASGIApp, listener: _Listener) -> _Runner:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    tls = listener.tls
    context = build_tls_context(tls.cert_file, tls.key_file)

    class _DemoConfig(Config):
        def create_ssl_context(self) -> ssl.SSLContext | None:
            return context

    config = _DemoConfig()
    # hypercorn takes the descriptor over and closes it: hand it a copy.
    config.bind = [f"fd://{os.dup(listener.sock.fileno())}"]
    # Only read by hypercorn's `ssl_enabled`; the context above is what serves.
    config.certfile, config.keyfile = str(tls.cert_file), str(tls.key_file)
    # hypercorn's keep-alive timer runs from the connection's start until a request
    # head is complete, and data does not reset it: it is the header timeout.
    config.keep_alive_timeout = listener.header_timeout_seconds
    config.ssl_handshake_timeout = listener.header_timeout_seconds
    config.include_server_header = False
    config.alpn_protocols = list(ALPN_PROTOCOLS)
    config.graceful_timeout = GRACEFUL_SHUTDOWN_SECONDS
    config.loglevel = "WARNING"
    stopping = asyncio.Event()

    async def run() -> None:
        await hypercorn_serve(app, config, shutdown_trigger=stopping.wait, mode="asgi")  # type: ignore[arg-type]  # hypercorn's app type is a union of protocols

    return _RunnerFromCallables(run, stopping.set)


def _redirect_runner(sock: socket.socket, https_origin: str, timeout_seconds: float) -> _Runner:
    """The HTTP port: asyncio, whatever the HTTPS server (one server of each kind per
    process; two embedded granian servers in one process did not always stop cleanly).

    The whole request head must arrive within `timeout_seconds` and
    `MAX_REDIRECT_HEAD_BYTES`, or the connection is closed unanswered: a header
    trickle gets nothing here either.
    """
    stopping = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_seconds)
            target = parse_request_target(head)
            if target is None:
                writer.write(_BAD_REQUEST)
            else:
                writer.write(redirect_response(redirect_location(https_origin, *target)))
            await asyncio.wait_for(writer.drain(), timeout_seconds)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # too slow, too long or gone: closed unanswered
        finally:
            writer.close()

    async def run() -> None:
        server = await asyncio.start_server(answer, sock=sock, limit=MAX_REDIRECT_HEAD_BYTES)
        async with server:
            await stopping.wait()

    return _RunnerFromCallables(run, stopping.set)


_RUNNERS: Final[Mapping[Server, Callable[[ASGIApp, _Listener], _Runner]]] = {
    "granian": _granian_runner,
    "hypercorn": _hypercorn_runner,
    "uvicorn": _uvicorn_runner,
}


# --- serving --------------------------------------------------------------------


def load_app_factory(app_factory: str) -> AppFactory:
    """Import `module:callable`: a function that takes the DemoSettings, returns the app."""
    module_name, _, attribute = app_factory.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"app factory {app_factory!r}: expected 'module:function'")
    factory = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(factory):
        raise ConfigurationError(f"app factory {app_factory!r}: no such function")
    return factory  # type: ignore[no-any-return]  # checked callable; its signature is the caller's contract


def _listen(host: str, port: int, setting: str) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"demo.{setting}: cannot listen on {host} port {port}: {exc.strerror}"
        ) from None
    return sock


def serve(
    settings: DemoSettings,
    app_factory: str,
    *,
    on_ready: Callable[[DemoEndpoints], None] | None = None,
) -> None:
    """Serve the demo until Ctrl+C (SIGINT) or SIGTERM, which stop both listeners.

    `app_factory` is `module:function`; the function is called once with `settings`
    and returns the ASGI application served on HTTPS. `on_ready` is called once the
    ports are bound (a port of 0 has become a real one), before serving starts. A
    second Ctrl+C while stopping stops at once.
    """
    if importlib.util.find_spec(settings.server) is None:
        raise ConfigurationError(
            f"demo.server is {settings.server}, which is not installed "
            f"(pip install {settings.server})"
        )
    certificate = ensure_certificate(settings)
    app = load_app_factory(app_factory)(settings)
    with contextlib.ExitStack() as sockets:
        https_sock = sockets.enter_context(
            _listen(settings.host, settings.https_port, "https_port")
        )
        https_origin = origin("https", settings.host, https_sock.getsockname()[1])
        runners = [
            _RUNNERS[settings.server](
                app, _Listener(https_sock, settings.header_timeout_seconds, certificate)
            )
        ]
        http_url = None
        if settings.http_port is not None:
            http_sock = sockets.enter_context(
                _listen(settings.host, settings.http_port, "http_port")
            )
            http_url = origin("http", settings.host, http_sock.getsockname()[1]) + "/"
            runners.append(
                _redirect_runner(http_sock, https_origin, settings.header_timeout_seconds)
            )
        if on_ready is not None:
            on_ready(DemoEndpoints(https_origin + "/", http_url, certificate, settings.server))
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_run_until_stopped(runners))


async def _run_until_stopped(runners: Sequence[_Runner]) -> None:
    """Run every server; a signal, or any server ending, stops them all."""
    loop = asyncio.get_running_loop()
    stop_requested = False

    def stop_all(*_: Any) -> None:
        nonlocal stop_requested
        stop_requested = True
        # The next Ctrl+C raises KeyboardInterrupt: a way out of a stuck shutdown.
        loop.remove_signal_handler(signal.SIGINT)
        for runner in runners:
            runner.stop()

    loop.add_signal_handler(signal.SIGINT, stop_all)
    loop.add_signal_handler(signal.SIGTERM, stop_all)
    try:
        tasks = [asyncio.create_task(runner.run()) for runner in runners]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not stop_requested:
            stop_all()
        _, still_running = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_SECONDS)
        for task in still_running:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # a server that failed says why
        if not stop_requested:
            raise RuntimeError("a demo server stopped by itself; see the log above")
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def run_demo(
    settings: DemoSettings,
    app_factory: str,
    *,
    logins: Sequence[DemoLogin] = (),
    echo: Callable[[str], None] | None = None,
) -> None:
    """What `bastion demo` runs: serve, after printing where and how to connect."""

    def banner(endpoints: DemoEndpoints) -> None:
        for line in describe_endpoints(endpoints, logins):
            if echo is None:
                print(line, flush=True)
            else:
                echo(line)

    serve(settings, app_factory, on_ready=banner)


def describe_endpoints(endpoints: DemoEndpoints, logins: Sequence[DemoLogin]) -> list[str]:
    """The start-up banner: URLs, the certificate's fingerprint, the demo logins."""
    certificate = endpoints.certificate
    lines = [f"Bastion Bank: {endpoints.https_url}  (served by {endpoints.server})"]
    if endpoints.http_url:
        lines.append(f"  {endpoints.http_url} redirects there (308).")
    kind = "development (self-signed)" if certificate.is_development else "configured"
    lines += [
        f"TLS certificate: {kind}, {certificate.cert_file}",
        f"  valid until {certificate.not_valid_after:%Y-%m-%d %H:%M} UTC",
        f"  SHA-256 fingerprint {certificate.fingerprint_sha256}",
    ]
    if certificate.is_development:
        lines.append(
            "  Your browser will warn about it: accept it only if the fingerprint it "
            "shows is this one."
        )
    if not CUTS_HEADER_TRICKLE[endpoints.server]:
        lines.append(
            f"Warning: {endpoints.server} does not cut clients that send their request "
            "headers slowly (slowloris); see docs/deployment-servers.md."
        )
    if logins:
        lines.append("Demo logins (demo data only):")
        lines += [
            f"  {login.username} / {login.password}" + (f"  ({login.role})" if login.role else "")
            for login in logins
        ]
    lines.append("Ctrl+C stops.")
    return lines
