"""Request limits: size, shape, pace and number of requests.

Threats: memory and CPU exhaustion through the request itself. Bodies larger than
the application expects (declared or streamed without a length), headers by the
thousand, JSON nested deep enough to overflow a recursive parser (whatever the
body's label: `json.loads` ignores it), forms with huge numbers of fields, files or
enormous parts, bodies sent a byte at a time to hold a worker (slow loris / slow
POST), content types the application's parsers should never see, and more
concurrent requests than the process can serve in time.
Defence: checks on the request head before the application runs, and checks on the
body while it streams, chunk by chunk, with bounded state: the body is never
buffered, and the application receives the original bytes unchanged, or, once a
limit is crossed, nothing more (see `middleware` for the exact guarantee).
Not covered: WebSocket messages (the WebSocket guard's job; only the handshake's
headers are checked here), rate limits per client (the rate-limit layer), and limits
the server applies before any ASGI code runs (request line length, TLS).

The package reads in this order:

* `reasons`    reason codes and the status of each refusal;
* `json`       the iterative JSON depth and size scanner, and the JSON checks of a body;
* `forms`      the url-encoded and multipart counters;
* `settings`   `LimitsSettings`, per-route `RouteLimitsSettings`, the compiled `BodyLimits`;
* `checks`     the pure decisions on the head, and `BodyCheck` for the body;
* `middleware` the thin ASGI adapter, `LimitsMiddleware`.

References: RFC 9110 sections 8.6, 15.5.9, 15.5.14, 15.5.16, 15.6.4
https://www.rfc-editor.org/rfc/rfc9110 ; RFC 6585 section 5 (431);
RFC 8259 (JSON); RFC 7578 and RFC 2046 section 5.1 (multipart);
OWASP Denial of Service Cheat Sheet
https://cheatsheetseries.owasp.org/cheatsheets/Denial_of_Service_Cheat_Sheet.html
"""

from __future__ import annotations

from bastion.limits.middleware import LimitsMiddleware
from bastion.limits.settings import LimitsSettings, RouteLimitsSettings

__all__ = ["LimitsMiddleware", "LimitsSettings", "RouteLimitsSettings"]
