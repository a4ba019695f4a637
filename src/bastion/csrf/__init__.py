"""Cross-site request forgery (CSRF) defence.

Threat: a page on another site makes the user's browser send a state-changing request
that carries the user's cookies: an auto-submitted form (`text/plain`, url-encoded or
multipart, none of which needs a CORS preflight), a `fetch` with `mode: "no-cors"`,
a method-override trick that turns a GET link into a DELETE, or a forged login that
signs the victim into the attacker's account (login CSRF, which needs no cookie).

Defence, in order (`core` documents the algorithm, `check_request` implements it):

* Safe methods pass, unless a method override names an unsafe method.
* Fetch Metadata: `Sec-Fetch-Site` is set by the browser, not the page, so
  `cross-site` (and `same-site`, a sibling subdomain) is refused unless the origin is
  in `trusted_origins`. Every current browser sends it.
* `Origin`, for browsers without Fetch Metadata: it must be this request's own
  origin, scheme and port included, as the transport layer resolved them.
* A signed, session-bound, masked token, for the rest (old browsers, privacy tools
  that strip both headers): in the `X-CSRF-Token` header, or in the `csrf_token`
  field of a url-encoded or multipart form, which is then read (bounded) and
  replayed to the app unchanged. The token needs Bastion's session layer outside
  this one; without it, such requests are refused (`no-session`). The Fetch Metadata
  and `Origin` checks work alone.

There is no "no cookie, no check" rule: a cross-site login form carries no session
cookie and is refused all the same. The one exemption by default is a request with
`Authorization: Bearer` and no cookie at all (`exempt_bearer_without_cookies`, see
the comment in `core`). Path exemptions (`insecure_exempt_paths`) are exact and are
reported at start-up. The decision never depends on `Content-Type`. Responses to
checked requests gain `Vary: Origin, Sec-Fetch-Site`; refusals are a generic 403 and
a `malicious_csrf` event naming the reason (`reasons`).

Not covered: GET requests that change state (the app must not do that); WebSocket
handshakes (the WebSocket guard checks their `Origin`); XSS, which defeats every CSRF
defence (the page can read its own token); and non-browser clients, which can send
any header they like but carry no victim's cookies.

The package reads in this order: `reasons`, `core` (the decision), `tokens`,
`forms` (finding the form field), `settings`, `middleware` (the adapter and
`issue_token`), `templating` (Jinja2) and `dependencies` (FastAPI, imported apart).

References: Fetch Metadata https://www.w3.org/TR/fetch-metadata/ ; RFC 6454 section 7
(Origin); RFC 9110 section 9.2.1 (safe methods); OWASP CSRF Prevention Cheat Sheet
https://cheatsheetseries.owasp.org/ (Cross-Site Request Forgery Prevention) ;
golang/go src/net/http/csrf.go ; django/middleware/csrf.py .
"""

from __future__ import annotations

from bastion.csrf.core import CSRFPolicy, RequestFacts, Verdict, check_request
from bastion.csrf.middleware import CSRFMiddleware, issue_token
from bastion.csrf.reasons import (
    REASON_BODY_TOO_LARGE,
    REASON_CROSS_SITE,
    REASON_FETCH_SITE_MALFORMED,
    REASON_METHOD_OVERRIDE,
    REASON_NO_SESSION,
    REASON_NULL_ORIGIN,
    REASON_ORIGIN_MALFORMED,
    REASON_ORIGIN_MISMATCH,
    REASON_SAME_SITE,
    REASON_TOKEN_EXPIRED,
    REASON_TOKEN_INVALID,
    REASON_TOKEN_MISSING,
    REASON_TOKEN_WRONG_SESSION,
)
from bastion.csrf.settings import CSRFSettings, compile_policy
from bastion.csrf.templating import csrf_token_processor, install_csrf_token
from bastion.csrf.tokens import CSRFTokens

__all__ = [
    "REASON_BODY_TOO_LARGE",
    "REASON_CROSS_SITE",
    "REASON_FETCH_SITE_MALFORMED",
    "REASON_METHOD_OVERRIDE",
    "REASON_NO_SESSION",
    "REASON_NULL_ORIGIN",
    "REASON_ORIGIN_MALFORMED",
    "REASON_ORIGIN_MISMATCH",
    "REASON_SAME_SITE",
    "REASON_TOKEN_EXPIRED",
    "REASON_TOKEN_INVALID",
    "REASON_TOKEN_MISSING",
    "REASON_TOKEN_WRONG_SESSION",
    "CSRFMiddleware",
    "CSRFPolicy",
    "CSRFSettings",
    "CSRFTokens",
    "RequestFacts",
    "Verdict",
    "check_request",
    "compile_policy",
    "csrf_token_processor",
    "install_csrf_token",
    "issue_token",
]
