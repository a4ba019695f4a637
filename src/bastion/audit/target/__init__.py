"""What the auditor talks to: an ASGI app in this process, or a live URL.

Threat: an auditor that is itself harmful (it follows a redirect to another host,
reads an endless body, hangs on a slow answer, or sends cookies where they do not
belong), or one that lies because its transport quietly changed the request
(followed redirects, a client cookie jar, a normalised `Host`).
Defence: one small `Target` interface that sends exactly the request the probe
built and reports exactly what came back.

* `base`: the `Target` interface, `HTTPResponse`, `WebSocketResult`, the limits,
  and `owns` (a probe that follows a redirect asks again, only on the target's
  own host).
* `cookies`: `Set-Cookie` parsing and the `CookieJar` the caller holds; the
  transport never keeps cookies.
* `inprocess`: `InProcessTarget`, which runs the app as a server would (lifespan,
  a 500 for an exception), and `load_app` / `default_host` for `module:attr`.
* `url`: `URLTarget`, a live server over httpx and `websockets`.

Not covered: HTTP/2 and HTTP/3 specifics, TLS configuration grading, and cookie
scoping by `Domain` and `Path` (an audit talks to one origin).

References: ASGI HTTP and WebSocket specs
https://asgi.readthedocs.io/en/latest/specs/www.html ; lifespan
https://asgi.readthedocs.io/en/latest/specs/lifespan.html ; RFC 6265 section 5.2
(`Set-Cookie` parsing) https://www.rfc-editor.org/rfc/rfc6265#section-5.2
"""

from __future__ import annotations

from bastion.audit.target.base import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_BODY_BYTES,
    USER_AGENT,
    WEBSOCKET_GRACE_SECONDS,
    Body,
    Headers,
    HTTPResponse,
    Scheme,
    Target,
    TargetError,
    WebSocketResult,
    owns,
    url_of,
)
from bastion.audit.target.cookies import CookieJar, SetCookie, parse_set_cookie
from bastion.audit.target.inprocess import InProcessTarget, default_host, load_app, unwrap
from bastion.audit.target.url import URLTarget, redact_url

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_BODY_BYTES",
    "USER_AGENT",
    "WEBSOCKET_GRACE_SECONDS",
    "Body",
    "CookieJar",
    "HTTPResponse",
    "Headers",
    "InProcessTarget",
    "Scheme",
    "SetCookie",
    "Target",
    "TargetError",
    "URLTarget",
    "WebSocketResult",
    "default_host",
    "load_app",
    "open_target",
    "owns",
    "parse_set_cookie",
    "redact_url",
    "unwrap",
    "url_of",
]


def open_target(
    spec: str, *, host: str | None = None, verify_tls: bool = True
) -> InProcessTarget | URLTarget:
    """A target from what the user typed: a URL, or `module:attribute`."""
    if spec.startswith(("http://", "https://")):
        return URLTarget(spec, verify_tls=verify_tls)
    return InProcessTarget.from_spec(spec, host=host)
