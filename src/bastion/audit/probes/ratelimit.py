"""No rate limit on login: unlimited password guessing.

Threat: online brute force and credential stuffing against a login route that
answers every attempt at full speed.
Probe: failed logins to each login-like route (the login recipe's, else POST
routes named like login), with an account name no real user has
(`PROBE_ACCOUNT`, so no real account is locked out) and a random password,
at most `MAX_ATTEMPTS` per route, stopping at the first sign of throttling:
429, or any answer with `Retry-After`. A route whose first answer shows it is
not a login form the probe can drive (404, 405, 415, 422) is not judged.

Not covered: throttling that only slows answers down (the probe counts refusals,
not time), per-account lockouts keyed on real accounts, CAPTCHAs.

References: OWASP Authentication Cheat Sheet, "Protect against automated attacks"
https://cheatsheetseries.owasp.org/cheatsheets/Authentication_Cheat_Sheet.html ;
NIST SP 800-63B section 5.2.2.
"""

from __future__ import annotations

import re
import secrets
from typing import Final

from bastion.audit.discovery import LoginRecipe, Route
from bastion.audit.findings import Finding
from bastion.audit.probes.base import Check, ProbeContext

# Enough to be sure nothing throttles (Bastion locks a client out of an account
# after 5 failures; common limits are 5 to 20 a minute), few enough to be harmless.
MAX_ATTEMPTS: Final = 60
MAX_ROUTES: Final = 2
PROBE_ACCOUNT: Final = "bastion-audit-probe"
_LOGIN_LIKE: Final = re.compile(r"log-?in|sign-?in|session|token|auth", re.I)
_NOT_A_LOGIN: Final = frozenset({404, 405, 415, 422})

LOGIN: Final = Check(
    "ratelimit.login",
    "Repeated failed logins are throttled",
    "medium",
    "Name the route in `ratelimit.login_routes` (lockout per account and client) and "
    'give it a rate in `ratelimit.limits`, e.g. {"POST /login": ["5/minute"]}.',
    ("https://cheatsheetseries.owasp.org/cheatsheets/Authentication_Cheat_Sheet.html",),
)


def candidates(ctx: ProbeContext) -> list[tuple[Route, bytes, str]]:
    """(route, failing body, content type) for each login-like route."""
    found: list[tuple[Route, bytes, str]] = []
    if ctx.login is not None:
        body, content_type = ctx.login.body(
            username=PROBE_ACCOUNT, password=secrets.token_urlsafe(12)
        )
        found.append((Route("POST", ctx.login.path), body, content_type))
    for route in ctx.routes:
        if route.method != "POST" or not _LOGIN_LIKE.search(route.path):
            continue
        if not route.may_be_probed_with_writes or any(r == route for r, _, _ in found):
            continue
        recipe = LoginRecipe(route.path, PROBE_ACCOUNT, secrets.token_urlsafe(12))
        body, content_type = recipe.body()
        found.append((route, body, content_type))
    return found[:MAX_ROUTES]


def is_throttled(status: int, retry_after: str | None) -> bool:
    return status == 429 or retry_after is not None


async def probe(ctx: ProbeContext) -> list[Finding]:
    routes = candidates(ctx)
    if not routes:
        ctx.skip("ratelimit: no login route (give a login recipe)")
        return []
    findings: list[Finding] = []
    for route, body, content_type in routes:
        statuses: list[int] = []
        throttled_at: int | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if attempt == 1 or attempt % 10 == 0:
                ctx.step(f"ratelimit: failed login {attempt} to {route}")
            response = await ctx.send(
                route.method,
                route.path,
                headers=(("origin", ctx.own_origin), ("sec-fetch-site", "same-origin")),
                body=body,
                content_type=content_type,
            )
            statuses.append(response.status)
            if is_throttled(response.status, response.header("retry-after")):
                throttled_at = attempt
                break
            if attempt == 1 and response.status in _NOT_A_LOGIN:
                break
        if throttled_at is None and statuses[0] in _NOT_A_LOGIN:
            ctx.skip(f"ratelimit: {route} answered {statuses[0]}: not a login form")
            continue
        if throttled_at is not None:
            evidence = f"failed login {throttled_at} answered {statuses[-1]} (throttled)"
        else:
            evidence = (
                f"{len(statuses)} failed logins for one account, none throttled "
                f"(statuses: {', '.join(str(s) for s in sorted(set(statuses)))})"
            )
        findings.append(LOGIN.result(throttled_at is not None, evidence, str(route)))
    return findings
