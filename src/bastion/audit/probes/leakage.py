"""Information leakage: tracebacks, debug pages, file paths and version banners.

Threat: error pages that show a traceback (code, file paths, sometimes settings
and secrets), framework debug pages, and `Server` / `X-Powered-By` banners with
exact versions that tell an attacker which published vulnerabilities to try.
Probe: answers the app gives when things go wrong, each body scanned by
`find_leaks`: a path that cannot exist (404), a method the main page does not
serve (405), malformed JSON and an oversized body to a body-taking route, and
every page the crawl fetched (a route that raises shows its error page there).
Every answer's `Server` and `X-Powered-By` are checked for a version number.

The oversized body is `OVERSIZED_BODY_BYTES`, declared in `Content-Length` and
streamed in chunks, never held in memory at once. It goes to the route most
likely to read a JSON body (`oversized_target`): one OpenAPI declares JSON,
else one whose answer to malformed JSON shows it parsed it (400 / 422, a crash,
or a leak), else the first body route. Without that, a login form listed first
would take it and the JSON route that crashes would never see one.

Not covered: secrets in ordinary pages, timing differences, verbose 422 bodies
(pydantic echoing input is the errors layer's `insecure_pass_validation_input`).

References: OWASP WSTG-ERRH-01 (error handling), WSTG-INFO-02 (fingerprinting)
https://owasp.org/www-project-web-security-testing-guide/
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Final

from bastion.audit.discovery import Route
from bastion.audit.findings import Finding
from bastion.audit.probes.base import (
    Check,
    ProbeContext,
    is_json,
    random_marker,
    summarise,
)
from bastion.audit.target import Body, HTTPResponse, TargetError

# Above every common default body limit (Bastion, nginx and Starlette forms: 1 MiB)
# and small enough to be harmless: 3 MiB, sent in 64 KiB chunks.
OVERSIZED_BODY_BYTES: Final = 3 * 1024 * 1024
_CHUNK_BYTES: Final = 64 * 1024
# Answers to malformed JSON that show the route parsed the body as JSON: refused
# as bad JSON (400) or invalid (422); a crash (5xx) is checked separately.
_PARSED_JSON_STATUSES: Final = frozenset({400, 422})
# Which routes parse JSON is often unknown (no OpenAPI): a few are tried.
MAX_BODY_ROUTES: Final = 3
MALFORMED_JSON: Final = b'{"bastion-audit": [1, 2'

# (label, pattern): what a leaking body contains. Each pattern is specific
# enough not to match ordinary prose.
LEAK_PATTERNS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    ("Python traceback", re.compile(r"Traceback \(most recent call last\)")),
    ("source file and line", re.compile(r"File \"[^\"]+\.py\", line \d+")),
    (
        "framework debug page",
        re.compile(
            r"Werkzeug Debugger|traceback-container|Starlette Debugger|Django Version:"
            r"|Exception Value:|You're seeing this error because you have <code>DEBUG = True"
        ),
    ),
    (
        "server file path",
        re.compile(
            r"(?:/(?:home|usr|var|opt|srv|app|tmp|root|Users)/[\w.+-]+(?:/[\w.+-]+)*\.py\b)"
            r"|(?:[A-Za-z]:\\(?:[\w.+-]+\\)+[\w.+-]+\.py\b)|site-packages"
        ),
    ),
    (
        "exception name",
        re.compile(
            r"\b(?:RuntimeError|ValueError|KeyError|TypeError|AttributeError|ZeroDivisionError"
            r"|IndexError|AssertionError|NameError|ImportError|OperationalError)\b(?::|\()"
        ),
    ),
    (
        "version banner",
        re.compile(
            r"\b(?:uvicorn|hypercorn|gunicorn|daphne|Werkzeug|Django|Starlette|FastAPI|Flask"
            r"|nginx|Apache|Express|PHP|Python|CPython|OpenSSL)/\d+(?:\.\d+)+",
            re.I,
        ),
    ),
)
_VERSION: Final = re.compile(r"\d+\.\d+")
_BANNER_HEADERS: Final = ("server", "x-powered-by", "x-aspnet-version", "x-runtime-version")

_FIX_ERRORS: Final = (
    "Keep Bastion's `errors` layer enabled and `debug` off (production refuses "
    "debug): every exception becomes a generic 500 with an incident id, and 5xx "
    "bodies carrying a traceback or debug page are replaced."
)
_REFERENCES: Final = ("https://owasp.org/www-project-web-security-testing-guide/",)

NOT_FOUND: Final = Check(
    "leakage.not-found", "404 pages reveal no internals", "medium", _FIX_ERRORS, _REFERENCES
)
METHOD_NOT_ALLOWED: Final = Check(
    "leakage.method-not-allowed",
    "405 pages reveal no internals",
    "medium",
    _FIX_ERRORS,
    _REFERENCES,
)
MALFORMED: Final = Check(
    "leakage.malformed-json",
    "Malformed JSON is refused without revealing internals",
    "medium",
    _FIX_ERRORS,
    _REFERENCES,
)
OVERSIZED: Final = Check(
    "leakage.oversized-body",
    "An oversized body is refused without revealing internals",
    "medium",
    _FIX_ERRORS + " `limits.max_body_bytes` refuses large bodies with 413 while streaming.",
    _REFERENCES,
)
ERROR_PAGES: Final = Check(
    "leakage.error-page",
    "No page shows a traceback, debug page or source path",
    "high",
    _FIX_ERRORS,
    _REFERENCES,
)
BANNER: Final = Check(
    "leakage.server-banner",
    "Server and X-Powered-By headers name no version",
    "low",
    "Bastion's `headers.strip_headers` removes `server` and `x-powered-by` from app "
    "answers; run uvicorn with --no-server-header (hypercorn: include_server_header = "
    "False) and hide versions at the proxy.",
    _REFERENCES,
)


def find_leaks(response: HTTPResponse) -> list[str]:
    """The kinds of internals the body shows (labels of `LEAK_PATTERNS`)."""
    text = response.text
    return [label for label, pattern in LEAK_PATTERNS if pattern.search(text)]


def banners(response: HTTPResponse) -> list[str]:
    """Banner headers that carry a version number, as `name: value`."""
    return [
        f"{name}: {value}"
        for name in _BANNER_HEADERS
        for value in response.header_all(name)
        if _VERSION.search(value)
    ]


def judge(check: Check, label: str, response: HTTPResponse, route: str) -> Finding:
    leaks = find_leaks(response)
    evidence = f"{label} answered {response.status}"
    if leaks:
        evidence += ", body shows: " + ", ".join(leaks)
    return check.result(not leaks, evidence, route)


async def _oversized_body() -> AsyncIterator[bytes]:
    chunk = b"a" * _CHUNK_BYTES
    for _ in range(OVERSIZED_BODY_BYTES // _CHUNK_BYTES):
        yield chunk


def _body_routes(ctx: ProbeContext) -> list[Route]:
    """Routes that take a body, JSON ones first (a form route may ignore JSON)."""
    writable = [route for route in ctx.routes if route.may_be_probed_with_writes]
    writable.sort(key=lambda route: not is_json(route.content_type))
    return writable[:MAX_BODY_ROUTES] or [Route("POST", "/")]


def reads_json(response: HTTPResponse) -> bool:
    """Whether an answer to malformed JSON shows the route tried to parse it."""
    return (
        response.status in _PARSED_JSON_STATUSES
        or response.status >= 500
        or bool(find_leaks(response))
    )


def oversized_target(malformed: list[tuple[Route, HTTPResponse]]) -> Route:
    """The body route for the oversized body: declared JSON first, then one whose
    answer to malformed JSON shows it reads JSON, else the first (order kept)."""
    ranked = sorted(
        malformed,
        key=lambda pair: (not is_json(pair[0].content_type), not reads_json(pair[1])),
    )
    return ranked[0][0]


async def _send(
    ctx: ProbeContext,
    route: Route,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    body: Body = b"",
    content_type: str = "",
) -> HTTPResponse | None:
    """`ctx.send` to `route`, or None when the target broke the request: that one
    check is lost (and reported cut short), not the rest of the probe."""
    try:
        return await ctx.send(
            route.method, route.path, headers=headers, body=body, content_type=content_type
        )
    except TargetError as exc:
        ctx.cut_short("leakage", str(route), exc)
        return None


async def probe(ctx: ProbeContext) -> list[Finding]:
    findings: list[Finding] = []
    seen: list[tuple[str, HTTPResponse]] = []

    missing = Route("GET", f"/{random_marker()}")
    ctx.step("leakage: 404")
    response = await _send(ctx, missing)
    if response is not None:
        seen.append((str(missing), response))
        findings.append(judge(NOT_FOUND, str(missing), response, str(missing)))

    # Body probes come from the site itself, so a CSRF layer lets them reach the app.
    same_origin = (("origin", ctx.own_origin), ("sec-fetch-site", "same-origin"))
    ctx.step("leakage: 405")
    response = await _send(ctx, Route("PUT", "/"), headers=same_origin)
    if response is not None:
        seen.append(("PUT /", response))
        findings.append(judge(METHOD_NOT_ALLOWED, "PUT / (empty body)", response, "PUT /"))

    routes = _body_routes(ctx)
    malformed: list[tuple[Route, HTTPResponse]] = []
    for route in routes:
        ctx.step(f"leakage: malformed JSON to {route}")
        response = await _send(
            ctx, route, headers=same_origin, body=MALFORMED_JSON, content_type="application/json"
        )
        if response is not None:
            malformed.append((route, response))
    seen += [(str(route), resp) for route, resp in malformed]
    findings += summarise(
        MALFORMED,
        [
            (
                str(route),
                f"{route} with malformed JSON answered {resp.status}, body shows: "
                + ", ".join(find_leaks(resp)),
            )
            for route, resp in malformed
            if find_leaks(resp)
        ],
        [f"{route}: {resp.status}" for route, resp in malformed],
        "no internals shown",
    )

    route = oversized_target(malformed) if malformed else routes[0]
    ctx.step(f"leakage: {OVERSIZED_BODY_BYTES} byte body to {route}")
    response = await _send(
        ctx,
        route,
        headers=(*same_origin, ("content-length", str(OVERSIZED_BODY_BYTES))),
        body=_oversized_body(),
        content_type="application/octet-stream",
    )
    if response is not None:
        seen.append((str(route), response))
        findings.append(
            judge(
                OVERSIZED, f"{route} with a {OVERSIZED_BODY_BYTES} byte body", response, str(route)
            )
        )

    pages = [(str(r), resp) for r, resp in ctx.crawl.items()]
    if ctx.main is not None:
        pages.insert(0, ("GET /", ctx.main))
    failures = [
        (where, f"{where} answered {resp.status}, body shows: {', '.join(find_leaks(resp))}")
        for where, resp in pages
        if find_leaks(resp)
    ]
    findings += summarise(
        ERROR_PAGES, failures, [where for where, _ in pages], "no internals shown"
    )

    seen += pages
    banner_failures: dict[str, tuple[str, str]] = {}
    for where, resp in seen:
        for banner in banners(resp):
            banner_failures.setdefault(banner, (where, f"{where} answered with {banner}"))
    findings += summarise(
        BANNER, list(banner_failures.values()), ["every answer above"], "no version in banners"
    )
    return findings
