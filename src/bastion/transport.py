"""Transport: trusted hosts, trusted proxy headers, HTTPS redirects and HSTS.

Threats:

* Host header attacks. A forged `Host` poisons the absolute URLs an app builds
  (password-reset links, cache keys, redirects), and DNS rebinding lets a foreign
  page reach the app under the attacker's name. Defence: every request names exactly
  one host, well formed, from `allowed_hosts`; anything else is a generic 400.
* Spoofed proxy headers. Any client can send `X-Forwarded-For` or `Forwarded` to pose
  as another address (dodging rate limits and bans, passing IP allow lists), or
  `X-Forwarded-Proto: https` to pose as secure. Defence: proxy headers are read only
  when the direct peer is one of `trusted_proxies`, and only the hops our own proxies
  added are believed (right-to-left walk, see `resolve_client`).
* Downgrade and SSL stripping. Plain-HTTP requests are redirected to HTTPS at the
  validated host (never an open redirect); plain `ws` handshakes are refused, since a
  handshake cannot follow a redirect; HTTPS responses carry HSTS so the browser never
  tries plain HTTP again.

One resolver decides the client address, scheme, host and port; later layers read
them from the request context and never re-read proxy headers.

Not covered: TLS itself (the server or the proxy terminates it); `X-Forwarded-Port`
and `X-Forwarded-Prefix` (ignored); proxies that reach the app over a Unix socket
(there is no peer address to trust).

References: RFC 9110 section 7.2 (Host) https://www.rfc-editor.org/rfc/rfc9110#section-7.2 ;
RFC 9112 section 3.2 (400 for a missing, repeated or invalid Host)
https://www.rfc-editor.org/rfc/rfc9112#section-3.2 ; RFC 7239 (Forwarded)
https://www.rfc-editor.org/rfc/rfc7239 ; RFC 6797 (HSTS) https://www.rfc-editor.org/rfc/rfc6797 ;
RFC 9110 section 15.4.9 (308) ; RFC 6455 section 4.1 (ws/wss) ; https://hstspreload.org/ .
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import quote, quote_from_bytes

from pydantic import Field, field_validator, model_validator

from bastion.context import get_context
from bastion.events import KIND_INPUT_VALIDATION, EventEmitter
from bastion.hosts import DEFAULT_PORTS, HostPort, host_matches, normalise_host, parse_host_header
from bastion.responses import Refuser
from bastion.sections import LayerSettings
from bastion.types import ASGIApp, Message, Receive, Scope, Send

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network
ProxyHeader = Literal["forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]

LAYER: Final = "transport"

# Allowed when `allowed_hosts` is empty and the middleware is used alone: loopback
# names only, so an unconfigured layer serves a laptop and nothing else ("testserver"
# is the host name of the Starlette and httpx test clients). Production `Settings`
# refuses an empty list instead.
LOCAL_HOSTS: Final = ("localhost", "127.0.0.1", "[::1]", "testserver")

# One year: the minimum the HSTS preload list accepts (hstspreload.org) and what
# OWASP's HTTP headers cheat sheet recommends.
HSTS_ONE_YEAR_SECONDS: Final = 31_536_000
HTTPS_DEFAULT_PORT: Final = 443
# 308 keeps the method and the body (RFC 9110 section 15.4.9); with 301 and 302,
# browsers turn a POST into a GET and drop its body. 307 is the temporary 308.
REDIRECT_STATUSES: Final = frozenset({301, 302, 307, 308})

# Only the headers nearly every proxy sets (nginx, HAProxy, cloud load balancers),
# as uvicorn and werkzeug's ProxyFix do by default. A header the proxy does not set
# itself is passed through from the client, so honouring it would trust the client:
# `X-Forwarded-Host` and `Forwarded` are opt-in.
DEFAULT_PROXY_HEADERS: Final[tuple[ProxyHeader, ...]] = ("x-forwarded-for", "x-forwarded-proto")

REASON_HOST_MISSING: Final = "host-missing"
REASON_HOST_MALFORMED: Final = "host-malformed"
REASON_HOST_MULTIPLE: Final = "host-multiple"
REASON_HOST_NOT_ALLOWED: Final = "host-not-allowed"
REASON_PROXY_HEADER_MALFORMED: Final = "proxy-header-malformed"
REASON_INSECURE_HTTP: Final = "insecure-http"
REASON_INSECURE_WEBSOCKET: Final = "insecure-websocket"

# RFC 9112 section 3.2 requires 400 for a missing, repeated or invalid Host. A valid
# host that is not ours gets the same 400 rather than 421 (Misdirected Request): one
# opaque answer for every host failure, as Django and Starlette give, so a scanner
# learns nothing about which names are served; and 421 invites HTTP/2 clients to
# retry on a fresh connection, for a request that will never be served.
HOST_REFUSAL_STATUS: Final = 400
# A trusted proxy sent a header we cannot read: refuse rather than guess (see
# `resolve_client`).
PROXY_REFUSAL_STATUS: Final = 400
# A plain `ws` handshake cannot be redirected (browsers do not follow redirects on a
# WebSocket handshake), so it is refused; 403 maps to close code 1008.
INSECURE_WEBSOCKET_STATUS: Final = 403

# The OWASP Logging Vocabulary has no transport kind; a request whose host, proxy
# header or scheme fails the server's rules is the closest fit to
# `input_validation_fail`. The reason says which rule.
_KIND: Final = KIND_INPUT_VALIDATION

_GUARDED_SCOPES: Final = frozenset({"http", "websocket"})
_PROXY_HEADER_NAMES: Final = frozenset(
    {b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)
_HSTS_NAME: Final = b"strict-transport-security"
_OWS: Final = " \t"
# RFC 7239 section 6.3: obfnode and obfport.
_OBFUSCATED: Final = re.compile(r"_[A-Za-z0-9._-]+\Z")
# Bytes kept as they are in a redirect's path (RFC 3986 pchar plus "/", and "%" since
# `raw_path` is already percent-encoded); everything else (spaces, controls, "\",
# "#", "?", non-ASCII) is percent-encoded. `quote` always keeps letters, digits, "_.-~".
_PATH_SAFE: Final = "/:@!$&'()*+,;=%"
_QUERY_SAFE: Final = _PATH_SAFE + "?"

# RFC 7239 section 4 via RFC 9110 section 5.6: token, quoted-string, pairs and lists.
_TCHARS: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED: Final = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_FORWARDED_PAIR: Final = re.compile(rf"({_TCHARS})=({_TCHARS}|{_QUOTED})[ \t]*")
_QUOTED_PAIR: Final = re.compile(r"\\(.)")


# --- Settings -----------------------------------------------------------------------


def parse_host_pattern(text: str) -> str:
    """Normalise one `allowed_hosts` entry (`name`, `*.name` or `*`), or ValueError."""
    if text == "*":
        return text
    is_wildcard = text.startswith("*.")
    name = normalise_host(text[2:] if is_wildcard else text)
    if name is None:
        raise ValueError(
            f"allowed_hosts: {text!r} is not a host name, '*.name' or '*' "
            "(no scheme, port or path; IPv6 in brackets)"
        )
    if is_wildcard and (name.startswith("[") or name.rsplit(".", 1)[-1].isdigit()):
        # `*.0.1` would match 127.0.0.1: a wildcard is for DNS names only.
        raise ValueError(f"allowed_hosts: {text!r}: a wildcard needs a DNS name, not an address")
    return f"*.{name}" if is_wildcard else name


def parse_trusted_proxy(value: object) -> IPNetwork:
    """One `trusted_proxies` entry (address or CIDR network) as a network, or ValueError."""
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if isinstance(value, IPv4Address | IPv6Address):
        return ip_network(value)
    if not isinstance(value, str):
        raise ValueError(f"trusted_proxies: {value!r} is not an IP address or network")
    if value.strip() == "*":
        raise ValueError("trusted_proxies: '*' would trust every client; list your proxies")
    try:
        # strict: `10.0.0.1/8` is a typo for an address or for `10.0.0.0/8`; refuse it.
        return ip_network(value.strip(), strict=True)
    except ValueError:
        raise ValueError(
            f"trusted_proxies: {value!r} is not an IP address or CIDR network "
            "(host bits must be zero)"
        ) from None


class TransportSettings(LayerSettings):
    """Trusted hosts, trusted proxies, HTTPS and HSTS (see the module docstring)."""

    allowed_hosts: tuple[str, ...] = ()
    """Hosts this app serves: exact (`bank.example`, `127.0.0.1`, `[::1]`) or
    `*.bank.example` (every subdomain, not `bank.example` itself). Any port. A bare
    `*` allows any host; production refuses it. Empty: `LOCAL_HOSTS` when the
    middleware is used alone; production `Settings` refuses to start."""

    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Addresses or CIDR networks of your own reverse proxies. Proxy headers are read
    only from these peers; empty means never (the server's peer is the client)."""

    proxy_headers: tuple[ProxyHeader, ...] = DEFAULT_PROXY_HEADERS
    """Which proxy headers are believed from a trusted proxy: any of
    `x-forwarded-for`, `x-forwarded-proto`, `x-forwarded-host`, or `forwarded`
    (RFC 7239) alone. List only headers your proxy sets or overwrites itself."""

    insecure_allow_http: bool = False
    """Serve plain HTTP and `ws` instead of redirecting to HTTPS / refusing."""

    https_redirect_status: int = 308
    """Status of the HTTPS redirect: 308 (default), 307, 301 or 302."""

    https_port: int = Field(default=HTTPS_DEFAULT_PORT, ge=1, le=65535)
    """Port of the HTTPS URL that plain HTTP is redirected to."""

    hsts_max_age_seconds: int = Field(default=HSTS_ONE_YEAR_SECONDS, ge=0)
    """HSTS `max-age`; 0 tells browsers to forget the policy (RFC 6797 section 6.1.1)."""

    hsts_include_subdomains: bool = True
    """Add `includeSubDomains`: every subdomain must serve HTTPS too."""

    hsts_preload: bool = False
    """Add `preload` (asks for the browsers' built-in list; hard to undo). Requires
    `includeSubDomains` and a max-age of at least one year."""

    @field_validator("allowed_hosts")
    @classmethod
    def _parse_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(parse_host_pattern(text) for text in value))

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):  # "10.0.0.1, 10.1.0.0/16", as uvicorn's FORWARDED_ALLOW_IPS
            value = [part for part in re.split(r"[\s,]+", value) if part]
        if not isinstance(value, Iterable):
            return value  # pydantic reports the type error
        return tuple(dict.fromkeys(parse_trusted_proxy(item) for item in value))

    @field_validator("proxy_headers", mode="before")
    @classmethod
    def _lower_proxy_headers(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in re.split(r"[\s,]+", value) if part]
        if isinstance(value, Iterable):
            return tuple(dict.fromkeys(v.lower() if isinstance(v, str) else v for v in value))
        return value

    @field_validator("proxy_headers")
    @classmethod
    def _one_dialect(cls, value: tuple[ProxyHeader, ...]) -> tuple[ProxyHeader, ...]:
        if "forwarded" in value and len(value) > 1:
            # Two dialects would give two answers for one request; a chain speaks one.
            raise ValueError("proxy_headers: 'forwarded' cannot be combined with X-Forwarded-*")
        return value

    @field_validator("https_redirect_status")
    @classmethod
    def _redirect_status(cls, value: int) -> int:
        if value not in REDIRECT_STATUSES:
            raise ValueError(f"https_redirect_status: must be one of {sorted(REDIRECT_STATUSES)}")
        return value

    @model_validator(mode="after")
    def _preload_rules(self) -> TransportSettings:
        if self.hsts_preload and (
            not self.hsts_include_subdomains or self.hsts_max_age_seconds < HSTS_ONE_YEAR_SECONDS
        ):
            raise ValueError(
                "hsts_preload: requires hsts_include_subdomains and "
                f"hsts_max_age_seconds >= {HSTS_ONE_YEAR_SECONDS} (hstspreload.org)"
            )
        return self


# --- The core: plain facts in, verdicts out ------------------------------------------


@dataclass(frozen=True, slots=True)
class TransportFacts:
    """What the server delivered, unverified. Header values are all lines comma-joined."""

    peer: tuple[str, int] | None
    scheme: str
    is_websocket: bool = False
    host_lines: tuple[str, ...] = ()
    forwarded: str | None = None
    x_forwarded_for: str | None = None
    x_forwarded_proto: str | None = None
    x_forwarded_host: str | None = None

    @classmethod
    def from_scope(cls, scope: Scope, *, read_proxy_headers: bool = True) -> TransportFacts:
        """Read the facts in one pass; proxy headers only when some proxy is trusted."""
        host_lines: list[str] = []
        proxy: dict[bytes, list[str]] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.lower()
            if name == b"host":
                host_lines.append(raw_value.decode("latin-1"))
            elif read_proxy_headers and name in _PROXY_HEADER_NAMES:
                proxy.setdefault(name, []).append(raw_value.decode("latin-1"))
        client = scope.get("client")
        is_websocket = scope["type"] == "websocket"
        return cls(
            peer=(str(client[0]), int(client[1])) if client else None,
            scheme=scope.get("scheme") or ("ws" if is_websocket else "http"),
            is_websocket=is_websocket,
            host_lines=tuple(host_lines),
            forwarded=_joined(proxy.get(b"forwarded")),
            x_forwarded_for=_joined(proxy.get(b"x-forwarded-for")),
            x_forwarded_proto=_joined(proxy.get(b"x-forwarded-proto")),
            x_forwarded_host=_joined(proxy.get(b"x-forwarded-host")),
        )


def _joined(lines: list[str] | None) -> str | None:
    # RFC 9110 section 5.3: several lines of a list header are one comma-joined value.
    return None if lines is None else ", ".join(lines)


@dataclass(frozen=True, slots=True)
class ProxyTrust:
    """Which peers are our proxies, and which of their headers we believe."""

    networks: tuple[IPNetwork, ...] = ()
    headers: frozenset[str] = frozenset(DEFAULT_PROXY_HEADERS)

    def trusts(self, address: IPAddress | None) -> bool:
        if address is None or not self.networks:
            return False
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def trusts_peer(self, peer: tuple[str, int] | None) -> bool:
        if peer is None or not self.networks:
            return False
        try:
            return self.trusts(ip_address(peer[0]))
        except ValueError:
            return False  # not an IP address (a Unix socket path, a test double)


@dataclass(frozen=True, slots=True)
class ProxyClaims:
    """What trusted proxy headers say about the client; `None` means "no claim"."""

    client: tuple[str, int] | None
    scheme: str | None = None
    untrusted_host: str | None = None  # still to be checked by `check_host`
    reason: str = ""  # REASON_PROXY_HEADER_MALFORMED when a header could not be read


@dataclass(frozen=True, slots=True)
class ResolvedTransport:
    """The one answer every later layer uses: client, scheme and the host to check.

    On a malformed proxy header `reason` is set and the other fields are the server's
    view (what monitor-only mode carries on with).
    """

    client: tuple[str, int] | None
    scheme: str
    untrusted_host: str | None = None  # from a trusted proxy; None: the Host header
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Node:
    host: str  # an address as ASGI spells it (IPv6 unbracketed), or an obfuscated name
    port: int  # 0 when not given or obfuscated
    address: IPAddress | None  # None for `unknown` and obfuscated identifiers


def _parse_port(text: str) -> int | None:
    if not text:
        return 0
    if _OBFUSCATED.match(text):
        return 0
    if len(text) > 5 or not (text.isascii() and text.isdigit()):
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


def _parse_node(text: str) -> _Node | None:
    """One hop: an `X-Forwarded-For` entry or an RFC 7239 `for=` value (section 6).

    Accepts `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`,
    `2001:db8::1` (as `X-Forwarded-For` writes it), `unknown` and `_obfuscated`, each
    with an optional numeric or obfuscated port. Anything else is None.
    """
    address: IPAddress | None
    if text.startswith("["):
        host_text, bracket, rest = text[1:].partition("]")
        colon, port_text = rest[:1], rest[1:]
        if not bracket or colon not in ("", ":") or (colon and not port_text):
            return None
        try:
            address = IPv6Address(host_text)
        except ValueError:
            return None
        host = str(address)
    elif text.count(":") > 1:
        port_text = ""
        try:
            address = IPv6Address(text)
        except ValueError:
            return None
        host = str(address)
    else:
        host, colon, port_text = text.partition(":")
        if colon and not port_text:
            return None
        if host.lower() == "unknown":
            host, address = "unknown", None
        elif _OBFUSCATED.match(host):
            address = None
        else:
            try:
                address = IPv4Address(host)
            except ValueError:
                return None
            host = str(address)
    port = _parse_port(port_text)
    return None if port is None else _Node(host, port, address)


def _find_client(hops: Sequence[str], trust: ProxyTrust) -> tuple[int, _Node] | None:
    """Walk the hops right to left; the client hop and its index, or None if a hop
    we reach can't be read.

    Each proxy appends the address it received the request from, so the rightmost hop
    was written by our trusted peer. While a hop is one of our proxies, the hop to its
    left was written by that proxy and is believed too. The first hop that is not
    ours is the client: everything further left was written by the client itself.
    An `unknown` or obfuscated hop is not ours either, so it is the client (RFC 7239
    section 6.3 lets a proxy name a client that way). When every hop is ours, the
    request came from one of our proxies, and the leftmost hop names it.
    """
    for index in range(len(hops) - 1, -1, -1):
        node = _parse_node(hops[index])
        if node is None:
            return None
        if index == 0 or not trust.trusts(node.address):
            return index, node
    return None  # no hops at all


def resolve_client(
    peer: tuple[str, int] | None, x_forwarded_for: str | None, trust: ProxyTrust
) -> ProxyClaims:
    """The client address, through `X-Forwarded-For` from a trusted peer only.

    Fail-safe: when a hop we reach cannot be read (garbage, an empty entry), our own
    proxy wrote something we do not understand, or the client broke the header's
    syntax. Guessing would attribute the request either to an address of the
    client's choosing or to our proxy (which may be on an internal allow list), so
    the claim carries REASON_PROXY_HEADER_MALFORMED and the request is refused. Only
    the sender of that one request is hurt. Hops left of the client are never read,
    so garbage a client prepends changes nothing.
    """
    if x_forwarded_for is None or not trust.trusts_peer(peer):
        return ProxyClaims(client=peer)
    found = _find_client([hop.strip(_OWS) for hop in x_forwarded_for.split(",")], trust)
    if found is None:
        return ProxyClaims(client=peer, reason=REASON_PROXY_HEADER_MALFORMED)
    _, node = found
    return ProxyClaims(client=(node.host, node.port))


def parse_forwarded(value: str) -> tuple[Mapping[str, str], ...] | None:
    """Parse an RFC 7239 `Forwarded` value into its elements, or None if malformed.

    Grammar (section 4): `1#forwarded-element`, an element being `forwarded-pair`s
    separated by `;`, a pair `token "=" ( token / quoted-string )`. Parameter names
    are case-insensitive; a parameter MUST NOT occur twice in one element. Empty list
    elements are skipped (RFC 9110 section 5.6.1). Deviation: optional whitespace is
    accepted around `;` as well as `,`, as some proxies write it.
    """
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    position, end = 0, len(value)
    while True:
        while position < end and value[position] in _OWS:
            position += 1
        if position == end:
            break
        char = value[position]
        if char in ",;":
            if char == "," and current:
                elements.append(current)
                current = {}
            position += 1
            continue
        match = _FORWARDED_PAIR.match(value, position)
        if match is None:
            return None
        name, raw = match[1].lower(), match[2]
        if name in current:
            return None
        current[name] = _QUOTED_PAIR.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw
        position = match.end()
        if position < end and value[position] not in ",;":
            return None
    if current:
        elements.append(current)
    return tuple(elements)


def _normalise_proto(untrusted_proto: str, *, websocket: bool) -> str | None:
    proto = untrusted_proto.strip(_OWS).lower()  # schemes are case-insensitive (RFC 3986 3.1)
    if websocket:
        # Proxies report the handshake's scheme as http(s); the connection is ws(s).
        return {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(proto)
    return proto if proto in ("http", "https") else None


def resolve_forwarded(
    peer: tuple[str, int] | None,
    forwarded: str | None,
    trust: ProxyTrust,
    *,
    websocket: bool = False,
) -> ProxyClaims:
    """Client, scheme and host through RFC 7239 `Forwarded` from a trusted peer only.

    The walk is `resolve_client`'s, over the elements' `for=` values; an element
    without `for=` counts as `for=unknown`. The element naming the client was written
    by one of our proxies and describes the request it received from the client, so
    its `proto=` and `host=` are the client's scheme and host. Unparsable syntax, an
    unreadable `for=` on the walk, or a `proto=` other than http/https (ws/wss for a
    WebSocket) is REASON_PROXY_HEADER_MALFORMED, for the reasons given there.
    """
    if forwarded is None or not trust.trusts_peer(peer):
        return ProxyClaims(client=peer)
    elements = parse_forwarded(forwarded)
    if not elements:
        return ProxyClaims(client=peer, reason=REASON_PROXY_HEADER_MALFORMED)
    found = _find_client([element.get("for", "unknown") for element in elements], trust)
    if found is None:
        return ProxyClaims(client=peer, reason=REASON_PROXY_HEADER_MALFORMED)
    index, node = found
    element = elements[index]
    scheme = None
    if "proto" in element:
        scheme = _normalise_proto(element["proto"], websocket=websocket)
        if scheme is None:
            return ProxyClaims(client=peer, reason=REASON_PROXY_HEADER_MALFORMED)
    return ProxyClaims((node.host, node.port), scheme, element.get("host"))


def _rightmost(value: str) -> str:
    # The entry our nearest trusted proxy wrote (werkzeug ProxyFix's default of 1).
    return value.rsplit(",", 1)[-1].strip(_OWS)


def resolve_transport(facts: TransportFacts, trust: ProxyTrust) -> ResolvedTransport:
    """The client, scheme and host claim for one request: the server's view, unless the
    peer is a trusted proxy, then what the configured proxy headers say.

    `X-Forwarded-Proto` and `X-Forwarded-Host` are read as their rightmost entry: the
    value written by the proxy nearest to us, the only one known to be ours. Proxies
    set these headers (overwrite) rather than append, so there is normally one.
    """
    server_view = ResolvedTransport(facts.peer, facts.scheme)
    if not trust.trusts_peer(facts.peer):
        return server_view
    if "forwarded" in trust.headers:
        claims = resolve_forwarded(facts.peer, facts.forwarded, trust, websocket=facts.is_websocket)
    else:
        x_forwarded_for = facts.x_forwarded_for if "x-forwarded-for" in trust.headers else None
        claims = resolve_client(facts.peer, x_forwarded_for, trust)
        scheme = untrusted_host = None
        if "x-forwarded-proto" in trust.headers and facts.x_forwarded_proto is not None:
            scheme = _normalise_proto(
                _rightmost(facts.x_forwarded_proto), websocket=facts.is_websocket
            )
            if scheme is None:
                return ResolvedTransport(
                    facts.peer, facts.scheme, None, REASON_PROXY_HEADER_MALFORMED
                )
        if "x-forwarded-host" in trust.headers and facts.x_forwarded_host is not None:
            untrusted_host = _rightmost(facts.x_forwarded_host)
        claims = ProxyClaims(claims.client, scheme, untrusted_host, claims.reason)
    if claims.reason:
        return ResolvedTransport(facts.peer, facts.scheme, None, claims.reason)
    return ResolvedTransport(claims.client, claims.scheme or facts.scheme, claims.untrusted_host)


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """Host patterns compiled for lookup: a set probe, then the few wildcards."""

    names: frozenset[str] = frozenset()
    wildcards: tuple[str, ...] = ()  # "*.example.com"
    allow_any: bool = False

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> AllowedHosts:
        """Compile patterns, normalising each (ValueError names a bad one)."""
        parsed = [parse_host_pattern(text) for text in patterns]
        return cls(
            names=frozenset(p for p in parsed if not p.startswith("*")),
            wildcards=tuple(p for p in parsed if p.startswith("*.")),
            allow_any="*" in parsed,
        )

    def allows(self, host: str) -> bool:
        """Whether a normalised host is allowed."""
        if self.allow_any or host in self.names:
            return True
        return any(host_matches(pattern, host) for pattern in self.wildcards)


@dataclass(frozen=True, slots=True)
class HostVerdict:
    host: HostPort | None  # the validated host; None when refused
    reason: str = ""


def check_host(
    host_lines: Sequence[str], allowed: AllowedHosts, *, forwarded_host: str | None = None
) -> HostVerdict:
    """Validate the request's host: the Host header, or the host a trusted proxy claims.

    More than one Host line is refused even when a proxy names the host: RFC 9112
    section 3.2 says a server MUST answer 400, and two Host lines are a classic
    request-smuggling and cache-poisoning probe. The value must parse as a host with
    an optional port (`bastion.hosts.parse_host_header`: no path, `@` or spaces) and
    its host must be allowed; the port is not checked.
    """
    if len(host_lines) > 1:
        return HostVerdict(None, REASON_HOST_MULTIPLE)
    untrusted_host = forwarded_host if forwarded_host is not None else next(iter(host_lines), None)
    if untrusted_host is None:
        return HostVerdict(None, REASON_HOST_MISSING)
    parsed = parse_host_header(untrusted_host)
    if parsed is None:
        return HostVerdict(None, REASON_HOST_MALFORMED)
    if not allowed.allows(parsed.host):
        return HostVerdict(None, REASON_HOST_NOT_ALLOWED)
    return HostVerdict(parsed)


def build_https_url(
    host: str,
    port: int,
    *,
    raw_path: bytes | None,
    path: str,
    query_string: bytes = b"",
) -> bytes:
    """The HTTPS URL of a request, from the validated host and the request's path.

    The authority is always written, so no path can turn the result into a
    protocol-relative or foreign URL: `//evil.com` gives `https://host//evil.com`,
    still on `host`. The path is `raw_path` as the client sent it (percent-encoded,
    cut at any `?`, as some servers include the query), else `path` encoded; a
    request target that is not a path (`*`, an absolute URL) redirects to `/`.
    Bytes that do not belong in a URL (spaces, CR/LF, `\\`, `#`, non-ASCII) are
    percent-encoded, so the result is always a safe header value.
    """
    if raw_path is not None:
        untrusted_path = raw_path.partition(b"?")[0]
        encoded_path = quote_from_bytes(untrusted_path, safe=_PATH_SAFE)
    else:
        encoded_path = quote(path, safe=_PATH_SAFE.replace("%", ""))
    if not encoded_path.startswith("/"):
        encoded_path = "/"
    authority = host if port == HTTPS_DEFAULT_PORT else f"{host}:{port}"
    url = f"https://{authority}{encoded_path}"
    if query_string:
        url += "?" + quote_from_bytes(query_string, safe=_QUERY_SAFE)
    return url.encode("ascii")


def build_hsts_value(max_age_seconds: int, *, include_subdomains: bool, preload: bool) -> bytes:
    """The `Strict-Transport-Security` value (RFC 6797 section 6.1)."""
    value = f"max-age={max_age_seconds}"
    if include_subdomains:
        value += "; includeSubDomains"
    if preload:
        value += "; preload"
    return value.encode("ascii")


def hsts_header_value(settings: TransportSettings) -> str:
    """The HSTS value the layer adds to HTTPS responses; "" when it adds none.

    None is added when the layer is disabled or monitor-only: monitoring must not pin
    browsers to HTTPS for `max-age` seconds, which no later setting can undo.
    """
    if not settings.enabled or settings.monitor_only:
        return ""
    return build_hsts_value(
        settings.hsts_max_age_seconds,
        include_subdomains=settings.hsts_include_subdomains,
        preload=settings.hsts_preload,
    ).decode("ascii")


# --- The ASGI adapter ---------------------------------------------------------------


class TransportMiddleware:
    """Resolve the client through trusted proxies, check the host, require HTTPS, add HSTS.

    Order: resolve (so every event names the real client), then the host check (no
    redirect is ever built from a host that failed it), then HTTPS, then the app with
    HSTS on its HTTPS responses (not on our refusals: a host that failed the check
    must not be pinned). `scope["client"]` and `scope["scheme"]` are resolved for the
    app in a shallow copy of the scope, as the ASGI spec asks of middleware, so the
    server and the layers outside keep the peer they really saw; every layer reads
    the resolved values from the shared request context. In monitor-only mode every
    decision is reported and nothing is refused, redirected or pinned (no HSTS, which
    a browser would keep for a year).
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: TransportSettings | None = None,
        *,
        events: EventEmitter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings = settings or TransportSettings()
        self._allowed = AllowedHosts.from_patterns(settings.allowed_hosts or LOCAL_HOSTS)
        self._trust = ProxyTrust(settings.trusted_proxies, frozenset(settings.proxy_headers))
        self._read_proxy_headers = bool(settings.trusted_proxies)
        self._require_https = not settings.insecure_allow_http
        hsts = hsts_header_value(settings)
        self._hsts = (_HSTS_NAME, hsts.encode("ascii")) if hsts else None
        self._refuse = Refuser(LAYER, events, monitor_only=settings.monitor_only)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in _GUARDED_SCOPES or not self.settings.enabled:
            await self.app(scope, receive, send)
            return
        facts = TransportFacts.from_scope(scope, read_proxy_headers=self._read_proxy_headers)
        context = get_context(scope)
        resolved = resolve_transport(facts, self._trust)
        if resolved.reason and await self._refuse(
            scope, send, status=PROXY_REFUSAL_STATUS, kind=_KIND, reason=resolved.reason
        ):
            return
        context.client, context.scheme = resolved.client, resolved.scheme

        verdict = check_host(
            facts.host_lines, self._allowed, forwarded_host=resolved.untrusted_host
        )
        if verdict.host is None:
            untrusted_host = resolved.untrusted_host
            if untrusted_host is None:
                untrusted_host = ", ".join(facts.host_lines)
            if await self._refuse(
                scope,
                send,
                status=HOST_REFUSAL_STATUS,
                kind=_KIND,
                reason=verdict.reason,
                details={"untrusted_host": untrusted_host},
            ):
                return
        else:
            context.host = verdict.host.host
            context.port = verdict.host.port or DEFAULT_PORTS.get(resolved.scheme)

        if (
            self._require_https
            and not context.is_secure
            and await self._refuse_insecure(scope, send, facts, verdict.host)
        ):
            return

        if (resolved.client, resolved.scheme) != (facts.peer, facts.scheme):
            scope = {**scope, "client": resolved.client, "scheme": resolved.scheme}
        hsts = self._hsts
        if hsts is None or facts.is_websocket or not context.is_secure:
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                # Keep the app's own policy if it set one; never send two.
                if not any(name.lower() == _HSTS_NAME for name, _ in headers):
                    # A new list: the app may reuse its header list across responses.
                    message = {**message, "headers": [*headers, hsts]}
            await send(message)

        await self.app(scope, receive, send_with_hsts)

    async def _refuse_insecure(
        self, scope: Scope, send: Send, facts: TransportFacts, host: HostPort | None
    ) -> bool:
        if facts.is_websocket:
            return await self._refuse(
                scope,
                send,
                status=INSECURE_WEBSOCKET_STATUS,
                kind=_KIND,
                reason=REASON_INSECURE_WEBSOCKET,
            )
        if host is None:
            return False  # monitor-only with a refused host: nothing valid to redirect to
        location = build_https_url(
            host.host,
            self.settings.https_port,
            raw_path=scope.get("raw_path"),
            path=scope["path"],
            query_string=scope.get("query_string", b""),
        )
        return await self._refuse(
            scope,
            send,
            status=self.settings.https_redirect_status,
            kind=_KIND,
            reason=REASON_INSECURE_HTTP,
            headers=[(b"location", location)],
        )
