"""Header grading the way the MDN HTTP Observatory grades.

Threat: a site that is missing the response headers browsers use to contain an
attack (CSP against injected script, HSTS against downgrade, frame-ancestors against
clickjacking, Secure/HttpOnly/SameSite cookies, nosniff, CORP, a private referrer
policy) or that sends them in a form that does nothing.
Defence: the same ten tests, result ids, score modifiers, bonus rule and letter
grades as the MDN HTTP Observatory (algorithm version 4), so a Bastion grade can be
compared with the public one, plus one `Finding` per test that names the Bastion
setting to change.

Scoring (upstream `src/scanner/index.js`, `src/grader/grader.js`): start at 100, add
each test's modifier; bonuses count only if the score with penalties alone is at
least 90; the score, floored at 0 and rounded down to a multiple of 5 (100 at most),
picks the letter from A+ (100) down to F (below 25).

Deliberately not covered, because a pure function of one `Observation` cannot see
it: the HSTS preload list (`hsts-preloaded`, `redirection-all-redirects-preloaded`),
certificate validity (`hsts-invalid-cert`, `redirection-invalid-cert`), cookies set
by other requests of a scan (upstream also fetches `/robots.txt`), and the Public
Suffix List (see `checks.registrable_domain`). Newer upstream tests that are not
scored in algorithm version 4 (COOP, COEP) are not graded. Other deviations, each
towards what browsers do, are documented where they happen (CSP header lines split
on commas; a `<meta>` frame-ancestors not counted; a non-numeric HSTS max-age
invalid).

The package reads in this order:

* `scoring` the score table, grade chart and the sum;
* `page`    the `Observation`, header lookups, the bounded HTML scan;
* `csp`     the CSP parser and the content-security-policy test;
* `checks`  the nine other tests;
* `advice`  findings: severity, evidence, the fix.

References (mdn/mdn-http-observatory, read at the commits named):
`src/grader/charts.js` (a57b50e3), `src/grader/grader.js` (fa093059),
`src/scanner/index.js` (9408a5c5), `src/constants.js` (0904b8b0), `src/types.js`
(fff50501), `src/analyzer/cspParser.js` and `src/analyzer/tests/csp.js` (d52f9479),
`src/analyzer/tests/*.js`, `src/retriever/utils.js` (66138637); the scoring page
https://developer.mozilla.org/en-US/observatory/docs/tests_and_scoring ; CSP Level 3
https://www.w3.org/TR/CSP3/ ; RFC 6797 (HSTS); RFC 6265 section 5.2 (Set-Cookie);
Fetch https://fetch.spec.whatwg.org/ (CORS, CORP, nosniff); SRI
https://www.w3.org/TR/SRI/ .
"""

from __future__ import annotations

from bastion.audit.findings import Grade
from bastion.audit.observatory.advice import finding_for, grade_findings, severity_for
from bastion.audit.observatory.checks import (
    CORS_PROBE_ORIGIN,
    check_cookies,
    check_corp,
    check_cors,
    check_frame_options,
    check_hsts,
    check_nosniff,
    check_redirection,
    check_referrer_policy,
    check_sri,
)
from bastion.audit.observatory.csp import CSPParseError, ParsedCSP, check_csp, parse_csp
from bastion.audit.observatory.page import Observation, is_html, scan_html
from bastion.audit.observatory.scoring import (
    GRADE_CHART,
    MINIMUM_SCORE_FOR_EXTRA_CREDIT,
    SCORE_TABLE,
    TEST_NAMES,
    TEST_TITLES,
    ObservedTest,
    letter_for,
    total,
)

__all__ = [
    "CORS_PROBE_ORIGIN",
    "GRADE_CHART",
    "MINIMUM_SCORE_FOR_EXTRA_CREDIT",
    "SCORE_TABLE",
    "TEST_NAMES",
    "TEST_TITLES",
    "CSPParseError",
    "Observation",
    "ObservedTest",
    "ParsedCSP",
    "finding_for",
    "grade",
    "grade_findings",
    "letter_for",
    "parse_csp",
    "severity_for",
]


def grade(observation: Observation) -> Grade:
    """The ten Observatory tests on one page, scored and graded as upstream does."""
    page = scan_html(observation.body) if is_html(observation) else scan_html("")
    csp = check_csp(observation, page)
    hsts = check_hsts(observation)
    tests = (
        csp.test,
        check_cookies(observation, hsts_passed=hsts.passed),
        check_cors(observation),
        check_redirection(observation),
        check_referrer_policy(observation, page),
        hsts,
        check_sri(observation, page),
        check_nosniff(observation),
        check_frame_options(observation, csp.header_frame_ancestors),
        check_corp(observation),
    )
    return total(tests)
