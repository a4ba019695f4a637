"""Safe outbound HTTP: an httpx transport that refuses server-side request forgery.

Threat (SSRF, CWE-918): the application fetches a URL an attacker chose (a webhook,
an avatar URL, an OIDC discovery document, a link preview) and so reaches what only
the server can reach: the cloud metadata service and its credentials, loopback admin
ports, the private network. Tricks: other spellings of an address (`2130706433`,
`0177.0.0.1`, `0x7f.1`, `127.1`, `[::ffff:127.0.0.1]`, NAT64 and 6to4 addresses
embedding a private IPv4), names that resolve to private addresses, DNS rebinding (a
name that resolves to a public address when checked and to 127.0.0.1 when used), and
redirects from an allowed URL to a forbidden one.

Defence, per request (so per redirect hop: httpx's client follows redirects by
sending every hop through the transport):

1. The scheme (https; http only with `insecure_allow_http`), the port and, when
   configured, the host name are checked against allowlists.
2. The host is parsed as a resolver would (`socket.inet_aton` for the legacy numeric
   IPv4 forms), or resolved ONCE with `getaddrinfo` (in a worker thread for async).
   Every address must be public (`classify_address`): one bad address refuses the
   request, so a DNS answer mixing public and private addresses gets nowhere. IPv6
   addresses that embed an IPv4 one (mapped, NAT64, 6to4) are judged by it.
3. The connection goes to the CHECKED address: the URL host is replaced by the
   address, while the `Host` header keeps the name and the `sni_hostname` extension
   makes TLS send the name and verify the certificate against it. No second lookup
   happens, so there is no rebinding window. Connections are pooled per host name,
   never per address, so a connection verified for one name never serves another.
4. Responses are capped: a declared `Content-Length` over the cap is refused at once
   and the body is counted as it streams. Requests ask for `identity` encoding and a
   compressed response is refused, because httpx decodes after the transport, where
   a small gzip body could inflate without bound.

Cloud metadata addresses stay refused even inside `insecure_allowed_networks`
(Azure's 168.63.129.16 is a public address, so only this list catches it).

Not covered: proxies (through a proxy, the proxy connects: check there; the clients
made here ignore proxy environment variables), protocols other than HTTP(S), and
time spent in the system resolver in the synchronous transport (`getaddrinfo` cannot
be interrupted; the resolver's own timeout applies, see resolv.conf(5)).

References: OWASP SSRF Prevention Cheat Sheet (cheatsheetseries.owasp.org/cheatsheets/
Server_Side_Request_Forgery_Prevention_Cheat_Sheet.html);
IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890); RFC 6052 (NAT64);
RFC 3056 (6to4); RFC 6598 (shared address space); RFC 6761 section 6.3 (localhost).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio
import httpx
from pydantic import field_validator

from bastion.events import EventEmitter, SecurityEvent
from bastion.exceptions import BastionError
from bastion.hosts import normalise_host
from bastion.sections import Section

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# An OWASP-vocabulary-style kind for a refused outbound request.
KIND_MALICIOUS_SSRF: Final = "malicious_ssrf"

REASON_SCHEME: Final = "scheme-not-allowed"
REASON_PORT: Final = "port-not-allowed"
REASON_HOST: Final = "host-not-allowed"
REASON_INVALID_HOST: Final = "invalid-host"
REASON_NO_ADDRESS: Final = "no-address"
REASON_METADATA: Final = "cloud-metadata"
REASON_LOOPBACK: Final = "loopback"
REASON_PRIVATE: Final = "private"
REASON_LINK_LOCAL: Final = "link-local"
REASON_SHARED: Final = "shared-address-space"  # CGNAT, RFC 6598
REASON_MULTICAST: Final = "multicast"
REASON_BROADCAST: Final = "broadcast"
REASON_UNSPECIFIED: Final = "unspecified"
REASON_DOCUMENTATION: Final = "documentation"
REASON_BENCHMARKING: Final = "benchmarking"
REASON_RESERVED: Final = "reserved"
REASON_NOT_GLOBAL: Final = "not-global"  # Python's own registry disagrees with ours
REASON_RESPONSE_TOO_LARGE: Final = "response-too-large"
REASON_RESPONSE_TOO_SLOW: Final = "response-too-slow"
REASON_RESPONSE_ENCODED: Final = "response-encoded"

# Instance metadata services. Most sit in ranges refused anyway; listed so the
# reason names them and so no allowlisted network ever opens them.
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS Pod Identity
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer: a PUBLIC address
        "192.0.0.192",  # Oracle Cloud (classic)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity over IPv6
    )
)
METADATA_HOSTS: Final = frozenset({"metadata.google.internal", "instance-data.ec2.internal"})

# IANA special-purpose IPv4 registry, most specific first.
_IPV4_BLOCKED: Final = tuple(
    (ipaddress.IPv4Network(net), reason)
    for net, reason in (
        ("255.255.255.255/32", REASON_BROADCAST),
        ("0.0.0.0/8", REASON_UNSPECIFIED),  # "this network"
        ("10.0.0.0/8", REASON_PRIVATE),
        ("100.64.0.0/10", REASON_SHARED),
        ("127.0.0.0/8", REASON_LOOPBACK),
        ("169.254.0.0/16", REASON_LINK_LOCAL),
        ("172.16.0.0/12", REASON_PRIVATE),
        ("192.0.0.0/24", REASON_RESERVED),  # IETF protocol assignments
        ("192.0.2.0/24", REASON_DOCUMENTATION),
        ("192.88.99.0/24", REASON_RESERVED),  # former 6to4 relay anycast
        ("192.168.0.0/16", REASON_PRIVATE),
        ("198.18.0.0/15", REASON_BENCHMARKING),
        ("198.51.100.0/24", REASON_DOCUMENTATION),
        ("203.0.113.0/24", REASON_DOCUMENTATION),
        ("224.0.0.0/4", REASON_MULTICAST),
        ("240.0.0.0/4", REASON_RESERVED),
    )
)
# IPv6: only global unicast (2000::/3) can pass; inside it, these are refused.
_IPV6_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")
_IPV6_BLOCKED: Final = tuple(
    (ipaddress.IPv6Network(net), reason)
    for net, reason in (
        ("::/128", REASON_UNSPECIFIED),
        ("::1/128", REASON_LOOPBACK),
        ("fc00::/7", REASON_PRIVATE),  # unique local
        ("fe80::/10", REASON_LINK_LOCAL),
        ("ff00::/8", REASON_MULTICAST),
        ("2001:2::/48", REASON_BENCHMARKING),
        ("2001:db8::/32", REASON_DOCUMENTATION),
        ("3fff::/20", REASON_DOCUMENTATION),  # RFC 9637
        ("2001::/23", REASON_RESERVED),  # IETF protocol assignments, Teredo among them
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_SIXTOFOUR: Final = ipaddress.IPv6Network("2002::/16")
# The characters of the numeric IPv4 forms `inet_aton` accepts; anything else (it
# also accepts trailing garbage after a space) is a name.
_NUMERIC_HOST: Final = re.compile(r"[0-9a-fA-FxX.]+\Z")

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Five hops cover real sites (http->https, apex->www, a login hop); browsers allow 20,
# httpx 20, but each hop is another chance for the target to be somewhere else.
DEFAULT_MAX_REDIRECTS: Final = 5
DEFAULT_MAX_RESPONSE_BYTES: Final = 10 * 1024 * 1024  # API documents, not downloads
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
# httpx's timeouts bound each read, not the body: a server that drips a byte every few
# seconds would hold the caller for ever. The whole body must arrive within this.
DEFAULT_MAX_RESPONSE_SECONDS: Final = 30.0
MAX_ADDRESSES: Final = 16  # of one DNS answer; more are not used (nor checked)
MAX_CONNECT_ATTEMPTS: Final = 4  # checked addresses tried in turn on connect errors
# Connection pools, one per host name; past this many names, a request gets a one-off
# connection, so many attacker-chosen names cannot grow memory.
MAX_POOLED_HOSTS: Final = 64


class OutboundBlocked(BastionError):
    """An outbound request was refused; `reason` is one of the REASON_* constants."""

    def __init__(self, reason: str, host: str, address: str | None = None) -> None:
        where = f" ({address})" if address else ""
        super().__init__(f"outbound request to {host}{where} refused: {reason}")
        self.reason = reason
        self.host = host
        self.address = address


# -- settings ---------------------------------------------------------------------------


class OutboundSettings(Section):
    """What outbound requests may reach."""

    allowed_hosts: tuple[str, ...] = ()
    """Host names allowed (`api.example.com`, `*.example.com`); empty: any public host."""

    allowed_ports: tuple[int, ...] = (80, 443)
    insecure_allow_http: bool = False
    """Allow plain `http` (readable and alterable on the way)."""

    insecure_allowed_networks: tuple[IPNetwork, ...] = ()
    """Non-public networks to allow anyway (`10.1.2.0/24` for an internal service,
    `127.0.0.1/32` in tests). Metadata addresses stay refused."""

    max_redirects: int = DEFAULT_MAX_REDIRECTS
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    """Each connect, read and write (httpx's timeouts)."""
    max_response_seconds: float = DEFAULT_MAX_RESPONSE_SECONDS
    """The whole response body, from its head on (checked as each chunk arrives, so
    one read's `timeout_seconds` may come on top)."""

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parsed = []
        for pattern in value:
            wildcard = pattern.startswith("*.")
            host = normalise_host(pattern[2:] if wildcard else pattern)
            if host is None or host.startswith("["):
                raise ValueError("each host is a name, or *. and a name")
            parsed.append(("*." if wildcard else "") + host)
        return tuple(parsed)

    @field_validator("allowed_ports")
    @classmethod
    def _ports(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not all(1 <= port <= 65535 for port in value):
            raise ValueError("ports are 1-65535")
        return value

    @field_validator("insecure_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            try:
                return tuple(ipaddress.ip_network(str(net), strict=True) for net in value)
            except ValueError:
                raise ValueError("each entry is an address or network, host bits zero") from None
        return value

    @field_validator("max_redirects")
    @classmethod
    def _redirects(cls, value: int) -> int:
        if not 0 <= value <= 20:
            raise ValueError("must be 0-20")
        return value

    @field_validator("max_response_bytes", "timeout_seconds", "max_response_seconds")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be more than 0")
        return value


# -- the core: pure decisions -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes, after the pre-resolution checks."""

    scheme: str
    host: str  # ASCII (IDNA), lower case, no brackets
    port: int
    literal: IPAddress | None  # the host when it is an address, in any spelling


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells, as a resolver reads it, or None for a name.

    Besides the standard forms, `inet_aton` (and so `getaddrinfo`) reads one to four
    dot-separated parts in decimal, octal (leading 0) or hex (0x): `2130706433`,
    `0177.0.0.1`, `0x7f.1` and `127.1` all mean 127.0.0.1.
    """
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: mapped, NAT64 or 6to4."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def classify_address(address: IPAddress) -> str:
    """Why `address` must not be reached (a REASON_* constant), or "" if public."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        address = ipaddress.IPv6Address(int(address))  # `fe80::1%eth0`: judge the address
    if address in METADATA_ADDRESSES:
        return REASON_METADATA
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return classify_address(inner)
        for network, reason in _IPV6_BLOCKED:
            if address in network:
                return reason
        if address not in _IPV6_GLOBAL_UNICAST:
            return REASON_RESERVED
    else:
        for v4network, reason in _IPV4_BLOCKED:
            if address in v4network:
                return reason
    return "" if address.is_global else REASON_NOT_GLOBAL


def _host_allowed(host: str, patterns: Sequence[str]) -> bool:
    return any(
        host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern
        for pattern in patterns
    )


def check_target(
    scheme: str, untrusted_host: str, port: int | None, settings: OutboundSettings
) -> Target:
    """The checked target of a URL, or `OutboundBlocked` (checks before any lookup)."""
    allowed_schemes = ("https", "http") if settings.insecure_allow_http else ("https",)
    if scheme not in allowed_schemes:
        raise OutboundBlocked(REASON_SCHEME, untrusted_host or scheme)
    host = untrusted_host.lower().removesuffix(".")
    if not host or not host.isascii():
        raise OutboundBlocked(REASON_INVALID_HOST, untrusted_host)
    effective_port = port if port is not None else DEFAULT_PORTS[scheme]
    if effective_port not in settings.allowed_ports:
        raise OutboundBlocked(REASON_PORT, host)
    if settings.allowed_hosts and not _host_allowed(host, settings.allowed_hosts):
        raise OutboundBlocked(REASON_HOST, host)
    if host == "localhost" or host.endswith(".localhost"):
        raise OutboundBlocked(REASON_LOOPBACK, host)  # RFC 6761: always loopback
    if host in METADATA_HOSTS:
        raise OutboundBlocked(REASON_METADATA, host)
    return Target(scheme, host, effective_port, parse_ip_literal(host))


def check_addresses(
    target: Target, addresses: Sequence[IPAddress], settings: OutboundSettings
) -> None:
    """Refuse unless EVERY address is public or in an allowed network."""
    if not addresses:
        raise OutboundBlocked(REASON_NO_ADDRESS, target.host)
    for address in addresses:
        reason = classify_address(address)
        if reason == REASON_METADATA or (
            reason and not any(address in net for net in settings.insecure_allowed_networks)
        ):
            raise OutboundBlocked(reason, target.host, str(address))


# -- resolution -------------------------------------------------------------------------


class Resolver(Protocol):
    """Resolves a host name to addresses, once per request."""

    def resolve(self, host: str, port: int) -> Sequence[IPAddress]: ...


class SystemResolver:
    """`getaddrinfo`: the resolver every socket would use, hosts file included."""

    def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        found: list[IPAddress] = []
        for family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        ):
            if family in (socket.AF_INET, socket.AF_INET6):
                address = ipaddress.ip_address(str(sockaddr[0]))
                if address not in found:
                    found.append(address)
        return found[:MAX_ADDRESSES]


# -- the adapters: httpx transports -----------------------------------------------------


def _timeout(request: httpx.Request, name: str) -> float | None:
    timeouts = request.extensions.get("timeout")
    value = timeouts.get(name) if isinstance(timeouts, Mapping) else None
    return float(value) if isinstance(value, int | float) else None


class _Guard:
    """What the sync and async transports share: every check, and the pinning."""

    def __init__(self, settings: OutboundSettings, events: EventEmitter | None) -> None:
        self.settings = settings
        self.events = events

    def refuse(self, blocked: OutboundBlocked, request: httpx.Request) -> OutboundBlocked:
        if self.events is not None:
            details: dict[str, object] = {"host": blocked.host, "scheme": request.url.scheme}
            if blocked.address:
                details["address"] = blocked.address
            self.events.emit(
                SecurityEvent(
                    KIND_MALICIOUS_SSRF,
                    blocked.reason,
                    "outbound",
                    method=request.method,
                    details=details,
                )
            )
        return blocked

    def target(self, request: httpx.Request) -> Target:
        url = request.url
        try:
            return check_target(url.scheme, url.raw_host.decode("ascii"), url.port, self.settings)
        except OutboundBlocked as blocked:
            raise self.refuse(blocked, request) from None

    def check(self, request: httpx.Request, target: Target, addresses: Sequence[IPAddress]) -> None:
        try:
            check_addresses(target, addresses, self.settings)
        except OutboundBlocked as blocked:
            raise self.refuse(blocked, request) from None

    @staticmethod
    def pin(request: httpx.Request, target: Target, address: IPAddress) -> httpx.Request:
        """The request aimed at the checked address, named and verified as the host."""
        headers = request.headers.copy()  # keeps Host: the name, not the address
        headers["accept-encoding"] = "identity"
        extensions = dict(request.extensions)
        if target.scheme == "https" and target.literal is None:
            extensions["sni_hostname"] = target.host  # SNI and certificate check
        return httpx.Request(
            request.method,
            request.url.copy_with(host=str(address)),
            headers=headers,
            stream=request.stream,
            extensions=extensions,
        )

    def too_slow(self, request: httpx.Request, target: Target) -> Callable[[], OutboundBlocked]:
        return lambda: self.refuse(OutboundBlocked(REASON_RESPONSE_TOO_SLOW, target.host), request)

    def too_large(self, request: httpx.Request, target: Target) -> Callable[[], OutboundBlocked]:
        return lambda: self.refuse(OutboundBlocked(REASON_RESPONSE_TOO_LARGE, target.host), request)

    def head_checks(self, request: httpx.Request, target: Target, response: httpx.Response) -> None:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        declared = response.headers.get("content-length", "0")
        if request.method == "HEAD" or response.status_code in (204, 304):
            return  # no body, whatever the headers describe
        if encoding != "identity":
            raise self.refuse(OutboundBlocked(REASON_RESPONSE_ENCODED, target.host), request)
        if not declared.isdigit() or int(declared) > self.settings.max_response_bytes:
            raise self.refuse(OutboundBlocked(REASON_RESPONSE_TOO_LARGE, target.host), request)


@dataclass(frozen=True, slots=True)
class _Caps:
    """What a response body may cost: bytes, and seconds from its head on."""

    limit: int
    deadline: float  # on `time.monotonic`
    too_large: Callable[[], OutboundBlocked]
    too_slow: Callable[[], OutboundBlocked]

    def check(self, seen: int) -> None:
        if seen > self.limit:
            raise self.too_large()
        if time.monotonic() > self.deadline:
            raise self.too_slow()


def _caps(guard: _Guard, request: httpx.Request, target: Target) -> _Caps:
    settings = guard.settings
    return _Caps(
        settings.max_response_bytes,
        time.monotonic() + settings.max_response_seconds,
        guard.too_large(request, target),
        guard.too_slow(request, target),
    )


class _CappedStream(httpx.SyncByteStream):
    """A response body that raises `OutboundBlocked` once it passes its caps."""

    def __init__(
        self, stream: httpx.SyncByteStream, caps: _Caps, on_close: Callable[[], None]
    ) -> None:
        self._stream, self._caps, self._on_close = stream, caps, on_close

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._stream:
            seen += len(chunk)
            self._caps.check(seen)
            yield chunk

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._on_close()


class _AsyncCappedStream(httpx.AsyncByteStream):
    def __init__(
        self, stream: httpx.AsyncByteStream, caps: _Caps, on_close: Callable[[], Any]
    ) -> None:
        self._stream, self._caps, self._on_close = stream, caps, on_close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._stream:
            seen += len(chunk)
            self._caps.check(seen)
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            await self._on_close()


def _nothing() -> None:
    return None


async def _anothing() -> None:
    return None


class SafeTransport(httpx.BaseTransport):
    """A synchronous httpx transport that refuses SSRF; see the module docstring.

    `transport_factory` makes the inner transport of each host's pool (default: an
    `httpx.HTTPTransport` with `verify`); tests inject a resolver and a factory.
    """

    def __init__(
        self,
        settings: OutboundSettings | None = None,
        *,
        resolver: Resolver | None = None,
        verify: ssl.SSLContext | str | bool = True,
        events: EventEmitter | None = None,
        transport_factory: Callable[[], httpx.BaseTransport] | None = None,
    ) -> None:
        self._guard = _Guard(settings or OutboundSettings(), events)
        self._resolver = resolver or SystemResolver()
        self._factory = transport_factory or (
            lambda: httpx.HTTPTransport(verify=verify, trust_env=False)
        )
        self._pools: dict[str, httpx.BaseTransport] = {}
        self._lock = threading.Lock()

    def _pool_for(self, host: str) -> tuple[httpx.BaseTransport, bool]:
        """The host's pooled transport, or a one-off one (True) past MAX_POOLED_HOSTS."""
        with self._lock:
            pool = self._pools.get(host)
            if pool is None and len(self._pools) < MAX_POOLED_HOSTS:
                pool = self._pools[host] = self._factory()
        return (pool, False) if pool is not None else (self._factory(), True)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        guard = self._guard
        target = guard.target(request)
        if target.literal is not None:
            addresses: Sequence[IPAddress] = [target.literal]
        else:
            try:
                addresses = self._resolver.resolve(target.host, target.port)
            except OSError as exc:
                raise httpx.ConnectError(f"cannot resolve {target.host}", request=request) from exc
        guard.check(request, target, addresses)
        inner, one_off = self._pool_for(target.host)
        on_close = inner.close if one_off else _nothing
        try:
            response = self._send(inner, request, target, addresses)
        except BaseException:
            on_close()
            raise
        try:
            guard.head_checks(request, target, response)
        except OutboundBlocked:
            response.close()
            on_close()
            raise
        if not isinstance(response.stream, httpx.SyncByteStream):
            raise TypeError("the inner transport must be synchronous")
        stream = _CappedStream(response.stream, _caps(guard, request, target), on_close)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=stream,
            extensions=response.extensions,
        )

    def _send(
        self,
        inner: httpx.BaseTransport,
        request: httpx.Request,
        target: Target,
        addresses: Sequence[IPAddress],
    ) -> httpx.Response:
        attempts = addresses[:MAX_CONNECT_ATTEMPTS]
        for index, address in enumerate(attempts):
            try:
                return inner.handle_request(self._guard.pin(request, target, address))
            except httpx.ConnectError:
                if index == len(attempts) - 1:
                    raise
        raise httpx.ConnectError(f"no address for {target.host}", request=request)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


class AsyncSafeTransport(httpx.AsyncBaseTransport):
    """The asynchronous `SafeTransport`: the lookup runs in a worker thread, bounded
    by the request's connect timeout."""

    def __init__(
        self,
        settings: OutboundSettings | None = None,
        *,
        resolver: Resolver | None = None,
        verify: ssl.SSLContext | str | bool = True,
        events: EventEmitter | None = None,
        transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        self._guard = _Guard(settings or OutboundSettings(), events)
        self._resolver = resolver or SystemResolver()
        self._factory = transport_factory or (
            lambda: httpx.AsyncHTTPTransport(verify=verify, trust_env=False)
        )
        self._pools: dict[str, httpx.AsyncBaseTransport] = {}

    def _pool_for(self, host: str) -> tuple[httpx.AsyncBaseTransport, bool]:
        # No await between the read and the write: atomic on the event loop.
        pool = self._pools.get(host)
        if pool is None and len(self._pools) < MAX_POOLED_HOSTS:
            pool = self._pools[host] = self._factory()
        return (pool, False) if pool is not None else (self._factory(), True)

    async def _resolve(self, request: httpx.Request, target: Target) -> Sequence[IPAddress]:
        if target.literal is not None:
            return [target.literal]
        timeout = _timeout(request, "connect")
        try:
            with anyio.fail_after(timeout):
                return await anyio.to_thread.run_sync(
                    self._resolver.resolve, target.host, target.port, abandon_on_cancel=True
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"resolving {target.host} timed out", request=request
            ) from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {target.host}", request=request) from exc

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        guard = self._guard
        target = guard.target(request)
        addresses = await self._resolve(request, target)
        guard.check(request, target, addresses)
        inner, one_off = self._pool_for(target.host)
        on_close = inner.aclose if one_off else _anothing
        try:
            response = await self._send(inner, request, target, addresses)
        except BaseException:
            await on_close()
            raise
        try:
            guard.head_checks(request, target, response)
        except OutboundBlocked:
            await response.aclose()
            await on_close()
            raise
        if not isinstance(response.stream, httpx.AsyncByteStream):
            raise TypeError("the inner transport must be asynchronous")
        stream = _AsyncCappedStream(response.stream, _caps(guard, request, target), on_close)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=stream,
            extensions=response.extensions,
        )

    async def _send(
        self,
        inner: httpx.AsyncBaseTransport,
        request: httpx.Request,
        target: Target,
        addresses: Sequence[IPAddress],
    ) -> httpx.Response:
        attempts = addresses[:MAX_CONNECT_ATTEMPTS]
        for index, address in enumerate(attempts):
            try:
                return await inner.handle_async_request(self._guard.pin(request, target, address))
            except httpx.ConnectError:
                if index == len(attempts) - 1:
                    raise
        raise httpx.ConnectError(f"no address for {target.host}", request=request)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


def _client_options(settings: OutboundSettings) -> dict[str, Any]:
    return {
        "max_redirects": settings.max_redirects,
        "timeout": httpx.Timeout(settings.timeout_seconds),
        # Environment proxies would be mounted beside our transport and bypass it.
        "trust_env": False,
    }


def safe_client(
    settings: OutboundSettings | None = None,
    *,
    resolver: Resolver | None = None,
    verify: ssl.SSLContext | str | bool = True,
    events: EventEmitter | None = None,
    follow_redirects: bool = True,
    headers: Mapping[str, str] | None = None,
    transport_factory: Callable[[], httpx.BaseTransport] | None = None,
) -> httpx.Client:
    """An `httpx.Client` whose every request and redirect hop is checked."""
    settings = settings or OutboundSettings()
    transport = SafeTransport(
        settings,
        resolver=resolver,
        verify=verify,
        events=events,
        transport_factory=transport_factory,
    )
    return httpx.Client(
        transport=transport,
        follow_redirects=follow_redirects,
        headers=headers,
        **_client_options(settings),
    )


def safe_async_client(
    settings: OutboundSettings | None = None,
    *,
    resolver: Resolver | None = None,
    verify: ssl.SSLContext | str | bool = True,
    events: EventEmitter | None = None,
    follow_redirects: bool = True,
    headers: Mapping[str, str] | None = None,
    transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` whose every request and redirect hop is checked."""
    settings = settings or OutboundSettings()
    transport = AsyncSafeTransport(
        settings,
        resolver=resolver,
        verify=verify,
        events=events,
        transport_factory=transport_factory,
    )
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=follow_redirects,
        headers=headers,
        **_client_options(settings),
    )
