"""Allowed hosts: patterns, `check_host`, and the `Host` header the app is given."""

from __future__ import annotations

import pytest

from bastion.hosts import HostPort
from bastion.transport import (
    LOCAL_HOSTS,
    REASON_HOST_MALFORMED,
    REASON_HOST_MISSING,
    REASON_HOST_MULTIPLE,
    REASON_HOST_NOT_ALLOWED,
    AllowedHosts,
    check_host,
    parse_host_pattern,
    with_host_header,
)

# --- patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("bank.example", "bank.example", id="name"),
        pytest.param("Bank.EXAMPLE.", "bank.example", id="name-case-and-root-dot"),
        pytest.param("*.Bank.example", "*.bank.example", id="wildcard"),
        pytest.param("*.example.com", "*.example.com", id="wildcard-two-labels-ok"),
        pytest.param("*.co.uk", "*.co.uk", id="wildcard-public-suffix-not-covered"),
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
        pytest.param("*.com", id="host-wildcard-tld"),
        pytest.param("*.COM.", id="host-wildcard-tld-root-dot"),
        pytest.param("*.localhost", id="host-wildcard-single-label"),
        pytest.param("::1", id="ipv6-unbracketed"),
        pytest.param("", id="empty"),
        pytest.param(" bank.example", id="space"),
    ],
)
def test_host_pattern_refused(text: str) -> None:
    with pytest.raises(ValueError, match="allowed_hosts"):
        parse_host_pattern(text)


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


# --- with_host_header: the app's Host once a trusted proxy named the host --------------

BANK = HostPort("bank.example", None)


@pytest.mark.parametrize(
    ("headers", "host", "expected"),
    [
        pytest.param([(b"host", b"evil.example"), (b"accept", b"*/*")], BANK,
                     [(b"host", b"bank.example"), (b"accept", b"*/*")], id="raw-host-replaced"),
        pytest.param([(b"accept", b"*/*"), (b"Host", b"backend:8000")],
                     HostPort("api.bank.example", 8443),
                     [(b"accept", b"*/*"), (b"host", b"api.bank.example:8443")],
                     id="port-kept-in-place"),
        pytest.param([(b"host", b"backend")], HostPort("[2001:db8::1]", 8443),
                     [(b"host", b"[2001:db8::1]:8443")], id="ipv6"),
        pytest.param([(b"accept", b"*/*")], BANK,
                     [(b"host", b"bank.example"), (b"accept", b"*/*")], id="missing-host-added"),
        pytest.param([(b"host", b"a"), (b"x", b"1"), (b"host", b"b")], BANK,
                     [(b"host", b"bank.example"), (b"x", b"1")], id="one-host-line-only"),
    ],
)  # fmt: skip
def test_with_host_header(
    headers: list[tuple[bytes, bytes]], host: HostPort, expected: list[tuple[bytes, bytes]]
) -> None:
    original = list(headers)
    assert with_host_header(headers, host) == expected
    assert headers == original  # a new list: the server's scope keeps what it saw
