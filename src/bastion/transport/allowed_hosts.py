"""Allowed hosts: the request names exactly one host, well formed, that we serve.

Threat: Host header attacks. A forged `Host` (or a forged `X-Forwarded-Host`)
poisons the absolute URLs an app builds (password-reset links, cache keys,
redirects), and DNS rebinding lets a foreign page reach the app under the
attacker's name.
Defence: `check_host` accepts one `Host` line (or the host a trusted proxy claims),
parsed strictly by `bastion.hosts`, whose host is in `allowed_hosts`; anything else
is refused with one generic 400. Patterns are exact names and addresses, or
`*.name` for every subdomain of a DNS name of at least two labels: `*.com` would
serve every site under a top-level domain. When a trusted proxy named the host,
`with_host_header` gives the app a `Host` header carrying the validated host, so
the URLs the app builds name the host we checked and not the raw header.
Not covered: public suffixes with more than one label. Without the Public Suffix
List, `*.co.uk` or `*.github.io` has two labels and is accepted, as in the CORS
layer's origin patterns; list such hosts exactly. The port is not checked (a
proxy or the server decides which ports are open).

References: RFC 9110 section 7.2 (Host) https://www.rfc-editor.org/rfc/rfc9110#section-7.2 ;
RFC 9112 section 3.2 (a missing, repeated or invalid Host is a 400)
https://www.rfc-editor.org/rfc/rfc9112#section-3.2 ; werkzeug `ProxyFix` (rewrites
`HTTP_HOST` from `X-Forwarded-Host`) ; Public Suffix List https://publicsuffix.org/ .
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from bastion.hosts import HostPort, host_matches, normalise_host, parse_host_header
from bastion.transport.reasons import (
    REASON_HOST_MALFORMED,
    REASON_HOST_MISSING,
    REASON_HOST_MULTIPLE,
    REASON_HOST_NOT_ALLOWED,
)

# Allowed when `allowed_hosts` is empty and the middleware is used alone: loopback
# names only, so an unconfigured layer serves a laptop and nothing else ("testserver"
# is the host name of the Starlette and httpx test clients). Production `Settings`
# refuses an empty list instead.
LOCAL_HOSTS: Final = ("localhost", "127.0.0.1", "[::1]", "testserver")

# `*.example.com` names a registered domain; `*.com` a whole top-level domain.
MIN_WILDCARD_LABELS: Final = 2


def parse_host_pattern(text: str) -> str:
    """Normalise one `allowed_hosts` entry (`name`, `*.name` or `*`), or ValueError.

    A wildcard's suffix must be a DNS name (not an address: `*.0.1` would match
    127.0.0.1) of at least `MIN_WILDCARD_LABELS` labels.
    """
    if text == "*":
        return text
    is_wildcard = text.startswith("*.")
    name = normalise_host(text[2:] if is_wildcard else text)
    if name is None:
        raise ValueError(
            f"allowed_hosts: {text!r} is not a host name, '*.name' or '*' "
            "(no scheme, port or path; IPv6 in brackets)"
        )
    if not is_wildcard:
        return name
    labels = name.split(".")
    if name.startswith("[") or labels[-1].isdigit():
        raise ValueError(f"allowed_hosts: {text!r}: a wildcard needs a DNS name, not an address")
    if len(labels) < MIN_WILDCARD_LABELS:
        raise ValueError(
            f"allowed_hosts: {text!r}: a wildcard over a top-level domain serves every "
            "site in it; name a registered domain ('*.example.com')"
        )
    return f"*.{name}"


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """Host patterns compiled for lookup: a set probe, then the few wildcards."""

    names: frozenset[str] = frozenset()
    wildcards: tuple[str, ...] = ()  # "*.example.com"
    allow_any: bool = False

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> AllowedHosts:
        """Compile patterns, normalising each (ValueError names a bad one)."""
        parsed = [parse_host_pattern(text) for text in patterns]
        return cls(
            names=frozenset(p for p in parsed if not p.startswith("*")),
            wildcards=tuple(p for p in parsed if p.startswith("*.")),
            allow_any="*" in parsed,
        )

    def allows(self, host: str) -> bool:
        """Whether a normalised host is allowed."""
        if self.allow_any or host in self.names:
            return True
        return any(host_matches(pattern, host) for pattern in self.wildcards)


@dataclass(frozen=True, slots=True)
class HostVerdict:
    host: HostPort | None  # the validated host; None when refused
    reason: str = ""


def check_host(
    host_lines: Sequence[str], allowed: AllowedHosts, *, forwarded_host: str | None = None
) -> HostVerdict:
    """Validate the request's host: the Host header, or the host a trusted proxy claims.

    More than one Host line is refused even when a proxy names the host: RFC 9112
    section 3.2 says a server MUST answer 400, and two Host lines are a classic
    request-smuggling and cache-poisoning probe. The value must parse as a host with
    an optional port (`bastion.hosts.parse_host_header`: no path, `@` or spaces) and
    its host must be allowed; the port is not checked.
    """
    if len(host_lines) > 1:
        return HostVerdict(None, REASON_HOST_MULTIPLE)
    untrusted_host = forwarded_host if forwarded_host is not None else next(iter(host_lines), None)
    if untrusted_host is None:
        return HostVerdict(None, REASON_HOST_MISSING)
    parsed = parse_host_header(untrusted_host)
    if parsed is None:
        return HostVerdict(None, REASON_HOST_MALFORMED)
    if not allowed.allows(parsed.host):
        return HostVerdict(None, REASON_HOST_NOT_ALLOWED)
    return HostVerdict(parsed)


def host_header_value(host: HostPort) -> bytes:
    """The validated host as a `Host` value: `name`, `name:port`, `[v6]:port`."""
    text = host.host if host.port is None else f"{host.host}:{host.port}"
    return text.encode("ascii")  # `normalise_host` admits ASCII only


def with_host_header(
    headers: Iterable[tuple[bytes, bytes]], host: HostPort
) -> list[tuple[bytes, bytes]]:
    """A new header list whose one `Host` line carries the validated `host`.

    For the app's copy of the scope when a trusted proxy named the host: frameworks
    build `request.url` and `url_for` from the `Host` header, which still holds what
    the client sent to the proxy's backend (or a name of the attacker's choosing).
    Every `Host` line is dropped; the new one takes the first one's place, or goes
    first when there was none. Other lines are kept in order.
    """
    value = host_header_value(host)
    result: list[tuple[bytes, bytes]] = []
    placed = False
    for name, raw_value in headers:
        if name.lower() != b"host":
            result.append((name, raw_value))
        elif not placed:
            result.append((b"host", value))
            placed = True
    if not placed:
        result.insert(0, (b"host", value))
    return result
