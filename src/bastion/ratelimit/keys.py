"""Which bucket a request counts against: keys derived from trusted facts only.

Threat: an attacker who can choose their key escapes the limit. They rotate
`X-Forwarded-For` values, walk through the 2**64 addresses of the IPv6 /64 their
provider hands every subscriber, or send a new API key or user name per request;
or they send huge or odd values to exhaust the store's key space.
Defence:

* The client address is `RequestContext.client`, which the transport layer resolved
  through trusted proxies only; no header is ever read here.
* IPv6 clients are grouped by network (`/64` by default: RFC 6177 and RIPE-690 have
  providers assign at least a /64, often a /56 or /48, to one subscriber); IPv4 by
  `/32`. An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is the IPv4 address.
* Everything attacker-chosen (the address text, an API key, an identity, a
  callable's result) is hashed (BLAKE2b, 128 bits) into the key, so every key has
  a bounded size and no control character reaches the store.

Not covered: API keys or principals that were never verified. A `principal` key is
only as good as the authentication layer that set it; an `api_key` key buckets by
the raw header value (so random keys each get a fresh bucket: pair it with a
`client` rate on the same route).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bastion.types import Scope

KeyFunction = Callable[[Scope], str | None]

DEFAULT_IPV6_PREFIX: Final = 64
DEFAULT_IPV4_PREFIX: Final = 32
# 128 bits: collisions between honest clients are negligible (birthday bound at
# 2**64 keys) and 32 hex characters keep every store key short.
_DIGEST_BYTES: Final = 16
UNKNOWN_CLIENT: Final = "unknown"


def hash_part(value: str | bytes) -> str:
    """A fixed-size, printable stand-in for an attacker-chosen value."""
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return hashlib.blake2b(data, digest_size=_DIGEST_BYTES).hexdigest()


@dataclass(frozen=True, slots=True)
class ClientGrouping:
    """How client addresses are grouped into one bucket."""

    ipv4_prefix: int = DEFAULT_IPV4_PREFIX
    ipv6_prefix: int = DEFAULT_IPV6_PREFIX

    def __post_init__(self) -> None:
        if not 8 <= self.ipv4_prefix <= 32:
            raise ValueError("ipv4_prefix must be between 8 and 32")
        if not 16 <= self.ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be between 16 and 128")


def client_network(host: str | None, grouping: ClientGrouping = ClientGrouping()) -> str:
    """The network a client address belongs to, as text (`2001:db8::/64`).

    A host that is not an IP address (a Unix socket path, a test client's name) is
    its own group; a missing address is one shared group, `unknown`.
    """
    if not host:
        return UNKNOWN_CLIENT
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return "host:" + hash_part(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = grouping.ipv4_prefix if address.version == 4 else grouping.ipv6_prefix
    return str(ipaddress.ip_network((address, prefix), strict=False))


_V4_MAPPED: Final = b"\x00" * 10 + b"\xff\xff"


def _packed_network(host: str, grouping: ClientGrouping) -> bytes | None:
    """The client's network as bytes (version, prefix, masked address), or None.

    The hot path of every request: `inet_pton` and integer masking, about twenty
    times faster than `ipaddress.ip_network`, with the same grouping.
    """
    try:
        if ":" in host:
            packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
            if packed[:12] == _V4_MAPPED:
                packed = packed[12:]
        else:
            packed = socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):
        return None
    bits = len(packed) * 8
    prefix = grouping.ipv4_prefix if bits == 32 else grouping.ipv6_prefix
    masked = int.from_bytes(packed, "big") >> (bits - prefix) << (bits - prefix)
    return bytes((bits // 32, prefix)) + masked.to_bytes(len(packed), "big")


# Remembered per address: every layer that counts a client (bans, rates, logins) asks
# for the same request's key. Bounded, so a spray of addresses only churns it.
@functools.lru_cache(maxsize=4096)
def client_key(host: str | None, grouping: ClientGrouping = ClientGrouping()) -> str:
    """The hashed, bounded key part of a client's network (as `client_network`)."""
    if not host:
        return "c:" + UNKNOWN_CLIENT
    network = _packed_network(host, grouping)
    return "c:" + hash_part(network if network is not None else "host:" + host)


def principal_identity(principal: object) -> str | None:
    """The stable identity of an authenticated principal, if it has one."""
    if principal is None:
        return None
    identity = getattr(principal, "identity", None)
    return None if identity is None or identity == "" else str(identity)
