"""HTTPS: the redirect from plain HTTP, and Strict-Transport-Security (HSTS).

Threat: downgrade and SSL stripping. An attacker on the network answers the user's
first plain-HTTP request and keeps the session on HTTP, reading and changing it. A
redirect built from request data can also become an open redirect (a forged host, a
path such as `//evil.example`) or a header injection (CR/LF in the path).
Defence: plain-HTTP requests are redirected (308, so a POST keeps its method and
body) to the HTTPS URL of the *validated* host, with a path that is percent-encoded
and can never change the authority; plain `ws` handshakes are refused, since a
handshake cannot follow a redirect. HTTPS responses carry HSTS, so the browser never
tries plain HTTP again for `max-age` seconds.
Not covered: the very first visit of a browser that has never seen our HSTS header
(only the preload list covers it, `hsts_preload`); TLS itself (the server or the
proxy terminates it).

References: RFC 6797 (HSTS) https://www.rfc-editor.org/rfc/rfc6797 , section 6.1
(the header's grammar) ; RFC 9110 section 15.4 (redirects; 308 in 15.4.9)
https://www.rfc-editor.org/rfc/rfc9110#section-15.4 ; RFC 3986 section 3.3 (path)
https://www.rfc-editor.org/rfc/rfc3986#section-3.3 ; RFC 6455 section 4.1 (ws/wss) ;
https://hstspreload.org/ .
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import quote, quote_from_bytes

if TYPE_CHECKING:
    from bastion.transport.settings import TransportSettings

# One year: the minimum the HSTS preload list accepts (hstspreload.org) and what
# OWASP's HTTP headers cheat sheet recommends.
HSTS_ONE_YEAR_SECONDS: Final = 31_536_000
HTTPS_DEFAULT_PORT: Final = 443
# 308 keeps the method and the body (RFC 9110 section 15.4.9); with 301 and 302,
# browsers turn a POST into a GET and drop its body (RFC 9110 sections 15.4.2 and
# 15.4.3, "for historical reasons"). 307 is the temporary 308.
REDIRECT_STATUSES: Final = frozenset({301, 302, 307, 308})
METHOD_CHANGING_REDIRECTS: Final = frozenset({301, 302})

# Bytes kept as they are in a redirect's path (RFC 3986 pchar plus "/", and "%" since
# `raw_path` is already percent-encoded); everything else (spaces, controls, "\",
# "#", "?", non-ASCII) is percent-encoded. `quote` always keeps letters, digits, "_.-~".
_PATH_SAFE: Final = "/:@!$&'()*+,;=%"
_QUERY_SAFE: Final = _PATH_SAFE + "?"


def build_https_url(
    host: str,
    port: int,
    *,
    raw_path: bytes | None,
    path: str,
    query_string: bytes = b"",
) -> bytes:
    """The HTTPS URL of a request, from the validated host and the request's path.

    The authority is always written, so no path can turn the result into a
    protocol-relative or foreign URL: `//evil.com` gives `https://host//evil.com`,
    still on `host`. The path is `raw_path` as the client sent it (percent-encoded,
    cut at any `?`, as some servers include the query), else `path` encoded; a
    request target that is not a path (`*`, an absolute URL) redirects to `/`.
    Bytes that do not belong in a URL (spaces, CR/LF, `\\`, `#`, non-ASCII) are
    percent-encoded, so the result is always a safe header value.
    """
    if raw_path is not None:
        untrusted_path = raw_path.partition(b"?")[0]
        encoded_path = quote_from_bytes(untrusted_path, safe=_PATH_SAFE)
    else:
        encoded_path = quote(path, safe=_PATH_SAFE.replace("%", ""))
    if not encoded_path.startswith("/"):
        encoded_path = "/"
    authority = host if port == HTTPS_DEFAULT_PORT else f"{host}:{port}"
    url = f"https://{authority}{encoded_path}"
    if query_string:
        url += "?" + quote_from_bytes(query_string, safe=_QUERY_SAFE)
    return url.encode("ascii")


def build_hsts_value(max_age_seconds: int, *, include_subdomains: bool, preload: bool) -> bytes:
    """The `Strict-Transport-Security` value (RFC 6797 section 6.1)."""
    value = f"max-age={max_age_seconds}"
    if include_subdomains:
        value += "; includeSubDomains"
    if preload:
        value += "; preload"
    return value.encode("ascii")


def hsts_header_value(settings: TransportSettings) -> str:
    """The HSTS value the layer adds to HTTPS responses; "" when it adds none.

    None is added when the layer is disabled or monitor-only: monitoring must not pin
    browsers to HTTPS for `max-age` seconds, which no later setting can undo.
    """
    if not settings.enabled or settings.monitor_only:
        return ""
    return build_hsts_value(
        settings.hsts_max_age_seconds,
        include_subdomains=settings.hsts_include_subdomains,
        preload=settings.hsts_preload,
    ).decode("ascii")
