"""The pure cores: rate parsing, bucket keys, header rendering, login backoff,
login body parsing, what counts toward a ban, settings validation."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.exceptions import ConfigurationError
from bastion.ratelimit import RateLimitSettings, parse_rate
from bastion.ratelimit.headers import policy_value, ratelimit_value, retry_after_value, sf_string
from bastion.ratelimit.jail import counts_toward_ban
from bastion.ratelimit.keys import ClientGrouping, client_key, client_network, hash_part
from bastion.ratelimit.login import LoginPolicy, account_from_body, delay_after_failure
from bastion.ratelimit.rates import MAX_COUNT, Rate
from bastion.ratelimit.reasons import REASON_LOGIN_LOCKED, REASON_LOGIN_THROTTLED
from bastion.stores import MAX_KEY_BYTES
from bastion.stores.gcra import GCRAResult

RATES = [
    ("100/minute", Rate(100, 60, 100)),
    ("1/second", Rate(1, 1, 1)),
    ("5/hour", Rate(5, 3600, 5)),
    ("100/day", Rate(100, 86400, 100)),
    ("10/30s", Rate(10, 30, 10)),
    (" 10 / 30 s ", Rate(10, 30, 10)),
    ("100/Minute; burst=20", Rate(100, 60, 20)),
    ("5/minute; key=api_key; name=login", Rate(5, 60, 5, "api_key", "login")),
]
BAD_RATES = [
    "100",
    "100/fortnight",
    "0/minute",
    "-1/minute",
    "10/0s",
    "10/999999999s",
    f"{MAX_COUNT + 1}/second",
    "1/minute; burst=0",
    "1/minute; burst=x",
    "1/minute; color=red",
    "1/minute; key=A B",
    "1/minute; burst=2; burst=3",
    "1/minute;",
    "1.5/minute",
]


@pytest.mark.parametrize(("text", "expected"), RATES, ids=[r[0] for r in RATES])
def test_parse_rate(text: str, expected: Rate) -> None:
    assert parse_rate(text) == expected
    assert parse_rate(str(expected)) == expected  # the canonical form parses back


@pytest.mark.parametrize("text", BAD_RATES)
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


@given(
    count=st.integers(1, MAX_COUNT),
    period=st.integers(1, 7 * 86400),
    burst=st.integers(1, MAX_COUNT),
)
def test_rate_round_trips_and_gives_a_gcra_limit(count: int, period: int, burst: int) -> None:
    text = f"{count}/{period}s; burst={burst}"
    if period * (burst - 1) / count > 365 * 86400:
        with pytest.raises(ValueError, match="a year"):
            parse_rate(text)
        return
    rate = parse_rate(text)
    assert (rate.count, rate.period_seconds, rate.burst) == (count, period, burst)
    assert parse_rate(str(rate)) == rate
    assert rate.gcra.burst == burst


@given(st.text(max_size=200))
def test_parse_rate_never_raises_anything_but_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_rate(text)


NETWORKS = [
    ("192.0.2.1", "192.0.2.1/32"),
    ("::ffff:192.0.2.1", "192.0.2.1/32"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    (None, "unknown"),
    ("", "unknown"),
]


@pytest.mark.parametrize(("host", "network"), NETWORKS)
def test_client_network(host: str | None, network: str) -> None:
    assert client_network(host) == network


@given(st.ip_addresses(), st.integers(8, 32), st.integers(16, 128))
def test_fast_client_key_groups_as_client_network(address: object, v4: int, v6: int) -> None:
    """The hot-path key and the readable network agree on who shares a bucket."""
    grouping = ClientGrouping(v4, v6)
    host = str(address)
    twin = client_network(host, grouping).split("/")[0]  # the network's first address
    assert (client_key(host, grouping) == client_key(twin, grouping)) is True
    assert client_key(host, grouping) != client_key(
        "192.0.2.1" if ":" in host else "::1", grouping
    ) or (
        client_network(host, grouping)
        == client_network("192.0.2.1" if ":" in host else "::1", grouping)
    )


def test_client_network_configurable_prefixes() -> None:
    grouping = ClientGrouping(ipv4_prefix=24, ipv6_prefix=48)
    assert client_network("192.0.2.77", grouping) == "192.0.2.0/24"
    assert client_network("2001:db8:1:2::1", grouping) == "2001:db8:1::/48"
    with pytest.raises(ValueError, match="ipv6_prefix"):
        ClientGrouping(ipv6_prefix=8)


def test_non_ip_host_is_hashed() -> None:
    assert client_network("testclient\r\nX: y").startswith("host:")
    assert "\n" not in client_network("testclient\r\nX: y")


@given(st.ip_addresses(v=6))
def test_ipv6_same_64_same_key(address: object) -> None:
    text = str(address)
    sibling = text.rsplit(":", 1)[0] + ":" + ("1" if not text.endswith(":1") else "2")
    if "::" in text or text.count(":") != 7:
        return  # only fully written addresses give a same-/64 sibling this simply
    assert client_key(text) == client_key(sibling)


@given(st.text(max_size=10_000))
def test_keys_are_bounded_and_printable(untrusted: str) -> None:
    part = hash_part(untrusted)
    assert len(part) == 32
    assert part.isalnum()
    key = client_key(untrusted)
    assert len(key.encode()) < MAX_KEY_BYTES
    assert key.isprintable()


def _result(remaining: int, reset: float, retry: float = 0.0) -> GCRAResult:
    return GCRAResult(retry == 0.0, 0, remaining, retry, reset)


def test_header_rendering() -> None:
    rates = [parse_rate("100/minute; name=burst"), parse_rate("1000/day; name=daily")]
    assert policy_value(rates) == b'"burst";q=100;w=60, "daily";q=1000;w=86400'
    assert ratelimit_value(rates, [_result(42, 16.2), _result(999, 86.0)]) == (
        b'"burst";r=42;t=17, "daily";r=999;t=86'
    )
    assert policy_value([parse_rate("5/30s")]) == b'"5-per-30s";q=5;w=30'


@pytest.mark.parametrize(
    ("seconds", "value"), [(0.0, b"1"), (0.2, b"1"), (1.0, b"1"), (1.01, b"2")]
)
def test_retry_after_rounds_up(seconds: float, value: bytes) -> None:
    assert retry_after_value(seconds) == value


def test_sf_string_escapes_and_refuses_controls() -> None:
    assert sf_string('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(ValueError, match="printable"):
        sf_string("a\nb")


BACKOFF = [
    (1, REASON_LOGIN_THROTTLED, 1.0),
    (2, REASON_LOGIN_THROTTLED, 2.0),
    (3, REASON_LOGIN_THROTTLED, 4.0),
    (4, REASON_LOGIN_THROTTLED, 8.0),
    (5, REASON_LOGIN_LOCKED, 900.0),
    (500, REASON_LOGIN_LOCKED, 900.0),
]


@pytest.mark.parametrize(("failures", "reason", "delay"), BACKOFF)
def test_login_backoff_then_lockout(failures: int, reason: str, delay: float) -> None:
    assert delay_after_failure(failures, LoginPolicy()) == (reason, delay)


def test_login_backoff_is_capped() -> None:
    policy = LoginPolicy(lockout_after=100, challenge_after=200, max_delay_seconds=30.0)
    assert delay_after_failure(99, policy) == (REASON_LOGIN_THROTTLED, 30.0)


def test_login_policy_validation() -> None:
    with pytest.raises(ValueError, match="higher"):
        LoginPolicy(lockout_after=5, challenge_after=5)


BODIES = [
    (b"username=Alice&password=x", b"application/x-www-form-urlencoded", "Alice"),
    (b'{"username": "bob", "password": "x"}', b"application/json; charset=utf-8", "bob"),
    (b'{"username": 5}', b"application/json", ""),
    (b"[1, 2]", b"application/json", ""),
    (b"{", b"application/json", ""),
    (b"username=a", b"text/plain", ""),
    (b"\xff", b"application/x-www-form-urlencoded", ""),
    (b"&".join(b"f%d=1" % i for i in range(500)), b"application/x-www-form-urlencoded", ""),
    (b"[" * 5000 + b"]" * 5000, b"application/json", ""),
]


@pytest.mark.parametrize(("body", "content_type", "account"), BODIES)
def test_account_from_body(body: bytes, content_type: bytes, account: str) -> None:
    assert account_from_body(body, content_type, "username") == account


@pytest.mark.parametrize(
    ("record", "counts"),
    [
        ({"action": "blocked", "kind": "malicious_csrf", "reason": "x", "client": "1.2.3.4"}, True),
        (
            {"action": "monitored", "kind": "malicious_csrf", "reason": "x", "client": "1.2.3.4"},
            False,
        ),
        (
            {"action": "blocked", "kind": "sys_availability", "reason": "x", "client": "1.2.3.4"},
            False,
        ),
        (
            {
                "action": "blocked",
                "kind": "excess_rate_limit_exceeded",
                "reason": "banned",
                "client": "1.2.3.4",
            },
            False,
        ),
        ({"action": "blocked", "kind": "malicious_csrf", "reason": "x"}, False),
        (
            {
                "action": "blocked",
                "kind": "input_validation_fail",
                "reason": "insecure-http",
                "status": 308,
                "client": "1.2.3.4",
            },
            False,
        ),
        (
            {
                "action": "blocked",
                "kind": "input_validation_fail",
                "reason": "host-not-allowed",
                "status": 400,
                "client": "1.2.3.4",
            },
            True,
        ),
    ],
)
def test_counts_toward_ban(record: dict[str, object], counts: bool) -> None:
    assert counts_toward_ban(record) is counts


def test_settings_defaults_and_validation() -> None:
    settings = RateLimitSettings()
    assert settings.limits == {"*": (parse_rate("600/minute"),)}
    assert settings.fail_open is True
    assert settings.login_routes == ()
    assert settings.model_dump(mode="json")["limits"] == {"*": ["600/60s"]}
    parsed = RateLimitSettings(limits={"POST /login": ["5/minute", "100/day"]})
    assert [r.count for r in parsed.limits["POST /login"]] == [5, 100]
    bad_settings: tuple[dict[str, object], ...] = (
        {"limits": {"login": ["5/minute"]}},
        {"limits": {"*": ["5/fortnight"]}},
        {"concurrency": {"/x": 0}},
        {"login_routes": ("POST login",)},
        {"login_lockout_after": 30},
        {"api_key_header": "x key"},
        {"limitz": {}},
    )
    for bad in bad_settings:
        with pytest.raises(ValidationError):
            RateLimitSettings.model_validate(bad)


def test_unknown_key_function_is_a_configuration_error() -> None:
    from bastion.ratelimit import RateLimitMiddleware
    from tests.support.apps import raw_app

    with pytest.raises(ConfigurationError, match="tenant"):
        RateLimitMiddleware(raw_app, RateLimitSettings(limits={"*": ["1/second; key=tenant"]}))
