"""The pure core: address parsing and classification, target checks, settings."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.outbound import (
    OutboundBlocked,
    OutboundSettings,
    Target,
    check_addresses,
    check_target,
    classify_address,
    embedded_ipv4,
    parse_ip_literal,
)
from bastion.sections import opt_outs

SPELLINGS = [
    pytest.param("127.0.0.1", "127.0.0.1", id="dotted"),
    pytest.param("2130706433", "127.0.0.1", id="decimal"),
    pytest.param("0177.0.0.1", "127.0.0.1", id="octal"),
    pytest.param("0177.1", "127.0.0.1", id="octal-short"),
    pytest.param("0x7f.1", "127.0.0.1", id="hex-short"),
    pytest.param("0x7F000001", "127.0.0.1", id="hex-whole"),
    pytest.param("127.1", "127.0.0.1", id="short"),
    pytest.param("10.1", "10.0.0.1", id="short-private"),
    pytest.param("0", "0.0.0.0", id="zero"),
    pytest.param("::1", "::1", id="ipv6"),
    pytest.param("[::ffff:127.0.0.1]", "::ffff:7f00:1", id="ipv6-bracketed"),
    pytest.param("[::ffff:7f00:1]", "::ffff:127.0.0.1", id="ipv6-mapped-in-hex"),
    pytest.param("example.com", None, id="name"),
    pytest.param("1e3", None, id="not-a-number"),
    pytest.param("127.0.0.1 x", None, id="trailing-garbage"),
    pytest.param("08.1", None, id="bad-octal"),
    pytest.param("1.2.3.4.5", None, id="five-parts"),
]


@pytest.mark.parametrize(("host", "expected"), SPELLINGS)
def test_parse_ip_literal(host: str, expected: str | None) -> None:
    # Compared as addresses: how `str()` spells one is the version's business
    # (3.13 prints an IPv4-mapped address as `::ffff:127.0.0.1`, 3.11 as `::ffff:7f00:1`).
    parsed = parse_ip_literal(host)
    assert parsed == (ipaddress.ip_address(expected) if expected else None)


@given(st.integers(0, 2**32 - 1))
def test_numeric_forms_agree_with_the_resolver(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    a, b, c, d = address.packed
    for spelling in (
        str(value),
        hex(value),
        oct(value).replace("0o", "0"),
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"{a}.{b}.{(c << 8) | d}",
        f"0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}",
    ):
        assert parse_ip_literal(spelling) == address
        assert socket.inet_aton(spelling) == address.packed


CLASSES = [
    ("127.0.0.1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.0.1", "private"),
    ("100.64.0.1", "shared-address-space"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "cloud-metadata"),
    ("169.254.170.2", "cloud-metadata"),
    ("168.63.129.16", "cloud-metadata"),
    ("100.100.100.200", "cloud-metadata"),
    ("0.0.0.0", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("224.0.0.251", "multicast"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.1", "documentation"),
    ("198.19.0.1", "benchmarking"),
    ("8.8.8.8", ""),
    ("93.184.215.14", ""),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:8.8.8.8", ""),
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::808:808", ""),
    ("64:ff9b:1::1", "reserved"),
    ("2002:7f00:1::", "loopback"),
    ("2002:a9fe:a9fe::", "cloud-metadata"),
    ("2002:808:808::1", ""),
    ("fd00:ec2::254", "cloud-metadata"),
    ("fd12::1", "private"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("2001::1", "reserved"),  # Teredo
    ("::127.0.0.1", "reserved"),  # deprecated IPv4-compatible
    ("100::1", "reserved"),  # discard-only
    ("fec0::1", "reserved"),  # deprecated site-local
    ("2606:4700:4700::1111", ""),
]


@pytest.mark.parametrize(("address", "reason"), [pytest.param(a, r, id=a) for a, r in CLASSES])
def test_classify_address(address: str, reason: str) -> None:
    assert classify_address(ipaddress.ip_address(address)) == reason


BLOCKED_V4 = st.sampled_from(
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
    ]
).flatmap(
    lambda net: st.integers(0, ipaddress.IPv4Network(net).num_addresses - 1).map(
        lambda i: ipaddress.IPv4Network(net)[i]
    )
)


@given(BLOCKED_V4)
def test_blocked_ipv4_is_blocked_in_every_ipv6_wrapping(address: ipaddress.IPv4Address) -> None:
    value = int(address)
    wrapped = [
        ipaddress.IPv6Address(f"::ffff:{address}"),
        ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | value),
        ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | 1),
    ]
    assert classify_address(address) != ""
    for v6 in wrapped:
        assert embedded_ipv4(v6) == address
        assert classify_address(v6) == classify_address(address)


@given(st.integers(0, 2**128 - 1))
def test_ipv6_outside_global_unicast_is_never_public(value: int) -> None:
    address = ipaddress.IPv6Address(value)
    if classify_address(address) == "":
        assert address in ipaddress.IPv6Network("2000::/3") or embedded_ipv4(address) is not None
        assert address.is_global


def target(host: str, port: int | None = None, **settings: object) -> Target:
    return check_target("https", host, port, OutboundSettings.model_validate(settings))


def test_check_target() -> None:
    assert target("Example.COM.") == Target("https", "example.com", 443, None)
    assert target("8.8.8.8").literal == ipaddress.ip_address("8.8.8.8")
    with pytest.raises(OutboundBlocked, match="scheme-not-allowed"):
        check_target("http", "example.com", None, OutboundSettings())
    assert check_target("http", "a.b", None, OutboundSettings(insecure_allow_http=True)).port == 80
    with pytest.raises(OutboundBlocked, match="port-not-allowed"):
        target("example.com", 8443)
    assert target("example.com", 8443, allowed_ports=[8443]).port == 8443


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.example.com", True),
        ("deep.api.example.com", True),
        ("example.com", False),
        ("evil-example.com", False),
        ("example.com.evil.net", False),
        ("other.org", True),
        ("sub.other.org", False),
    ],
)
def test_allowed_hosts(host: str, allowed: bool) -> None:
    patterns = ["*.example.com", "Other.Org."]
    if allowed:
        assert target(host, allowed_hosts=patterns).host == host
    else:
        with pytest.raises(OutboundBlocked, match="host-not-allowed"):
            target(host, allowed_hosts=patterns)


def test_check_addresses_all_must_pass() -> None:
    settings = OutboundSettings()
    good = Target("https", "x.test", 443, None)
    check_addresses(good, [ipaddress.ip_address("8.8.8.8")], settings)
    with pytest.raises(OutboundBlocked) as caught:
        check_addresses(good, [ipaddress.ip_address(a) for a in ("8.8.8.8", "10.0.0.1")], settings)
    assert (caught.value.reason, caught.value.address) == ("private", "10.0.0.1")
    with pytest.raises(OutboundBlocked, match="no-address"):
        check_addresses(good, [], settings)


def test_allowed_networks_never_open_metadata() -> None:
    settings = OutboundSettings.model_validate(
        {"insecure_allowed_networks": ["169.254.0.0/16", "10.0.0.0/8", "::1"]}
    )
    t = Target("https", "x.test", 443, None)
    check_addresses(t, [ipaddress.ip_address("10.9.8.7"), ipaddress.ip_address("::1")], settings)
    with pytest.raises(OutboundBlocked, match="cloud-metadata"):
        check_addresses(t, [ipaddress.ip_address("169.254.169.254")], settings)


def test_settings_validation() -> None:
    for bad in (
        {"allowed_hosts": ["bad host"]},
        {"allowed_hosts": ["[::1]"]},
        {"allowed_ports": [0]},
        {"insecure_allowed_networks": ["10.0.0.1/8"]},  # host bits set: ambiguous
        {"insecure_allowed_networks": ["not-a-network"]},
        {"max_redirects": 50},
        {"max_response_bytes": 0},
        {"allow_private": True},
    ):
        with pytest.raises(ValidationError):
            OutboundSettings.model_validate(bad)


def test_opt_outs_are_named() -> None:
    settings = OutboundSettings.model_validate(
        {"insecure_allow_http": True, "insecure_allowed_networks": ["10.0.0.0/8"]}
    )
    assert opt_outs(settings) == ["insecure_allow_http", "insecure_allowed_networks"]
    assert opt_outs(OutboundSettings()) == []
