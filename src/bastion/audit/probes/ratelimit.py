"""No rate limit on login: unlimited password guessing.

Threat: online brute force and credential stuffing against a login route that
answers every attempt at full speed.
Probe: failed logins to each login-like route (the login recipe's, else POST
routes named like login), with an account name no real user has
(`PROBE_ACCOUNT`, so no real account is locked out) and a random password,
at most `MAX_ATTEMPTS` per route and `MAX_ROUTES` routes, stopping at the first
sign of throttling (below). A route whose first answer shows it is
not a login form the probe can drive (404, 405, 415, 422) is not judged.

A route guessed by its name may instead be one that only signed-in callers may
use (`POST /api/token` issuing a token to a session): it refuses the anonymous
probe with 401 or 403 before it reads any credential, so hammering it measures
nothing, and each refusal counts towards a ban of the auditor. When a guessed
route refuses the first attempt so, the same wrong credentials are sent once
more with the logged-in session: a route that then accepts them does not check
them, and is not judged. Without a session to ask with (no login recipe, or a
live server audited without `allow_writes`), a credential check cannot be told
from a policy refusal, and the route is not judged either. The token recipe's
route is not a login route when the token is issued to a session.

Throttling is 429, any answer with `Retry-After`, or a switch from 401 to 403
after the first attempt: the credentials were refused, then the caller was
(a lockout or a ban, which is what throttling a login looks like to a client).

Not covered: throttling that only slows answers down (the probe counts refusals,
not time), per-account lockouts keyed on real accounts, CAPTCHAs.

References: OWASP Authentication Cheat Sheet, "Protect against automated attacks"
https://cheatsheetseries.owasp.org/cheatsheets/Authentication_Cheat_Sheet.html ;
NIST SP 800-63B section 5.2.2.
"""

from __future__ import annotations

import re
import secrets
from http import HTTPStatus
from typing import Final

from bastion.audit.discovery import LoginRecipe, Route
from bastion.audit.findings import Finding
from bastion.audit.probes.base import Check, ProbeContext
from bastion.audit.target import HTTPResponse, TargetError

# Enough to be sure nothing throttles (Bastion locks a client out of an account
# after 5 failures; common limits are 5 to 20 a minute), few enough to be harmless.
MAX_ATTEMPTS: Final = 60
MAX_ROUTES: Final = 2
PROBE_ACCOUNT: Final = "bastion-audit-probe"
_LOGIN_LIKE: Final = re.compile(r"log-?in|sign-?in|session|token|auth", re.I)
_NOT_A_LOGIN: Final = frozenset({404, 405, 415, 422})
# Refusals of the caller rather than of the credentials.
_REFUSED_CALLER: Final = frozenset({401, 403})

LOGIN: Final = Check(
    "ratelimit.login",
    "Repeated failed logins are throttled",
    "medium",
    "Name the route in `ratelimit.login_routes` (lockout per account and client) and "
    'give it a rate in `ratelimit.limits`, e.g. {"POST /login": ["5/minute"]}.',
    ("https://cheatsheetseries.owasp.org/cheatsheets/Authentication_Cheat_Sheet.html",),
)


def candidates(ctx: ProbeContext) -> list[tuple[Route, bytes, str, bool]]:
    """(route, failing body, content type, guessed) for each login-like route."""
    found: list[tuple[Route, bytes, str, bool]] = []
    if ctx.login is not None:
        body, content_type = ctx.login.body(
            username=PROBE_ACCOUNT, password=secrets.token_urlsafe(12)
        )
        found.append((Route("POST", ctx.login.path), body, content_type, False))
    session_token = ctx.token.path if ctx.token is not None and ctx.token.from_session else None
    for route in ctx.routes:
        if route.method != "POST" or not _LOGIN_LIKE.search(route.path):
            continue
        if route.path == session_token or not route.may_be_probed_with_writes:
            continue
        if any(r == route for r, _, _, _ in found):
            continue
        recipe = LoginRecipe(route.path, PROBE_ACCOUNT, secrets.token_urlsafe(12))
        body, content_type = recipe.body()
        found.append((route, body, content_type, True))
    return found[:MAX_ROUTES]


def is_throttled(status: int, retry_after: str | None, previous_status: int | None = None) -> bool:
    """Whether an answer shows throttling: 429, `Retry-After`, or a refusal of the
    credentials (401) turned into a refusal of the caller (403: a lockout or a ban)."""
    locked_out = previous_status == HTTPStatus.UNAUTHORIZED and status == HTTPStatus.FORBIDDEN
    return status == HTTPStatus.TOO_MANY_REQUESTS or retry_after is not None or locked_out


def ignores_credentials(anonymous_status: int, signed_in_status: int) -> bool:
    """Whether a route refused the anonymous caller, not the credentials: it refused
    the wrong credentials without a session and accepted them with one."""
    return anonymous_status in _REFUSED_CALLER and signed_in_status < 400


async def _attempt(
    ctx: ProbeContext, route: Route, body: bytes, content_type: str, *, signed_in: bool = False
) -> HTTPResponse:
    return await ctx.send(
        route.method,
        route.path,
        headers=(("origin", ctx.own_origin), ("sec-fetch-site", "same-origin")),
        body=body,
        content_type=content_type,
        jar=ctx.session.copy() if signed_in and ctx.session is not None else None,
    )


async def _hammer(
    ctx: ProbeContext, route: Route, body: bytes, content_type: str, *, guessed: bool
) -> tuple[list[int], int | None, str]:
    """Failed logins until throttled: (statuses, attempt throttled at, why not judged)."""
    statuses: list[int] = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if attempt == 1 or attempt % 10 == 0:
            ctx.step(f"ratelimit: failed login {attempt} to {route}")
        response = await _attempt(ctx, route, body, content_type)
        previous = statuses[-1] if statuses else None
        statuses.append(response.status)
        if is_throttled(response.status, response.header("retry-after"), previous):
            return statuses, attempt, ""
        if attempt > 1:
            continue
        if response.status in _NOT_A_LOGIN:
            return statuses, None, f"answered {response.status}: not a login form"
        if not guessed or response.status not in _REFUSED_CALLER:
            continue
        if ctx.session is None or not ctx.allow_writes:
            # A 401 or 403 to an anonymous caller may be the policy refusing the
            # caller before any credential is read: hammering it would measure
            # nothing and get the auditor banned.
            return (
                statuses,
                None,
                f"answered {response.status} anonymously and there is no session to tell "
                "a credential check from a refusal of the caller (give a login recipe"
                f"{'' if ctx.allow_writes else ' and --allow-writes'}): not judged",
            )
        ctx.step(f"ratelimit: the same failed login to {route}, signed in")
        control = await _attempt(ctx, route, body, content_type, signed_in=True)
        if ignores_credentials(response.status, control.status):
            return (
                statuses,
                None,
                f"answered {response.status} anonymously and {control.status} signed in, "
                "whatever the credentials: not a login form",
            )
    return statuses, None, ""


async def probe(ctx: ProbeContext) -> list[Finding]:
    routes = candidates(ctx)
    if not routes:
        ctx.skip("ratelimit: no login route (give a login recipe)")
        return []
    findings: list[Finding] = []
    for route, body, content_type, guessed in routes:
        try:
            statuses, throttled_at, not_judged = await _hammer(
                ctx, route, body, content_type, guessed=guessed
            )
        except TargetError as exc:  # ends this route's checks only; the gap is reported
            ctx.cut_short("ratelimit", str(route), exc)
            continue
        if not_judged:
            ctx.skip(f"ratelimit: {route} {not_judged}")
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
