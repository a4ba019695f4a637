"""Security headers and CSP quality, graded as the MDN HTTP Observatory grades.

Threat: a page without the headers that stop script injection, framing, MIME
sniffing and downgrade (CSP, X-Frame-Options/frame-ancestors, nosniff, HSTS).
Defence: this probe only observes; `bastion.audit.observatory` grades. It builds
the Observatory's input for the main page: the page after redirects on the
target's own host, the same GET sent with the Observatory's own `Origin` (for its
CORS test), and the redirect chain from the `http://` URL.

Not covered: pages other than the main page (the Observatory grades one page).

References: MDN HTTP Observatory scoring
https://developer.mozilla.org/en-US/observatory/docs/tests_and_scoring
"""

from __future__ import annotations

from typing import Final

from bastion.audit.findings import Finding, Grade
from bastion.audit.observatory import CORS_PROBE_ORIGIN, Observation, grade, grade_findings
from bastion.audit.probes.base import ProbeContext
from bastion.audit.target import HTTPResponse, Scheme, owns, url_of

# Redirects followed to reach a page; the Observatory stops at a similar count.
MAX_REDIRECTS: Final = 8
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


async def follow(
    ctx: ProbeContext, path: str, scheme: Scheme, headers: tuple[tuple[str, str], ...] = ()
) -> tuple[list[tuple[str, int]], str, HTTPResponse]:
    """GET `path`, following redirects on the target's own host only.

    Returns the chain (one `(url, status)` per response), the final URL and the
    final response. A redirect off the host ends the chain there.
    """
    chain: list[tuple[str, int]] = []
    url = url_of(ctx.target, path, scheme)
    response = await ctx.send("GET", path, headers=headers, scheme=scheme)
    chain.append((url, response.status))
    for _ in range(MAX_REDIRECTS):
        location = response.header("location")
        if response.status not in _REDIRECTS or location is None:
            break
        step = owns(ctx.target, location, url)
        if step is None or not ctx.target.supports(step[0]):
            break
        scheme, path = step
        url = url_of(ctx.target, path, scheme)
        response = await ctx.send("GET", path, headers=headers, scheme=scheme)
        chain.append((url, response.status))
    return chain, url, response


async def observe(ctx: ProbeContext) -> Observation:
    """The Observatory's input for the main page."""
    ctx.step("headers: main page")
    chain, url, page = await follow(ctx, "/", ctx.target.scheme)
    ctx.main = page
    ctx.step("headers: main page with a foreign Origin")
    _, _, cors_page = await follow(
        ctx, "/", ctx.target.scheme, headers=(("origin", CORS_PROBE_ORIGIN),)
    )
    redirects: tuple[tuple[str, int], ...] | None = None
    if ctx.target.scheme == "https" and ctx.target.supports("http"):
        ctx.step("headers: redirects from http://")
        http_chain, _, _ = await follow(ctx, "/", "http")
        redirects = tuple(http_chain)
    elif ctx.target.scheme == "http":
        # The page itself is on plain HTTP: the chain is the page's own.
        redirects = tuple(chain)
    return Observation(
        url=url,
        status=page.status,
        headers=page.headers,
        body=page.text,
        cors_headers=cors_page.headers,
        http_redirects=redirects,
    )


async def probe(ctx: ProbeContext) -> tuple[Grade, list[Finding]]:
    observation = await observe(ctx)
    result = grade(observation)
    return result, grade_findings(result)
