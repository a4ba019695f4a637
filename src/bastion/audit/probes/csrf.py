"""Cross-site POST to state-changing routes, with the session's cookies.

Threat: cross-site request forgery: a page on another site makes the user's
browser send a state-changing request that carries the user's cookies.
Probe: for each state-changing route (a few, never logout or delete routes), one
same-origin request first (the baseline: what the route answers a legitimate
form), then the same request three times as a cross-site page would send it,
each carrying one signal a browser sends: a foreign `Origin`, `Origin: null`
(sandboxed frames, `data:` pages, some redirects), and `Sec-Fetch-Site:
cross-site` without `Origin`. All carry the logged-in session's cookies when a
login recipe is given, else whatever cookies the target set. Writes with the
session are sent to a live server only when allowed (`ProbeContext.allow_writes`).

Verdict: the cross-site request is accepted when the baseline succeeded (below
400) and the cross-site one did too. When even the baseline is refused (a token
the probe cannot know, a body it cannot guess) the route is not judged. Without
any cookie the severity drops to low: an accepted request carries no ambient
credential, so it forges nothing unless the app trusts something else ambient.

Not covered: GET routes that change state; token-only defences are judged by
outcome only (a refused request passes however it was refused).

References: OWASP CSRF Prevention Cheat Sheet (`_REFERENCES`);
Fetch Metadata https://www.w3.org/TR/fetch-metadata/ ; RFC 6454 section 7.
"""

from __future__ import annotations

import re
from typing import Final

from bastion.audit.discovery import Route
from bastion.audit.findings import Finding
from bastion.audit.probes.base import EVIL_ORIGIN, Check, ProbeContext, summarise
from bastion.audit.target import CookieJar, TargetError

# A few routes are enough to show the defence is (or is not) applied globally.
MAX_ROUTES: Final = 5
_LOGIN_LIKE: Final = re.compile(r"log-?in|sign-?in|token|auth", re.I)
_FIX: Final = (
    "Keep Bastion's `csrf` layer enabled (Fetch Metadata and Origin, then a "
    "session-bound token); do not list these routes in `csrf.insecure_exempt_paths` "
    "or their origins in `csrf.trusted_origins`."
)
_REFERENCES: Final = (
    "https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html",
)

CROSS_SITE_ORIGIN: Final = Check(
    "csrf.cross-site-origin",
    "A state-changing request from another origin is refused",
    "high",
    _FIX,
    _REFERENCES,
)
NULL_ORIGIN: Final = Check(
    "csrf.null-origin",
    "A state-changing request with Origin: null is refused",
    "high",
    _FIX,
    _REFERENCES,
)
SEC_FETCH_SITE: Final = Check(
    "csrf.sec-fetch-site",
    "A state-changing request marked Sec-Fetch-Site: cross-site is refused",
    "high",
    _FIX,
    ("https://www.w3.org/TR/fetch-metadata/", *_REFERENCES),
)

ATTACKS: Final[tuple[tuple[Check, tuple[tuple[str, str], ...]], ...]] = (
    (CROSS_SITE_ORIGIN, (("origin", EVIL_ORIGIN), ("sec-fetch-site", "cross-site"))),
    (NULL_ORIGIN, (("origin", "null"),)),
    (SEC_FETCH_SITE, (("sec-fetch-site", "cross-site"),)),
)


def judge(
    baseline_status: int,
    attack_status: int,
    baseline_location: str | None = None,
    attack_location: str | None = None,
) -> bool | None:
    """True when the cross-site request was refused, False when accepted, None when
    the baseline itself failed (nothing to compare with).

    Accepted means answered like the baseline: a success of the same class, and
    not a redirect to a login page that the baseline did not get.
    """
    if baseline_status >= 400:
        return None
    if attack_status >= 400 or attack_status // 100 != baseline_status // 100:
        return True
    sent_to_login = _LOGIN_LIKE.search(attack_location or "") is not None
    return sent_to_login and _LOGIN_LIKE.search(baseline_location or "") is None


def candidates(ctx: ProbeContext) -> list[Route]:
    login_paths = {recipe.path for recipe in (ctx.login, ctx.token) if recipe is not None}
    return [
        route
        for route in ctx.routes
        if route.may_be_probed_with_writes
        and route.path not in login_paths
        and not _LOGIN_LIKE.search(route.path)
    ][:MAX_ROUTES]


async def _probe_route(
    ctx: ProbeContext, route: Route, jar: CookieJar, has_cookies: bool
) -> list[tuple[Check, str]] | None:
    """The baseline and the cross-site requests to one route: (check, evidence) for
    each accepted forgery, or None when the baseline was refused (not judged)."""
    body, content_type = route.body, route.content_type
    if not content_type:
        content_type = "application/x-www-form-urlencoded"
    ctx.step(f"csrf: same-origin {route}")
    baseline = await ctx.send(
        route.method,
        route.path,
        headers=(("origin", ctx.own_origin), ("sec-fetch-site", "same-origin")),
        body=body,
        content_type=content_type,
        jar=jar.copy(),
    )
    if baseline.status >= 400:
        ctx.skip(f"csrf: {route} refused the same-origin request ({baseline.status})")
        return None
    accepted: list[tuple[Check, str]] = []
    for check, headers in ATTACKS:
        ctx.step(f"csrf: {check.id} {route}")
        attack = await ctx.send(
            route.method,
            route.path,
            headers=headers,
            body=body,
            content_type=content_type,
            jar=jar.copy(),
        )
        verdict = judge(
            baseline.status,
            attack.status,
            baseline.header("location"),
            attack.header("location"),
        )
        if verdict is False:
            sent = ", ".join(f"{name}: {value}" for name, value in headers)
            accepted.append(
                (
                    check,
                    f"{route} with {sent} and "
                    f"{'the session cookies' if has_cookies else 'no cookie'} "
                    f"answered {attack.status} (same-origin: {baseline.status})",
                )
            )
    return accepted


async def probe(ctx: ProbeContext) -> list[Finding]:
    routes = candidates(ctx)
    if not routes:
        ctx.skip("csrf: no state-changing route to probe")
        return []
    if ctx.session is not None and not ctx.allow_writes:
        # A forged transfer a live target accepts is a real transfer.
        ctx.skip(
            "csrf: state-changing requests with the signed-in session are not sent "
            "to a live server without --allow-writes"
        )
        return []
    jar = ctx.session.copy() if ctx.session is not None else CookieJar()
    has_cookies = len(jar) > 0
    failures: dict[Check, list[tuple[str, str]]] = {check: [] for check, _ in ATTACKS}
    tested: list[str] = []
    for route in routes:
        try:
            accepted = await _probe_route(ctx, route, jar, has_cookies)
        except TargetError as exc:  # ends this route's checks only; the gap is reported
            ctx.cut_short("csrf", str(route), exc)
            continue
        if accepted is None:
            continue
        tested.append(str(route))
        for check, evidence in accepted:
            failures[check].append((str(route), evidence))
    findings: list[Finding] = []
    for check, _ in ATTACKS:
        found = summarise(
            check, failures[check], tested, "refused; same-origin requests were answered"
        )
        if not has_cookies:
            found = [
                check.result(f.passed, f.evidence + " (no session cookie)", f.route, "low")
                for f in found
            ]
        findings += found
    return findings
