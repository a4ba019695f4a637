"""From a grade to findings: severity from the modifier, a fix naming Bastion's setting.

Severity: a modifier of -25 or worse is `high`, any other penalty `medium`, a failed
test that costs nothing `low`. A passed test keeps the severity its worst failure
would have (`Finding.severity` is "how bad it is when the check fails").
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from bastion.audit.findings import Finding, Grade, ObservatoryTest, Severity
from bastion.audit.observatory.scoring import SCORE_TABLE, TEST_LINKS, TEST_TITLES, ObservedTest

HIGH_AT_MODIFIER: Final = -25
"""Upstream's own weight for "no CSP at all"; as bad or worse is `high`."""


def severity_for(modifier: int) -> Severity:
    """The severity of a failure that costs `modifier` points."""
    if modifier <= HIGH_AT_MODIFIER:
        return "high"
    if modifier < 0:
        return "medium"
    return "low"


def _prefix(test_name: str) -> str:
    return {
        "content-security-policy": "csp-",
        "cross-origin-resource-policy": "corp-",
        "strict-transport-security": "hsts-",
        "subresource-integrity": "sri-",
    }.get(test_name, test_name + "-")


WORST_MODIFIER: Final[Mapping[str, int]] = MappingProxyType(
    {
        name: min(
            entry.modifier
            for result, entry in SCORE_TABLE.items()
            if result.startswith(_prefix(name))
        )
        for name in TEST_TITLES
    }
)
"""The worst modifier each test can give: the severity a passed test keeps."""

FIXES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "content-security-policy": (
            "Send an enforced Content-Security-Policy without 'unsafe-inline', 'unsafe-eval', "
            "data:, http: or wildcard script sources. Bastion's headers layer sends a strict "
            "nonce-based policy by default: leave headers.insecure_disable_csp and "
            "headers.csp_report_only off, and change sources only through "
            "headers.csp_directives / headers.csp_extra_sources."
        ),
        "cookies": (
            "Set every cookie Secure (and session cookies HttpOnly) with SameSite=Lax or "
            "Strict. Bastion's session cookie (sessions.cookie_name, __Host- prefixed) is "
            "Secure, HttpOnly and SameSite=sessions.same_site unless "
            "sessions.insecure_cookie_over_http is on; fix cookies the app sets itself."
        ),
        "cross-origin-resource-sharing": (
            "Never reflect the request Origin with Access-Control-Allow-Credentials: true. "
            "List exact origins in cors.allow_origins and keep cors.allow_credentials for "
            "those; remove CORS headers the app sets itself (Bastion's cors layer does)."
        ),
        "redirection": (
            "Redirect plain HTTP to HTTPS on the same host first. Bastion's transport layer "
            "does so (status transport.https_redirect_status) unless "
            "transport.insecure_allow_http is on."
        ),
        "referrer-policy": (
            "Send Referrer-Policy: strict-origin-when-cross-origin (or stricter): "
            "headers.referrer_policy, which Bastion sets by default."
        ),
        "strict-transport-security": (
            "Serve HTTPS with Strict-Transport-Security max-age of at least six months: "
            "transport.hsts_max_age_seconds (default one year), "
            "transport.hsts_include_subdomains, transport.hsts_preload. Bastion sends HSTS "
            "on HTTPS responses when the transport layer is on and not monitor_only."
        ),
        "subresource-integrity": (
            'Load third-party scripts over HTTPS with integrity="sha384-..." and '
            'crossorigin="anonymous" attributes, or serve them from your own origin.'
        ),
        "x-content-type-options": (
            "Send X-Content-Type-Options: nosniff. Bastion's headers layer does unless "
            "headers.extra_headers drops or replaces x-content-type-options."
        ),
        "x-frame-options": (
            "Set CSP frame-ancestors (Bastion's default is 'none'; change it with "
            "headers.csp_directives) and headers.x_frame_options (auto follows it)."
        ),
        "cross-origin-resource-policy": (
            "Send Cross-Origin-Resource-Policy: same-origin or same-site: "
            "headers.cross_origin_resource_policy (default same-origin)."
        ),
    }
)


def finding_for(test: ObservatoryTest) -> Finding:
    title = TEST_TITLES.get(test.name, test.name)
    worst = WORST_MODIFIER.get(test.name, test.modifier)
    severity = severity_for(worst if test.passed else test.modifier)
    evidence = test.evidence if isinstance(test, ObservedTest) else ""
    sign = "+" if test.modifier > 0 else ""
    return Finding(
        check=f"headers.{test.name}",
        title=f"{title}: {test.description}",
        severity=severity,
        passed=test.passed,
        evidence=f"{test.result} ({sign}{test.modifier}); {evidence}".rstrip("; "),
        fix=FIXES.get(test.name, ""),
        references=(TEST_LINKS[test.name],) if test.name in TEST_LINKS else (),
    )


def grade_findings(result: Grade) -> list[Finding]:
    """One `Finding` per Observatory test (`headers.<test-name>`), passed or failed."""
    return [finding_for(test) for test in result.tests]
