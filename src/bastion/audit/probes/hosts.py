"""Host header injection and redirect poisoning.

Threat: an app that builds absolute URLs from the `Host` (or `X-Forwarded-Host`,
`Forwarded: host=`) header the client sent. Behind a shared cache, or in a
password-reset mail, the attacker's host then lands in links and redirects other
users follow (web cache poisoning, reset-link poisoning).
Probe: the main page and the routes that redirect (from the crawl), once with
`Host: evil.example` and once with the real `Host` plus each forwarding header
naming `evil.example`. An answer below 400 that puts `evil.example` in its
`Location` or body is poisoned. Separately, whether the app answers a host it
does not serve at all (the precondition of every such attack).

Not covered: hosts reflected only in mail, logs or later pages (the probe sees
only the immediate answer).

References: RFC 9110 section 7.2 (Host); PortSwigger "HTTP Host header attacks"
https://portswigger.net/web-security/host-header ; Django's ALLOWED_HOSTS.
"""

from __future__ import annotations

from typing import Final

from bastion.audit.discovery import Route
from bastion.audit.findings import Finding
from bastion.audit.probes.base import EVIL_HOST, Check, ProbeContext, summarise
from bastion.audit.target import HTTPResponse, TargetError

MAX_REDIRECT_ROUTES: Final = 4
_REFERENCES: Final = ("https://portswigger.net/web-security/host-header",)

HOST_HEADER: Final = Check(
    "hosts.host-header",
    "A forged Host header is not echoed into redirects or pages",
    "high",
    "List the hosts you serve in `transport.allowed_hosts` (Bastion answers 400 to "
    "any other `Host`), and build absolute URLs from configuration, not the request.",
    _REFERENCES,
)
FORWARDED_HOST: Final = Check(
    "hosts.forwarded-host",
    "A forged X-Forwarded-Host or Forwarded header is not echoed",
    "high",
    "Trust proxy headers only from your proxies: `transport.trusted_proxies` and "
    "`transport.proxy_headers` (x-forwarded-host only if your proxy sets it); "
    "run uvicorn with --no-proxy-headers so only Bastion decides.",
    _REFERENCES,
)
UNKNOWN_HOST: Final = Check(
    "hosts.unknown-host",
    "A request for a host the app does not serve is refused",
    "low",
    "List the hosts you serve in `transport.allowed_hosts`; never `*` in production.",
    ("https://docs.djangoproject.com/en/stable/ref/settings/#allowed-hosts", *_REFERENCES),
)

FORWARDING: Final = (
    ("x-forwarded-host", EVIL_HOST),
    ("forwarded", f"host={EVIL_HOST}"),
)


def echoes(response: HTTPResponse, host: str) -> str | None:
    """Where an accepted answer repeats `host` (`Location` or body), or None."""
    if response.status >= 400:
        return None
    location = response.header("location") or ""
    if host in location.lower():
        return f"Location: {location}"
    if host in response.text.lower():
        return "the body"
    return None


def _routes(ctx: ProbeContext) -> list[Route]:
    redirecting = [route for route, response in ctx.crawl.items() if 300 <= response.status < 400]
    return [Route("GET", "/"), *[r for r in redirecting if r.path != "/"][:MAX_REDIRECT_ROUTES]]


def _echo_failures(route: Route, sent: str, response: HTTPResponse) -> list[tuple[str, str]]:
    """The (route, evidence) failure when `response` echoes the foreign host, else none."""
    where = echoes(response, EVIL_HOST)
    if not where:
        return []
    evidence = f"{route} with {sent} answered {response.status} with {EVIL_HOST} in {where}"
    return [(str(route), evidence)]


async def probe(ctx: ProbeContext) -> list[Finding]:
    routes = _routes(ctx)
    host_failures: list[tuple[str, str]] = []
    forwarded_failures: list[tuple[str, str]] = []
    tested: list[str] = []
    unknown: HTTPResponse | None = None
    for route in routes:
        try:
            ctx.step(f"hosts: {route} with Host: {EVIL_HOST}")
            response = await ctx.send("GET", route.path, headers=(("host", EVIL_HOST),))
            if route.path == "/":
                unknown = response
            tested.append(str(route))
            host_failures += _echo_failures(route, f"Host: {EVIL_HOST}", response)
            for name, value in FORWARDING:
                ctx.step(f"hosts: {route} with {name}")
                response = await ctx.send("GET", route.path, headers=((name, value),))
                forwarded_failures += _echo_failures(route, f"{name}: {value}", response)
        except TargetError as exc:  # ends this route's checks only; the gap is reported
            ctx.cut_short("hosts", str(route), exc)
    findings = summarise(HOST_HEADER, host_failures, tested, "not echoed")
    findings += summarise(FORWARDED_HOST, forwarded_failures, tested, "not echoed")
    if unknown is not None:
        refused = unknown.status >= 400
        findings.append(
            UNKNOWN_HOST.result(
                refused, f"GET / with Host: {EVIL_HOST} answered {unknown.status}", "GET /"
            )
        )
    return findings
