"""The transport layer's pure core: settings, the proxy resolver, host checks, URLs."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from bastion.hosts import HostPort
from bastion.transport import (
    LOCAL_HOSTS,
    REASON_HOST_MALFORMED,
    REASON_HOST_MISSING,
    REASON_HOST_MULTIPLE,
    REASON_HOST_NOT_ALLOWED,
    REASON_PROXY_HEADER_MALFORMED,
    AllowedHosts,
    ProxyClaims,
    ProxyTrust,
    ResolvedTransport,
    TransportFacts,
    TransportSettings,
    build_hsts_value,
    build_https_url,
    check_host,
    hsts_header_value,
    parse_forwarded,
    parse_host_pattern,
    resolve_client,
    resolve_forwarded,
    resolve_transport,
)
from tests.transport.support import make_scope

TRUST = ProxyTrust((ip_network("10.0.0.0/8"), ip_network("2001:db8:ffff::/48")))
PROXY = ("10.0.0.1", 40000)
OUTSIDER = ("203.0.113.9", 5000)
MALFORMED = ProxyClaims(PROXY, reason=REASON_PROXY_HEADER_MALFORMED)


# --- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("bank.example", "bank.example", id="name"),
        pytest.param("Bank.EXAMPLE.", "bank.example", id="name-case-and-root-dot"),
        pytest.param("*.Bank.example", "*.bank.example", id="wildcard"),
        pytest.param("*", "*", id="any"),
        pytest.param("127.0.0.1", "127.0.0.1", id="ipv4"),
        pytest.param("[0:0::1]", "[::1]", id="ipv6-compressed"),
    ],
)
def test_host_pattern_normalised(text: str, expected: str) -> None:
    assert parse_host_pattern(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("bank.example:443", id="port"),
        pytest.param("https://bank.example", id="scheme"),
        pytest.param("bank.example/", id="path"),
        pytest.param("a.*.example", id="inner-star"),
        pytest.param("*bank.example", id="star-without-dot"),
        pytest.param("*.", id="wildcard-of-nothing"),
        pytest.param("*.0.1", id="wildcard-of-address"),
        pytest.param("*.[::1]", id="wildcard-of-ipv6"),
        pytest.param("::1", id="ipv6-unbracketed"),
        pytest.param("", id="empty"),
        pytest.param(" bank.example", id="space"),
    ],
)
def test_host_pattern_refused(text: str) -> None:
    with pytest.raises(ValueError, match="allowed_hosts"):
        parse_host_pattern(text)


def test_settings_defaults_are_secure() -> None:
    settings = TransportSettings()
    assert settings.allowed_hosts == ()
    assert settings.trusted_proxies == ()
    assert settings.insecure_allow_http is False
    assert settings.https_redirect_status == 308
    assert settings.hsts_max_age_seconds == 31_536_000
    assert settings.hsts_include_subdomains is True
    assert settings.hsts_preload is False
    assert settings.proxy_headers == ("x-forwarded-for", "x-forwarded-proto")


def test_settings_parse_and_store_parsed_forms() -> None:
    settings = TransportSettings(
        allowed_hosts=("Bank.Example", "bank.example.", "*.API.bank.example"),
        trusted_proxies=("10.0.0.0/8", "192.0.2.1", "2001:db8::/32"),
        proxy_headers=("X-Forwarded-For", "x-forwarded-host"),
    )
    assert settings.allowed_hosts == ("bank.example", "*.api.bank.example")
    assert settings.trusted_proxies == (
        IPv4Network("10.0.0.0/8"),
        IPv4Network("192.0.2.1/32"),
        IPv6Network("2001:db8::/32"),
    )
    assert settings.proxy_headers == ("x-forwarded-for", "x-forwarded-host")


def test_settings_round_trip_through_dump() -> None:
    # settings.py rebuilds the section from model_dump() in development mode.
    settings = TransportSettings(allowed_hosts=("a.example",), trusted_proxies=("10.0.0.1",))
    assert TransportSettings.model_validate(settings.model_dump()) == settings
    as_json = settings.model_dump(mode="json")
    assert as_json["trusted_proxies"] == ["10.0.0.1/32"]
    assert TransportSettings.model_validate(as_json) == settings


def test_trusted_proxies_accept_a_comma_separated_string() -> None:
    settings = TransportSettings(trusted_proxies="10.0.0.1, 10.1.0.0/16")  # uvicorn's form
    assert settings.trusted_proxies == (IPv4Network("10.0.0.1/32"), IPv4Network("10.1.0.0/16"))


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        pytest.param({"allowed_hosts": ("bank.example:443",)}, "allowed_hosts", id="host-port"),
        pytest.param({"allowed_hosts": ("x/health?",)}, "allowed_hosts", id="host-path"),
        pytest.param({"trusted_proxies": ("proxy.internal",)}, "trusted_proxies", id="proxy-name"),
        pytest.param({"trusted_proxies": ("10.0.0.1/8",)}, "trusted_proxies", id="proxy-host-bits"),
        pytest.param({"trusted_proxies": ("*",)}, "trusted_proxies", id="proxy-star"),
        pytest.param({"trusted_proxies": (10,)}, "trusted_proxies", id="proxy-int"),
        pytest.param({"proxy_headers": ("x-real-ip",)}, "proxy_headers", id="proxy-header-unknown"),
        pytest.param(
            {"proxy_headers": ("forwarded", "x-forwarded-for")},
            "proxy_headers",
            id="proxy-headers-two-dialects",
        ),
        pytest.param({"https_redirect_status": 303}, "https_redirect_status", id="redirect-303"),
        pytest.param({"https_port": 0}, "https_port", id="https-port-zero"),
        pytest.param({"hsts_max_age_seconds": -1}, "hsts_max_age_seconds", id="hsts-negative"),
        pytest.param(
            {"hsts_preload": True, "hsts_include_subdomains": False},
            "hsts_preload",
            id="preload-without-subdomains",
        ),
        pytest.param(
            {"hsts_preload": True, "hsts_max_age_seconds": 86400},
            "hsts_preload",
            id="preload-short-max-age",
        ),
        pytest.param({"alowed_hosts": ("a.example",)}, "alowed_hosts", id="misspelt-option"),
    ],
)
def test_settings_refuse_and_name_the_setting(values: dict[str, Any], setting: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TransportSettings(**values)
    error = caught.value.errors()[0]
    assert setting in error["loc"] or setting in error["msg"]


def test_preload_accepted_when_rules_hold() -> None:
    settings = TransportSettings(hsts_preload=True)
    assert build_hsts_value(
        settings.hsts_max_age_seconds,
        include_subdomains=settings.hsts_include_subdomains,
        preload=settings.hsts_preload,
    ) == (b"max-age=31536000; includeSubDomains; preload")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({}, "max-age=31536000; includeSubDomains", id="default"),
        pytest.param({"hsts_preload": True}, "max-age=31536000; includeSubDomains; preload",
                     id="preload"),
        pytest.param({"monitor_only": True}, "", id="monitor-only-pins-nothing"),
        pytest.param({"enabled": False}, "", id="disabled"),
    ],
)  # fmt: skip
def test_hsts_header_value(values: dict[str, Any], expected: str) -> None:
    assert hsts_header_value(TransportSettings(**values)) == expected


@pytest.mark.parametrize(
    ("max_age", "subdomains", "preload", "expected"),
    [
        (31536000, True, False, b"max-age=31536000; includeSubDomains"),
        (600, False, False, b"max-age=600"),
        (0, False, False, b"max-age=0"),
        (63072000, True, True, b"max-age=63072000; includeSubDomains; preload"),
    ],
)
def test_hsts_value(max_age: int, subdomains: bool, preload: bool, expected: bytes) -> None:
    assert build_hsts_value(max_age, include_subdomains=subdomains, preload=preload) == expected


# --- allowed hosts and check_host ------------------------------------------------------

ALLOWED = AllowedHosts.from_patterns(("bank.example", "*.bank.example", "[::1]", "192.0.2.1"))


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("bank.example", True),
        ("api.bank.example", True),
        ("a.b.bank.example", True),
        ("[::1]", True),
        ("192.0.2.1", True),
        ("evilbank.example", False),
        ("bank.example.evil.net", False),
        ("example", False),
        ("192.0.2.2", False),
        ("[::2]", False),
    ],
)
def test_allowed_hosts(host: str, allowed: bool) -> None:
    assert ALLOWED.allows(host) is allowed


def test_allowed_hosts_any_and_local() -> None:
    assert AllowedHosts.from_patterns(("*",)).allows("whatever.example")
    local = AllowedHosts.from_patterns(LOCAL_HOSTS)
    assert all(local.allows(host) for host in ("localhost", "127.0.0.1", "[::1]", "testserver"))
    assert not local.allows("bank.example")


@pytest.mark.parametrize(
    ("lines", "forwarded_host", "expected"),
    [
        pytest.param(("bank.example",), None, HostPort("bank.example", None), id="ok"),
        pytest.param(("API.Bank.Example:8443",), None, HostPort("api.bank.example", 8443),
                     id="port"),
        pytest.param(("[::1]:8000",), None, HostPort("[::1]", 8000), id="ipv6"),
        pytest.param((), None, REASON_HOST_MISSING, id="missing"),
        pytest.param(("a.bank.example", "bank.example"), None, REASON_HOST_MULTIPLE, id="two"),
        pytest.param(("",), None, REASON_HOST_MALFORMED, id="empty"),
        pytest.param(("bank.example/health?",), None, REASON_HOST_MALFORMED, id="path"),
        pytest.param(("x/health?",), None, REASON_HOST_MALFORMED, id="path-short"),
        pytest.param(("evil.example@bank.example",), None, REASON_HOST_MALFORMED, id="userinfo"),
        pytest.param(("bank.example:0",), None, REASON_HOST_MALFORMED, id="port-zero"),
        pytest.param(("bank.example:99999",), None, REASON_HOST_MALFORMED, id="port-big"),
        pytest.param(("bank.example evil",), None, REASON_HOST_MALFORMED, id="space"),
        pytest.param(("[::1",), None, REASON_HOST_MALFORMED, id="bracket"),
        pytest.param(("evil.example",), None, REASON_HOST_NOT_ALLOWED, id="not-allowed"),
        pytest.param(("bank.example",), "api.bank.example", HostPort("api.bank.example", None),
                     id="forwarded-wins"),
        pytest.param(("backend:8000",), "bank.example", HostPort("bank.example", None),
                     id="forwarded-backend-host-not-checked"),
        pytest.param((), "bank.example", HostPort("bank.example", None), id="forwarded-no-host"),
        pytest.param(("bank.example",), "evil.example", REASON_HOST_NOT_ALLOWED,
                     id="forwarded-not-allowed"),
        pytest.param(("bank.example",), "", REASON_HOST_MALFORMED, id="forwarded-empty"),
        pytest.param(("a", "b"), "bank.example", REASON_HOST_MULTIPLE, id="forwarded-still-two"),
    ],
)  # fmt: skip
def test_check_host(
    lines: tuple[str, ...], forwarded_host: str | None, expected: HostPort | str
) -> None:
    verdict = check_host(lines, ALLOWED, forwarded_host=forwarded_host)
    if isinstance(expected, HostPort):
        assert (verdict.host, verdict.reason) == (expected, "")
    else:
        assert (verdict.host, verdict.reason) == (None, expected)


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
    ("value", "expected"),
    [
        pytest.param('for="_gazonk"', ({"for": "_gazonk"},), id="rfc-obfuscated"),
        pytest.param('For="[2001:db8:cafe::17]:4711"', ({"for": "[2001:db8:cafe::17]:4711"},),
                     id="rfc-ipv6-name-case"),
        pytest.param("for=192.0.2.60;proto=http;by=203.0.113.43",
                     ({"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"},),
                     id="rfc-pairs"),
        pytest.param("for=192.0.2.43, for=198.51.100.17",
                     ({"for": "192.0.2.43"}, {"for": "198.51.100.17"}), id="rfc-list"),
        pytest.param('for=a; proto=https ,, for="b\\"c"',
                     ({"for": "a", "proto": "https"}, {"for": 'b"c'}), id="lenient-ows-empty"),
        pytest.param("", (), id="empty"),
        pytest.param("for", None, id="no-equals"),
        pytest.param("for=", None, id="no-value"),
        pytest.param("for = a", None, id="space-around-equals"),
        pytest.param("for=a b", None, id="two-tokens"),
        pytest.param('for="a', None, id="unterminated-quote"),
        pytest.param("for=[::1]", None, id="unquoted-ipv6"),
        pytest.param("for=a;for=b", None, id="duplicate-parameter"),
        pytest.param('for="a"x', None, id="junk-after-quote"),
    ],
)  # fmt: skip
def test_parse_forwarded(value: str, expected: tuple[dict[str, str], ...] | None) -> None:
    assert parse_forwarded(value) == expected


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


# --- the HTTPS URL of a redirect --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_path", "path", "query", "port", "expected"),
    [
        pytest.param(b"/a/b", "/a/b", b"x=1&y=%2F", 443, b"https://bank.example/a/b?x=1&y=%2F",
                     id="path-and-query"),
        pytest.param(b"//evil.com/x", "//evil.com/x", b"", 443, b"https://bank.example//evil.com/x",
                     id="protocol-relative-path-keeps-authority"),
        pytest.param(b"/\\evil.com", "/\\evil.com", b"", 443, b"https://bank.example/%5Cevil.com",
                     id="backslash"),
        pytest.param(b"/a%0d%0aSet-Cookie:x", "/a\r\nSet-Cookie:x", b"", 443,
                     b"https://bank.example/a%0d%0aSet-Cookie:x", id="encoded-crlf-kept-encoded"),
        pytest.param(b"/a\r\nb c", "/a\r\nb c", b"q=a b#c", 443,
                     b"https://bank.example/a%0D%0Ab%20c?q=a%20b%23c", id="raw-controls-encoded"),
        pytest.param(b"/p?q=1", "/p", b"q=1", 443, b"https://bank.example/p?q=1",
                     id="query-in-raw-path-cut"),
        pytest.param(b"/", "/", b"", 8443, b"https://bank.example:8443/", id="port"),
        pytest.param(b"*", "*", b"", 443, b"https://bank.example/", id="asterisk-form"),
        pytest.param(b"http://evil.com/x", "http://evil.com/x", b"", 443,
                     b"https://bank.example/", id="absolute-form"),
        pytest.param(None, "/caf\xe9 50%", b"", 443, b"https://bank.example/caf%C3%A9%2050%25",
                     id="decoded-path-encoded"),
        pytest.param(b"/\xff", "/\xff", b"\xfe", 443, b"https://bank.example/%FF?%FE",
                     id="non-ascii-bytes"),
    ],
)  # fmt: skip
def test_build_https_url(
    raw_path: bytes | None, path: str, query: bytes, port: int, expected: bytes
) -> None:
    url = build_https_url("bank.example", port, raw_path=raw_path, path=path, query_string=query)
    assert url == expected
    assert urlsplit(url.decode()).hostname == "bank.example"


def test_build_https_url_ipv6_host() -> None:
    url = build_https_url("[::1]", 8443, raw_path=b"/", path="/")
    assert url == b"https://[::1]:8443/"
