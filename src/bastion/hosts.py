"""Host names, `Host` headers and origins: parsed in one place.

Every layer that compares hosts or origins (trusted hosts, HTTPS redirects, CORS,
CSRF, WebSocket origins) uses these parsers, so a trick that fools one cannot slip
past another. Parsing is strict: what does not parse is refused, never "cleaned up".

* Host names are case-insensitive (RFC 4343) and lower-cased here; one trailing dot
  (the DNS root, `example.com.`) is removed so the two spellings are one host.
* IPv6 literals appear in brackets (`[::1]:8443`, RFC 3986 section 3.2.2) and are
  kept in brackets, in their compressed form, so one address has one spelling.
  A zone identifier (`[fe80::1%eth0]`) is refused: RFC 3986's IP-literal has none,
  browsers never send one (WHATWG URL), and `ipaddress` takes any text after the
  `%`, CR, LF and non-ASCII included, which would reach `Location`,
  `Access-Control-Allow-Origin` and `Permissions-Policy` values.
* A port is 1 to 5 digits, 1-65535; the default port of the scheme is made explicit
  so `https://a.example` and `https://a.example:443` are the same origin.
* Anything else (`/`, `?`, `#`, `@`, `\\`, spaces, control characters, an empty label)
  makes the value invalid. A `Host` such as `x/health?` is invalid, never a path.

References: RFC 9110 section 7.2 (Host); RFC 3986 section 3.2.2 (host);
RFC 6454 sections 4 and 6.1 (origin and its serialisation); RFC 1035 section 2.3.1.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
MAX_HOST_CHARS: Final = 253  # RFC 1035: 255 octets on the wire, 253 as text
_LABEL: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str  # lower-case name, dotted IPv4, or bracketed IPv6
    port: int | None  # None when the value named no port


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int  # always explicit

    def serialise(self) -> str:
        if DEFAULT_PORTS.get(self.scheme) == self.port:
            return f"{self.scheme}://{self.host}"
        return f"{self.scheme}://{self.host}:{self.port}"


def normalise_host(untrusted_host: str) -> str | None:
    """The canonical spelling of a host name or IP literal, or None if invalid."""
    host = untrusted_host.lower()
    if host.startswith("["):
        if not host.endswith("]") or "%" in host:
            return None  # unterminated, or a zone identifier (module docstring)
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        return f"[{address.compressed}]"
    if host.endswith("."):
        host = host[:-1]
    if not host or len(host) > MAX_HOST_CHARS or not host.isascii():
        return None
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    return host


def _parse_port(text: str) -> int | None:
    if not (1 <= len(text) <= 5) or not text.isdigit() or not text.isascii():
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


def parse_host_header(untrusted_value: bytes | str) -> HostPort | None:
    """Parse a `Host` header (or `X-Forwarded-Host`) value; None if malformed."""
    value = (
        untrusted_value.decode("latin-1") if isinstance(untrusted_value, bytes) else untrusted_value
    )
    port: int | None = None
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        host_text, rest = value[: end + 1], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = _parse_port(rest[1:])
            if port is None:
                return None
    else:
        host_text, colon, port_text = value.partition(":")
        if colon:
            port = _parse_port(port_text)
            if port is None:
                return None
    host = normalise_host(host_text)
    return HostPort(host, port) if host is not None else None


def parse_origin(untrusted_value: bytes | str) -> Origin | None:
    """Parse a serialised origin (`scheme://host[:port]`); None for `null` or garbage."""
    value = (
        untrusted_value.decode("latin-1") if isinstance(untrusted_value, bytes) else untrusted_value
    )
    scheme, separator, authority = value.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in DEFAULT_PORTS:
        return None
    parsed = parse_host_header(authority)
    if parsed is None:
        return None
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[scheme]
    return Origin(scheme, parsed.host, port)


def host_matches(pattern: str, host: str) -> bool:
    """Match a normalised host against `example.com` or `*.example.com`.

    `*.example.com` matches any host with at least one whole label in front of
    `.example.com` (`a.example.com`, `a.b.example.com`), but neither `example.com`
    itself nor `evilexample.com`, `example.com.evil.net` or an IP literal.
    """
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        return host.endswith(suffix) and len(host) > len(suffix) and not host.startswith("[")
    return host == pattern


def is_loopback_host(host: str) -> bool:
    """`localhost`, a name under it (RFC 6761 section 6.3), or a loopback address,
    bracketed or not. An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is judged as
    the IPv4 address it maps, so the answer is the same on every Python (3.13's
    `is_loopback` says yes to it, 3.11's no)."""
    host = host.lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
