"""Properties of the proxy resolver, the host matcher and the redirect builder."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.hosts import host_matches, normalise_host, parse_host_header
from bastion.transport import (
    MIN_PUBLIC_PREFIXLEN,
    REASON_PROXY_HEADER_MALFORMED,
    AllowedHosts,
    ProxyClaims,
    ProxyTrust,
    build_https_url,
    parse_forwarded,
    parse_host_pattern,
    parse_trusted_proxy,
    resolve_client,
    resolve_forwarded,
)

TRUSTED_NETWORK = ip_network("10.0.0.0/8")
TRUST = ProxyTrust((TRUSTED_NETWORK,))

trusted_ips = st.integers(0, 2**24 - 1).map(lambda n: str(IPv4Address(0x0A000000 + n)))
untrusted_ips = st.ip_addresses().map(str).filter(lambda hop: not _is_ours(hop))
any_ips = trusted_ips | untrusted_ips
peers = st.tuples(any_ips, st.integers(1, 65535))
header_text = st.text(st.characters(min_codepoint=0, max_codepoint=255))

labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
host_names = st.lists(labels, min_size=1, max_size=4).map(".".join)
# DNS names end in a non-numeric label (RFC 3696 section 2), and a wildcard needs a
# registered domain (two labels or more): what a wildcard may name.
dns_names = st.tuples(
    st.lists(labels, min_size=1, max_size=3), st.from_regex(r"[a-z]{1,6}", fullmatch=True)
).map(lambda parts: ".".join([*parts[0], parts[1]]))


def _is_ours(hop: str) -> bool:
    """The reference model of trust, written independently of `ProxyTrust`."""
    address = ip_address(hop)
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return isinstance(address, IPv4Address) and address in TRUSTED_NETWORK


def _client_index(hops: list[str]) -> int:
    """The reference model of the walk: rightmost hop not ours, else the leftmost."""
    for index in range(len(hops) - 1, -1, -1):
        if not _is_ours(hops[index]):
            return index
    return 0


# --- X-Forwarded-For ------------------------------------------------------------------


@given(
    prefix=header_text,
    client=untrusted_ips,
    proxies=st.lists(trusted_ips, max_size=4),
    peer=trusted_ips,
)
def test_prepending_cannot_change_the_client(
    prefix: str, client: str, proxies: list[str], peer: str
) -> None:
    # What our proxies build: the client's own header, then one hop per proxy.
    honest = ", ".join([client, *proxies])
    forged = f"{prefix}, {honest}"
    expected = resolve_client((peer, 1), honest, TRUST)
    assert expected.client == (client, 0)
    assert resolve_client((peer, 1), forged, TRUST) == expected


@given(hops=st.lists(any_ips, min_size=1, max_size=8), peer=trusted_ips)
def test_client_is_never_left_of_an_untrusted_hop(hops: list[str], peer: str) -> None:
    claims = resolve_client((peer, 1), ", ".join(hops), TRUST)
    index = _client_index(hops)
    assert claims.client == (hops[index], 0)
    # Every hop right of the client is one of ours; the client is not, unless all are.
    assert all(_is_ours(hop) for hop in hops[index + 1 :])
    assert index == 0 or not _is_ours(hops[index])


@given(peer=st.tuples(untrusted_ips, st.integers(1, 65535)), header=header_text)
def test_untrusted_peer_headers_change_nothing(peer: tuple[str, int], header: str) -> None:
    assert resolve_client(peer, header, TRUST).client == peer
    assert resolve_forwarded(peer, header, TRUST).client == peer
    claims = resolve_forwarded(peer, header, TRUST)
    assert (claims.scheme, claims.untrusted_host, claims.reason) == (None, None, "")


@given(peer=peers, header=header_text)
def test_resolver_never_raises_and_answers_an_address_or_refuses(
    peer: tuple[str, int], header: str
) -> None:
    for claims in (resolve_client(peer, header, TRUST), resolve_forwarded(peer, header, TRUST)):
        if claims.reason:
            assert claims.reason == REASON_PROXY_HEADER_MALFORMED
            assert claims.client == peer  # refused requests keep the server's view
        else:
            assert claims.client is not None


# --- Forwarded -------------------------------------------------------------------------

tokens = st.from_regex(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", fullmatch=True)
quotable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"))
elements = st.dictionaries(tokens.map(str.lower), quotable, min_size=1, max_size=4)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serialise(parsed: list[dict[str, str]]) -> str:
    return ", ".join(";".join(f"{k}={_quote(v)}" for k, v in e.items()) for e in parsed)


# What a client may prepend: arbitrary bytes (mostly unparsable), or well-formed
# elements of its choosing (`for=` an address on our allow list, `proto=https`).
forwarded_prefixes = header_text | st.lists(elements, max_size=3).map(_serialise)


@given(prefix=forwarded_prefixes, client=untrusted_ips, proxies=st.lists(trusted_ips, max_size=3))
def test_forwarded_prefix_refuses_exactly_when_unparsable_else_changes_nothing(
    prefix: str, client: str, proxies: list[str]
) -> None:
    def node(ip: str) -> str:
        return f'for="[{ip}]"' if ":" in ip else f"for={ip}"

    peer = ("10.0.0.1", 1)
    honest = ", ".join([f"{node(client)};proto=https", *(node(p) for p in proxies)])
    claims = resolve_forwarded(peer, f"{prefix}, {honest}", TRUST)
    # A prefix that parses ends on an element boundary, so the honest elements our
    # proxies wrote parse as they are and the walk stops before reaching the prefix.
    # One that does not parse cannot be cut off cleanly: the whole header is refused.
    if parse_forwarded(prefix) is None:
        assert claims == ProxyClaims(peer, reason=REASON_PROXY_HEADER_MALFORMED)
    else:
        assert claims == ProxyClaims((client, 0), "https")


@given(st.lists(elements, min_size=1, max_size=4))
def test_forwarded_serialise_parse_round_trip(parsed: list[dict[str, str]]) -> None:
    assert parse_forwarded(_serialise(parsed)) == tuple(parsed)


# --- host matching and parsing ---------------------------------------------------------


@given(suffix=dns_names, host=host_names | st.from_regex(r"[a-z0-9.\[\]:-]{1,30}", fullmatch=True))
def test_wildcard_never_matches_apex_or_foreign_hosts(suffix: str, host: str) -> None:
    if host_matches(f"*.{suffix}", host):
        assert host != suffix
        assert host.endswith(f".{suffix}")
        assert len(host) > len(suffix) + 1
    allowed = AllowedHosts.from_patterns((f"*.{suffix}",))
    assert allowed.allows(host) == host_matches(f"*.{suffix}", host)
    assert not allowed.allows(suffix)


@given(sub=host_names, suffix=dns_names)
def test_wildcard_matches_every_subdomain(sub: str, suffix: str) -> None:
    assert AllowedHosts.from_patterns((f"*.{suffix}",)).allows(f"{sub}.{suffix}")


@given(st.text(max_size=40) | host_names.map(str.upper))
def test_normalise_host_is_idempotent(text: str) -> None:
    once = normalise_host(text)
    if once is not None:
        assert normalise_host(once) == once


@given(host=host_names | st.ip_addresses().map(lambda a: f"[{a}]" if a.version == 6 else str(a)),
       port=st.none() | st.integers(1, 65535))  # fmt: skip
def test_host_header_parse_is_idempotent(host: str, port: int | None) -> None:
    parsed = parse_host_header(host if port is None else f"{host}:{port}")
    assert parsed is not None
    again = parse_host_header(
        parsed.host if parsed.port is None else f"{parsed.host}:{parsed.port}"
    )
    assert again == parsed


@given(label=labels | st.from_regex(r"[a-z]{1,6}", fullmatch=True))
def test_wildcard_over_one_label_is_refused(label: str) -> None:
    with pytest.raises(ValueError, match="allowed_hosts"):
        parse_host_pattern(f"*.{label}")


@given(st.text(max_size=30))
def test_host_pattern_is_idempotent(text: str) -> None:
    try:
        once = parse_host_pattern(text)
    except ValueError:
        return
    assert parse_host_pattern(once) == once


# --- trusted_proxies -------------------------------------------------------------------

networks = st.tuples(st.ip_addresses(), st.integers(0, 128)).map(
    lambda pair: ip_network((pair[0], min(pair[1], pair[0].max_prefixlen)), strict=False)
)


def _is_unique_or_link_local(network: IPv4Network | IPv6Network) -> bool:
    """The reference model of the private IPv6 blocks: fc00::/7 and fe80::/10."""
    first, second = network.network_address.packed[:2]
    is_ipv6 = network.version == 6
    return is_ipv6 and (first & 0xFE == 0xFC or (first == 0xFE and second & 0xC0 == 0x80))


@given(networks)
def test_trusted_proxies_never_trust_the_whole_internet(network: IPv4Network | IPv6Network) -> None:
    try:
        parsed = parse_trusted_proxy(network)
    except ValueError:
        assert network.prefixlen < MIN_PUBLIC_PREFIXLEN[network.version] or (
            network.version == 6 and network.network_address.ipv4_mapped is not None
        )
        return
    assert parsed.prefixlen > 0
    widest = 2 ** (parsed.max_prefixlen - MIN_PUBLIC_PREFIXLEN[parsed.version])
    assert parsed.num_addresses <= widest or _is_unique_or_link_local(parsed)


# --- redirects -------------------------------------------------------------------------


@given(raw_path=st.binary(max_size=40), query=st.binary(max_size=40), host=host_names)
def test_redirect_always_stays_on_the_validated_host(
    raw_path: bytes, query: bytes, host: str
) -> None:
    url = build_https_url(host, 443, raw_path=raw_path, path="", query_string=query)
    assert all(0x21 <= byte <= 0x7E for byte in url)  # a safe header value, no CR/LF
    parts = urlsplit(url.decode())
    assert (parts.scheme, parts.netloc, parts.fragment) == ("https", host, "")
    assert parts.path.startswith("/")
