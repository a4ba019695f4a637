"""The proxy resolver: `X-Forwarded-*`, RFC 7239 `Forwarded`, and the facts it reads."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from bastion.transport import (
    REASON_PROXY_HEADER_MALFORMED,
    ProxyClaims,
    ProxyTrust,
    ResolvedTransport,
    TransportFacts,
    resolve_client,
    resolve_forwarded,
    resolve_transport,
)
from tests.transport.support import make_scope

TRUST = ProxyTrust((ip_network("10.0.0.0/8"), ip_network("2001:db8:ffff::/48")))
PROXY = ("10.0.0.1", 40000)
OUTSIDER = ("203.0.113.9", 5000)
MALFORMED = ProxyClaims(PROXY, reason=REASON_PROXY_HEADER_MALFORMED)


# --- X-Forwarded-For ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        pytest.param(OUTSIDER, "198.51.100.7", ProxyClaims(OUTSIDER), id="untrusted-peer"),
        pytest.param(None, "198.51.100.7", ProxyClaims(None), id="no-peer"),
        pytest.param(("unix:/run/app.sock", 0), "198.51.100.7",
                     ProxyClaims(("unix:/run/app.sock", 0)), id="peer-not-an-address"),
        pytest.param(PROXY, None, ProxyClaims(PROXY), id="no-header"),
        pytest.param(PROXY, "198.51.100.7", ProxyClaims(("198.51.100.7", 0)), id="one-hop"),
        pytest.param(("::ffff:10.0.0.1", 1), "198.51.100.7", ProxyClaims(("198.51.100.7", 0)),
                     id="ipv4-mapped-peer"),
        pytest.param(PROXY, "198.51.100.7:4711", ProxyClaims(("198.51.100.7", 4711)), id="port"),
        pytest.param(PROXY, "1.2.3.4, 198.51.100.7, 10.0.0.2, 10.9.9.9",
                     ProxyClaims(("198.51.100.7", 0)), id="chain-rightmost-untrusted"),
        pytest.param(PROXY, "10.0.0.3,10.0.0.2", ProxyClaims(("10.0.0.3", 0)), id="all-trusted"),
        pytest.param(PROXY, "[2001:db8::1]:4711", ProxyClaims(("2001:db8::1", 4711)),
                     id="ipv6-bracketed"),
        pytest.param(PROXY, "2001:DB8:0::1", ProxyClaims(("2001:db8::1", 0)), id="ipv6-bare"),
        pytest.param(PROXY, "2001:db8:ffff::5, 2001:db8::1", ProxyClaims(("2001:db8::1", 0)),
                     id="ipv6-left-ignored"),
        pytest.param(PROXY, "198.51.100.7, 2001:db8:ffff::5", ProxyClaims(("198.51.100.7", 0)),
                     id="ipv6-trusted-hop"),
        pytest.param(PROXY, "unknown", ProxyClaims(("unknown", 0)), id="unknown-stops"),
        pytest.param(PROXY, "198.51.100.7, _hidden", ProxyClaims(("_hidden", 0)),
                     id="obfuscated-stops"),
        pytest.param(PROXY, "garbage, 198.51.100.7", ProxyClaims(("198.51.100.7", 0)),
                     id="garbage-left-of-client-ignored"),
        pytest.param(PROXY, "198.51.100.7, garbage", MALFORMED, id="garbage-from-proxy"),
        pytest.param(PROXY, "198.51.100.7, garbage, 10.0.0.2", MALFORMED,
                     id="garbage-behind-trusted-hop"),
        pytest.param(PROXY, "", MALFORMED, id="empty"),
        pytest.param(PROXY, "198.51.100.7,", MALFORMED, id="trailing-comma"),
        pytest.param(PROXY, "198.51.100.7:0", MALFORMED, id="port-zero"),
        pytest.param(PROXY, "198.51.100.7:", MALFORMED, id="port-empty"),
        pytest.param(PROXY, "[2001:db8::1", MALFORMED, id="bracket-open"),
        pytest.param(PROXY, "[198.51.100.7]", MALFORMED, id="ipv4-in-brackets"),
        pytest.param(PROXY, "[2001:db8::1]x", MALFORMED, id="after-bracket"),
        pytest.param(PROXY, "010.0.0.1", MALFORMED, id="leading-zero"),
        pytest.param(PROXY, "bank.example", MALFORMED, id="hostname"),
        # A zone id: any text after the `%` (CR, LF, markup), which became the client
        # address the application and the events saw.
        pytest.param(PROXY, "2001:db8::1%eth0", MALFORMED, id="xff-zone-id"),
        pytest.param(PROXY, "[fe80::1%<script>]:4711", MALFORMED, id="xff-zone-id-bracketed"),
        pytest.param(PROXY, "fe80::1%\u202e", MALFORMED, id="xff-zone-id-bidi"),
        pytest.param(PROXY, "fe80::1", ProxyClaims(("fe80::1", 0)), id="xff-link-local-ok"),
    ],
)  # fmt: skip
def test_resolve_client(
    peer: tuple[str, int] | None, header: str | None, expected: ProxyClaims
) -> None:
    if expected.reason:
        expected = ProxyClaims(peer, reason=expected.reason)
    assert resolve_client(peer, header, TRUST) == expected


def test_resolve_client_trusts_nobody_without_networks() -> None:
    assert resolve_client(PROXY, "198.51.100.7", ProxyTrust()) == ProxyClaims(PROXY)


# --- Forwarded (RFC 7239) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        pytest.param(OUTSIDER, "for=198.51.100.7;proto=https", ProxyClaims(OUTSIDER),
                     id="untrusted-peer"),
        pytest.param(PROXY, "for=198.51.100.7;proto=https;host=bank.example",
                     ProxyClaims(("198.51.100.7", 0), "https", "bank.example"), id="one-hop"),
        pytest.param(PROXY, 'for="[2001:db8:cafe::17]:4711";proto=HTTPS',
                     ProxyClaims(("2001:db8:cafe::17", 4711), "https"), id="rfc-ipv6-port"),
        pytest.param(PROXY, "for=1.1.1.1;proto=http;host=evil.example, "
                     "for=198.51.100.7;proto=https;host=bank.example, for=10.0.0.2;proto=http",
                     ProxyClaims(("198.51.100.7", 0), "https", "bank.example"),
                     id="client-element-describes-client"),
        pytest.param(PROXY, "for=_hidden;proto=https", ProxyClaims(("_hidden", 0), "https"),
                     id="obfuscated-stops"),
        pytest.param(PROXY, 'for="unknown:_port";proto=https', ProxyClaims(("unknown", 0), "https"),
                     id="unknown-stops"),
        pytest.param(PROXY, "proto=https", ProxyClaims(("unknown", 0), "https"),
                     id="no-for-is-unknown"),
        pytest.param(PROXY, "for=10.0.0.3", ProxyClaims(("10.0.0.3", 0)), id="all-trusted"),
        pytest.param(PROXY, 'for="garbage, for=198.51.100.7', MALFORMED, id="client-breaks-quote"),
        pytest.param(PROXY, "for=198.51.100.7;proto=ftp", MALFORMED, id="proto-unknown"),
        pytest.param(PROXY, "for=198.51.100.7;proto=wss", MALFORMED, id="proto-ws-on-http"),
        pytest.param(PROXY, "for=bank.example", MALFORMED, id="for-hostname"),
        pytest.param(PROXY, "", MALFORMED, id="empty"),
        pytest.param(PROXY, "for=garbage;proto=ftp, for=198.51.100.7;proto=https",
                     ProxyClaims(("198.51.100.7", 0), "https"), id="client-element-only-read"),
    ],
)  # fmt: skip
def test_resolve_forwarded(
    peer: tuple[str, int] | None, header: str, expected: ProxyClaims
) -> None:
    assert resolve_forwarded(peer, header, TRUST) == expected


@pytest.mark.parametrize(
    ("proto", "scheme"), [("http", "ws"), ("https", "wss"), ("ws", "ws"), ("wss", "wss")]
)
def test_resolve_forwarded_websocket_schemes(proto: str, scheme: str) -> None:
    claims = resolve_forwarded(PROXY, f"for=198.51.100.7;proto={proto}", TRUST, websocket=True)
    assert claims.scheme == scheme


# --- resolve_transport: the combination the middleware uses ----------------------------


def _facts(
    peer: tuple[str, int] | None = PROXY,
    *,
    forwarded: str | None = None,
    x_forwarded_for: str | None = None,
    x_forwarded_proto: str | None = None,
    x_forwarded_host: str | None = None,
) -> TransportFacts:
    return TransportFacts(
        peer=peer,
        scheme="http",
        host_lines=("bank.example",),
        forwarded=forwarded,
        x_forwarded_for=x_forwarded_for,
        x_forwarded_proto=x_forwarded_proto,
        x_forwarded_host=x_forwarded_host,
    )


X_TRUST = ProxyTrust(
    TRUST.networks, frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
)
F_TRUST = ProxyTrust(TRUST.networks, frozenset({"forwarded"}))


@pytest.mark.parametrize(
    ("facts", "trust", "expected"),
    [
        pytest.param(_facts(OUTSIDER, x_forwarded_for="198.51.100.7", x_forwarded_proto="https",
                            x_forwarded_host="evil.example"), X_TRUST,
                     ResolvedTransport(OUTSIDER, "http"), id="untrusted-peer-changes-nothing"),
        pytest.param(_facts(x_forwarded_for="198.51.100.7", x_forwarded_proto="https",
                            x_forwarded_host="api.bank.example"), X_TRUST,
                     ResolvedTransport(("198.51.100.7", 0), "https", "api.bank.example"),
                     id="all-three"),
        pytest.param(_facts(x_forwarded_proto="https"), X_TRUST,
                     ResolvedTransport(PROXY, "https"), id="proto-without-for"),
        pytest.param(_facts(x_forwarded_proto="https, http"), X_TRUST,
                     ResolvedTransport(PROXY, "http"), id="proto-rightmost"),
        pytest.param(_facts(x_forwarded_proto=" HTTPS "), X_TRUST,
                     ResolvedTransport(PROXY, "https"), id="proto-case-and-space"),
        pytest.param(_facts(x_forwarded_proto="javascript"), X_TRUST,
                     ResolvedTransport(PROXY, "http", None, REASON_PROXY_HEADER_MALFORMED),
                     id="proto-invalid"),
        pytest.param(_facts(x_forwarded_for="x", x_forwarded_proto="https"), X_TRUST,
                     ResolvedTransport(PROXY, "http", None, REASON_PROXY_HEADER_MALFORMED),
                     id="for-invalid-drops-proto-too"),
        pytest.param(_facts(x_forwarded_host="evil.example, api.bank.example"), X_TRUST,
                     ResolvedTransport(PROXY, "http", "api.bank.example"), id="host-rightmost"),
        pytest.param(_facts(x_forwarded_host="evil.example", x_forwarded_for="198.51.100.7"),
                     TRUST, ResolvedTransport(("198.51.100.7", 0), "http"),
                     id="host-not-honoured-by-default"),
        pytest.param(_facts(x_forwarded_for="198.51.100.7", forwarded="for=192.0.2.1"), F_TRUST,
                     ResolvedTransport(("192.0.2.1", 0), "http"), id="forwarded-ignores-xff"),
        pytest.param(_facts(x_forwarded_for="198.51.100.7", forwarded="for=192.0.2.1"), TRUST,
                     ResolvedTransport(("198.51.100.7", 0), "http"), id="xff-ignores-forwarded"),
        pytest.param(_facts(forwarded='for=192.0.2.1;proto=https;host="bank.example:8443"'),
                     F_TRUST, ResolvedTransport(("192.0.2.1", 0), "https", "bank.example:8443"),
                     id="forwarded-all"),
        pytest.param(_facts(forwarded="for=192.0.2.1;host=bank.example:8443"), F_TRUST,
                     ResolvedTransport(PROXY, "http", None, REASON_PROXY_HEADER_MALFORMED),
                     id="forwarded-unquoted-colon"),
        pytest.param(_facts(forwarded='for="x'), F_TRUST,
                     ResolvedTransport(PROXY, "http", None, REASON_PROXY_HEADER_MALFORMED),
                     id="forwarded-malformed"),
    ],
)  # fmt: skip
def test_resolve_transport(
    facts: TransportFacts, trust: ProxyTrust, expected: ResolvedTransport
) -> None:
    assert resolve_transport(facts, trust) == expected


def test_resolve_transport_websocket_proto() -> None:
    facts = TransportFacts(peer=PROXY, scheme="ws", is_websocket=True, x_forwarded_proto="https")
    assert resolve_transport(facts, TRUST).scheme == "wss"


def test_facts_from_scope_combine_lines_and_skip_proxy_headers_when_untrusted() -> None:
    scope = make_scope(
        headers=[
            (b"Host", b"bank.example"),
            (b"x-forwarded-for", b"1.1.1.1"),
            (b"X-Forwarded-For", b"198.51.100.7"),
            (b"forwarded", b"for=a"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"h\xe9"),
        ],
        client=["10.0.0.1", 4000],  # type: ignore[arg-type]  # some servers send a list
    )
    facts = TransportFacts.from_scope(scope)
    assert facts == TransportFacts(
        peer=("10.0.0.1", 4000),
        scheme="https",
        host_lines=("bank.example",),
        forwarded="for=a",
        x_forwarded_for="1.1.1.1, 198.51.100.7",
        x_forwarded_proto="https",
        x_forwarded_host="h\xe9",
    )
    skipped = TransportFacts.from_scope(scope, read_proxy_headers=False)
    assert skipped == TransportFacts(("10.0.0.1", 4000), "https", host_lines=("bank.example",))


def test_facts_default_scheme() -> None:
    scope = make_scope("websocket")
    del scope["scheme"]
    assert TransportFacts.from_scope(scope).scheme == "ws"
