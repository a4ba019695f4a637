"""Cookie flags and prefixes on every cookie the target sets, login included.

Threat: a session cookie sent over plain HTTP (no `Secure`), read by injected
script (no `HttpOnly`), attached to cross-site requests (no `SameSite`), or
overwritten from a sibling subdomain (no `__Host-` prefix: cookie tossing).
Defence checked: every cookie seen in any answer during the audit (the crawl,
the login, the probes) is judged by its `Set-Cookie` attributes:

* `Secure` on every cookie;
* `HttpOnly`, `SameSite=Lax|Strict` and a `__Host-` (or `__Secure-`) prefix on
  cookies that look like a session or credential (by name, or set by the login).

Not covered: cookies set by script (`document.cookie`), and whether the value
itself is guessable (the session probe checks rotation, not entropy).

References: RFC 6265bis sections 4.1.2.5-4.1.2.7 and 4.1.3 (prefixes)
https://httpwg.org/http-extensions/draft-ietf-httpbis-rfc6265bis.html ;
OWASP Session Management Cheat Sheet, "Cookies".
"""

from __future__ import annotations

from typing import Final

from bastion.audit.findings import Finding, Severity
from bastion.audit.probes.base import Check, ProbeContext, SeenCookie, is_session_cookie
from bastion.audit.target import SetCookie

_FIX_SESSION: Final = (
    "Use Bastion's server-side sessions (`sessions` layer): the `__Host-session` "
    "cookie is Secure, HttpOnly and SameSite=Lax by default; never set "
    "`sessions.insecure_cookie_over_http` in production. For cookies the app sets "
    "itself, add the flag."
)
_MDN: Final = "https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Set-Cookie"

SECURE: Final = Check(
    "cookies.secure",
    "Cookies carry the Secure flag",
    "medium",
    _FIX_SESSION,
    (_MDN,),
)
HTTP_ONLY: Final = Check(
    "cookies.httponly",
    "Session cookies carry the HttpOnly flag",
    "medium",
    _FIX_SESSION,
    (_MDN,),
)
SAME_SITE: Final = Check(
    "cookies.samesite",
    "Session cookies carry SameSite=Lax or Strict",
    "medium",
    _FIX_SESSION + " (`sessions.same_site`: lax or strict).",
    (_MDN,),
)
HOST_PREFIX: Final = Check(
    "cookies.host-prefix",
    "Session cookies use the __Host- prefix",
    "low",
    "Keep `sessions.cookie_name` at its default `__Host-session`.",
    ("https://developer.mozilla.org/en-US/docs/Web/HTTP/Cookies#cookie_prefixes",),
)


def has_valid_prefix(cookie: SetCookie) -> bool:
    """`__Host-` with Secure, Path=/ and no Domain; or `__Secure-` with Secure."""
    if cookie.name.startswith("__Host-"):
        return (
            cookie.secure
            and cookie.attributes.get("path") == "/"
            and "domain" not in cookie.attributes
        )
    return cookie.name.startswith("__Secure-") and cookie.secure


def judge_cookie(seen: SeenCookie, *, session: bool) -> list[Finding]:
    """The findings for one cookie; `session` when it holds a session or credential."""
    cookie = seen.cookie
    where = f"set by {seen.route}{' at login' if seen.after_login else ''}"
    evidence = f"{cookie.describe()} ({where})"
    severity_secure: Severity = "high" if session else "medium"
    findings = [SECURE.result(cookie.secure, evidence, seen.route, severity=severity_secure)]
    if not session:
        return findings
    same_site = cookie.same_site
    findings += [
        HTTP_ONLY.result(cookie.http_only, evidence, seen.route),
        SAME_SITE.result(same_site in ("lax", "strict"), evidence, seen.route),
        HOST_PREFIX.result(has_valid_prefix(cookie), evidence, seen.route),
    ]
    return findings


def probe(ctx: ProbeContext) -> list[Finding]:
    """One set of findings per cookie name: as set at login if it was, else as first set."""
    chosen: dict[str, SeenCookie] = {}
    for seen in ctx.cookies_seen:
        first = chosen.get(seen.cookie.name)
        if first is None or (seen.after_login and not first.after_login):
            chosen[seen.cookie.name] = seen
    if not chosen:
        ctx.skip("cookies: the target set no cookie")
    findings: list[Finding] = []
    for name, seen in chosen.items():
        findings += judge_cookie(
            seen, session=is_session_cookie(name, set_at_login=seen.after_login)
        )
    return findings
