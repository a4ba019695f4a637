"""The pure CSRF decision: truth tables over `RequestFacts`, and fact extraction."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.context import get_context
from bastion.csrf import (
    REASON_CROSS_SITE,
    REASON_FETCH_SITE_MALFORMED,
    REASON_METHOD_OVERRIDE,
    REASON_NULL_ORIGIN,
    REASON_ORIGIN_MALFORMED,
    REASON_ORIGIN_MISMATCH,
    REASON_SAME_SITE,
    CSRFSettings,
    RequestFacts,
    Verdict,
    check_request,
    compile_policy,
)
from bastion.csrf.core import (
    UNSCANNED_OVERRIDE,
    names_unsafe_method,
    own_origin,
    query_overrides,
)
from bastion.hosts import Origin

OWN = Origin("https", "bank.example", 443)
POLICY = compile_policy(
    CSRFSettings(
        trusted_origins=("https://partner.example",),
        insecure_exempt_paths=("/hook/",),
    )
)
SAME_SITE_POLICY = compile_policy(CSRFSettings(insecure_allow_same_site=True))
NO_BEARER_POLICY = compile_policy(CSRFSettings(exempt_bearer_without_cookies=False))

ALLOW = "allow"
TOKEN = "token"


def facts(
    method: str = "POST",
    *,
    site: bytes | None = None,
    origin: bytes | None = None,
    path: str = "/transfer",
    overrides: tuple[bytes, ...] = (),
    bearer: bool = False,
    cookies: bool = True,
) -> RequestFacts:
    return RequestFacts(
        method=method,
        path=path,
        untrusted_fetch_site=site,
        untrusted_origin=origin,
        own_origin=OWN,
        method_overrides=overrides,
        has_bearer=bearer,
        has_cookies=cookies,
    )


def outcome(verdict: Verdict) -> str:
    if verdict.needs_token:
        assert not verdict.allowed
        return TOKEN
    return ALLOW if verdict.allowed else verdict.reason


DECISIONS = [
    # Safe methods.
    pytest.param(facts("GET", site=b"cross-site"), ALLOW, id="get-cross-site-ok"),
    pytest.param(facts("HEAD", site=b"cross-site"), ALLOW, id="head-cross-site-ok"),
    pytest.param(facts("OPTIONS", site=b"cross-site"), ALLOW, id="options-cross-site-ok"),
    pytest.param(facts("TRACE", site=b"cross-site"), ALLOW, id="trace-cross-site-ok"),
    pytest.param(facts("GET"), ALLOW, id="get-no-headers-ok"),
    pytest.param(
        facts("get", site=b"cross-site"), REASON_CROSS_SITE, id="lower-case-get-is-unsafe"
    ),
    # Every unsafe method is checked.
    pytest.param(facts("POST", site=b"cross-site"), REASON_CROSS_SITE, id="post-cross-site"),
    pytest.param(facts("PUT", site=b"cross-site"), REASON_CROSS_SITE, id="put-cross-site"),
    pytest.param(facts("PATCH", site=b"cross-site"), REASON_CROSS_SITE, id="patch-cross-site"),
    pytest.param(facts("DELETE", site=b"cross-site"), REASON_CROSS_SITE, id="delete-cross-site"),
    pytest.param(facts("PROPFIND", site=b"cross-site"), REASON_CROSS_SITE, id="webdav-cross-site"),
    # Fetch Metadata.
    pytest.param(facts(site=b"same-origin"), ALLOW, id="same-origin-ok"),
    pytest.param(facts(site=b"none"), ALLOW, id="sec-fetch-none-ok"),
    pytest.param(
        facts(site=b"same-origin", origin=b"https://evil.example"), ALLOW, id="metadata-wins"
    ),
    pytest.param(facts(site=b"same-site"), REASON_SAME_SITE, id="same-site"),
    pytest.param(
        facts(site=b"same-site", origin=b"https://evil.bank.example"),
        REASON_SAME_SITE,
        id="same-site-sibling",
    ),
    pytest.param(
        facts(site=b"cross-site", origin=b"https://partner.example"),
        ALLOW,
        id="cross-site-trusted-ok",
    ),
    pytest.param(
        facts(site=b"cross-site", origin=b"https://PARTNER.example:443"),
        ALLOW,
        id="cross-site-trusted-spelling-ok",
    ),
    pytest.param(
        facts(site=b"same-site", origin=b"https://partner.example"),
        ALLOW,
        id="same-site-trusted-ok",
    ),
    pytest.param(
        facts(site=b"cross-site", origin=b"http://partner.example"),
        REASON_CROSS_SITE,
        id="cross-site-trusted-scheme-downgrade",
    ),
    pytest.param(
        facts(site=b"cross-site", origin=b"https://partner.example:8443"),
        REASON_CROSS_SITE,
        id="cross-site-trusted-port-mismatch",
    ),
    pytest.param(
        facts(site=b"cross-site", origin=b"https://partner.example.evil.net"),
        REASON_CROSS_SITE,
        id="cross-site-trusted-suffix-trick",
    ),
    pytest.param(facts(site=b"cross-site", origin=b"null"), REASON_CROSS_SITE, id="cross-null"),
    pytest.param(
        facts(site=b"cross-site", origin=b"https://bank.example"),
        REASON_CROSS_SITE,
        id="cross-site-own-origin-claimed",
    ),
    pytest.param(facts(site=b"Same-Origin"), REASON_FETCH_SITE_MALFORMED, id="site-case"),
    pytest.param(facts(site=b""), REASON_FETCH_SITE_MALFORMED, id="site-empty"),
    pytest.param(
        facts(site=b"same-origin, cross-site"), REASON_FETCH_SITE_MALFORMED, id="site-list"
    ),
    pytest.param(facts(site=b"bogus"), REASON_FETCH_SITE_MALFORMED, id="site-unknown"),
    # Origin without Fetch Metadata.
    pytest.param(facts(origin=b"https://bank.example"), ALLOW, id="origin-matches-ok"),
    pytest.param(facts(origin=b"https://bank.example:443"), ALLOW, id="origin-default-port-ok"),
    pytest.param(facts(origin=b"https://BANK.example."), ALLOW, id="origin-spelling-ok"),
    pytest.param(facts(origin=b"https://partner.example"), ALLOW, id="origin-trusted-ok"),
    pytest.param(facts(origin=b"null"), REASON_NULL_ORIGIN, id="origin-null"),
    pytest.param(facts(origin=b"https://evil.example"), REASON_ORIGIN_MISMATCH, id="origin-evil"),
    pytest.param(
        facts(origin=b"https://evil.bank.example"), REASON_ORIGIN_MISMATCH, id="origin-sibling"
    ),
    pytest.param(
        facts(origin=b"http://bank.example"), REASON_ORIGIN_MISMATCH, id="origin-scheme-downgrade"
    ),
    pytest.param(
        facts(origin=b"https://bank.example:8443"), REASON_ORIGIN_MISMATCH, id="origin-port"
    ),
    pytest.param(
        facts(origin=b"https://bank.example.evil.net"),
        REASON_ORIGIN_MISMATCH,
        id="origin-suffix-trick",
    ),
    pytest.param(facts(origin=b""), REASON_ORIGIN_MALFORMED, id="origin-empty"),
    pytest.param(facts(origin=b"bank.example"), REASON_ORIGIN_MALFORMED, id="origin-no-scheme"),
    pytest.param(
        facts(origin=b"https://bank.example/path"), REASON_ORIGIN_MALFORMED, id="origin-path"
    ),
    pytest.param(
        facts(origin=b"https://evil.example@bank.example"),
        REASON_ORIGIN_MALFORMED,
        id="origin-userinfo",
    ),
    pytest.param(
        facts(origin=b"https://bank.example, https://evil.example"),
        REASON_ORIGIN_MALFORMED,
        id="origin-list",
    ),
    pytest.param(facts(origin=b"file://"), REASON_ORIGIN_MALFORMED, id="origin-file"),
    # Neither: the token.
    pytest.param(facts(), TOKEN, id="no-metadata-no-origin-token"),
    pytest.param(facts(cookies=False), TOKEN, id="login-no-cookie-token"),
    pytest.param(facts(site=b"cross-site", cookies=False), REASON_CROSS_SITE, id="login-cross"),
    # Exemptions.
    pytest.param(facts(site=b"cross-site", path="/hook/"), ALLOW, id="exempt-path-ok"),
    pytest.param(facts(site=b"cross-site", path="/hook"), REASON_CROSS_SITE, id="exempt-no-slash"),
    pytest.param(facts(site=b"cross-site", path="//hook/"), REASON_CROSS_SITE, id="exempt-double"),
    pytest.param(facts(site=b"cross-site", path="/HOOK/"), REASON_CROSS_SITE, id="exempt-case"),
    pytest.param(
        facts(site=b"cross-site", path="/hook/../admin"), REASON_CROSS_SITE, id="exempt-dots"
    ),
    pytest.param(facts(site=b"cross-site", path="/hook/x"), REASON_CROSS_SITE, id="exempt-prefix"),
    pytest.param(
        facts(site=b"cross-site", bearer=True, cookies=False), ALLOW, id="bearer-no-cookie-ok"
    ),
    pytest.param(
        facts(site=b"cross-site", bearer=True, cookies=True),
        REASON_CROSS_SITE,
        id="bearer-with-cookie",
    ),
    pytest.param(facts(bearer=True, cookies=False), ALLOW, id="bearer-no-metadata-ok"),
    # Method overrides.
    pytest.param(
        facts("GET", site=b"cross-site", overrides=(b"DELETE",)),
        REASON_METHOD_OVERRIDE,
        id="override-get-to-delete",
    ),
    pytest.param(
        facts("GET", site=b"cross-site", overrides=(b"delete",)),
        REASON_METHOD_OVERRIDE,
        id="override-lower-case",
    ),
    pytest.param(
        facts("GET", site=b"cross-site", overrides=(b"GET", b"PUT")),
        REASON_METHOD_OVERRIDE,
        id="override-several",
    ),
    pytest.param(
        facts("GET", site=b"cross-site", overrides=(b"FROB",)),
        REASON_METHOD_OVERRIDE,
        id="override-unknown-method",
    ),
    pytest.param(
        facts("GET", site=b"cross-site", overrides=(b"HEAD",)), ALLOW, id="override-to-safe-ok"
    ),
    pytest.param(facts("GET", site=b"cross-site", overrides=(b"",)), ALLOW, id="override-empty"),
    pytest.param(
        facts("GET", site=b"same-origin", overrides=(b"DELETE",)),
        ALLOW,
        id="override-same-origin-ok",
    ),
    pytest.param(facts("GET", overrides=(b"DELETE",)), TOKEN, id="override-needs-token"),
    pytest.param(
        facts("POST", site=b"cross-site", overrides=(b"GET",)),
        REASON_CROSS_SITE,
        id="override-never-makes-safe",
    ),
    pytest.param(
        facts("GET", site=b"cross-site", path="/hook/", overrides=(b"DELETE",)),
        ALLOW,
        id="override-exempt-path-ok",
    ),
]


@pytest.mark.parametrize(("request_facts", "expected"), DECISIONS)
def test_decision(request_facts: RequestFacts, expected: str) -> None:
    assert outcome(check_request(request_facts, POLICY)) == expected


OPT_OUTS = [
    pytest.param(facts(site=b"same-site"), SAME_SITE_POLICY, ALLOW, id="allow-same-site-ok"),
    pytest.param(
        facts(site=b"cross-site"), SAME_SITE_POLICY, REASON_CROSS_SITE, id="same-site-not-cross"
    ),
    pytest.param(
        facts(site=b"cross-site", bearer=True, cookies=False),
        NO_BEARER_POLICY,
        REASON_CROSS_SITE,
        id="bearer-exemption-off",
    ),
    pytest.param(facts(bearer=True, cookies=False), NO_BEARER_POLICY, TOKEN, id="bearer-off-token"),
]


@pytest.mark.parametrize(("request_facts", "policy", "expected"), OPT_OUTS)
def test_opt_outs(request_facts: RequestFacts, policy: Any, expected: str) -> None:
    assert outcome(check_request(request_facts, policy)) == expected


def test_override_refusal_names_the_underlying_reason() -> None:
    verdict = check_request(facts("GET", origin=b"null", overrides=(b"PUT",)), POLICY)
    assert verdict == Verdict(False, REASON_METHOD_OVERRIDE, varies=True, cause=REASON_NULL_ORIGIN)


@pytest.mark.parametrize(
    ("request_facts", "varies"),
    [
        pytest.param(facts("GET"), False, id="safe"),
        pytest.param(facts(path="/hook/"), False, id="exempt"),
        pytest.param(facts(bearer=True, cookies=False), False, id="bearer"),
        pytest.param(facts(site=b"same-origin"), True, id="metadata-allowed"),
        pytest.param(facts(site=b"cross-site"), True, id="metadata-refused"),
        pytest.param(facts(origin=b"https://bank.example"), True, id="origin"),
        pytest.param(facts(), True, id="token"),
    ],
)
def test_varies_only_when_the_headers_decided(request_facts: RequestFacts, varies: bool) -> None:
    assert check_request(request_facts, POLICY).varies is varies


# --- Facts from a scope ------------------------------------------------------------


def scope(
    headers: list[tuple[bytes, bytes]],
    *,
    method: str = "POST",
    query: bytes = b"",
    scheme: str = "https",
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": "/x",
        "scheme": scheme,
        "query_string": query,
        "headers": headers,
        "client": ("127.0.0.1", 1),
    }


def test_facts_from_scope() -> None:
    found = RequestFacts.from_scope(
        scope(
            [
                (b"host", b"Bank.Example"),
                (b"Sec-Fetch-Site", b"cross-site"),
                (b"origin", b"https://evil.example"),
                (b"authorization", b"Bearer abc"),
                (b"x-http-method-override", b"PUT, DELETE"),
                (b"x-method-override", b"PATCH"),
            ],
            query=b"a=1&_method=POST",
        )
    )
    assert found == RequestFacts(
        method="POST",
        path="/x",
        untrusted_fetch_site=b"cross-site",
        untrusted_origin=b"https://evil.example",
        own_origin=Origin("https", "bank.example", 443),
        method_overrides=(b"PUT", b"DELETE", b"PATCH", b"POST"),
        has_bearer=True,
        has_cookies=False,
    )


@pytest.mark.parametrize(
    ("headers", "bearer", "cookies"),
    [
        pytest.param([(b"authorization", b"Bearer t")], True, False, id="bearer"),
        pytest.param([(b"authorization", b"bearer t")], True, False, id="bearer-lower-case"),
        pytest.param([(b"authorization", b"Bearer ")], False, False, id="bearer-empty"),
        pytest.param([(b"authorization", b"Basic dTpw")], False, False, id="basic"),
        pytest.param(
            [(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")],
            False,
            False,
            id="two-authorizations",
        ),
        pytest.param([(b"cookie", b"a=b")], False, True, id="cookie"),
        pytest.param([(b"cookie", b"  ")], False, False, id="blank-cookie"),
    ],
)
def test_facts_bearer_and_cookies(
    headers: list[tuple[bytes, bytes]], bearer: bool, cookies: bool
) -> None:
    found = RequestFacts.from_scope(scope([(b"host", b"bank.example"), *headers]))
    assert (found.has_bearer, found.has_cookies) == (bearer, cookies)


def test_repeated_headers_are_joined_and_fail() -> None:
    found = RequestFacts.from_scope(
        scope([(b"sec-fetch-site", b"same-origin"), (b"sec-fetch-site", b"cross-site")])
    )
    assert found.untrusted_fetch_site == b"same-origin, cross-site"
    assert check_request(found, POLICY).reason == REASON_FETCH_SITE_MALFORMED


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(b"", [], id="empty"),
        pytest.param(b"a=1", [], id="none"),
        pytest.param(b"_method=DELETE", [b"DELETE"], id="plain"),
        pytest.param(b"x=1;_method=PUT", [b"PUT"], id="semicolon"),
        pytest.param(b"%5Fmethod=PATCH", [b"PATCH"], id="encoded-key"),
        pytest.param(b"_METHOD=delete", [b"delete"], id="key-case"),
        pytest.param(b"_method=DEL%45TE", [b"DELETE"], id="encoded-value"),
        pytest.param(b"_method=+PUT+", [b"PUT"], id="plus-spaces"),
        pytest.param(b"_method=GET&_method=PUT", [b"GET", b"PUT"], id="repeated"),
        pytest.param(b"my_method=PUT", [], id="other-key"),
        pytest.param(
            b"a=1&" * 1000 + b"_method=DELETE",
            [UNSCANNED_OVERRIDE],
            id="csrf-method-override-past-scan-cap",
        ),
        pytest.param(
            b"a=1&" * 1000 + b"%5Fmethod=DELETE",
            [UNSCANNED_OVERRIDE],
            id="csrf-method-override-encoded-past-scan-cap",
        ),
        pytest.param(
            b"_method=PUT&" + b"a=1&" * 999 + b"_method=DELETE",
            [b"PUT", UNSCANNED_OVERRIDE],
            id="csrf-method-override-second-past-scan-cap",
        ),
        pytest.param(b"a=1&" * 1000 + b"b=2", [], id="many-parameters-no-override-ok"),
        pytest.param(b"_method=GET&" + b"a=1&" * 1000, [b"GET"], id="many-parameters-safe-ok"),
    ],
)
def test_query_overrides(query: bytes, expected: list[bytes]) -> None:
    assert query_overrides(query) == expected


def test_names_unsafe_method() -> None:
    assert not names_unsafe_method(())
    assert not names_unsafe_method((b"GET", b"head", b""))
    assert names_unsafe_method((b"GET", b"POST"))


@pytest.mark.parametrize(
    ("headers", "scheme", "expected"),
    [
        pytest.param([(b"host", b"bank.example")], "https", OWN, id="host"),
        pytest.param(
            [(b"host", b"bank.example:8443")],
            "https",
            Origin("https", "bank.example", 8443),
            id="host-port",
        ),
        pytest.param(
            [(b"host", b"[::1]:8000")], "http", Origin("http", "[::1]", 8000), id="host-ipv6"
        ),
        pytest.param([], "https", None, id="no-host"),
        pytest.param([(b"host", b"a.example"), (b"host", b"b.example")], "https", None, id="two"),
        pytest.param([(b"host", b"evil/path?")], "https", None, id="malformed"),
        pytest.param([(b"host", b"bank.example")], "ftp", None, id="unknown-scheme"),
    ],
)
def test_own_origin_without_transport(
    headers: list[tuple[bytes, bytes]], scheme: str, expected: Origin | None
) -> None:
    request = scope(headers, scheme=scheme)
    assert own_origin(request, [v for k, v in headers if k == b"host"]) == expected


def test_own_origin_prefers_the_transport_layers_resolution() -> None:
    request = scope([(b"host", b"internal:8080")], scheme="http")
    context = get_context(request)
    context.scheme, context.host, context.port = "https", "bank.example", 443
    assert own_origin(request, [b"internal:8080"]) == OWN
