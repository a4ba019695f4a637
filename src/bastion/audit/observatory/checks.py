"""The nine tests besides CSP, each a pure function of the `Observation`.

Each follows its upstream file in `src/analyzer/tests/` (named in the function's
docstring): the same result ids, the same order of precedence, the same pass rule.
Where we cannot see what upstream sees, the docstring says what we do instead.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bastion.audit.observatory.page import (
    Observation,
    PageScan,
    first_header,
    header_values,
    is_html,
)
from bastion.audit.observatory.scoring import ObservedTest, outcome

CORS_PROBE_ORIGIN: Final = "https://http-observatory.security.mozilla.org"
"""The `Origin` sent for `Observation.cors_headers`, the one upstream's retriever sends
(`CONFIG.retriever.corsOrigin`): no audited site should grant it, so an
`Access-Control-Allow-Origin` naming it is a reflection of the request."""

SIX_MONTHS_SECONDS: Final = 15552000
"""Upstream: "15768000 is six months, but a lot of sites use 15552000"."""
EVIDENCE_CHARS: Final = 300
VALUE_CHARS: Final = 256
"""Upstream reads at most this much of a CORS, CORP or nosniff value."""


def clip(text: str, limit: int = EVIDENCE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(name: str, value: str | None) -> str:
    return f"{name}: {clip(value, VALUE_CHARS)}" if value is not None else f"no {name} header"


def _worse(new: str, old: str | None, order: Sequence[str]) -> str:
    """Upstream `onlyIfWorse`: the later in `order` wins."""
    if old is None or order.index(new) > order.index(old):
        return new
    return old


# --- cookies ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cookie:
    name: str
    secure: bool
    http_only: bool
    same_site: str | None
    """`strict`, `lax` or `none`; None when absent or not one of those."""
    attributes: str
    """The attributes as sent, for evidence; never the value."""


def parse_set_cookie(line: str) -> Cookie | None:
    """The name and flags of one `Set-Cookie` line (RFC 6265 section 5.2); the value is dropped."""
    pair, _, rest = line.partition(";")
    name, has_value, _value = pair.partition("=")
    name = name.strip()
    if not has_value or not name:
        return None
    flags: dict[str, str] = {}
    for attribute in rest.split(";"):
        key, _, value = attribute.partition("=")
        flags[key.strip().lower()] = value.strip().lower()
    same_site = flags.get("samesite")
    return Cookie(
        name=name,
        secure="secure" in flags,
        http_only="httponly" in flags,
        same_site=same_site if same_site in ("strict", "lax", "none") else None,
        attributes=rest.strip(),
    )


def _same_site_malformed(line: str) -> bool:
    for part in line.strip().split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "samesite" and (
            not value or value.strip().lower() not in ("lax", "strict", "none")
        ):
            return True
    return False


_COOKIE_ORDER: Final = (
    "cookies-without-secure-flag-but-protected-by-hsts",
    "cookies-without-secure-flag",
    "cookies-session-without-secure-flag-but-protected-by-hsts",
    "cookies-samesite-flag-invalid",
    "cookies-anticsrf-without-samesite-flag",
    "cookies-session-without-httponly-flag",
    "cookies-session-without-secure-flag",
)


def check_cookies(observation: Observation, hsts_passed: bool) -> ObservedTest:
    """Upstream `cookies.js`, over the `Set-Cookie` lines of the graded page.

    A cookie whose name contains `login` or `sess` is a session cookie, one with `csrf`
    an anti-CSRF token. Upstream reads a cookie jar filled by every request of its
    scan; we read the graded response only.
    """
    lines = header_values(observation.headers, "set-cookie")
    result: str | None = None
    for line in lines:
        if _same_site_malformed(line):
            result = _worse("cookies-samesite-flag-invalid", result, _COOKIE_ORDER)
    cookies = [cookie for line in lines if (cookie := parse_set_cookie(line)) is not None]
    if not cookies:
        return outcome("cookies", "cookies-not-found", passed=True, evidence="no set-cookie header")
    missing_same_site = False
    for cookie in cookies:
        lowered = cookie.name.lower()
        is_session = "login" in lowered or "sess" in lowered
        if not cookie.secure and cookie.same_site == "none":
            result = _worse("cookies-samesite-flag-invalid", result, _COOKIE_ORDER)
        if not cookie.secure:
            plain = (
                "cookies-without-secure-flag-but-protected-by-hsts"
                if hsts_passed
                else "cookies-without-secure-flag"
            )
            result = _worse(plain, result, _COOKIE_ORDER)
        if "csrf" in lowered and cookie.same_site is None:
            result = _worse("cookies-anticsrf-without-samesite-flag", result, _COOKIE_ORDER)
        if is_session and not cookie.secure:
            session = (
                "cookies-session-without-secure-flag-but-protected-by-hsts"
                if hsts_passed
                else "cookies-session-without-secure-flag"
            )
            result = _worse(session, result, _COOKIE_ORDER)
        if is_session and not cookie.http_only:
            result = _worse("cookies-session-without-httponly-flag", result, _COOKIE_ORDER)
        missing_same_site = missing_same_site or cookie.same_site is None
    if result is None:
        result = (
            "cookies-secure-with-httponly-sessions"
            if missing_same_site
            else "cookies-secure-with-httponly-sessions-and-samesite"
        )
    evidence = clip(
        " | ".join(f"set-cookie: {c.name}=<redacted>; {c.attributes}".rstrip("; ") for c in cookies)
    )
    passed = result in (
        "cookies-secure-with-httponly-sessions",
        "cookies-secure-with-httponly-sessions-and-samesite",
    )
    return outcome("cookies", result, passed=passed, evidence=evidence)


# --- cross-origin-resource-sharing -----------------------------------------------


def check_cors(observation: Observation) -> ObservedTest:
    """Upstream `cors.js`.

    Universal access is a grant to the foreign `CORS_PROBE_ORIGIN` (a reflected
    `Origin`) with `Access-Control-Allow-Credentials: true`. Upstream sends an
    `OPTIONS` preflight; the probe sends a GET (`Observation.cors_headers`).
    """
    name = "cross-origin-resource-sharing"
    allow_origin = first_header(observation.cors_headers, "access-control-allow-origin")
    credentials = first_header(observation.cors_headers, "access-control-allow-credentials")
    evidence = _shown("access-control-allow-origin", allow_origin)
    if credentials is not None:
        evidence += " | " + _shown("access-control-allow-credentials", credentials)
    if not allow_origin:
        result = "cross-origin-resource-sharing-not-implemented"
    elif allow_origin[:VALUE_CHARS].strip().lower() == "*":
        result = "cross-origin-resource-sharing-implemented-with-public-access"
    elif allow_origin == CORS_PROBE_ORIGIN and (credentials or "").strip().lower() == "true":
        result = "cross-origin-resource-sharing-implemented-with-universal-access"
    else:
        result = "cross-origin-resource-sharing-implemented-with-restricted-access"
    passed = result != "cross-origin-resource-sharing-implemented-with-universal-access"
    return outcome(name, result, passed=passed, evidence=evidence)


# --- redirection -------------------------------------------------------------------


def check_redirection(observation: Observation) -> ObservedTest:
    """Upstream `redirection.js`, over `Observation.http_redirects`.

    Not seen here: certificate validity (`redirection-invalid-cert`) and the HSTS
    preload list (`redirection-all-redirects-preloaded`), which upstream ships.
    """
    name = "redirection"
    route = observation.http_redirects
    if not route:
        return outcome(
            name,
            "redirection-not-needed-no-http",
            passed=True,
            evidence="plain HTTP not probed or not answered",
        )
    urls = [urllib.parse.urlsplit(url) for url, _status in route]
    evidence = clip(" -> ".join(f"{url} ({status})" for url, status in route))
    if len(route) == 1:
        result = "redirection-missing"
    elif urls[-1].scheme != "https":
        result = "redirection-not-to-https"
    elif urls[1].scheme == "http":
        result = "redirection-not-to-https-on-initial-redirection"
    elif urls[0].scheme == "http" and urls[0].hostname != urls[1].hostname:
        result = "redirection-off-host-from-http"
    else:
        result = "redirection-to-https"
    return outcome(name, result, passed=result == "redirection-to-https", evidence=evidence)


# --- referrer-policy ---------------------------------------------------------------

_PRIVATE_REFERRERS: Final = (
    "no-referrer",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
)
_UNSAFE_REFERRERS: Final = (
    "origin",
    "origin-when-cross-origin",
    "unsafe-url",
    "no-referrer-when-downgrade",
)


def check_referrer_policy(observation: Observation, page: PageScan) -> ObservedTest:
    """Upstream `referrer-policy.js`: the last valid token of header and `<meta>` wins."""
    name = "referrer-policy"
    values = [*header_values(observation.headers, "referrer-policy"), *page.meta_referrer]
    if not values:
        return outcome(
            name,
            "referrer-policy-not-implemented",
            passed=True,
            evidence="no referrer-policy header",
        )
    joined = ", ".join(values)
    valid = [
        token.strip().lower()
        for token in joined.split(",")
        if token.strip().lower() in _PRIVATE_REFERRERS + _UNSAFE_REFERRERS
    ]
    policy = valid[-1] if valid else ""
    if policy in _PRIVATE_REFERRERS:
        result = "referrer-policy-private"
    elif policy in _UNSAFE_REFERRERS:
        result = "referrer-policy-unsafe"
    else:
        result = "referrer-policy-header-invalid"
    return outcome(
        name,
        result,
        passed=result == "referrer-policy-private",
        evidence=clip(f"referrer-policy: {joined}"),
    )


# --- strict-transport-security -----------------------------------------------------


def _max_age(value: str) -> int | None:
    # RFC 6797 section 6.1.1: max-age = delta-seconds, optionally quoted. Upstream's
    # parseInt reads "max-age=abc" as NaN and then passes it; we call it invalid.
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    end = 0
    while end < len(digits) and end < 128 and digits[end].isascii() and digits[end].isdigit():
        end += 1
    return sign * int(digits[:end]) if end else None


def check_hsts(observation: Observation) -> ObservedTest:
    """Upstream `strict-transport-security.js`, on the graded page if it is HTTPS.

    The preload list (`hsts-preloaded`) and certificate checks (`hsts-invalid-cert`)
    are not seen here.
    """
    name = "strict-transport-security"
    header = first_header(observation.headers, "strict-transport-security")
    evidence = _shown("strict-transport-security", header)
    if urllib.parse.urlsplit(observation.url).scheme != "https":
        return outcome(
            name,
            "hsts-not-implemented-no-https",
            passed=False,
            evidence=f"page served over {urllib.parse.urlsplit(observation.url).scheme}",
        )
    if header is None:
        return outcome(name, "hsts-not-implemented", passed=False, evidence=evidence)
    data = header[:1024]
    max_age: int | None = None
    for parameter in (p.strip().lower() for p in data.split(";")):
        if parameter.startswith("max-age="):
            max_age = _max_age(parameter[len("max-age=") :])
    if "," in data or max_age is None:
        # A comma means the header was sent twice (RFC 6797 section 8.1: use the first;
        # upstream calls it invalid).
        return outcome(name, "hsts-header-invalid", passed=False, evidence=evidence)
    if max_age < SIX_MONTHS_SECONDS:
        return outcome(
            name, "hsts-implemented-max-age-less-than-six-months", passed=False, evidence=evidence
        )
    return outcome(
        name, "hsts-implemented-max-age-at-least-six-months", passed=True, evidence=evidence
    )


# --- subresource-integrity ---------------------------------------------------------

_SRI_ORDER: Final = (
    "sri-implemented-and-all-scripts-loaded-securely",
    "sri-implemented-and-external-scripts-loaded-securely",
    "sri-implemented-but-external-scripts-not-loaded-securely",
    "sri-not-implemented-but-external-scripts-loaded-securely",
    "sri-not-implemented-and-external-scripts-not-loaded-securely",
    "sri-not-implemented-response-not-html",
)
_SRI_PASSING: Final = frozenset(
    {
        "sri-implemented-and-all-scripts-loaded-securely",
        "sri-implemented-and-external-scripts-loaded-securely",
        "sri-not-implemented-response-not-html",
        "sri-not-implemented-but-all-scripts-loaded-from-secure-origin",
        "sri-not-implemented-but-no-scripts-loaded",
    }
)


def registrable_domain(host: str) -> str:
    """The last two labels of a name (`cdn.example.com` -> `example.com`); an IP as is.

    Upstream asks the Public Suffix List (tldts); without it, `a.co.uk` and
    `b.co.uk` count as one site here. That only matters for scripts on another
    registrable domain under a multi-label suffix.
    """
    host = host.lower().rstrip(".")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return ".".join(host.split(".")[-2:])
    return host


def _script_host(src: str) -> str:
    """The host name of a script URL; "" when it does not parse (`http://[x/`): the
    page chose it, and one bad `src` must not end the whole audit."""
    try:
        return urllib.parse.urlsplit(src).hostname or ""
    except ValueError:
        return ""


def check_sri(observation: Observation, page: PageScan) -> ObservedTest:
    """Upstream `subresource-integrity.js`: external scripts need HTTPS and `integrity`.

    `src="//host/x.js"` (protocol-relative) is foreign; `src="/x.js"` (relative) is
    same-origin; a full URL is foreign unless it is on the page's registrable domain.
    """
    name = "subresource-integrity"
    if not is_html(observation):
        content_type = first_header(observation.headers, "content-type")
        return outcome(
            name,
            "sri-not-implemented-response-not-html",
            passed=True,
            evidence=_shown("content-type", content_type),
        )
    if page.parse_failed:
        return outcome(name, "html-not-parseable", passed=False, evidence="HTML parser failed")
    page_url = urllib.parse.urlsplit(observation.url)
    page_domain = registrable_domain(page_url.hostname or "")
    result: str | None = None
    foreign_scripts = False
    shown: list[str] = []
    for script in page.scripts:
        src = script.src
        relative_protocol = len(src) > 2 and src.startswith("//") and src[2] != "/"
        full_url = src.lower().startswith(("http://", "https://"))
        relative_origin = not relative_protocol and not full_url
        same_domain = not full_url or registrable_domain(_script_host(src)) == page_domain
        secure_origin = relative_origin or (same_domain and not relative_protocol)
        secure_scheme = (full_url and src.lower().startswith("https://")) or (
            relative_origin and page_url.scheme == "https"
        )
        if secure_origin:
            if script.integrity and secure_scheme and result is None:
                result = "sri-implemented-and-all-scripts-loaded-securely"
            continue
        foreign_scripts = True
        flags = "integrity" if script.integrity else "no integrity"
        shown.append(f'<script src="{clip(src, 120)}"> ({flags})')
        if script.integrity and not secure_scheme:
            found = "sri-implemented-but-external-scripts-not-loaded-securely"
        elif not script.integrity and secure_scheme:
            found = "sri-not-implemented-but-external-scripts-loaded-securely"
        elif not script.integrity:
            found = "sri-not-implemented-and-external-scripts-not-loaded-securely"
        else:
            continue
        result = _worse(found, result, _SRI_ORDER)
    if page.script_count == 0:
        result = "sri-not-implemented-but-no-scripts-loaded"
    elif result is None:
        result = (
            "sri-implemented-and-external-scripts-loaded-securely"
            if foreign_scripts
            else "sri-not-implemented-but-all-scripts-loaded-from-secure-origin"
        )
    evidence = clip(" | ".join(shown)) if shown else f"{page.script_count} script element(s)"
    return outcome(name, result, passed=result in _SRI_PASSING, evidence=evidence)


# --- x-content-type-options, x-frame-options, cross-origin-resource-policy ----------


def check_nosniff(observation: Observation) -> ObservedTest:
    """Upstream `x-content-type-options.js`."""
    name = "x-content-type-options"
    header = first_header(observation.headers, "x-content-type-options")
    evidence = _shown("x-content-type-options", header)
    if not header:
        result = "x-content-type-options-not-implemented"
    elif header[:VALUE_CHARS].strip().lower() == "nosniff":
        result = "x-content-type-options-nosniff"
    else:
        result = "x-content-type-options-header-invalid"
    return outcome(
        name, result, passed=result == "x-content-type-options-nosniff", evidence=evidence
    )


def check_frame_options(observation: Observation, csp_frame_ancestors: bool) -> ObservedTest:
    """Upstream `x-frame-options.js`: CSP `frame-ancestors` replaces the header.

    Only a `frame-ancestors` in an enforced CSP header counts: browsers ignore it in
    `<meta>` (upstream counts that too).
    """
    name = "x-frame-options"
    header = first_header(observation.headers, "x-frame-options")
    evidence = _shown("x-frame-options", header)
    value = (header or "")[:1024].strip().lower()
    if csp_frame_ancestors:
        result = "x-frame-options-implemented-via-csp"
        evidence += " | content-security-policy sets frame-ancestors"
    elif not header:
        result = "x-frame-options-not-implemented"
    elif value in ("deny", "sameorigin"):
        result = "x-frame-options-sameorigin-or-deny"
    elif value.startswith("allow-from"):
        result = "x-frame-options-allow-from-origin"
    else:
        result = "x-frame-options-header-invalid"
    passed = result not in ("x-frame-options-not-implemented", "x-frame-options-header-invalid")
    return outcome(name, result, passed=passed, evidence=evidence)


def check_corp(observation: Observation) -> ObservedTest:
    """Upstream `cross-origin-resource-policy.js` (its `<meta>` branch never fires)."""
    name = "cross-origin-resource-policy"
    header = first_header(observation.headers, "cross-origin-resource-policy")
    evidence = _shown("cross-origin-resource-policy", header)
    value = (header or "")[:VALUE_CHARS].strip().lower()
    if not header:
        result = "corp-not-implemented"
    elif value == "same-site":
        result = "corp-implemented-with-same-site"
    elif value == "same-origin":
        result = "corp-implemented-with-same-origin"
    elif value == "cross-origin":
        result = "corp-implemented-with-cross-origin"
    else:
        result = "corp-header-invalid"
    return outcome(name, result, passed=result != "corp-header-invalid", evidence=evidence)
