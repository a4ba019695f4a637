"""CORS that grants any origin, or `null`, the right to read with credentials.

Threat: a server that copies the request's `Origin` into
`Access-Control-Allow-Origin` and adds `Access-Control-Allow-Credentials: true`
lets every site read every response with the visitor's cookies. Granting `null`
does the same for sandboxed frames any attacker can create.
Probe: the main page, a few GET routes that answered, and a preflight for a
state-changing route, each sent with `Origin: https://evil.example` and with
`Origin: null`, carrying the session's cookies when there is one.
Verdict: fails only when the grant names the probe's origin and allows
credentials. A reflected origin without credentials is the same as `*` and only
exposes what any client can fetch, so it passes (the evidence says so).

Not covered: origins trusted by a too-loose pattern (`*.example.com` matching an
attacker's subdomain) that the probe cannot guess.

References: Fetch standard, CORS protocol https://fetch.spec.whatwg.org/#http-cors-protocol ;
PortSwigger "CORS vulnerabilities" https://portswigger.net/web-security/cors
"""

from __future__ import annotations

from typing import Final

from bastion.audit.discovery import Route
from bastion.audit.findings import Finding
from bastion.audit.probes.base import EVIL_ORIGIN, Check, ProbeContext, summarise
from bastion.audit.target import HTTPResponse, TargetError

MAX_GET_ROUTES: Final = 3
_FIX: Final = (
    "Let Bastion's `cors` layer answer CORS: list exact origins in "
    "`cors.allow_origins` (it never copies the request's origin and never trusts "
    "`null`); it also removes Access-Control-* headers the app sets itself."
)
_REFERENCES: Final = ("https://portswigger.net/web-security/cors",)

REFLECT_ORIGIN: Final = Check(
    "cors.reflect-origin",
    "CORS does not grant an arbitrary origin with credentials",
    "high",
    _FIX,
    _REFERENCES,
)
NULL_ORIGIN: Final = Check(
    "cors.null-origin",
    "CORS does not grant the null origin with credentials",
    "high",
    _FIX,
    _REFERENCES,
)


def grants(response: HTTPResponse, origin: str) -> tuple[bool, str]:
    """Whether `response` lets `origin` read with credentials, and what it said."""
    allowed = (response.header("access-control-allow-origin") or "").strip()
    credentials = (response.header("access-control-allow-credentials") or "").strip().lower()
    said = f"Access-Control-Allow-Origin: {allowed or '(none)'}"
    if credentials:
        said += f", Access-Control-Allow-Credentials: {credentials}"
    return allowed == origin and credentials == "true", said


def _routes(ctx: ProbeContext) -> list[Route]:
    answered = [
        route
        for route, response in ctx.crawl.items()
        if response.status < 400 and route.path != "/"
    ]
    return [Route("GET", "/"), *answered[:MAX_GET_ROUTES]]


async def probe(ctx: ProbeContext) -> list[Finding]:
    jar = ctx.session
    writes = [route for route in ctx.routes if route.may_be_probed_with_writes]
    findings: list[Finding] = []
    for check, origin in ((REFLECT_ORIGIN, EVIL_ORIGIN), (NULL_ORIGIN, "null")):
        failures: list[tuple[str, str]] = []
        tested: list[str] = []
        for route in _routes(ctx):
            ctx.step(f"cors: {route} from {origin}")
            try:
                response = await ctx.send(
                    "GET",
                    route.path,
                    headers=(("origin", origin),),
                    jar=jar.copy() if jar else None,
                )
            except TargetError as exc:  # ends this request's check only; the gap is reported
                ctx.cut_short("cors", str(route), exc)
                continue
            granted, said = grants(response, origin)
            tested.append(str(route))
            if granted:
                failures.append((str(route), f"GET {route.path} with Origin: {origin}: {said}"))
        if writes:
            target = writes[0]
            ctx.step(f"cors: preflight {target} from {origin}")
            try:
                response = await ctx.send(
                    "OPTIONS",
                    target.path,
                    headers=(
                        ("origin", origin),
                        ("access-control-request-method", target.method),
                        ("access-control-request-headers", "content-type"),
                    ),
                )
            except TargetError as exc:
                ctx.cut_short("cors", f"OPTIONS {target.path}", exc)
            else:
                granted, said = grants(response, origin)
                tested.append(f"OPTIONS {target.path}")
                if granted:
                    failures.append(
                        (str(target), f"preflight {target} with Origin: {origin}: {said}")
                    )
        findings += summarise(check, failures, tested, "no credentialed grant")
    return findings
