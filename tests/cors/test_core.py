"""The pure CORS core: origin rules, origin and preflight decisions, header rewriting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.cors import (
    REASON_HEADER_NOT_ALLOWED,
    REASON_MALFORMED_ORIGIN,
    REASON_METHOD_NOT_ALLOWED,
    REASON_NULL_ORIGIN,
    REASON_ORIGIN_NOT_ALLOWED,
    REASON_PRIVATE_NETWORK_NOT_ALLOWED,
    CORSPolicy,
    CORSSettings,
    OriginPattern,
    PreflightRequest,
    check_origin,
    check_preflight,
    compile_policy,
    parse_header_names,
    parse_origin_rule,
    rewrite_headers,
)
from bastion.hosts import Origin, parse_origin

POLICY = compile_policy(
    CORSSettings(
        allow_origins=(
            "https://app.example",
            "http://localhost:3000",
            "https://*.example.com",
            "https://*.tenant.example:8443",
        ),
        allow_methods=("GET", "POST", "PUT", "patch"),
        allow_headers=("content-type", "X-Requested-With"),
    )
)


# --- parse_origin_rule -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://app.example", Origin("https", "app.example", 443)),
        ("HTTPS://App.Example:443", Origin("https", "app.example", 443)),
        ("http://localhost:3000", Origin("http", "localhost", 3000)),
        ("https://[::1]:8443", Origin("https", "[::1]", 8443)),
        ("https://*.example.com", OriginPattern("https", "example.com", 443)),
        ("https://*.Example.com.:8443", OriginPattern("https", "example.com", 8443)),
        ("http://*.a.b.example", OriginPattern("http", "a.b.example", 80)),
    ],
)
def test_parse_origin_rule_accepts(text: str, expected: object) -> None:
    assert parse_origin_rule(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("null", "never allowed", id="null"),
        pytest.param("*", "insecure_allow_any_origin", id="star"),
        pytest.param("app.example", "must start with", id="no-scheme"),
        pytest.param("*.com", "must start with", id="bare-pattern"),
        pytest.param("ftp://app.example", "must start with", id="ftp"),
        pytest.param("ws://app.example", "must start with", id="ws"),
        pytest.param("https://app.example/", "path", id="trailing-slash"),
        pytest.param("https://app.example/api", "path", id="path"),
        pytest.param("https://app.example?q=1", "query", id="query"),
        pytest.param("https://app.example#f", "fragment", id="fragment"),
        pytest.param("https://app.example\\x", "path", id="backslash"),
        pytest.param("https://user@app.example", "userinfo", id="userinfo"),
        pytest.param("https://app example", "not a valid origin", id="space"),
        pytest.param("https://app.example:0", "not a valid origin", id="port-zero"),
        pytest.param("https://app.example:65536", "not a valid origin", id="port-high"),
        pytest.param("https://*.com", "top-level domain", id="tld"),
        pytest.param("https://*.localhost", "top-level domain", id="single-label"),
        pytest.param("https://*example.com", "whole leftmost label", id="partial-left"),
        pytest.param("https://example.*", "whole leftmost label", id="wildcard-tld"),
        pytest.param("https://a.*.example.com", "whole leftmost label", id="middle"),
        pytest.param("https://*.*.example.com", "whole leftmost label", id="double"),
        pytest.param("https://**.example.com", "whole leftmost label", id="double-star"),
        pytest.param("https://*.10.0.0", "IP address", id="ipv4"),
        pytest.param("https://*.[::1]", "IP address", id="ipv6"),
        pytest.param("https://*.", "not a valid origin pattern", id="empty-suffix"),
    ],
)
def test_parse_origin_rule_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_origin_rule(text)


def test_pattern_serialisation_round_trips() -> None:
    for text in ("https://*.example.com", "http://*.example.com:8080"):
        rule = parse_origin_rule(text)
        assert rule.serialise() == text
        assert parse_origin_rule(rule.serialise()) == rule


# --- check_origin ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("untrusted_origin", "allowed", "reason"),
    [
        (b"https://app.example", True, ""),
        (b"https://app.example:443", True, ""),
        (b"http://localhost:3000", True, ""),
        (b"https://api.example.com", True, ""),
        (b"https://a.b.example.com", True, ""),
        (b"https://x.tenant.example:8443", True, ""),
        (b"https://example.com", False, REASON_ORIGIN_NOT_ALLOWED),
        (b"https://example.com.evil.net", False, REASON_ORIGIN_NOT_ALLOWED),
        (b"https://evilexample.com", False, REASON_ORIGIN_NOT_ALLOWED),
        (b"https://app.example.evil.net", False, REASON_ORIGIN_NOT_ALLOWED),
        (b"https://evilapp.example", False, REASON_ORIGIN_NOT_ALLOWED),
        (b"http://app.example", False, REASON_ORIGIN_NOT_ALLOWED),
        (b"http://api.example.com", False, REASON_ORIGIN_NOT_ALLOWED),
        (b"https://app.example:8443", False, REASON_ORIGIN_NOT_ALLOWED),
        (b"https://api.example.com:8443", False, REASON_ORIGIN_NOT_ALLOWED),
        (b"https://x.tenant.example", False, REASON_ORIGIN_NOT_ALLOWED),
        (b"http://localhost:3001", False, REASON_ORIGIN_NOT_ALLOWED),
        (b"null", False, REASON_NULL_ORIGIN),
        (b"", False, REASON_MALFORMED_ORIGIN),
        (b"NULL", False, REASON_MALFORMED_ORIGIN),
        (b"https://app.example/", False, REASON_MALFORMED_ORIGIN),
        (b"https://app.example, https://evil.net", False, REASON_MALFORMED_ORIGIN),
        (b"https://evil.net@app.example", False, REASON_MALFORMED_ORIGIN),
        (b"https://app.example\r\nx: y", False, REASON_MALFORMED_ORIGIN),
        (b"wss://app.example", False, REASON_MALFORMED_ORIGIN),
        (b"chrome-extension://abcdef", False, REASON_MALFORMED_ORIGIN),
        (b"https://\xc3\xa4pp.example", False, REASON_MALFORMED_ORIGIN),
    ],
)
def test_check_origin(untrusted_origin: bytes, allowed: bool, reason: str) -> None:
    verdict = check_origin(untrusted_origin, POLICY)
    assert (verdict.allowed, verdict.reason) == (allowed, reason)


def test_default_policy_allows_no_origin() -> None:
    policy = compile_policy(CORSSettings())
    assert check_origin(b"https://app.example", policy).reason == REASON_ORIGIN_NOT_ALLOWED


def test_any_origin_still_refuses_null_and_garbage() -> None:
    policy = CORSPolicy(allow_any_origin=True)
    assert check_origin(b"https://anything.example", policy).allowed
    assert check_origin(b"null", policy).reason == REASON_NULL_ORIGIN
    assert check_origin(b"file://", policy).reason == REASON_MALFORMED_ORIGIN


# --- check_preflight -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "private_network", "reason"),
    [
        (b"PUT", None, False, ""),
        (b"GET", b"content-type", False, ""),
        (b"patch", b"Content-Type, X-Requested-With", False, ""),
        (b"POST", b"accept,accept-language,content-language", False, ""),
        (b"POST", b"", False, ""),
        (b"POST", b" content-type ,, x-requested-with", False, ""),
        (b"DELETE", None, False, REASON_METHOD_NOT_ALLOWED),
        (b"PATCH", None, False, REASON_METHOD_NOT_ALLOWED),  # case-sensitive
        (b"put", None, False, REASON_METHOD_NOT_ALLOWED),
        (b"HEAD", None, False, REASON_METHOD_NOT_ALLOWED),
        (b"PUT, GET", None, False, REASON_METHOD_NOT_ALLOWED),
        (b"", None, False, REASON_METHOD_NOT_ALLOWED),
        (b"POST", b"authorization", False, REASON_HEADER_NOT_ALLOWED),
        (b"POST", b"content-type, x-evil", False, REASON_HEADER_NOT_ALLOWED),
        (b"POST", b"range", False, REASON_HEADER_NOT_ALLOWED),
        (b"POST", b"content type", False, REASON_HEADER_NOT_ALLOWED),
        (b"POST", b"*", False, REASON_HEADER_NOT_ALLOWED),
        (b"POST", None, True, REASON_PRIVATE_NETWORK_NOT_ALLOWED),
    ],
)
def test_check_preflight(
    method: bytes, headers: bytes | None, private_network: bool, reason: str
) -> None:
    request = PreflightRequest(b"https://app.example", method, headers, private_network)
    verdict = check_preflight(request, POLICY)
    assert (verdict.allowed, verdict.reason) == (reason == "", reason)


def test_preflight_checks_origin_first() -> None:
    request = PreflightRequest(b"https://evil.net", b"DELETE", b"x-evil", True)
    assert check_preflight(request, POLICY).reason == REASON_ORIGIN_NOT_ALLOWED
    request = PreflightRequest(b"null", b"GET")
    assert check_preflight(request, POLICY).reason == REASON_NULL_ORIGIN


def test_preflight_private_network_granted_when_allowed() -> None:
    policy = compile_policy(
        CORSSettings(allow_origins=("https://app.example",), allow_private_network=True)
    )
    request = PreflightRequest(b"https://app.example", b"GET", None, True)
    assert check_preflight(request, policy).allowed


def test_parse_header_names() -> None:
    assert parse_header_names(b"X-A, x-b,\tx-c") == ("x-a", "x-b", "x-c")
    assert parse_header_names(b"") == ()
    assert parse_header_names(b"x-a, b@d") is None


# --- rewrite_headers -------------------------------------------------------------

GRANT = ((b"access-control-allow-origin", b"https://app.example"),)


@pytest.mark.parametrize(
    ("app_headers", "expected"),
    [
        pytest.param([], [(b"vary", b"Origin")], id="no-vary"),
        pytest.param(
            [(b"vary", b"Accept-Encoding")], [(b"vary", b"Accept-Encoding, Origin")], id="append"
        ),
        pytest.param([(b"Vary", b"origin")], [(b"Vary", b"origin")], id="already-origin"),
        pytest.param([(b"vary", b"Cookie, ORIGIN")], [(b"vary", b"Cookie, ORIGIN")], id="listed"),
        pytest.param([(b"vary", b"*")], [(b"vary", b"*")], id="star"),
        pytest.param([(b"vary", b"")], [(b"vary", b"Origin")], id="empty"),
        pytest.param(
            [(b"vary", b"Accept"), (b"x", b"1"), (b"vary", b"Cookie")],
            [(b"vary", b"Accept"), (b"x", b"1"), (b"vary", b"Cookie, Origin")],
            id="several-lines",
        ),
        pytest.param(
            [
                (b"Access-Control-Allow-Origin", b"*"),
                (b"access-control-allow-credentials", b"true"),
            ],
            [(b"vary", b"Origin")],
            id="app-cors-removed",
        ),
    ],
)
def test_rewrite_headers(
    app_headers: list[tuple[bytes, bytes]], expected: list[tuple[bytes, bytes]]
) -> None:
    assert rewrite_headers(app_headers, ()) == expected
    assert rewrite_headers(app_headers, GRANT) == [*expected, *GRANT]


def test_rewrite_headers_can_keep_app_cors() -> None:
    app_headers = [(b"access-control-allow-origin", b"*")]
    assert rewrite_headers(app_headers, (), keep_app_cors=True) == [
        *app_headers,
        (b"vary", b"Origin"),
    ]


# --- Properties ------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_hosts = st.lists(_label, min_size=1, max_size=5).map(".".join) | st.sampled_from(
    [
        "example.com",
        "evilexample.com",
        "example.com.evil.net",
        "a.example.com",
        "a.example.com.evil.net",
        "xexample.com",
        "example.co",
        "example.comm",
    ]
)
_origins = st.builds(
    Origin,
    scheme=st.sampled_from(["http", "https"]),
    host=_hosts,
    port=st.sampled_from([80, 443, 8443]) | st.integers(1, 65535),
)
_PATTERN_POLICY = compile_policy(CORSSettings(allow_origins=("https://*.example.com",)))
_EXACT_POLICY = compile_policy(CORSSettings(allow_origins=("https://app.example",)))
_EXACT = Origin("https", "app.example", 443)


@given(_origins)
def test_pattern_matches_only_whole_labels_below_the_suffix(origin: Origin) -> None:
    verdict = check_origin(origin.serialise().encode(), _PATTERN_POLICY)
    expected = (
        origin.scheme == "https"
        and origin.port == 443
        and origin.host.endswith(".example.com")
        and len(origin.host) > len(".example.com")
    )
    assert verdict.allowed == expected
    if not origin.host.endswith(".example.com"):
        assert not verdict.allowed


@given(_origins)
def test_exact_origin_matches_only_itself(origin: Origin) -> None:
    verdict = check_origin(origin.serialise().encode(), _EXACT_POLICY)
    assert verdict.allowed == (origin == _EXACT)


@given(st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
def test_any_allowed_value_parses_to_a_configured_origin(untrusted: bytes) -> None:
    verdict = check_origin(untrusted, _EXACT_POLICY)
    if verdict.allowed:
        assert parse_origin(untrusted) == _EXACT
        assert verdict.origin == _EXACT
