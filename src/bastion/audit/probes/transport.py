"""HTTPS redirect, HSTS and TRACE.

Threat: a site reachable over plain HTTP (an on-path attacker reads and changes
it, and strips the upgrade to HTTPS), one that does not tell browsers to insist
on HTTPS next time (HSTS), and one that answers TRACE, echoing the request's
headers (cross-site tracing reads `HttpOnly` cookies through it on old clients,
and it discloses headers a proxy added).
Probe: `GET /` over `http://` must redirect to `https://` on the same host name;
`GET /` over HTTPS must carry `Strict-Transport-Security` with a max-age of at
least `MIN_HSTS_SECONDS`; `TRACE /` must be refused.

"The same host" is the host name, whatever the port, as the MDN HTTP
Observatory judges the first redirect (`redirection.js` compares `url.hostname`):
HSTS is recorded per host name and upgrades every port of it (RFC 6797 sections
8.1 and 8.3), so a redirect from `http://bank.example:8080/` to
`https://bank.example:8443/` still lets the HTTPS answer's HSTS protect the host
the user typed.

Not covered: TLS versions and cipher suites; HSTS preload-list membership.

References: RFC 6797 (HSTS) https://www.rfc-editor.org/rfc/rfc6797 ; RFC 9110
section 9.3.8 (TRACE); OWASP WSTG-CONF-06 (HTTP methods); MDN HTTP Observatory
`src/analyzer/tests/redirection.js` https://github.com/mdn/mdn-http-observatory
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urljoin, urlsplit

from bastion.audit.findings import Finding
from bastion.audit.probes.base import Check, ProbeContext, random_marker
from bastion.audit.target import HTTPResponse, TargetError, url_of
from bastion.hosts import parse_host_header

# The MDN HTTP Observatory's threshold for full HSTS credit: six months.
MIN_HSTS_SECONDS: Final = 15_552_000
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_MAX_AGE: Final = re.compile(r"max-age\s*=\s*\"?([0-9]+)\"?", re.I)
# More digits than any real lifetime has; `int()` refuses past 4300 of them.
_MAX_AGE_DIGITS: Final = 20

HTTPS_REDIRECT: Final = Check(
    "transport.https-redirect",
    "Plain HTTP redirects to HTTPS on the same host",
    "medium",
    "Keep Bastion's `transport` layer enforcing HTTPS (do not set "
    "`transport.insecure_allow_http`); behind a TLS proxy list it in "
    "`transport.trusted_proxies` so `X-Forwarded-Proto` is believed.",
    ("https://developer.mozilla.org/en-US/docs/Web/Security/Practical_implementation_guides/TLS",),
)
HSTS: Final = Check(
    "transport.hsts",
    "HTTPS answers carry Strict-Transport-Security for at least six months",
    "medium",
    "Keep `transport.hsts_max_age_seconds` at its default (one year) or more.",
    ("https://www.rfc-editor.org/rfc/rfc6797",),
)
TRACE: Final = Check(
    "transport.trace",
    "TRACE is refused",
    "low",
    "Answer TRACE with 405 (Starlette and FastAPI routers do); in a raw ASGI app "
    "route only the methods you serve, and disable TRACE at the proxy.",
    (
        "https://owasp.org/www-project-web-security-testing-guide/latest/4-Web_Application_Security_Testing/02-Configuration_and_Deployment_Management_Testing/06-Test_HTTP_Methods",
    ),
)


def upgrades_to_https(status: int, location: str | None, base_url: str) -> bool:
    """Whether an answer to `base_url` (plain HTTP) redirects to HTTPS on its host name.

    A relative `location` resolves against `base_url` (so it stays on `http:`);
    the port may differ, the host name may not.
    """
    if status not in _REDIRECTS or not location:
        return False
    base = urlsplit(base_url)
    try:
        target = urlsplit(urljoin(base_url, location.strip()))
    except ValueError:  # `https://[unclosed`: not a redirect anywhere
        return False
    if target.scheme.lower() != "https":
        return False
    theirs = parse_host_header(target.netloc.rpartition("@")[2])
    mine = parse_host_header(base.netloc)
    return theirs is not None and mine is not None and theirs.host == mine.host


def hsts_max_age(response: HTTPResponse) -> int | None:
    value = response.header("strict-transport-security")
    if value is None:
        return None
    match = _MAX_AGE.search(value)
    return int(match.group(1)[:_MAX_AGE_DIGITS]) if match else None


async def _https_redirect(ctx: ProbeContext) -> Finding:
    target = ctx.target
    ctx.step("transport: GET / over http://")
    response = await ctx.send("GET", "/", scheme="http")
    location = response.header("location")
    redirected = upgrades_to_https(response.status, location, url_of(target, "/", "http"))
    evidence = f"GET http://{target.host}/ answered {response.status}"
    if location:
        evidence += f", Location: {location}"
    return HTTPS_REDIRECT.result(redirected, evidence, "GET /")


async def _hsts(ctx: ProbeContext) -> Finding:
    ctx.step("transport: HSTS on GET / over https://")
    response = await ctx.send("GET", "/", scheme="https")
    max_age = hsts_max_age(response)
    shown = response.header("strict-transport-security") or "(none)"
    return HSTS.result(
        max_age is not None and max_age >= MIN_HSTS_SECONDS,
        f"GET https://{ctx.target.host}/ answered {response.status}, "
        f"Strict-Transport-Security: {shown}",
        "GET /",
    )


async def _trace(ctx: ProbeContext) -> Finding:
    marker = random_marker()
    ctx.step("transport: TRACE /")
    response = await ctx.send("TRACE", "/", headers=(("x-bastion-audit", marker),))
    evidence = f"TRACE / answered {response.status}"
    if marker in response.text:
        evidence += ", echoing the request headers"
    return TRACE.result(response.status >= 400, evidence, "TRACE /")


async def probe(ctx: ProbeContext) -> list[Finding]:
    steps: list[tuple[str, Callable[[ProbeContext], Awaitable[Finding]]]] = []
    if ctx.target.supports("http"):
        steps.append(("GET /", _https_redirect))
    else:
        ctx.skip("transport: plain HTTP is not reachable from this URL")
    if ctx.target.supports("https"):
        steps.append(("GET /", _hsts))
    else:
        ctx.skip("transport: HTTPS is not reachable from this URL")
    steps.append(("TRACE /", _trace))
    findings: list[Finding] = []
    for route, step in steps:
        try:  # each request on its own: HTTPS failing leaves the other two
            findings.append(await step(ctx))
        except TargetError as exc:
            ctx.cut_short("transport", route, exc)
    return findings
