"""WebSocket handshakes from a foreign origin, and without authentication.

Threat: cross-site WebSocket hijacking: browsers attach cookies to a WebSocket
handshake from any page and enforce no same-origin policy on it, so a server
that accepts a foreign `Origin` with the user's session lets any site talk on
the user's behalf. A socket that accepts anyone at all exposes its feed.
Probe: for each WebSocket route (a few), a handshake with `Origin:
https://evil.example` carrying the session's cookies (or the target's, without
a login recipe), and one with the target's own origin and no cookie at all.
Each handshake is closed as soon as it is decided; no message is sent.

Not covered: what the socket does after accepting (message size, rate, schema),
and credentials in the query string.

References: RFC 6455 section 10.2 (origin considerations)
https://www.rfc-editor.org/rfc/rfc6455#section-10.2 ; OWASP WebSocket Security
Cheat Sheet.
"""

from __future__ import annotations

from typing import Final

from bastion.audit.findings import Finding
from bastion.audit.probes.base import EVIL_ORIGIN, Check, ProbeContext, summarise
from bastion.audit.target import CookieJar, TargetError

MAX_ROUTES: Final = 3
_REFERENCES: Final = (
    "https://www.rfc-editor.org/rfc/rfc6455#section-10.2",
    "https://cheatsheetseries.owasp.org/cheatsheets/WebSocket_Security_Cheat_Sheet.html",
)

FOREIGN_ORIGIN: Final = Check(
    "websocket.foreign-origin",
    "A WebSocket handshake from another origin is refused",
    "high",
    "Keep Bastion's `websocket` guard enabled: it checks `Origin` against "
    "`websocket.allowed_origins` and the site's own origin; list only origins you trust.",
    _REFERENCES,
)
NO_AUTH: Final = Check(
    "websocket.no-auth",
    "A WebSocket handshake without credentials is refused",
    "medium",
    "Keep `websocket.default_access` at `authenticated` and mark only truly public "
    "sockets `public` in `websocket.routes`.",
    _REFERENCES,
)


async def probe(ctx: ProbeContext) -> list[Finding]:
    routes = [route for route in ctx.routes if route.is_websocket][:MAX_ROUTES]
    if not routes:
        ctx.skip("websocket: no WebSocket route")
        return []
    jar = ctx.session if ctx.session is not None else CookieJar()
    cookies = "the session cookies" if ctx.session is not None else "no session"
    foreign: list[tuple[str, str]] = []
    anonymous: list[tuple[str, str]] = []
    tested: list[str] = []
    for route in routes:
        try:
            ctx.step(f"websocket: {route} from {EVIL_ORIGIN}")
            result = await ctx.websocket(route.path, headers=(("origin", EVIL_ORIGIN),), jar=jar)
            if result.accepted:
                foreign.append(
                    (
                        str(route),
                        f"handshake to {route.path} with Origin: {EVIL_ORIGIN} and "
                        f"{cookies}: {result.describe()}",
                    )
                )
            ctx.step(f"websocket: {route} without credentials")
            result = await ctx.websocket(route.path, headers=(("origin", ctx.own_origin),))
            if result.accepted:
                anonymous.append(
                    (
                        str(route),
                        f"handshake to {route.path} from {ctx.own_origin} without "
                        f"cookies or token: {result.describe()}",
                    )
                )
        except TargetError as exc:  # ends this route's checks only; the gap is reported
            ctx.cut_short("websocket", str(route), exc)
            continue
        tested.append(str(route))
    return [
        *summarise(FOREIGN_ORIGIN, foreign, tested, "refused"),
        *summarise(NO_AUTH, anonymous, tested, "refused"),
    ]
