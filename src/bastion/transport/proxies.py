"""Trusted proxies: who the client is, and which scheme and host it asked for.

Threat: any client can send `X-Forwarded-For` or `Forwarded` to pose as another
address (dodging rate limits and bans, passing IP allow lists), `X-Forwarded-Proto:
https` to pose as secure, or `X-Forwarded-Host` to choose the host the app builds
its absolute URLs from.
Defence: proxy headers are read only when the direct peer is one of
`trusted_proxies`, and only the hops our own proxies added are believed: the chain
is walked from the right (`_find_client`), and the first hop that is not ours is the
client. A header a trusted proxy sent that cannot be read is refused, never guessed.
`trusted_proxies` itself is validated so that it cannot trust everyone: `*`, a
network of prefix length 0 and very wide public networks are refused
(`parse_trusted_proxy`).
Not covered: `X-Forwarded-Port` and `X-Forwarded-Prefix` (ignored); proxies that
reach the app over a Unix socket (there is no peer address to trust); a proxy that
passes a client's `X-Forwarded-Host` or `Forwarded` through unchanged (list only the
headers your proxy sets or overwrites, see `proxy_headers`); networks narrower than
`MIN_PUBLIC_PREFIXLEN` that still hold other people's machines (all of a cloud
region, say): we cannot know who owns an address.

References: RFC 7239 (Forwarded) https://www.rfc-editor.org/rfc/rfc7239 , section 6
(node syntax, obfuscated identifiers) ; uvicorn `ProxyHeadersMiddleware` and
werkzeug `ProxyFix` (right-to-left walk, trusted hop count) ; RFC 4193 (unique local
IPv6) ; RFC 4291 section 2.5.6 (link-local) and 2.5.5.2 (IPv4-mapped IPv6).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Final, Literal, TypeAlias

from bastion.transport.forwarded import OWS, parse_forwarded
from bastion.transport.reasons import REASON_PROXY_HEADER_MALFORMED
from bastion.types import Scope

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network
ProxyHeader = Literal["forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]

# Only the headers nearly every proxy sets (nginx, HAProxy, cloud load balancers),
# as uvicorn and werkzeug's ProxyFix do by default. A header the proxy does not set
# itself is passed through from the client, so honouring it would trust the client:
# `X-Forwarded-Host` and `Forwarded` are opt-in.
DEFAULT_PROXY_HEADERS: Final[tuple[ProxyHeader, ...]] = ("x-forwarded-for", "x-forwarded-proto")

# The widest public network `trusted_proxies` accepts, per IP version. The widest
# ranges CDNs publish for their edge proxies are a /13 for IPv4 (Cloudflare
# 104.16.0.0/13) and a /28 for IPv6 (CloudFront 2600:9000::/28); the largest private
# IPv4 block (RFC 1918) is 10.0.0.0/8. A wider network is a slice of the Internet,
# not a proxy fleet: most likely `0.0.0.0/1` style "trust everyone" in disguise.
MIN_PUBLIC_PREFIXLEN: Final = {4: 8, 6: 24}
# Private IPv6 blocks wider than that, which hold only our own machines: unique local
# addresses (RFC 4193, fc00::/7, as Kubernetes IPv6 pod ranges use) and link-local.
_PRIVATE_WIDE_NETWORKS: Final = (IPv6Network("fc00::/7"), IPv6Network("fe80::/10"))
_IPV4_MAPPED_PREFIXLEN: Final = 96  # ::ffff:0:0/96 (RFC 4291 section 2.5.5.2)

_PROXY_HEADER_NAMES: Final = frozenset(
    {b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)
# RFC 7239 section 6.3: obfnode and obfport.
# Request headers by which a client, or a proxy in front of it, claims something about
# the connection or the request's target: its address, scheme, host, port or path
# prefix, or a path to serve instead of the request line's (`X-Original-URL`, which
# some frameworks route by, past the path every layer checked). Only a trusted proxy
# may make such a claim; from any other peer it is a lie, and frameworks or apps that
# read one (Django's `USE_X_FORWARDED_HOST` and `SECURE_PROXY_SSL_HEADER`, werkzeug's
# `ProxyFix`, an app's own logging or allow list) would believe it. Lower-case, as
# ASGI servers send names; `FORWARDING_SPELLINGS` adds every spelling with `_` for
# `-`, which a WSGI adapter reads as the same header.
FORWARDING_HEADERS: Final = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-protocol",
        b"x-forwarded-scheme",
        b"x-forwarded-ssl",
        b"x-forwarded-host",
        b"x-forwarded-server",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"x-client-ip",
        b"x-cluster-client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-scheme",
        b"x-url-scheme",
        b"front-end-https",
        b"x-original-url",
        b"x-rewrite-url",
        b"x-original-host",
    }
)


def _spellings(name: bytes) -> set[bytes]:
    """`name` with each of its `-` written as `-` or `_`: the CGI names of WSGI
    (PEP 3333, `HTTP_X_FORWARDED_FOR`, as asgiref's `WsgiToAsgi` builds them) are one
    for all of them, so `X_Forwarded_For` reaches a WSGI app as `X-Forwarded-For`."""
    found = {b""}
    for index, part in enumerate(name.split(b"-")):
        found = {f + (b"" if not index else sep) + part for f in found for sep in (b"-", b"_")}
    return found


FORWARDING_SPELLINGS: Final = frozenset(
    spelling for name in FORWARDING_HEADERS for spelling in _spellings(name)
)

_OBFUSCATED: Final = re.compile(r"_[A-Za-z0-9._-]+\Z")


# --- trusted_proxies entries ----------------------------------------------------------


def parse_trusted_proxy(value: object) -> IPNetwork:
    """One `trusted_proxies` entry (address or CIDR network) as a network, or ValueError.

    Refused: `*` and any network of prefix length 0 (`0.0.0.0/0`, `::/0`), which
    trust every client; a public network wider than `MIN_PUBLIC_PREFIXLEN`; and a
    network with host bits set (`10.0.0.1/8` is a typo for an address or for
    `10.0.0.0/8`). An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) is stored as
    the IPv4 network it names, since `ProxyTrust` compares mapped peers as IPv4.
    """
    network = _as_network(value)
    if network.version == 6 and network.prefixlen >= _IPV4_MAPPED_PREFIXLEN:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            network = IPv4Network((mapped, network.prefixlen - _IPV4_MAPPED_PREFIXLEN))
    if network.prefixlen == 0:
        raise ValueError(
            f"trusted_proxies: {str(value)!r} would trust every client, as '*' would; "
            "list your proxies' addresses or networks"
        )
    minimum = MIN_PUBLIC_PREFIXLEN[network.version]
    is_private = isinstance(network, IPv6Network) and any(
        network.subnet_of(wide) for wide in _PRIVATE_WIDE_NETWORKS
    )
    if network.prefixlen < minimum and not is_private:
        raise ValueError(
            f"trusted_proxies: {str(value)!r} is a public network wider than /{minimum}, "
            "which trusts other people's machines; list your proxies' own networks"
        )
    return network


def _as_network(value: object) -> IPNetwork:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if isinstance(value, IPv4Address | IPv6Address):
        return ip_network(value)
    if not isinstance(value, str):
        raise ValueError(f"trusted_proxies: {value!r} is not an IP address or network")
    if value.strip() == "*":
        raise ValueError("trusted_proxies: '*' would trust every client; list your proxies")
    try:
        return ip_network(value.strip(), strict=True)
    except ValueError:
        raise ValueError(
            f"trusted_proxies: {value!r} is not an IP address or CIDR network "
            "(host bits must be zero)"
        ) from None


# --- facts, trust and verdicts ----------------------------------------------------------


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
        peer = (str(client[0]), int(client[1])) if client else None
        scheme = scope.get("scheme") or ("ws" if is_websocket else "http")
        if not proxy:  # the common case: no proxy header read
            return cls(peer, scheme, is_websocket, tuple(host_lines))
        return cls(
            peer=peer,
            scheme=scheme,
            is_websocket=is_websocket,
            host_lines=tuple(host_lines),
            forwarded=_joined(proxy.get(b"forwarded")),
            x_forwarded_for=_joined(proxy.get(b"x-forwarded-for")),
            x_forwarded_proto=_joined(proxy.get(b"x-forwarded-proto")),
            x_forwarded_host=_joined(proxy.get(b"x-forwarded-host")),
        )

    @classmethod
    def from_index(
        cls, scope: Scope, headers: dict[bytes, list[bytes]], *, read_proxy_headers: bool = True
    ) -> TransportFacts:
        """`from_scope` on headers already read into a lower-cased index
        (`bastion.stages.Flow.headers`): the same facts, without another pass."""
        raw_hosts = headers.get(b"host")
        host_lines: tuple[str, ...] = ()
        if raw_hosts is not None:
            if len(raw_hosts) == 1:
                host_lines = (raw_hosts[0].decode("latin-1"),)
            else:
                host_lines = tuple([value.decode("latin-1") for value in raw_hosts])
        client = scope.get("client")
        is_websocket = scope["type"] == "websocket"
        peer = (str(client[0]), int(client[1])) if client else None
        scheme = scope.get("scheme") or ("ws" if is_websocket else "http")
        if not read_proxy_headers or _PROXY_HEADER_NAMES.isdisjoint(headers):
            return cls(peer, scheme, is_websocket, host_lines)
        return cls(
            peer=peer,
            scheme=scheme,
            is_websocket=is_websocket,
            host_lines=host_lines,
            forwarded=_joined_bytes(headers.get(b"forwarded")),
            x_forwarded_for=_joined_bytes(headers.get(b"x-forwarded-for")),
            x_forwarded_proto=_joined_bytes(headers.get(b"x-forwarded-proto")),
            x_forwarded_host=_joined_bytes(headers.get(b"x-forwarded-host")),
        )


def _joined_bytes(lines: list[bytes] | None) -> str | None:
    return None if lines is None else ", ".join([line.decode("latin-1") for line in lines])


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


# --- hops and the walk -------------------------------------------------------------------


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
    with an optional numeric or obfuscated port. Anything else is None, a zone
    identifier (`fe80::1%eth0`) included: no node of RFC 7239 has one, and
    `ipaddress` takes any text after the `%`, which would become the client address
    the application and the events see (`bastion.hosts` refuses it too).
    """
    if "%" in text:
        return None
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


# --- the resolvers -------------------------------------------------------------------------


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
    found = _find_client([hop.strip(OWS) for hop in x_forwarded_for.split(",")], trust)
    if found is None:
        return ProxyClaims(client=peer, reason=REASON_PROXY_HEADER_MALFORMED)
    _, node = found
    return ProxyClaims(client=(node.host, node.port))


def _normalise_proto(untrusted_proto: str, *, websocket: bool) -> str | None:
    proto = untrusted_proto.strip(OWS).lower()  # schemes are case-insensitive (RFC 3986 3.1)
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
    return value.rsplit(",", 1)[-1].strip(OWS)


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
