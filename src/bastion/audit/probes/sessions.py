"""Session fixation: the session id survives a login.

Threat: an attacker plants a session id in the victim's browser (a cookie set
from a sibling subdomain, a URL, a shared computer), the victim logs in, and the
attacker's copy of the id is now logged in too.
Probe: with the login recipe, in one fresh cookie jar: visit `/`, log in, then
log in again. Before each login the session-like cookies are noted (in memory,
compared, never shown); a cookie of the same name with the same value after the
login is a session that was not rotated.

Not covered: fixation through a session id in the URL, and apps whose session
lives elsewhere than cookies (the probe then reports nothing).

References: OWASP Session Management Cheat Sheet, "Renew the Session ID After Any
Privilege Level Change"
https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html ;
CWE-384.
"""

from __future__ import annotations

import hmac
from typing import Final

from bastion.audit.findings import Finding
from bastion.audit.probes.base import Check, ProbeContext, is_session_cookie
from bastion.audit.target import CookieJar

FIXATION: Final = Check(
    "sessions.fixation",
    "The session id changes at login",
    "high",
    "Use Bastion's sessions and call `request.session.login(user_id)` at login: it "
    "issues a new id and deletes the old one.",
    ("https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html",),
)


def unchanged(before: dict[str, str], jar: CookieJar) -> list[str]:
    """Names of the noted cookies that still hold the same value."""
    return sorted(
        name
        for name, value in before.items()
        if (after := jar.get(name)) is not None and hmac.compare_digest(after, value)
    )


def _session_cookies(jar: CookieJar, set_at_login: set[str]) -> dict[str, str]:
    return {
        name: value
        for name in jar.names()
        if is_session_cookie(name, set_at_login=name in set_at_login)
        and (value := jar.get(name)) is not None
    }


async def probe(ctx: ProbeContext) -> list[Finding]:
    if ctx.login is None:
        ctx.skip("sessions: no login recipe")
        return []
    jar = CookieJar()
    ctx.step("sessions: visit / before login")
    await ctx.send("GET", "/", jar=jar)
    kept: list[str] = []
    set_at_login: set[str] = set()
    compared = 0
    for attempt in (1, 2):
        before = _session_cookies(jar, set_at_login)
        ctx.step(f"sessions: login {attempt}")
        response = await ctx.log_in(jar)
        if response is None:
            return []
        set_at_login |= {c.cookie.name for c in ctx.cookies_seen if c.after_login}
        compared += len(before)
        kept += [name for name in unchanged(before, jar) if name not in kept]
    if compared == 0:
        ctx.skip("sessions: no session cookie before a login to compare")
        return []
    if kept:
        evidence = f"cookie(s) {', '.join(kept)} kept the same value across login"
    else:
        evidence = "every session cookie got a new value at login"
    return [FIXATION.result(not kept, evidence, f"POST {ctx.login.path}")]
