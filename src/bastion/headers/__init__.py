"""Security response headers: CSP with a per-request nonce, and its report endpoint.

Threats: cross-site scripting (CSP), clickjacking (frame-ancestors, X-Frame-Options),
MIME sniffing (nosniff), URL leaks through Referer (Referrer-Policy), abuse of
powerful browser features (Permissions-Policy), cross-window and cross-origin leaks
(COOP, CORP, Origin-Agent-Cluster), and server fingerprinting (`Server`,
`X-Powered-By` stripped).

The package reads in this order:

* `csp`        the pure CSP builder: grammar checks, defaults, the nonce template;
* `policy`     settings, and the per-route `HeaderSet`s compiled from them;
* `reports`    the pure parser for violation reports (both formats);
* `middleware` the thin ASGI adapter, `HeadersMiddleware`.

References are in each module's docstring.
"""

from __future__ import annotations

from bastion.headers.csp import DEFAULT_DIRECTIVES, NONCE_SOURCE
from bastion.headers.middleware import HeadersMiddleware
from bastion.headers.policy import (
    DEFAULT_PERMISSIONS_POLICY,
    HeadersSettings,
    RouteHeadersSettings,
    build_response_headers,
)

__all__ = [
    "DEFAULT_DIRECTIVES",
    "DEFAULT_PERMISSIONS_POLICY",
    "NONCE_SOURCE",
    "HeadersMiddleware",
    "HeadersSettings",
    "RouteHeadersSettings",
    "build_response_headers",
]
