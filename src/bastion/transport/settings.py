"""`TransportSettings`: the transport layer's section of the settings.

Threat: a configuration that quietly trusts too much: every client as a proxy
(`trusted_proxies=["0.0.0.0/0"]`), every site under a top-level domain as a host
(`*.com`), or an HSTS policy that pins nothing.
Defence: every entry is parsed and stored in its parsed form at construction, and
what would trust everyone is refused with an error naming the setting
(`parse_trusted_proxy`, `parse_host_pattern`). Values that are legal but weaken a
protection are named by `TransportSettings.weakenings`, so the start-up log and
`bastion check` report them beside the `insecure_*` switches.
Not covered: whether the listed proxies really are yours, and multi-label public
suffixes in `allowed_hosts` (see `bastion.transport.allowed_hosts`).

References: RFC 6797 section 6.1.1 (max-age) and https://hstspreload.org/ (preload
requirements) ; RFC 9110 section 15.4 (redirect statuses) ; uvicorn's
`FORWARDED_ALLOW_IPS` (the comma-separated form of `trusted_proxies`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import Field, field_validator, model_validator

from bastion.sections import LayerSettings
from bastion.transport.allowed_hosts import parse_host_pattern
from bastion.transport.https import (
    HSTS_ONE_YEAR_SECONDS,
    HTTPS_DEFAULT_PORT,
    METHOD_CHANGING_REDIRECTS,
    REDIRECT_STATUSES,
)
from bastion.transport.proxies import (
    DEFAULT_PROXY_HEADERS,
    IPNetwork,
    ProxyHeader,
    parse_trusted_proxy,
)


def _split_list(value: Any) -> Any:
    # "10.0.0.1, 10.1.0.0/16", as uvicorn's FORWARDED_ALLOW_IPS and environment variables.
    if isinstance(value, str):
        return [part for part in re.split(r"[\s,]+", value) if part]
    return value


class TransportSettings(LayerSettings):
    """Trusted hosts, trusted proxies, HTTPS and HSTS (see `bastion.transport`)."""

    allowed_hosts: tuple[str, ...] = ()
    """Hosts this app serves: exact (`bank.example`, `127.0.0.1`, `[::1]`) or
    `*.bank.example` (every subdomain, not `bank.example` itself; the suffix needs two
    labels or more, so `*.com` is refused). Any port. A bare `*` allows any host;
    production refuses it. Empty: `LOCAL_HOSTS` when the middleware is used alone;
    production `Settings` refuses to start."""

    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Addresses or CIDR networks of your own reverse proxies. Proxy headers are read
    only from these peers; empty means never (the server's peer is the client).
    `*`, `0.0.0.0/0`, `::/0` and public networks wider than /8 (IPv4) or /24 (IPv6)
    are refused."""

    proxy_headers: tuple[ProxyHeader, ...] = DEFAULT_PROXY_HEADERS
    """Which proxy headers are believed from a trusted proxy: any of
    `x-forwarded-for`, `x-forwarded-proto`, `x-forwarded-host`, or `forwarded`
    (RFC 7239) alone. List only headers your proxy sets or overwrites itself."""

    strip_untrusted_proxy_headers: bool = True
    """Remove the proxy headers (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`,
    `X-Original-URL` and the like: `bastion.transport.FORWARDING_HEADERS`) from a
    request whose peer is not one of `trusted_proxies`, before the app sees it: from
    such a peer they are the client's own claims, which a framework or an app reading
    them would believe. A request from a trusted proxy keeps every line. Off is
    reported as a weakening."""

    insecure_allow_http: bool = False
    """Serve plain HTTP and `ws` instead of redirecting to HTTPS / refusing."""

    https_redirect_status: int = 308
    """Status of the HTTPS redirect: 308 (default), 307, 301 or 302. 301 and 302 turn
    a POST into a GET (reported as a weakening)."""

    https_port: int = Field(default=HTTPS_DEFAULT_PORT, ge=1, le=65535)
    """Port of the HTTPS URL that plain HTTP is redirected to."""

    hsts_max_age_seconds: int = Field(default=HSTS_ONE_YEAR_SECONDS, ge=0)
    """HSTS `max-age`; 0 tells browsers to forget the policy (RFC 6797 section 6.1.1).
    Below one year is reported as a weakening."""

    hsts_include_subdomains: bool = True
    """Add `includeSubDomains`: every subdomain must serve HTTPS too."""

    hsts_preload: bool = False
    """Add `preload` (asks for the browsers' built-in list; hard to undo). Requires
    `includeSubDomains` and a max-age of at least one year."""

    @field_validator("allowed_hosts")
    @classmethod
    def _parse_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(parse_host_pattern(text) for text in value))

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        value = _split_list(value)
        if not isinstance(value, Iterable):
            return value  # pydantic reports the type error
        return tuple(dict.fromkeys(parse_trusted_proxy(item) for item in value))

    @field_validator("proxy_headers", mode="before")
    @classmethod
    def _lower_proxy_headers(cls, value: Any) -> Any:
        value = _split_list(value)
        if isinstance(value, Iterable):
            return tuple(dict.fromkeys(v.lower() if isinstance(v, str) else v for v in value))
        return value

    @field_validator("proxy_headers")
    @classmethod
    def _one_dialect(cls, value: tuple[ProxyHeader, ...]) -> tuple[ProxyHeader, ...]:
        if "forwarded" in value and len(value) > 1:
            # Two dialects would give two answers for one request; a chain speaks one.
            raise ValueError("proxy_headers: 'forwarded' cannot be combined with X-Forwarded-*")
        return value

    @field_validator("https_redirect_status")
    @classmethod
    def _redirect_status(cls, value: int) -> int:
        if value not in REDIRECT_STATUSES:
            raise ValueError(f"https_redirect_status: must be one of {sorted(REDIRECT_STATUSES)}")
        return value

    @model_validator(mode="after")
    def _preload_rules(self) -> TransportSettings:
        if self.hsts_preload and (
            not self.hsts_include_subdomains or self.hsts_max_age_seconds < HSTS_ONE_YEAR_SECONDS
        ):
            raise ValueError(
                "hsts_preload: requires hsts_include_subdomains and "
                f"hsts_max_age_seconds >= {HSTS_ONE_YEAR_SECONDS} (hstspreload.org)"
            )
        return self

    def weakenings(self) -> list[str]:
        """Values that weaken the layer (its switches are found generically).

        * `allowed_hosts=*`: every host is served, so a forged `Host` reaches the app.
        * `hsts_max_age_seconds` below one year: browsers forget the policy sooner,
          and 0 tells them to forget it now.
        * `hsts_include_subdomains=false`: a subdomain served over plain HTTP can set
          cookies for the parent domain (RFC 6797 section 14.4).
        * `https_redirect_status` 301 or 302: browsers replay a POST as a GET without
          its body (RFC 9110 sections 15.4.2 and 15.4.3).
        * `strip_untrusted_proxy_headers=false`: a client's own `X-Forwarded-Proto`
          or `X-Original-URL` reaches an app that may believe it.
        """
        found: list[str] = []
        if "*" in self.allowed_hosts:
            found.append("allowed_hosts=*")
        if self.hsts_max_age_seconds < HSTS_ONE_YEAR_SECONDS:
            found.append(f"hsts_max_age_seconds={self.hsts_max_age_seconds}")
        if not self.hsts_include_subdomains:
            found.append("hsts_include_subdomains=false")
        if self.https_redirect_status in METHOD_CHANGING_REDIRECTS:
            found.append(f"https_redirect_status={self.https_redirect_status}")
        if not self.strip_untrusted_proxy_headers:
            found.append("strip_untrusted_proxy_headers=false")
        return found
