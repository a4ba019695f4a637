"""Transport: trusted hosts, trusted proxy headers, HTTPS redirects and HSTS.

Threats:

* Host header attacks. A forged `Host` poisons the absolute URLs an app builds
  (password-reset links, cache keys, redirects), and DNS rebinding lets a foreign
  page reach the app under the attacker's name. Defence: every request names exactly
  one host, well formed, from `allowed_hosts`; anything else is a generic 400. A host
  named by a trusted proxy reaches the app as its `Host` header, once validated.
* Spoofed proxy headers. Any client can send `X-Forwarded-For` or `Forwarded` to pose
  as another address (dodging rate limits and bans, passing IP allow lists), or
  `X-Forwarded-Proto: https` to pose as secure. Defence: proxy headers are read only
  when the direct peer is one of `trusted_proxies`, and only the hops our own proxies
  added are believed (right-to-left walk, see `resolve_client`).
* Downgrade and SSL stripping. Plain-HTTP requests are redirected to HTTPS at the
  validated host (never an open redirect); plain `ws` handshakes are refused, since a
  handshake cannot follow a redirect; HTTPS responses carry HSTS so the browser never
  tries plain HTTP again.

One resolver decides the client address, scheme, host and port; later layers read
them from the request context and never re-read proxy headers.

The package reads in this order:

* `reasons`       reason codes and the status of each refusal;
* `forwarded`     the RFC 7239 `Forwarded` grammar;
* `proxies`       `trusted_proxies` entries, the facts, the right-to-left walk, the resolver;
* `allowed_hosts` `allowed_hosts` patterns, `check_host`, the `Host` header the app sees;
* `https`         the redirect URL and the HSTS value;
* `settings`      `TransportSettings`, and the weakenings it reports;
* `middleware`    the thin ASGI adapter, `TransportMiddleware`.

A request whose peer is no trusted proxy reaches the app without its proxy headers
(`FORWARDING_HEADERS`: `X-Forwarded-*`, `Forwarded`, `X-Real-IP`, `X-Original-URL`
and the like), so a framework or an app that reads them is not fooled either.

Not covered: TLS itself (the server or the proxy terminates it); `X-Forwarded-Port`
and `X-Forwarded-Prefix` from a trusted proxy (passed on, not read); proxies that
reach the app over a Unix socket (there is no peer address to trust); multi-label
public suffixes in `allowed_hosts` (`*.co.uk`). Each module says what else it leaves
out.

References: RFC 9110 section 7.2 (Host) https://www.rfc-editor.org/rfc/rfc9110#section-7.2 ;
RFC 9112 section 3.2 (400 for a missing, repeated or invalid Host)
https://www.rfc-editor.org/rfc/rfc9112#section-3.2 ; RFC 7239 (Forwarded)
https://www.rfc-editor.org/rfc/rfc7239 ; RFC 6797 (HSTS) https://www.rfc-editor.org/rfc/rfc6797 ;
RFC 9110 section 15.4.9 (308) ; RFC 6455 section 4.1 (ws/wss) ; https://hstspreload.org/ .
"""

from __future__ import annotations

from bastion.transport.allowed_hosts import (
    LOCAL_HOSTS,
    MIN_WILDCARD_LABELS,
    AllowedHosts,
    HostVerdict,
    check_host,
    host_header_value,
    parse_host_pattern,
    with_host_header,
)
from bastion.transport.forwarded import parse_forwarded
from bastion.transport.https import (
    HSTS_ONE_YEAR_SECONDS,
    HTTPS_DEFAULT_PORT,
    METHOD_CHANGING_REDIRECTS,
    REDIRECT_STATUSES,
    build_hsts_value,
    build_https_url,
    hsts_header_value,
)
from bastion.transport.middleware import TransportMiddleware
from bastion.transport.proxies import (
    DEFAULT_PROXY_HEADERS,
    FORWARDING_HEADERS,
    FORWARDING_SPELLINGS,
    MIN_PUBLIC_PREFIXLEN,
    IPAddress,
    IPNetwork,
    ProxyClaims,
    ProxyHeader,
    ProxyTrust,
    ResolvedTransport,
    TransportFacts,
    parse_trusted_proxy,
    resolve_client,
    resolve_forwarded,
    resolve_transport,
)
from bastion.transport.reasons import (
    HOST_REFUSAL_STATUS,
    INSECURE_WEBSOCKET_STATUS,
    LAYER,
    PROXY_REFUSAL_STATUS,
    REASON_HOST_MALFORMED,
    REASON_HOST_MISSING,
    REASON_HOST_MULTIPLE,
    REASON_HOST_NOT_ALLOWED,
    REASON_INSECURE_HTTP,
    REASON_INSECURE_WEBSOCKET,
    REASON_PROXY_HEADER_MALFORMED,
)
from bastion.transport.settings import TransportSettings

__all__ = [
    "DEFAULT_PROXY_HEADERS",
    "FORWARDING_HEADERS",
    "FORWARDING_SPELLINGS",
    "HOST_REFUSAL_STATUS",
    "HSTS_ONE_YEAR_SECONDS",
    "HTTPS_DEFAULT_PORT",
    "INSECURE_WEBSOCKET_STATUS",
    "LAYER",
    "LOCAL_HOSTS",
    "METHOD_CHANGING_REDIRECTS",
    "MIN_PUBLIC_PREFIXLEN",
    "MIN_WILDCARD_LABELS",
    "PROXY_REFUSAL_STATUS",
    "REASON_HOST_MALFORMED",
    "REASON_HOST_MISSING",
    "REASON_HOST_MULTIPLE",
    "REASON_HOST_NOT_ALLOWED",
    "REASON_INSECURE_HTTP",
    "REASON_INSECURE_WEBSOCKET",
    "REASON_PROXY_HEADER_MALFORMED",
    "REDIRECT_STATUSES",
    "AllowedHosts",
    "HostVerdict",
    "IPAddress",
    "IPNetwork",
    "ProxyClaims",
    "ProxyHeader",
    "ProxyTrust",
    "ResolvedTransport",
    "TransportFacts",
    "TransportMiddleware",
    "TransportSettings",
    "build_hsts_value",
    "build_https_url",
    "check_host",
    "host_header_value",
    "hsts_header_value",
    "parse_forwarded",
    "parse_host_pattern",
    "parse_trusted_proxy",
    "resolve_client",
    "resolve_forwarded",
    "resolve_transport",
    "with_host_header",
]
