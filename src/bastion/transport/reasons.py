"""Reason codes of the transport layer, and the status each refusal is answered with.

Threat: a refusal that says which rule failed teaches a scanner which host names,
proxies and schemes are served.
Defence: one status per family of refusals and one generic body
(`bastion.responses`); the precise reason goes to the event stream only. One table,
so a reviewer sees every refusal and its status in one place. The codes reappear as
the ids of the attack tests that trigger them (tests/transport).
Not covered: the HTTPS redirect's status, which is a setting
(`https_redirect_status`).

References: RFC 9112 section 3.2 (400 for a missing, repeated or invalid Host)
https://www.rfc-editor.org/rfc/rfc9112#section-3.2 ; RFC 9110 section 15.5.20 (421) ;
RFC 6455 section 7.4.1 (close code 1008) ; ASGI WebSocket denial response
https://asgi.readthedocs.io/en/latest/extensions.html#websocket-denial-response .
"""

from __future__ import annotations

from typing import Final

from bastion.events import KIND_INPUT_VALIDATION

LAYER: Final = "transport"

REASON_HOST_MISSING: Final = "host-missing"
REASON_HOST_MALFORMED: Final = "host-malformed"
REASON_HOST_MULTIPLE: Final = "host-multiple"
REASON_HOST_NOT_ALLOWED: Final = "host-not-allowed"
REASON_PROXY_HEADER_MALFORMED: Final = "proxy-header-malformed"
REASON_INSECURE_HTTP: Final = "insecure-http"
REASON_INSECURE_WEBSOCKET: Final = "insecure-websocket"

# RFC 9112 section 3.2 requires 400 for a missing, repeated or invalid Host. A valid
# host that is not ours gets the same 400 rather than 421 (Misdirected Request): one
# opaque answer for every host failure, as Django and Starlette give, so a scanner
# learns nothing about which names are served; and 421 invites HTTP/2 clients to
# retry on a fresh connection, for a request that will never be served.
HOST_REFUSAL_STATUS: Final = 400
# A trusted proxy sent a header we cannot read: refuse rather than guess (see
# `bastion.transport.proxies.resolve_client`).
PROXY_REFUSAL_STATUS: Final = 400
# A plain `ws` handshake cannot be redirected (browsers do not follow redirects on a
# WebSocket handshake), so it is refused; 403 maps to close code 1008.
INSECURE_WEBSOCKET_STATUS: Final = 403

# The OWASP Logging Vocabulary has no transport kind; a request whose host, proxy
# header or scheme fails the server's rules is the closest fit to
# `input_validation_fail`. The reason says which rule.
KIND: Final = KIND_INPUT_VALIDATION
