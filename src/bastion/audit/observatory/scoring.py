"""The Observatory's score table and grade chart: result ids, modifiers, letters.

Every number here is upstream's, from mdn/mdn-http-observatory `src/grader/charts.js`
(`SCORE_TABLE`, `GRADE_CHART`, `MINIMUM_SCORE_FOR_EXTRA_CREDIT`), `src/grader/grader.js`
(`getGradeForScore`) and `src/scanner/index.js` (how modifiers add up). The
descriptions are upstream's, as plain text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from bastion.audit.findings import Grade, ObservatoryTest

BASE_SCORE: Final = 100
MINIMUM_SCORE_FOR_EXTRA_CREDIT: Final = 90
"""Bonuses count only when the score without them is already an A (upstream)."""

# Upstream `GRADE_CHART`: the score, rounded down to a multiple of 5 and capped at 100,
# picks the letter.
GRADE_CHART: Final[Mapping[int, str]] = MappingProxyType(
    {
        100: "A+",
        95: "A",
        90: "A",
        85: "A-",
        80: "B+",
        75: "B",
        70: "B",
        65: "B-",
        60: "C+",
        55: "C",
        50: "C",
        45: "C-",
        40: "D+",
        35: "D",
        30: "D",
        25: "D-",
        20: "F",
        15: "F",
        10: "F",
        5: "F",
        0: "F",
    }
)

TEST_NAMES: Final = (
    "content-security-policy",
    "cookies",
    "cross-origin-resource-sharing",
    "redirection",
    "referrer-policy",
    "strict-transport-security",
    "subresource-integrity",
    "x-content-type-options",
    "x-frame-options",
    "cross-origin-resource-policy",
)
"""Upstream `ALL_TESTS` (`src/constants.js`), in its order."""

TEST_TITLES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "content-security-policy": "Content Security Policy (CSP)",
        "cookies": "Cookies",
        "cross-origin-resource-sharing": "Cross Origin Resource Sharing (CORS)",
        "redirection": "Redirection",
        "referrer-policy": "Referrer Policy",
        "strict-transport-security": "Strict Transport Security (HSTS)",
        "subresource-integrity": "Subresource Integrity",
        "x-content-type-options": "X-Content-Type-Options",
        "x-frame-options": "X-Frame-Options",
        "cross-origin-resource-policy": "Cross Origin Resource Policy",
    }
)

_GUIDES: Final = "https://developer.mozilla.org/en-US/docs/Web/Security/"
TEST_LINKS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "content-security-policy": _GUIDES + "Practical_implementation_guides/CSP",
        "cookies": _GUIDES + "Practical_implementation_guides/Cookies",
        "cross-origin-resource-sharing": _GUIDES + "Practical_implementation_guides/CORS",
        "redirection": _GUIDES + "Practical_implementation_guides/TLS#http_redirection",
        "referrer-policy": _GUIDES + "Practical_implementation_guides/Referrer_policy",
        "strict-transport-security": _GUIDES
        + "Practical_implementation_guides/TLS#http_strict_transport_security_implementation",
        "subresource-integrity": _GUIDES + "Subresource_Integrity",
        "x-content-type-options": _GUIDES + "Practical_implementation_guides/MIME_types",
        "x-frame-options": _GUIDES + "Practical_implementation_guides/Clickjacking",
        "cross-origin-resource-policy": _GUIDES + "Practical_implementation_guides/CORP",
    }
)
SCORING_PAGE: Final = "https://developer.mozilla.org/en-US/observatory/docs/tests_and_scoring"


@dataclass(frozen=True, slots=True)
class ScoreEntry:
    modifier: int
    description: str


def _entries(*rows: tuple[str, int, str]) -> Mapping[str, ScoreEntry]:
    return MappingProxyType({result: ScoreEntry(mod, text) for result, mod, text in rows})


# Upstream `SCORE_TABLE`, one row per result id: (id, modifier, description).
SCORE_TABLE: Final = _entries(
    # content-security-policy
    (
        "csp-implemented-with-no-unsafe-default-src-none",
        10,
        "CSP implemented with default-src 'none', no 'unsafe' and form-action set to "
        "'none' or 'self'.",
    ),
    (
        "csp-implemented-with-no-unsafe",
        5,
        "CSP implemented without 'unsafe-inline' or 'unsafe-eval'.",
    ),
    (
        "csp-implemented-with-unsafe-inline-in-style-src-only",
        0,
        "CSP implemented with unsafe sources inside style-src ('unsafe-inline', data: or "
        "overly broad sources such as https:).",
    ),
    (
        "csp-implemented-with-insecure-scheme-in-passive-content-only",
        -10,
        "CSP implemented, but secure site allows images or media to be loaded over HTTP.",
    ),
    (
        "csp-implemented-with-unsafe-eval",
        -10,
        "CSP implemented, but allows 'unsafe-eval'.",
    ),
    (
        "csp-implemented-with-unsafe-inline",
        -20,
        "CSP implemented unsafely: 'unsafe-inline' or data: inside script-src, overly broad "
        "sources such as https: inside object-src or script-src, or object-src or "
        "script-src not restricted.",
    ),
    (
        "csp-implemented-with-insecure-scheme",
        -20,
        "CSP implemented, but secure site allows resources to be loaded over HTTP.",
    ),
    ("csp-header-invalid", -25, "CSP header cannot be parsed successfully."),
    ("csp-not-implemented", -25, "CSP header not implemented."),
    (
        "csp-not-implemented-but-reporting-enabled",
        -25,
        "CSP reporting implemented only, with the Content-Security-Policy-Report-Only header.",
    ),
    (
        "csp-implemented-but-duplicate-directives",
        0,
        "CSP implemented, but contains duplicate directives.",
    ),
    # cookies
    (
        "cookies-secure-with-httponly-sessions-and-samesite",
        5,
        "All cookies use the Secure flag, session cookies use the HttpOnly flag, and "
        "cross-origin restrictions are in place via the SameSite flag.",
    ),
    (
        "cookies-secure-with-httponly-sessions",
        0,
        "All cookies use the Secure flag and all session cookies use the HttpOnly flag.",
    ),
    ("cookies-not-found", 0, "No cookies detected."),
    (
        "cookies-without-secure-flag-but-protected-by-hsts",
        -5,
        "Cookies set without using the Secure flag, but transmission over HTTP prevented by HSTS.",
    ),
    (
        "cookies-session-without-secure-flag-but-protected-by-hsts",
        -10,
        "Session cookie set without the Secure flag, but transmission over HTTP prevented by HSTS.",
    ),
    (
        "cookies-without-secure-flag",
        -20,
        "Cookies set without using the Secure flag or set over HTTP.",
    ),
    (
        "cookies-samesite-flag-invalid",
        -20,
        "Cookies use the SameSite flag, but set to something other than Strict or Lax.",
    ),
    (
        "cookies-anticsrf-without-samesite-flag",
        -20,
        "Anti-CSRF tokens set without using the SameSite flag.",
    ),
    (
        "cookies-session-without-httponly-flag",
        -30,
        "Session cookie set without using the HttpOnly flag.",
    ),
    (
        "cookies-session-without-secure-flag",
        -40,
        "Session cookie set without using the Secure flag or set over HTTP.",
    ),
    # cross-origin-resource-sharing
    (
        "cross-origin-resource-sharing-not-implemented",
        0,
        "Content is not visible via cross-origin resource sharing (CORS) files or headers.",
    ),
    (
        "cross-origin-resource-sharing-implemented-with-public-access",
        0,
        "Public content is visible via the CORS Access-Control-Allow-Origin header.",
    ),
    (
        "cross-origin-resource-sharing-implemented-with-restricted-access",
        0,
        "Content is visible via CORS, but is restricted to specific domains.",
    ),
    (
        "cross-origin-resource-sharing-implemented-with-universal-access",
        -50,
        "Content is visible via CORS to any origin, and credentials can be sent: the site "
        "could be vulnerable to CSRF attacks.",
    ),
    # redirection
    (
        "redirection-all-redirects-preloaded",
        0,
        "All hosts redirected to are in the HSTS preload list.",
    ),
    (
        "redirection-to-https",
        0,
        "Initial redirection is to HTTPS on same host, final destination is HTTPS.",
    ),
    (
        "redirection-not-needed-no-http",
        0,
        "Not able to connect via HTTP, so no redirection necessary.",
    ),
    (
        "redirection-off-host-from-http",
        -5,
        "Initial redirection from HTTP to HTTPS is to a different host, preventing HSTS.",
    ),
    (
        "redirection-not-to-https-on-initial-redirection",
        -10,
        "Redirects to HTTPS eventually, but initial redirection is to another HTTP URL.",
    ),
    ("redirection-not-to-https", -20, "Redirects, but final destination is not an HTTPS URL."),
    ("redirection-missing", -20, "Does not redirect to an HTTPS site."),
    (
        "redirection-invalid-cert",
        -20,
        "Invalid certificate chain encountered during redirection.",
    ),
    # referrer-policy
    (
        "referrer-policy-private",
        5,
        "Referrer-Policy header set to no-referrer, same-origin, strict-origin or "
        "strict-origin-when-cross-origin.",
    ),
    ("referrer-policy-not-implemented", 0, "Referrer-Policy header not implemented."),
    (
        "referrer-policy-unsafe",
        -5,
        "Referrer-Policy header set unsafely to origin, origin-when-cross-origin, unsafe-url "
        "or no-referrer-when-downgrade.",
    ),
    ("referrer-policy-header-invalid", -5, "Referrer-Policy header cannot be recognized."),
    # strict-transport-security
    ("hsts-preloaded", 5, "Preloaded via the HSTS preloading process."),
    (
        "hsts-implemented-max-age-at-least-six-months",
        0,
        "Strict-Transport-Security header set to a minimum of six months (15768000).",
    ),
    (
        "hsts-implemented-max-age-less-than-six-months",
        -10,
        "Strict-Transport-Security header set to less than six months (15768000).",
    ),
    ("hsts-not-implemented", -20, "Strict-Transport-Security header not implemented."),
    ("hsts-header-invalid", -20, "Strict-Transport-Security header cannot be recognized."),
    (
        "hsts-not-implemented-no-https",
        -20,
        "Strict-Transport-Security header cannot be set for sites not available over HTTPS.",
    ),
    (
        "hsts-invalid-cert",
        -20,
        "Strict-Transport-Security header cannot be set, as site contains an invalid "
        "certificate chain.",
    ),
    # subresource-integrity
    (
        "sri-implemented-and-all-scripts-loaded-securely",
        5,
        "Subresource Integrity (SRI) is implemented and all scripts are loaded from a "
        "similar origin.",
    ),
    (
        "sri-implemented-and-external-scripts-loaded-securely",
        5,
        "Subresource Integrity (SRI) is implemented and all scripts are loaded securely.",
    ),
    (
        "sri-not-implemented-response-not-html",
        0,
        "Subresource Integrity (SRI) is only needed for HTML resources.",
    ),
    (
        "sri-not-implemented-but-no-scripts-loaded",
        0,
        "Subresource Integrity (SRI) is not needed since site contains no script tags.",
    ),
    (
        "sri-not-implemented-but-all-scripts-loaded-from-secure-origin",
        0,
        "Subresource Integrity (SRI) not implemented, but all scripts are loaded from a "
        "similar origin.",
    ),
    (
        "sri-not-implemented-but-external-scripts-loaded-securely",
        -5,
        "Subresource Integrity (SRI) not implemented, but all external scripts are loaded "
        "over HTTPS.",
    ),
    (
        "sri-implemented-but-external-scripts-not-loaded-securely",
        -20,
        "Subresource Integrity (SRI) implemented, but external scripts are loaded over HTTP "
        'or use protocol-relative URLs via src="//...".',
    ),
    (
        "sri-not-implemented-and-external-scripts-not-loaded-securely",
        -50,
        "Subresource Integrity (SRI) not implemented, and external scripts are loaded over "
        'HTTP or use protocol-relative URLs via src="//...".',
    ),
    # x-content-type-options
    ("x-content-type-options-nosniff", 0, "X-Content-Type-Options header set to nosniff."),
    (
        "x-content-type-options-not-implemented",
        -5,
        "X-Content-Type-Options header not implemented.",
    ),
    (
        "x-content-type-options-header-invalid",
        -5,
        "X-Content-Type-Options header cannot be recognized.",
    ),
    # x-frame-options
    (
        "x-frame-options-implemented-via-csp",
        5,
        "X-Frame-Options (XFO) implemented via the CSP frame-ancestors directive.",
    ),
    (
        "x-frame-options-sameorigin-or-deny",
        0,
        "X-Frame-Options (XFO) header set to SAMEORIGIN or DENY.",
    ),
    (
        "x-frame-options-allow-from-origin",
        0,
        "X-Frame-Options (XFO) header uses ALLOW-FROM uri directive.",
    ),
    ("x-frame-options-not-implemented", -20, "X-Frame-Options (XFO) header not implemented."),
    (
        "x-frame-options-header-invalid",
        -20,
        "X-Frame-Options (XFO) header cannot be recognized.",
    ),
    # cross-origin-resource-policy
    ("corp-header-invalid", -5, "Cross-Origin-Resource-Policy (CORP) header cannot be recognized."),
    (
        "corp-implemented-with-cross-origin",
        0,
        "Cross Origin Resource Policy (CORP) implemented, but allows cross-origin resource "
        "sharing by default.",
    ),
    (
        "corp-implemented-with-same-origin",
        10,
        "Cross Origin Resource Policy (CORP) implemented, prevents leaks into cross-origin "
        "contexts.",
    ),
    (
        "corp-implemented-with-same-site",
        10,
        "Cross Origin Resource Policy (CORP) implemented, prevents leaks into cross-site contexts.",
    ),
    (
        "corp-not-implemented",
        0,
        "Cross Origin Resource Policy (CORP) is not implemented (defaults to cross-origin).",
    ),
    # generic
    ("html-not-parseable", -20, "Claims to be html, but cannot be parsed."),
)


@dataclass(frozen=True, slots=True)
class ObservedTest(ObservatoryTest):
    """An `ObservatoryTest` that also carries what was seen (redacted, truncated)."""

    evidence: str = ""


def outcome(name: str, result: str, *, passed: bool, evidence: str = "") -> ObservedTest:
    """One test's verdict, with its modifier and description from the score table."""
    entry = SCORE_TABLE[result]
    return ObservedTest(
        name=name,
        result=result,
        modifier=entry.modifier,
        passed=passed,
        description=entry.description,
        evidence=evidence,
    )


def letter_for(score: int) -> str:
    """Upstream `getGradeForScore`: round down to a multiple of 5, cap at 100."""
    return GRADE_CHART[min(max(score, 0) // 5 * 5, 100)]


def total(tests: Iterable[ObservatoryTest]) -> Grade:
    """Upstream `scan`: start at 100, add every modifier; bonuses only for an A already.

    Penalties always count. Bonuses (positive modifiers) count only when the score
    with the penalties alone is at least `MINIMUM_SCORE_FOR_EXTRA_CREDIT`, so a site
    cannot buy back a missing CSP with a CORP header. The score is floored at 0 but not
    capped (upstream reports 120 as 120, graded A+).
    """
    kept = tuple(tests)
    uncurved = BASE_SCORE + sum(t.modifier for t in kept if t.modifier < 0)
    with_extra = BASE_SCORE + sum(t.modifier for t in kept)
    score = max(with_extra if uncurved >= MINIMUM_SCORE_FOR_EXTRA_CREDIT else uncurved, 0)
    return Grade(score=score, letter=letter_for(score), tests=kept)
