"""Run an audit: discover routes, crawl, log in, run every probe, collect the report.

Threat: an audit that harms what it audits, or runs without end; or one that a
target stops halfway, to pass a CI gate on what the audit never saw.
Defence: every request goes through one `ProbeContext` that counts it against
`max_requests` (the audit stops there and says so, and each probe the budget cut
short or left unrun is a failed `audit.incomplete`); the crawl is bounded by
`MAX_CRAWL_ROUTES` and skips routes that would log out or delete; the probes
run one request at a time; state-changing probes never target logout or
delete routes, and on a live server send nothing with the signed-in session
unless the caller allows writes; the rate-limit probe runs last, with an account name no real
user has, and stops at the first refusal.

Order: the main page and its grade first (the Observatory's input must be the
first impression), then the anonymous crawl, the login, the probes that only
read, those that post, and the login-hammering ones last, so a lockout or a ban
they provoke cannot mask another probe's result. At the end the main page is
fetched again: if the target now refuses the auditor (a ban), the report says
so, since later results may then be refusals of the auditor, not of the attack.

A target stops an audit halfway by listing a path no request can carry
(`/a\\ud800`, `/a\\x07` in its OpenAPI document), or by resetting the connection
or sending an unreadable answer on one route. Discovery drops every route the
target cannot be sent (`drop_unsendable`), each named in `skipped`; probes catch
`TargetError` per route, so one broken route ends only its own checks; and each
check a `TargetError` cut short is a failed `audit.incomplete` (`INCOMPLETE`),
critical, so every `--fail-on` level fails.

A target can also spend the request budget (a redirect on every page, many
routes in its OpenAPI document), so the last probes (JWT, sessions, the login
hammer) never run: their findings would vanish behind the info
`audit.request-cap`, and a gate would pass. So when the budget ends, the probe it
stopped is cut short and each probe after it did not run, and each of them is a
failed `audit.incomplete` too; `audit.request-cap` says why.

Not covered: running probes concurrently (an audit is not a load test).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from bastion.audit.discovery import (
    LoginRecipe,
    Route,
    TokenRecipe,
    is_sendable_path,
    merge_routes,
    openapi_document,
    parse_route,
    routes_from_app,
    routes_from_openapi,
)
from bastion.audit.findings import AuditReport, Finding
from bastion.audit.probes import (
    cookies,
    cors,
    csrf,
    headers,
    hosts,
    jwt,
    leakage,
    ratelimit,
    sessions,
    transport,
    websocket,
)
from bastion.audit.probes.base import BudgetExhausted, Check, ProbeContext, ProgressCallback
from bastion.audit.target import CookieJar, Target, TargetError, open_target

# A full audit of an app with a few dozen routes sends a few hundred requests
# (the rate-limit probe alone up to 60 per login route).
DEFAULT_MAX_REQUESTS: Final = 1500
# Below this not even the main page, its grade and one probe fit.
MIN_MAX_REQUESTS: Final = 20
MAX_CRAWL_ROUTES: Final = 40
OPENAPI_PATH: Final = "/openapi.json"
# A hostile OpenAPI document can list thousands of paths no request can carry:
# the first few are named in `skipped`, the rest counted on one line.
MAX_UNSENDABLE_SHOWN: Final = 20
_NEVER_CRAWL: Final = re.compile(r"log-?out|sign-?out", re.I)

REQUEST_CAP: Final = Check(
    "audit.request-cap",
    "The audit finished within its request budget",
    "info",
    "Raise the request budget (`max_requests`) or audit fewer routes.",
)
STILL_SERVED: Final = Check(
    "audit.still-served",
    "The target still served the auditor at the end of the audit",
    "info",
    "The target began refusing the auditor (a ban or lockout): results of the probes "
    "after that may be refusals of the auditor rather than of the attack. Audit from "
    "an address the ban list ignores, or raise `ratelimit.ban_threshold` for the audit.",
)

INCOMPLETE: Final = Check(
    "audit.incomplete",
    "Every check ran to its end",
    # Critical, the most severe level, so that every `--fail-on` level fails: a
    # check that did not run may hide the worst finding there is (`jwt.alg-none`
    # is critical), and a target must not pass a gate by breaking requests.
    "critical",
    "The target broke off a request of the audit (connection reset, an answer that "
    "could not be read, no answer in time), or the request budget ran out, so the "
    "checks the evidence names did not run and a weakness there would go unseen. Find "
    "out why in the server's log and fix it, or raise the budget (`max_requests`), and "
    "audit again (`--route` audits chosen routes only).",
)

Probe = Callable[[ProbeContext], Awaitable[list[Finding]]]


async def _cookies(ctx: ProbeContext) -> list[Finding]:
    return cookies.probe(ctx)


# Readers first, then writers, then the probes that hammer the login.
PROBES: Final[tuple[tuple[str, Probe], ...]] = (
    ("transport", transport.probe),
    ("hosts", hosts.probe),
    ("cors", cors.probe),
    ("leakage", leakage.probe),
    ("csrf", csrf.probe),
    ("websocket", websocket.probe),
    ("jwt", jwt.probe),
    ("sessions", sessions.probe),
    ("cookies", _cookies),
    ("ratelimit", ratelimit.probe),
)


async def discover(ctx: ProbeContext, given: Sequence[Route | str] | None) -> list[Route]:
    """The routes to probe: the user's list, else OpenAPI merged with the routing;
    only those a request can carry (`drop_unsendable`)."""
    if given is not None:
        routes = [r if isinstance(r, Route) else parse_route(r) for r in given]
        return drop_unsendable(ctx, merge_routes([Route("GET", "/")], routes))
    ctx.step(f"discovery: GET {OPENAPI_PATH}")
    response = await ctx.send("GET", OPENAPI_PATH)
    document = openapi_document(response.text) if response.status == 200 else None
    from_openapi = routes_from_openapi(document) if document is not None else []
    app = getattr(ctx.target, "app", None)
    from_app = routes_from_app(app) if app is not None else []
    return drop_unsendable(ctx, merge_routes([Route("GET", "/")], from_openapi, from_app))


def drop_unsendable(ctx: ProbeContext, routes: Sequence[Route]) -> list[Route]:
    """`routes` without those no request can carry: by `is_sendable_path`, and by
    the target's own URL building (`Target.can_send`: httpx for a live URL).

    Dropped here, before any probe, so none of them can stop a probe halfway;
    each is named in `skipped` (the first `MAX_UNSENDABLE_SHOWN`, then a count).
    A route nobody can request is not an `audit.incomplete`: there is nothing there
    to check. A route whose sample body discovery dropped is kept (probed without a
    body, as a route that takes none) and named in `skipped` too.
    """
    kept: list[Route] = []
    dropped: list[Route] = []
    for route in routes:
        if is_sendable_path(route.path) and ctx.target.can_send(route.path):
            kept.append(route)
        else:
            dropped.append(route)
    _name_bounded(
        ctx,
        [
            f"discovery: {route}: not a path a request can carry (a space, a control "
            "character or invalid Unicode); not probed"
            for route in dropped
        ],
        "routes; not probed",
    )
    # Kept, without the sample body discovery could not encode (`Route.body_dropped`).
    _name_bounded(
        ctx,
        [
            f"discovery: {route}: its OpenAPI sample body cannot be sent (invalid "
            "Unicode); probed without a body"
            for route in kept
            if route.body_dropped
        ],
        "sample bodies; probed without a body",
    )
    return kept


def _name_bounded(ctx: ProbeContext, reasons: Sequence[str], more: str) -> None:
    """The first `MAX_UNSENDABLE_SHOWN` reasons in `skipped`, then a count."""
    for reason in reasons[:MAX_UNSENDABLE_SHOWN]:
        ctx.skip(reason)
    if len(reasons) > MAX_UNSENDABLE_SHOWN:
        ctx.skip(f"discovery: {len(reasons) - MAX_UNSENDABLE_SHOWN} more such {more}")


async def crawl(ctx: ProbeContext) -> None:
    """GET each discovered GET route once, anonymously; answers kept for the probes."""
    pages = [
        route
        for route in ctx.routes
        if route.method == "GET" and route.path != "/" and not _NEVER_CRAWL.search(route.path)
    ]
    for route in pages[:MAX_CRAWL_ROUTES]:
        ctx.step(f"crawl: {route}")
        try:
            ctx.crawl[route] = await ctx.send("GET", route.path)
        except TargetError as exc:  # one page that fails does not end the audit
            ctx.cut_short("crawl", str(route), exc)


async def log_in(ctx: ProbeContext) -> None:
    if ctx.login is None:
        ctx.skip("login: no login recipe; authenticated probes run without a session")
        return
    jar = CookieJar()
    ctx.step("login: visit / then sign in")
    await ctx.send("GET", "/", jar=jar)
    if await ctx.log_in(jar) is not None:
        ctx.session = jar


async def run_audit(
    target: Target,
    *,
    routes: Sequence[Route | str] | None = None,
    login: LoginRecipe | None = None,
    token: TokenRecipe | None = None,
    progress: ProgressCallback | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    allow_writes: bool = False,
) -> AuditReport:
    """Audit `target` (entered here: lifespan startup and shutdown included).

    Probes that send state-changing requests with the signed-in session (the
    CSRF probe's forged writes) run against a live server only with
    `allow_writes`; in-process they always run, since nothing real is touched.
    """
    if max_requests < MIN_MAX_REQUESTS:
        raise ValueError(f"max_requests must be at least {MIN_MAX_REQUESTS}")
    started = time.monotonic()
    async with target:
        ctx = ProbeContext(
            target,
            [],
            login=login,
            token=token,
            max_requests=max_requests,
            progress=progress,
            allow_writes=allow_writes or not target.is_live,
        )
        grade, findings = await headers.probe(ctx)
        unfinished = [name for name, _ in PROBES]
        running = ""
        try:
            ctx.routes = await discover(ctx, routes)
            await crawl(ctx)
            await log_in(ctx)
            for name, probe in PROBES:
                running = name
                try:
                    findings += await probe(ctx)
                except TargetError as exc:
                    # Probes catch it per route; what is left here is a request
                    # outside any route loop (a login), and it loses the whole probe.
                    ctx.cut_short(name, "", exc)
                unfinished.remove(name)
        except BudgetExhausted as exc:
            # The probe the budget stopped is cut short, the later ones never ran:
            # each is a failed audit.incomplete, so a target that spends the budget
            # cannot hide what the last probes would have found.
            for name in unfinished:
                if name == running:
                    ctx.cut_short(name, "", exc)
                else:
                    ctx.did_not_run(name, exc)
            findings.append(
                REQUEST_CAP.result(
                    False,
                    f"{exc}; cut short or not run: {', '.join(unfinished)} "
                    "(each a failed audit.incomplete)",
                )
            )
        else:
            findings.append(REQUEST_CAP.result(True, f"{ctx.requests_sent} requests"))
            findings += await _still_served(ctx)
        findings += [INCOMPLETE.result(False, lost, route) for route, lost in ctx.incomplete]
    return AuditReport(
        target=target.label,
        grade=grade,
        findings=findings,
        routes=[str(route) for route in ctx.routes],
        requests_sent=ctx.requests_sent,
        duration_seconds=time.monotonic() - started,
        skipped=list(ctx.skipped),
        insecure_tls=not target.verify_tls,
    )


async def _still_served(ctx: ProbeContext) -> list[Finding]:
    if ctx.main is None or ctx.requests_sent >= ctx.max_requests:
        return []
    ctx.step("audit: main page again")
    # Reached the way the main page was at the start (redirects on the target's own
    # host followed), so a home page that redirects to its login form compares the
    # login form with the login form, not with the redirect.
    try:
        _, _, response = await headers.follow(ctx, "/", ctx.target.scheme)
    except BudgetExhausted:
        return []  # the budget ran out on the way: nothing to compare
    except TargetError as exc:
        # Every probe has run: a target that now drops the connection (a firewall
        # ban does) refuses the auditor, as a 403 would.
        return [
            STILL_SERVED.result(
                False,
                f"GET / answered {ctx.main.status} at the start and could not be reached "
                f"at the end ({exc})",
                "GET /",
            )
        ]
    same = response.status == ctx.main.status
    return [
        STILL_SERVED.result(
            same,
            f"GET / (redirects followed) answered {ctx.main.status} at the start and "
            f"{response.status} at the end",
            "GET /",
        )
    ]


def run_audit_sync(
    target: Target | str,
    *,
    routes: Sequence[Route | str] | None = None,
    login: LoginRecipe | None = None,
    token: TokenRecipe | None = None,
    progress: ProgressCallback | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    host: str | None = None,
    verify_tls: bool = True,
    allow_writes: bool = False,
) -> AuditReport:
    """`run_audit` for the command line: `target` may be a URL or `module:attribute`
    (`host` and `verify_tls` apply to those)."""
    opened = (
        open_target(target, host=host, verify_tls=verify_tls) if isinstance(target, str) else target
    )
    return asyncio.run(
        run_audit(
            opened,
            routes=routes,
            login=login,
            token=token,
            progress=progress,
            max_requests=max_requests,
            allow_writes=allow_writes,
        )
    )
