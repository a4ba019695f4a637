"""The Observatory grade: every result id, the scoring rule, and whole sites.

Vectors marked "upstream" are taken from mdn/mdn-http-observatory's own tests
(`test/csp.test.js`, `test/grader.test.js`) with the result upstream asserts for them.
"""

from __future__ import annotations

import httpx
import pytest

from bastion.audit.findings import ObservatoryTest
from bastion.audit.observatory import (
    CORS_PROBE_ORIGIN,
    SCORE_TABLE,
    TEST_NAMES,
    CSPParseError,
    Observation,
    grade,
    grade_findings,
    letter_for,
    parse_csp,
)
from bastion.audit.observatory.scoring import total
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.types import ASGIApp, Receive, Scope, Send

HTML = (("content-type", "text/html; charset=utf-8"),)
PAGE = "https://example.com/"


def observe(
    *headers: tuple[str, str],
    body: str = "<!doctype html><title>t</title>",
    url: str = PAGE,
    cors: tuple[tuple[str, str], ...] = (),
    redirects: tuple[tuple[str, int], ...] | None = None,
    html: bool = True,
) -> Observation:
    return Observation(
        url=url,
        status=200,
        headers=(*HTML, *headers) if html else headers,
        body=body,
        cors_headers=cors,
        http_redirects=redirects,
    )


def result_of(observation: Observation, test_name: str) -> tuple[str, bool]:
    (test,) = [t for t in grade(observation).tests if t.name == test_name]
    return test.result, test.passed


# --- scoring -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "letter"),
    [
        # upstream test/grader.test.js
        pytest.param(100, "A+", id="grade-100"),
        pytest.param(0, "F", id="grade-0"),
        pytest.param(120, "A+", id="grade-above-100"),
        pytest.param(-10, "F", id="grade-negative"),
        # upstream src/grader/charts.js, each threshold and the value below it
        pytest.param(99, "A", id="grade-99"),
        pytest.param(90, "A", id="grade-90"),
        pytest.param(89, "A-", id="grade-89"),
        pytest.param(85, "A-", id="grade-85"),
        pytest.param(80, "B+", id="grade-80"),
        pytest.param(70, "B", id="grade-70"),
        pytest.param(65, "B-", id="grade-65"),
        pytest.param(60, "C+", id="grade-60"),
        pytest.param(50, "C", id="grade-50"),
        pytest.param(45, "C-", id="grade-45"),
        pytest.param(40, "D+", id="grade-40"),
        pytest.param(30, "D", id="grade-30"),
        pytest.param(25, "D-", id="grade-25"),
        pytest.param(24, "F", id="grade-24"),
    ],
)
def test_letter_for_score(score: int, letter: str) -> None:
    assert letter_for(score) == letter


def _t(modifier: int) -> ObservatoryTest:
    return ObservatoryTest("x", "x", modifier, modifier >= 0, "")


@pytest.mark.parametrize(
    ("modifiers", "score"),
    [
        pytest.param((10, 5, -10), 105, id="bonus-kept-at-90"),
        pytest.param((10, 5, -5, -5), 105, id="bonus-kept-exactly-90"),
        pytest.param((10, 5, -15), 85, id="bonus-dropped-below-90"),
        pytest.param((-50, -50, -25), 0, id="score-floored-at-0"),
        pytest.param((10, 10, 5), 125, id="score-not-capped"),
    ],
)
def test_bonuses_count_only_for_an_a(modifiers: tuple[int, ...], score: int) -> None:
    assert total(_t(m) for m in modifiers).score == score


def test_every_result_has_a_modifier_in_upstream_range() -> None:
    # Upstream `Expectation` (src/types.js): 11 CSP, 10 cookies, 4 CORS, 8 redirection,
    # 4 referrer, 7 HSTS, 8 SRI, 3 nosniff, 5 XFO, 5 CORP and html-not-parseable.
    assert len(SCORE_TABLE) == 11 + 10 + 4 + 8 + 4 + 7 + 8 + 3 + 5 + 5 + 1
    assert {entry.modifier for entry in SCORE_TABLE.values()} <= {
        -50,
        -40,
        -30,
        -25,
        -20,
        -10,
        -5,
        0,
        5,
        10,
    }


# --- content-security-policy ---------------------------------------------------------

CSP_CASES = [
    pytest.param(None, "csp-not-implemented", False, id="csp-not-implemented"),
    pytest.param("", "csp-header-invalid", False, id="csp-header-invalid-empty"),
    pytest.param("  ", "csp-header-invalid", False, id="csp-header-invalid-blank"),
    pytest.param("defa", "csp-header-invalid", False, id="csp-header-invalid-short"),
    pytest.param(
        "default-src 'none'; default-src 'none'",
        "csp-header-invalid",
        False,
        id="csp-header-invalid-repeated-directive",
    ),
    pytest.param(
        "default-src 'none'; script-src 'strict-dynamic'",
        "csp-header-invalid",
        False,
        id="csp-header-invalid-strict-dynamic-without-nonce",
    ),
    pytest.param(
        "script-src 'unsafe-inline'",
        "csp-implemented-with-unsafe-inline",
        False,
        id="csp-unsafe-inline",
    ),
    pytest.param(
        "script-src data:", "csp-implemented-with-unsafe-inline", False, id="csp-unsafe-inline-data"
    ),
    pytest.param(
        "default-src 'UNSAFE-INLINE'",
        "csp-implemented-with-unsafe-inline",
        False,
        id="csp-unsafe-inline-upper-case",
    ),
    pytest.param(
        "upgrade-insecure-requests",
        "csp-implemented-with-unsafe-inline",
        False,
        id="csp-unsafe-inline-no-script-src",
    ),
    pytest.param(
        "script-src https:",
        "csp-implemented-with-unsafe-inline",
        False,
        id="csp-unsafe-broad-https",
    ),
    pytest.param(
        "default-src 'none'; script-src 'none'; object-src *",
        "csp-implemented-with-unsafe-inline",
        False,
        id="csp-unsafe-object-src-wildcard",
    ),
    pytest.param(
        "default-src http://mozilla.org",
        "csp-implemented-with-insecure-scheme",
        False,
        id="csp-insecure-scheme",
    ),
    pytest.param(
        "default-src 'none'; script-src ftp://mozilla.org",
        "csp-implemented-with-insecure-scheme",
        False,
        id="csp-insecure-scheme-ftp",
    ),
    pytest.param(
        "default-src 'none'; script-src 'unsafe-eval'",
        "csp-implemented-with-unsafe-eval",
        False,
        id="csp-unsafe-eval",
    ),
    pytest.param(
        "default-src 'none'; img-src http://mozilla.org",
        "csp-implemented-with-insecure-scheme-in-passive-content-only",
        True,
        id="csp-insecure-scheme-passive",
    ),
    pytest.param(
        "object-src 'none'; script-src 'none'; style-src 'unsafe-inline'",
        "csp-implemented-with-unsafe-inline-in-style-src-only",
        True,
        id="csp-unsafe-inline-style-only",
    ),
    pytest.param(
        "default-src 'none'; style-src https:",
        "csp-implemented-with-unsafe-inline-in-style-src-only",
        True,
        id="csp-broad-style-only",
    ),
    pytest.param(
        "default-src https://mozilla.org",
        "csp-implemented-with-no-unsafe",
        True,
        id="csp-no-unsafe",
    ),
    pytest.param(
        "object-src 'none'; script-src 'strict-dynamic' 'nonce-abc' 'unsafe-inline'; "
        "style-src 'none'",
        "csp-implemented-with-no-unsafe",
        True,
        id="csp-no-unsafe-strict-dynamic-nonce",
    ),
    pytest.param(
        "object-src 'none'; script-src 'unsafe-inline' 'nonce-abc123'; style-src 'none'",
        "csp-implemented-with-no-unsafe",
        True,
        id="csp-no-unsafe-nonce-voids-unsafe-inline",
    ),
    pytest.param(
        "default-src 'self', default-src 'self'",
        "csp-implemented-with-no-unsafe",
        True,
        id="csp-comma-separates-policies",
    ),
    pytest.param(
        "default-src",
        "csp-implemented-with-no-unsafe-default-src-none",
        True,
        id="csp-empty-is-none",
    ),
    pytest.param(
        "default-src 'none'; script-src 'strict-dynamic' 'sha256-abc123' https://*",
        "csp-implemented-with-no-unsafe-default-src-none",
        True,
        id="csp-default-src-none-strict-dynamic",
    ),
    pytest.param(
        "default-src 'none'; report-uri /a; report-uri /b",
        "csp-implemented-but-duplicate-directives",
        True,
        id="csp-duplicate-report-uri",
    ),
]


@pytest.mark.parametrize(("policy", "result", "passed"), CSP_CASES)
def test_csp(policy: str | None, result: str, passed: bool) -> None:
    headers = () if policy is None else (("content-security-policy", policy),)
    assert result_of(observe(*headers), "content-security-policy") == (result, passed)


def _meta(policy: str) -> str:
    return (
        f'<html><head><meta http-equiv="Content-Security-Policy" content="{policy}"></head></html>'
    )


@pytest.mark.parametrize(
    ("headers", "body", "result"),
    [
        pytest.param(
            (),
            _meta("default-src 'none'"),
            "csp-implemented-with-no-unsafe-default-src-none",
            id="csp-meta-counts",
        ),
        pytest.param(
            (("content-security-policy", "default-src http:"),),
            _meta("default-src https:"),
            "csp-implemented-with-no-unsafe-default-src-none",
            id="csp-header-and-meta-intersect",
        ),
        pytest.param(
            (),
            _meta("frame-ancestors 'none'"),
            "csp-not-implemented",
            id="csp-meta-only-frame-ancestors",
        ),
        pytest.param(
            (("content-security-policy-report-only", "default-src 'none'"),),
            "",
            "csp-not-implemented-but-reporting-enabled",
            id="csp-report-only-not-counted",
        ),
        pytest.param(
            (),
            "<script>/* <meta http-equiv='content-security-policy' "
            "content=\"default-src 'none'\"> */</script>"
            "<!-- <meta http-equiv='content-security-policy' content='x'> -->",
            "csp-not-implemented",
            id="csp-meta-in-script-or-comment-ignored",
        ),
    ],
)
def test_csp_meta_and_report_only(
    headers: tuple[tuple[str, str], ...], body: str, result: str
) -> None:
    assert result_of(observe(*headers, body=body), "content-security-policy")[0] == result


def test_csp_meta_ignored_when_not_html() -> None:
    observation = observe(
        ("content-type", "text/plain"), body=_meta("default-src 'none'"), html=False
    )
    assert result_of(observation, "content-security-policy")[0] == "csp-not-implemented"


def test_csp_insecure_scheme_only_matters_on_https() -> None:
    observation = observe(
        ("content-security-policy", "default-src http://x.example"), url="http://x/"
    )
    assert result_of(observation, "content-security-policy")[0] == "csp-implemented-with-no-unsafe"


def test_csp_parser_keeps_only_sources_every_policy_allows() -> None:
    parsed = parse_csp(
        ["script-src 'self' https://a.example/js/", "script-src https://a.example/js/x.js"]
    )
    assert parsed.directives["script-src"] == {"https://a.example/js/x.js"}
    with pytest.raises(CSPParseError):
        parse_csp(["script-src 'self'; SCRIPT-SRC 'none'"])


# --- cookies -------------------------------------------------------------------------

HSTS = ("strict-transport-security", "max-age=31536000")


@pytest.mark.parametrize(
    ("cookies", "hsts", "result", "passed"),
    [
        pytest.param((), False, "cookies-not-found", True, id="cookies-not-found"),
        pytest.param(
            ("sessionid=v; Secure; HttpOnly; SameSite=Lax",),
            False,
            "cookies-secure-with-httponly-sessions-and-samesite",
            True,
            id="cookies-secure-with-samesite",
        ),
        pytest.param(
            ("sessionid=v; Secure; HttpOnly",),
            False,
            "cookies-secure-with-httponly-sessions",
            True,
            id="cookies-secure-without-samesite",
        ),
        pytest.param(
            ("theme=dark; SameSite=Lax",),
            False,
            "cookies-without-secure-flag",
            False,
            id="cookies-no-secure",
        ),
        pytest.param(
            ("theme=dark; SameSite=Lax",),
            True,
            "cookies-without-secure-flag-but-protected-by-hsts",
            False,
            id="cookies-no-secure-hsts",
        ),
        pytest.param(
            ("sessionid=v; HttpOnly; SameSite=Lax",),
            False,
            "cookies-session-without-secure-flag",
            False,
            id="cookies-session-no-secure",
        ),
        pytest.param(
            ("sessionid=v; HttpOnly; SameSite=Lax",),
            True,
            "cookies-session-without-secure-flag-but-protected-by-hsts",
            False,
            id="cookies-session-no-secure-hsts",
        ),
        pytest.param(
            ("__Host-session=v; Secure; Path=/; SameSite=Lax",),
            False,
            "cookies-session-without-httponly-flag",
            False,
            id="cookies-session-no-httponly",
        ),
        pytest.param(
            ("a=b; Secure; SameSite=Bogus",),
            False,
            "cookies-samesite-flag-invalid",
            False,
            id="cookies-samesite-bogus",
        ),
        pytest.param(
            ("a=b; SameSite=None",),
            True,
            "cookies-samesite-flag-invalid",
            False,
            id="cookies-samesite-none-insecure",
        ),
        pytest.param(
            ("csrftoken=v; Secure",),
            False,
            "cookies-anticsrf-without-samesite-flag",
            False,
            id="cookies-csrf-no-samesite",
        ),
    ],
)
def test_cookies(cookies: tuple[str, ...], hsts: bool, result: str, passed: bool) -> None:
    headers = [("set-cookie", c) for c in cookies] + ([HSTS] if hsts else [])
    assert result_of(observe(*headers), "cookies") == (result, passed)


def test_cookie_evidence_never_shows_the_value() -> None:
    observation = observe(("set-cookie", "sessionid=s3cr3t-v4lue; Secure; HttpOnly"))
    (finding,) = [f for f in grade_findings(grade(observation)) if f.check == "headers.cookies"]
    assert "s3cr3t" not in finding.evidence
    assert "sessionid=<redacted>; Secure; HttpOnly" in finding.evidence


# --- cross-origin-resource-sharing ---------------------------------------------------

CORS_NAME = "cross-origin-resource-sharing"


@pytest.mark.parametrize(
    ("cors", "result", "passed"),
    [
        pytest.param((), "cross-origin-resource-sharing-not-implemented", True, id="cors-none"),
        pytest.param(
            (("access-control-allow-origin", "*"),),
            "cross-origin-resource-sharing-implemented-with-public-access",
            True,
            id="cors-public",
        ),
        pytest.param(
            (("access-control-allow-origin", "https://app.example"),),
            "cross-origin-resource-sharing-implemented-with-restricted-access",
            True,
            id="cors-restricted",
        ),
        pytest.param(
            (("access-control-allow-origin", CORS_PROBE_ORIGIN),),
            "cross-origin-resource-sharing-implemented-with-restricted-access",
            True,
            id="cors-reflected-without-credentials",
        ),
        pytest.param(
            (
                ("access-control-allow-origin", CORS_PROBE_ORIGIN),
                ("access-control-allow-credentials", "true"),
            ),
            "cross-origin-resource-sharing-implemented-with-universal-access",
            False,
            id="cors-reflected-with-credentials",
        ),
    ],
)
def test_cors(cors: tuple[tuple[str, str], ...], result: str, passed: bool) -> None:
    assert result_of(observe(cors=cors), CORS_NAME) == (result, passed)


# --- redirection ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "result", "passed"),
    [
        pytest.param(None, "redirection-not-needed-no-http", True, id="redirection-no-http"),
        pytest.param(
            (("http://a.example/", 200),), "redirection-missing", False, id="redirection-missing"
        ),
        pytest.param(
            (("http://a.example/", 301), ("http://b.example/", 200)),
            "redirection-not-to-https",
            False,
            id="redirection-not-to-https",
        ),
        pytest.param(
            (("http://a.example/", 301), ("http://a.example/x", 301), ("https://a.example/", 200)),
            "redirection-not-to-https-on-initial-redirection",
            False,
            id="redirection-http-first",
        ),
        pytest.param(
            (("http://a.example/", 301), ("https://b.example/", 200)),
            "redirection-off-host-from-http",
            False,
            id="redirection-off-host",
        ),
        pytest.param(
            (("http://a.example/", 308), ("https://a.example/", 200)),
            "redirection-to-https",
            True,
            id="redirection-to-https",
        ),
    ],
)
def test_redirection(chain: tuple[tuple[str, int], ...] | None, result: str, passed: bool) -> None:
    assert result_of(observe(redirects=chain), "redirection") == (result, passed)


# --- referrer-policy -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "body", "result", "passed"),
    [
        pytest.param((), "", "referrer-policy-not-implemented", True, id="referrer-none"),
        pytest.param(("no-referrer",), "", "referrer-policy-private", True, id="referrer-private"),
        pytest.param(("unsafe-url",), "", "referrer-policy-unsafe", False, id="referrer-unsafe"),
        pytest.param(
            ("bogus",), "", "referrer-policy-header-invalid", False, id="referrer-invalid"
        ),
        pytest.param(
            ("no-referrer, unsafe-url",),
            "",
            "referrer-policy-unsafe",
            False,
            id="referrer-last-wins",
        ),
        pytest.param(
            ("unsafe-url",),
            '<meta name="referrer" content="no-referrer">',
            "referrer-policy-private",
            True,
            id="referrer-meta-overrides",
        ),
    ],
)
def test_referrer_policy(values: tuple[str, ...], body: str, result: str, passed: bool) -> None:
    headers = [("referrer-policy", v) for v in values]
    assert result_of(observe(*headers, body=body), "referrer-policy") == (result, passed)


# --- strict-transport-security -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "url", "result", "passed"),
    [
        pytest.param(
            "max-age=31536000",
            "http://a/",
            "hsts-not-implemented-no-https",
            False,
            id="hsts-no-https",
        ),
        pytest.param(None, PAGE, "hsts-not-implemented", False, id="hsts-missing"),
        pytest.param(
            "max-age=15552000; includeSubDomains",
            PAGE,
            "hsts-implemented-max-age-at-least-six-months",
            True,
            id="hsts-six-months",
        ),
        pytest.param(
            'max-age="31536000"',
            PAGE,
            "hsts-implemented-max-age-at-least-six-months",
            True,
            id="hsts-quoted-max-age",
        ),
        pytest.param(
            "max-age=300",
            PAGE,
            "hsts-implemented-max-age-less-than-six-months",
            False,
            id="hsts-short",
        ),
        pytest.param("includeSubDomains", PAGE, "hsts-header-invalid", False, id="hsts-no-max-age"),
        pytest.param(
            "max-age=abc", PAGE, "hsts-header-invalid", False, id="hsts-max-age-not-a-number"
        ),
        pytest.param(
            "max-age=31536000, max-age=1", PAGE, "hsts-header-invalid", False, id="hsts-sent-twice"
        ),
    ],
)
def test_hsts(value: str | None, url: str, result: str, passed: bool) -> None:
    headers = () if value is None else (("strict-transport-security", value),)
    assert result_of(observe(*headers, url=url), "strict-transport-security") == (result, passed)


# --- subresource-integrity -----------------------------------------------------------

SRI = 'integrity="sha384-abc" crossorigin="anonymous"'


@pytest.mark.parametrize(
    ("body", "result", "passed"),
    [
        pytest.param(
            "<p>hi</p>", "sri-not-implemented-but-no-scripts-loaded", True, id="sri-no-scripts"
        ),
        pytest.param(
            "<script>init()</script><script src='/app.js'></script>",
            "sri-not-implemented-but-all-scripts-loaded-from-secure-origin",
            True,
            id="sri-same-origin",
        ),
        pytest.param(
            "<script src='https://cdn.example.com/a.js'></script>",
            "sri-not-implemented-but-all-scripts-loaded-from-secure-origin",
            True,
            id="sri-same-registrable-domain",
        ),
        pytest.param(
            f"<script src='/app.js' {SRI}></script>",
            "sri-implemented-and-all-scripts-loaded-securely",
            True,
            id="sri-same-origin-with-integrity",
        ),
        pytest.param(
            f"<script src='https://cdn.other.net/a.js' {SRI}></script>",
            "sri-implemented-and-external-scripts-loaded-securely",
            True,
            id="sri-external-with-integrity",
        ),
        pytest.param(
            "<script src='https://cdn.other.net/a.js'></script>",
            "sri-not-implemented-but-external-scripts-loaded-securely",
            False,
            id="sri-external-https-no-integrity",
        ),
        pytest.param(
            f"<script src='http://cdn.other.net/a.js' {SRI}></script>",
            "sri-implemented-but-external-scripts-not-loaded-securely",
            False,
            id="sri-external-http-with-integrity",
        ),
        pytest.param(
            "<script src='http://cdn.other.net/a.js'></script>",
            "sri-not-implemented-and-external-scripts-not-loaded-securely",
            False,
            id="sri-external-http-no-integrity",
        ),
        pytest.param(
            "<script src='//cdn.other.net/a.js'></script>",
            "sri-not-implemented-and-external-scripts-not-loaded-securely",
            False,
            id="sri-protocol-relative",
        ),
    ],
)
def test_sri(body: str, result: str, passed: bool) -> None:
    assert result_of(observe(body=body), "subresource-integrity") == (result, passed)


def test_sri_not_html() -> None:
    observation = observe(("content-type", "application/json"), body="{}", html=False)
    assert result_of(observation, "subresource-integrity") == (
        "sri-not-implemented-response-not-html",
        True,
    )


# --- x-content-type-options, x-frame-options, cross-origin-resource-policy ------------


@pytest.mark.parametrize(
    ("name", "value", "result", "passed"),
    [
        pytest.param(
            "x-content-type-options",
            "nosniff",
            "x-content-type-options-nosniff",
            True,
            id="xcto-nosniff",
        ),
        pytest.param(
            "x-content-type-options",
            None,
            "x-content-type-options-not-implemented",
            False,
            id="xcto-missing",
        ),
        pytest.param(
            "x-content-type-options",
            "sniff",
            "x-content-type-options-header-invalid",
            False,
            id="xcto-invalid",
        ),
        pytest.param(
            "x-frame-options", "DENY", "x-frame-options-sameorigin-or-deny", True, id="xfo-deny"
        ),
        pytest.param(
            "x-frame-options",
            "SAMEORIGIN",
            "x-frame-options-sameorigin-or-deny",
            True,
            id="xfo-sameorigin",
        ),
        pytest.param(
            "x-frame-options",
            "ALLOW-FROM https://a.example",
            "x-frame-options-allow-from-origin",
            True,
            id="xfo-allow-from",
        ),
        pytest.param(
            "x-frame-options", "ALLOWALL", "x-frame-options-header-invalid", False, id="xfo-invalid"
        ),
        pytest.param(
            "x-frame-options", None, "x-frame-options-not-implemented", False, id="xfo-missing"
        ),
        pytest.param(
            "cross-origin-resource-policy",
            "same-origin",
            "corp-implemented-with-same-origin",
            True,
            id="corp-same-origin",
        ),
        pytest.param(
            "cross-origin-resource-policy",
            "same-site",
            "corp-implemented-with-same-site",
            True,
            id="corp-same-site",
        ),
        pytest.param(
            "cross-origin-resource-policy",
            "cross-origin",
            "corp-implemented-with-cross-origin",
            True,
            id="corp-cross-origin",
        ),
        pytest.param(
            "cross-origin-resource-policy", "nope", "corp-header-invalid", False, id="corp-invalid"
        ),
        pytest.param(
            "cross-origin-resource-policy", None, "corp-not-implemented", True, id="corp-missing"
        ),
    ],
)
def test_single_header(name: str, value: str | None, result: str, passed: bool) -> None:
    headers = () if value is None else ((name, value),)
    assert result_of(observe(*headers), name) == (result, passed)


@pytest.mark.parametrize(
    ("headers", "body", "result"),
    [
        pytest.param(
            (("content-security-policy", "default-src 'self'; frame-ancestors 'none'"),),
            "",
            "x-frame-options-implemented-via-csp",
            id="xfo-via-csp-header",
        ),
        pytest.param(
            (),
            _meta("default-src 'self'; frame-ancestors 'none'"),
            "x-frame-options-not-implemented",
            id="xfo-meta-frame-ancestors-ignored",
        ),
    ],
)
def test_frame_ancestors(headers: tuple[tuple[str, str], ...], body: str, result: str) -> None:
    assert result_of(observe(*headers, body=body), "x-frame-options")[0] == result


# --- whole sites ---------------------------------------------------------------------


async def _page(scope: Scope, receive: Receive, send: Send) -> None:
    body = b"<!doctype html><title>demo</title><p>hello</p>"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/html; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _observe_app(app: ASGIApp) -> Observation:
    """Fetch `/` over https, plain http and with a foreign Origin, as the probe would."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        page = await client.get("https://testserver/")
        plain = await client.get("http://testserver/")
        chain: list[tuple[str, int]] = [("http://testserver/", plain.status_code)]
        if plain.is_redirect:
            final = await client.get(plain.headers["location"])
            chain.append((plain.headers["location"], final.status_code))
        cors = await client.get("https://testserver/", headers={"origin": CORS_PROBE_ORIGIN})
    return Observation(
        url="https://testserver/",
        status=page.status_code,
        headers=tuple((k.decode().lower(), v.decode()) for k, v in page.headers.raw),
        body=page.text,
        cors_headers=tuple((k.decode().lower(), v.decode()) for k, v in cors.headers.raw),
        http_redirects=tuple(chain),
    )


@pytest.mark.anyio
async def test_bastion_defaults_score_a_plus() -> None:
    settings = Settings(
        mode="development",
        transport={"allowed_hosts": ["testserver"], "insecure_allow_http": False},
    )
    result = grade(await _observe_app(Shield(_page, settings)))
    assert {t.name: t.result for t in result.tests} == {
        "content-security-policy": "csp-implemented-with-no-unsafe",
        "cookies": "cookies-not-found",
        "cross-origin-resource-sharing": "cross-origin-resource-sharing-not-implemented",
        "redirection": "redirection-to-https",
        "referrer-policy": "referrer-policy-private",
        "strict-transport-security": "hsts-implemented-max-age-at-least-six-months",
        "subresource-integrity": "sri-not-implemented-but-no-scripts-loaded",
        "x-content-type-options": "x-content-type-options-nosniff",
        "x-frame-options": "x-frame-options-implemented-via-csp",
        "cross-origin-resource-policy": "corp-implemented-with-same-origin",
    }
    assert (result.score, result.letter) == (125, "A+")
    assert all(t.passed for t in result.tests)


@pytest.mark.anyio
async def test_bare_app_scores_d() -> None:
    result = grade(await _observe_app(_page))
    failed = {t.result for t in result.tests if not t.passed}
    assert failed == {
        "csp-not-implemented",
        "redirection-missing",
        "hsts-not-implemented",
        "x-content-type-options-not-implemented",
        "x-frame-options-not-implemented",
    }
    # 100 - 25 - 20 - 20 - 5 - 20
    assert (result.score, result.letter) == (10, "F")


def test_every_test_is_graded_once_in_upstream_order() -> None:
    assert tuple(t.name for t in grade(observe()).tests) == TEST_NAMES


# --- findings ------------------------------------------------------------------------


def test_findings_severity_evidence_and_fix() -> None:
    observation = observe(
        ("content-security-policy", "script-src 'unsafe-inline'"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "bogus"),
    )
    findings = {f.check: f for f in grade_findings(grade(observation))}
    assert sorted(findings) == sorted(f"headers.{name}" for name in TEST_NAMES)
    csp = findings["headers.content-security-policy"]
    assert (csp.passed, csp.severity) == (False, "medium")
    assert "script-src 'unsafe-inline'" in csp.evidence
    assert "headers.csp_directives" in csp.fix
    assert (
        findings["headers.strict-transport-security"].severity,
        findings["headers.strict-transport-security"].passed,
    ) == ("medium", False)
    # Passed checks keep the severity of their worst failure.
    assert findings["headers.x-content-type-options"].passed
    assert findings["headers.x-content-type-options"].severity == "medium"
    assert findings["headers.cookies"].severity == "high"
    assert findings["headers.referrer-policy"].severity == "medium"
    assert findings["headers.x-frame-options"].fix.count("headers.") >= 2
    assert all(f.references for f in findings.values())


def test_missing_csp_is_high() -> None:
    findings = {f.check: f for f in grade_findings(grade(observe()))}
    assert findings["headers.content-security-policy"].severity == "high"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(
            (("content-security-policy", "script-src " + "x" * 200_000),), id="grade-huge-header"
        ),
        pytest.param(
            (("content-security-policy", "default-src 'self' %zz/; img-src %"),),
            id="grade-bad-escape",
        ),
        pytest.param((("set-cookie", "=; ;;=;"), ("set-cookie", ";")), id="grade-garbage-cookies"),
        pytest.param((("x-frame-options", "\x00<script>"),), id="grade-control-characters"),
    ],
)
def test_hostile_headers_grade_without_error(headers: tuple[tuple[str, str], ...]) -> None:
    result = grade(observe(*headers, body="<scr<script>ipt src=//x>" * 10_000))
    assert len(result.tests) == len(TEST_NAMES)
    assert all(len(f.evidence) < 1000 for f in grade_findings(result))
