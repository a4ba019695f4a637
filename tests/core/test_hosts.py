from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.hosts import HostPort, Origin, is_loopback_host, parse_host_header, parse_origin


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.com", HostPort("example.com", None)),
        ("Example.COM.", HostPort("example.com", None)),
        ("example.com:8443", HostPort("example.com", 8443)),
        ("127.0.0.1:80", HostPort("127.0.0.1", 80)),
        ("[::1]", HostPort("[::1]", None)),
        ("[0:0:0:0:0:0:0:1]:8000", HostPort("[::1]", 8000)),
        ("_srv.example", HostPort("_srv.example", None)),
    ],
)
def test_valid_hosts(value: str, expected: HostPort) -> None:
    assert parse_host_header(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="host-empty"),
        pytest.param("x/health?", id="host-path-chars"),
        pytest.param("a.example@evil.example", id="host-userinfo"),
        pytest.param("a.example:0", id="host-port-zero"),
        pytest.param("a.example:65536", id="host-port-too-big"),
        pytest.param("a.example:+80", id="host-port-sign"),
        pytest.param("a.example:\uff18\uff10", id="host-port-unicode-digits"),
        pytest.param("a.example:", id="host-port-empty"),
        pytest.param("a..example", id="host-empty-label"),
        pytest.param("-a.example", id="host-label-hyphen"),
        pytest.param("exämple.com", id="host-non-ascii"),
        pytest.param("a example", id="host-space"),
        pytest.param("a\r\nb", id="host-crlf"),
        pytest.param("[::1", id="host-ipv6-unclosed"),
        pytest.param("[::1]x", id="host-ipv6-trailing"),
        pytest.param("[zz::1]", id="host-ipv6-invalid"),
        pytest.param("a" * 64 + ".example", id="host-label-too-long"),
        pytest.param("a.b:80:80", id="host-two-ports"),
    ],
)
def test_malformed_hosts_are_refused(value: str) -> None:
    assert parse_host_header(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://a.example", Origin("https", "a.example", 443)),
        ("HTTPS://A.example:443", Origin("https", "a.example", 443)),
        ("http://localhost:8000", Origin("http", "localhost", 8000)),
        ("http://[::1]:8000", Origin("http", "[::1]", 8000)),
    ],
)
def test_valid_origins(value: str, expected: Origin) -> None:
    assert parse_origin(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "null",
        "https://a.example/",
        "https://a.example/path",
        "ftp://a.example",
        "a.example",
        "https://user@a.example",
        "https://",
        "https://a.example?x",
        "javascript://a.example",
    ],
)
def test_invalid_origins(value: str) -> None:
    assert parse_origin(value) is None


@given(st.text(max_size=40))
def test_parsing_is_idempotent(value: str) -> None:
    parsed = parse_host_header(value)
    if parsed is not None:
        again = parse_host_header(parsed.host + (f":{parsed.port}" if parsed.port else ""))
        assert again == parsed


@given(st.from_regex(r"[a-z]{1,10}(\.[a-z]{1,10}){0,3}", fullmatch=True), st.integers(1, 65535))
def test_origin_round_trip(host: str, port: int) -> None:
    origin = parse_origin(f"https://{host}:{port}")
    assert origin is not None
    assert parse_origin(origin.serialise()) == origin


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("localhost", True, id="loopback-localhost"),
        pytest.param("LOCALHOST", True, id="loopback-localhost-upper-case"),
        pytest.param("app.localhost", True, id="loopback-under-localhost"),
        pytest.param("127.0.0.2", True, id="loopback-ipv4"),
        pytest.param("[::1]", True, id="loopback-ipv6-bracketed"),
        pytest.param("::1", True, id="loopback-ipv6"),
        # The same answer on every Python: 3.13's `is_loopback` says yes to an
        # IPv4-mapped loopback, 3.11's said no.
        pytest.param("::ffff:127.0.0.1", True, id="loopback-ipv4-mapped"),
        pytest.param("[::ffff:7f00:1]", True, id="loopback-ipv4-mapped-hex-bracketed"),
        pytest.param("::ffff:10.0.0.1", False, id="not-loopback-ipv4-mapped-private"),
        pytest.param("localhost.evil.example", False, id="not-loopback-localhost-prefix"),
        pytest.param("evillocalhost", False, id="not-loopback-localhost-suffix-no-dot"),
        pytest.param("10.0.0.1", False, id="not-loopback-private"),
        pytest.param("", False, id="not-loopback-empty"),
    ],
)
def test_is_loopback_host(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected
