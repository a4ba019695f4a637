"""Reason codes of the CSRF layer: stable names for events and attack-test ids.

Outside, every refusal is the same generic 403. Inside, the event names one of these
reasons (as Django's `REASON_*` constants feed its `django.security.csrf` logger), so
an operator can tell an attack from a stale tab. A reason never changes meaning.
"""

from __future__ import annotations

from typing import Final

# Fetch Metadata (`Sec-Fetch-Site`).
REASON_CROSS_SITE: Final = "cross-site"
"""`Sec-Fetch-Site: cross-site` from an origin not in `trusted_origins`."""
REASON_SAME_SITE: Final = "same-site-not-allowed"
"""`Sec-Fetch-Site: same-site` (a sibling subdomain) without `insecure_allow_same_site`."""
REASON_FETCH_SITE_MALFORMED: Final = "sec-fetch-site-malformed"
"""A `Sec-Fetch-Site` value no browser sends (or several values)."""

# `Origin`, for browsers without Fetch Metadata.
REASON_ORIGIN_MISMATCH: Final = "origin-mismatch"
"""`Origin` is neither this request's own origin nor a trusted one."""
REASON_NULL_ORIGIN: Final = "null-origin"
"""`Origin: null` (sandboxed iframes, `data:` pages, some redirects): never trusted."""
REASON_ORIGIN_MALFORMED: Final = "origin-malformed"
"""`Origin` is not a serialised http(s) origin."""

# A safe method turned unsafe by a method-override header or `_method` parameter,
# and refused for one of the reasons above (the event's details name which).
REASON_METHOD_OVERRIDE: Final = "method-override"

# The token fallback, for requests with neither Fetch Metadata nor `Origin`.
REASON_NO_SESSION: Final = "no-session"
"""A token is required but no Bastion session layer runs outside this one."""
REASON_TOKEN_MISSING: Final = "token-missing"  # noqa: S105 - a reason code, not a secret
"""No token (or an empty one) in the header or the form field."""
REASON_TOKEN_INVALID: Final = "token-invalid"  # noqa: S105 - a reason code, not a secret
"""Not a token we issued: malformed, tampered with, or signed by a retired key."""
REASON_TOKEN_EXPIRED: Final = "token-expired"  # noqa: S105 - a reason code, not a secret
"""A token we issued, older than `token_max_age_seconds`."""
REASON_TOKEN_WRONG_SESSION: Final = "token-wrong-session"  # noqa: S105 - a reason code, not a secret
"""A valid token, issued for another session (another user, a session rotated since,
or no session at all: the request carried no usable session cookie)."""
REASON_BODY_TOO_LARGE: Final = "body-too-large"
"""The token would have to come from a body larger than `max_body_bytes`."""
