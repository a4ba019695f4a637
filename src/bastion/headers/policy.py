"""The headers layer's settings and the header sets compiled from them.

Threats, one header each (OWASP HTTP Headers Cheat Sheet):

* MIME sniffing turns an upload or a JSON answer into script or HTML:
  `X-Content-Type-Options: nosniff` (Fetch, "X-Content-Type-Options").
* Full URLs, with the tokens and ids in their paths and query strings, leak to other
  sites through `Referer`: `Referrer-Policy: strict-origin-when-cross-origin`.
* Injected or third-party script, or a framed page, uses camera, location, USB and
  other powerful features: `Permissions-Policy` denies them.
* Cross-window attacks and XS-Leaks through `window.opener` and shared browsing
  context groups: `Cross-Origin-Opener-Policy: same-origin`.
* Other sites embedding our responses as `<img>`/`<script>` (Spectre-style reads,
  XSSI): `Cross-Origin-Resource-Policy: same-origin`.
* Clickjacking: CSP `frame-ancestors`, with `X-Frame-Options` derived from it for
  browsers that predate CSP2.
* Fingerprinting the server stack to pick exploits: `Server` and `X-Powered-By` are
  stripped from the application's answers.

Every header is overridable per route (`bastion.routes` patterns), and every set of
headers is compiled once, at construction, into a `HeaderSet` of encoded tuples plus
a `CSPTemplate`; `merge_headers` is the whole per-response work: one pass over the
application's lines with one table lookup each (one set lookup for a name it keeps,
remembered), then the set's lines, precomputed whole (CSP included) unless its CSP
has a nonce slot.

What the application set itself is kept unless `enforce` is on: the application
knows that one response (a CSP for a page with its own policy, a CORP for a public
image) better than a site-wide default does.

References: OWASP HTTP Headers Cheat Sheet
https://cheatsheetseries.owasp.org/cheatsheets/HTTP_Headers_Cheat_Sheet.html ;
Referrer Policy https://www.w3.org/TR/referrer-policy/#referrer-policies ;
Permissions Policy https://www.w3.org/TR/permissions-policy-1/ and RFC 9651
(structured fields); COOP and Origin-Agent-Cluster: HTML
https://html.spec.whatwg.org/multipage/browsers.html ; CORP and nosniff: Fetch
https://fetch.spec.whatwg.org/ ; Reporting API https://w3c.github.io/reporting/ ;
RFC 9110 section 5.5 (field values) and section 5.6.2 (tokens).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from bastion.context import RequestContext
from bastion.headers.csp import (
    CSPTemplate,
    compile_policy,
    frame_options_for,
    parse_directive_name,
    parse_sources,
    policy_weakenings,
    resolve_directives,
)
from bastion.hosts import parse_origin
from bastion.routes import parse_route_pattern
from bastion.sections import LayerSettings, Section
from bastion.types import RawHeaders

ReferrerPolicy = Literal[
    "no-referrer",
    "no-referrer-when-downgrade",
    "origin",
    "origin-when-cross-origin",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
]
OpenerPolicy = Literal[
    "same-origin", "same-origin-allow-popups", "noopener-allow-popups", "unsafe-none"
]
ResourcePolicy = Literal["same-origin", "same-site", "cross-origin"]
FrameOptions = Literal["auto", "DENY", "SAMEORIGIN"]

DEFAULT_REPORT_PATH: Final = "/.bastion/csp-report"
# Our member of the `Reporting-Endpoints` dictionary. Named after us, not the common
# "csp-endpoint", so appending it never clobbers an endpoint the application defines.
REPORT_ENDPOINT_NAME: Final = "bastion-csp"

# A legacy report is about 1 KiB, most of it the copied policy; the Reporting API
# batches several per request. 32 KiB holds a full batch of DEFAULT_MAX_REPORTS and
# is still a trivial amount of memory per concurrent request.
DEFAULT_MAX_REPORT_BYTES: Final = 32 * 1024
# A page that breaks badly produces many identical reports; 20 per request shows the
# problem without letting one request write unbounded log lines.
DEFAULT_MAX_REPORTS: Final = 20
# Violation events one process writes per minute (`ReportBudget`). The endpoint is
# unauthenticated and answered before rate limiting, so without a budget every
# request could write DEFAULT_MAX_REPORTS lines. One a second on average is the
# volume of a quiet access log; the burst of a full minute lets a page that breaks
# badly report every violation at once. Reports are samples of a problem, not a
# record to keep whole: what is dropped is counted in a `csp-report-rate-limited` event.
DEFAULT_MAX_REPORT_EVENTS_PER_MINUTE: Final = 60
# 1000 a second: beyond this a budget no longer protects a log pipeline.
MAX_REPORT_EVENTS_PER_MINUTE: Final = 60_000

# Powerful features a typical web application never uses. Denied (`feature=()`) for
# the page and every frame it embeds, so an XSS or a compromised third-party script
# cannot reach sensors, devices or the camera, and nothing can prompt the user for
# them. `browsing-topics=()` opts the site out of ad-topic tracking. Features the
# site may plausibly use itself (fullscreen, autoplay, WebAuthn, clipboard) are left
# at the browser's default (`self`). Each name is one Chromium recognises on every
# desktop platform (its `permissions_policy_features.json5`, and the features each
# depends on), so the header causes no console warnings. `bluetooth` is left out:
# Chromium parses it only where Web Bluetooth is on, and on Linux it is experimental,
# so the name is an "Unrecognized feature" there. Where Web Bluetooth exists it stays
# at the default (`self`: no cross-origin frame, and a device chooser the user must
# confirm on a user gesture).
_DENIED_FEATURES: Final = (
    "accelerometer",
    "browsing-topics",
    "camera",
    "display-capture",
    "geolocation",
    "gyroscope",
    "hid",
    "idle-detection",
    "magnetometer",
    "microphone",
    "midi",
    "payment",
    "screen-wake-lock",
    "serial",
    "usb",
    "xr-spatial-tracking",
)
DEFAULT_PERMISSIONS_POLICY: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    dict.fromkeys(_DENIED_FEATURES, ())
)

# Stripped because they name the server stack and its version, which tells an
# attacker which published exploits to try.
DEFAULT_STRIP_HEADERS: Final = ("server", "x-powered-by")

# Media types no browser renders as an active page (`HeadersSettings.resource_types`).
# Left out on purpose: HTML, XML and SVG (pages that run script), PDF (a viewer
# document), JavaScript (a worker or service worker runs under its script's own
# CSP, which `default-src 'none'` would cut off from the network), and images,
# audio and video (Firefox styles its media documents inline, which `default-src
# 'none'` blocks). A missing `Content-Type` gets the document set too.
DEFAULT_RESOURCE_TYPES: Final = (
    "application/json",
    "*/*+json",
    "application/x-ndjson",
    "text/plain",
    "text/csv",
    "text/css",
    "text/event-stream",
    "font/*",
    "application/octet-stream",
)
# `ResourceTypes.memo`: distinct raw `Content-Type` values remembered, and the longest.
_RESOURCE_MEMO_ENTRIES: Final = 64
_RESOURCE_MEMO_MAX_BYTES: Final = 128
# `HeaderSet.plain`: distinct header names of the application's answers remembered,
# and the longest (every registered response header name is shorter).
_PLAIN_MEMO_ENTRIES: Final = 64
_PLAIN_MEMO_MAX_BYTES: Final = 64
# The headers that act on a rendered page only (or on the browsing context around
# it): left out of the resource set. What stays: nosniff, CORP, X-Frame-Options, a
# `default-src 'none'` CSP, and any other header the settings add.
DOCUMENT_ONLY_HEADERS: Final = frozenset(
    {
        "referrer-policy",
        "permissions-policy",
        "cross-origin-opener-policy",
        "origin-agent-cluster",
        "x-xss-protection",
    }
)

# Referrer-Policy values that send the full URL (its path and query, where ids and
# tokens live) to other origins (Referrer Policy section 3): `unsafe-url` to every
# site, even over plain HTTP; `no-referrer-when-downgrade` to every HTTPS site.
# `origin` and `origin-when-cross-origin` send only the origin to other sites and
# are not reported. No header leaves the choice to the browser, whose default was
# `no-referrer-when-downgrade` until 2020-2021: reported too.
_LEAKY_REFERRER_POLICIES: Final = frozenset({"unsafe-url", "no-referrer-when-downgrade"})
_REFERRER_POLICIES: Final = frozenset(get_args(ReferrerPolicy))
# COOP values that keep cross-origin windows out of our browsing context group. Any
# other value, `unsafe-none` or one the browser does not know, is `unsafe-none`.
_ISOLATING_OPENER_POLICIES: Final = frozenset(
    {"same-origin", "same-origin-allow-popups", "noopener-allow-popups"}
)
# CORP values that keep other sites from embedding our responses.
_SAME_SITE_RESOURCE_POLICIES: Final = frozenset({"same-origin", "same-site"})
_FRAME_DENYING_OPTIONS: Final = frozenset({"deny", "sameorigin"})

# Headers we own elsewhere or that frame the message; `extra_headers` may not set them.
_RESERVED_HEADERS: Final = frozenset(
    {
        "content-security-policy",
        "content-security-policy-report-only",
        "reporting-endpoints",
        "set-cookie",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "trailer",
        "te",
    }
)
# The cors layer's headers. This layer sits outside it and adds its lines after the
# cors layer has stripped the application's, so an `extra_headers` grant here would
# reach every response past the allowlist and its rules (`null` never trusted, no
# `*` with credentials, `Vary: Origin`), unreported: grants belong to `cors`.
_CORS_HEADER_PREFIX: Final = "access-control-"
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 section 5.6.2
# RFC 9110 section 5.5: visible ASCII with inner spaces or tabs; never CR, LF or NUL.
# obs-text (0x80-0xFF) is refused too: its meaning depends on the peer.
_FIELD_VALUE: Final = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?\Z")
_FEATURE: Final = re.compile(r"[a-z][a-z0-9-]*\Z")
# `type/subtype`, `type/*` or `*/*+suffix` (RFC 6838 section 4.2 names, lower case).
_MEDIA_NAME: Final = r"[a-z0-9][a-z0-9!#$&^_.+-]*"
_MEDIA_PATTERN: Final = re.compile(
    rf"(?:{_MEDIA_NAME}/(?:{_MEDIA_NAME}|\*)|\*/\*\+[a-z0-9][a-z0-9!#$&^_.-]*)\Z"
)
# The report path goes into `report-uri` and, quoted, into `Reporting-Endpoints`.
_REPORT_PATH: Final = re.compile(r"/[A-Za-z0-9._~/-]*\Z")
_ALLOWLIST_KEYWORDS: Final = frozenset({"self", "src", "*"})


def _mapping(value: Any) -> Mapping[Any, Any] | None:
    return value if isinstance(value, Mapping) else None


def _parse_header_name(name: str, setting: str) -> str:
    lowered = name.strip().lower()
    if not _TOKEN.match(lowered):
        raise ValueError(f"{setting}: header name {name!r} is not a token (RFC 9110 5.6.2)")
    return lowered


def _parse_allowlist(feature: str, value: Any) -> tuple[str, ...]:
    """A Permissions-Policy allowlist: `self`, `src`, `*` or origins (quoted on output)."""
    items = value.split() if isinstance(value, str) else list(value)
    parsed: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"permissions_policy: {feature!r}: allowlist items are strings")
        if item in _ALLOWLIST_KEYWORDS:
            parsed.append(item)
            continue
        unquoted = item[1:-1] if len(item) > 1 and item[0] == item[-1] == '"' else item
        origin = parse_origin(unquoted)
        if origin is None or origin.scheme not in ("http", "https"):
            raise ValueError(
                f"permissions_policy: {feature!r}: items are self, src, * or an origin "
                "such as https://maps.example"
            )
        parsed.append(f'"{origin.serialise()}"')
    return tuple(parsed)


class HeaderPolicy(Section):
    """The headers one route gets; `HeadersSettings` and each route entry share it."""

    csp_directives: dict[str, tuple[str, ...] | None] = Field(default_factory=dict)
    """CSP directives to set or replace, e.g. `{"img-src": "'self' https://cdn.example"}`;
    `None` removes a default directive. Write `'nonce-{nonce}'` for the nonce."""

    csp_extra_sources: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Sources appended to a directive, e.g. `{"connect-src": ["https://api.example"]}`."""

    csp_report_only: bool = False
    """Send the policy as Content-Security-Policy-Report-Only (report, do not block)."""

    insecure_disable_csp: bool = False
    """Send no Content-Security-Policy at all. An opt-out: logged at start-up."""

    enforce: bool = False
    """Replace headers of the same name the application set itself (default: keep them)."""

    referrer_policy: ReferrerPolicy | None = "strict-origin-when-cross-origin"
    permissions_policy: dict[str, tuple[str, ...] | None] = Field(default_factory=dict)
    """Features merged over the default deny list, e.g. `{"geolocation": ["self"]}`;
    `None` drops a feature from the header."""

    cross_origin_opener_policy: OpenerPolicy | None = "same-origin"
    cross_origin_resource_policy: ResourcePolicy | None = "same-origin"
    x_frame_options: FrameOptions | None = "auto"
    """`auto` derives it from CSP frame-ancestors ('none' -> DENY, 'self' -> SAMEORIGIN)."""

    origin_agent_cluster: bool = True
    extra_headers: dict[str, str | None] = Field(default_factory=dict)
    """More response headers, or `None` to drop one of the defaults (e.g. X-XSS-Protection)."""

    @field_validator("csp_directives", mode="before")
    @classmethod
    def _parse_directives(cls, value: Any) -> Any:
        mapping = _mapping(value)
        if mapping is None:
            return value
        parsed: dict[str, tuple[str, ...] | None] = {}
        for raw_name, sources in mapping.items():
            name = parse_directive_name(str(raw_name))
            parsed[name] = None if sources is None else parse_sources(name, sources)
        return parsed

    @field_validator("csp_extra_sources", mode="before")
    @classmethod
    def _parse_extra_sources(cls, value: Any) -> Any:
        mapping = _mapping(value)
        if mapping is None:
            return value
        parsed: dict[str, tuple[str, ...]] = {}
        for raw_name, sources in mapping.items():
            name = parse_directive_name(str(raw_name))
            if sources is None:
                raise ValueError(f"CSP directive {name!r}: list the sources to add")
            added = parse_sources(name, sources)
            if "'none'" in added:
                raise ValueError(f"CSP directive {name!r}: 'none' cannot be added")
            parsed[name] = added
        return parsed

    @field_validator("permissions_policy", mode="before")
    @classmethod
    def _parse_permissions(cls, value: Any) -> Any:
        mapping = _mapping(value)
        if mapping is None:
            return value
        parsed: dict[str, tuple[str, ...] | None] = {}
        for raw_feature, allowlist in mapping.items():
            feature = str(raw_feature).strip().lower()
            if not _FEATURE.match(feature):
                raise ValueError(f"permissions_policy: feature {raw_feature!r} is not a token")
            parsed[feature] = None if allowlist is None else _parse_allowlist(feature, allowlist)
        return parsed

    @field_validator("extra_headers", mode="before")
    @classmethod
    def _parse_extra_headers(cls, value: Any) -> Any:
        mapping = _mapping(value)
        if mapping is None:
            return value
        parsed: dict[str, str | None] = {}
        for raw_name, header_value in mapping.items():
            name = _parse_header_name(str(raw_name), "extra_headers")
            if name in _RESERVED_HEADERS:
                raise ValueError(f"extra_headers: {name!r} cannot be set here")
            if name.startswith(_CORS_HEADER_PREFIX):
                raise ValueError(
                    f"extra_headers: {name!r} is a CORS grant; configure the cors section "
                    "(allow_origins, allow_credentials, expose_headers) instead"
                )
            if header_value is not None and (
                not isinstance(header_value, str) or not _FIELD_VALUE.match(header_value)
            ):
                raise ValueError(
                    f"extra_headers: {name!r}: a value is visible ASCII, no CR, LF or "
                    "control characters, no leading or trailing space"
                )
            parsed[name] = header_value
        return parsed


class RouteHeadersSettings(HeaderPolicy):
    """Per-route overrides: only the settings given here change for the route.

    Mappings (`csp_directives`, `permissions_policy`, `extra_headers`) merge key by
    key over the layer's; `csp_extra_sources` add to the layer's. A route dumps only
    the settings it sets, so dumping and reloading settings keeps that meaning.
    """

    def weakenings(self) -> list[str]:
        """Nothing on its own: what a route weakens depends on the layer settings it
        refines, so `HeadersSettings.weakenings` reports it, as `routes[pattern].…`."""
        return []

    @model_serializer(mode="wrap")
    def _dump_set_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {name: value for name, value in data.items() if name in self.model_fields_set}


class HeadersSettings(HeaderPolicy, LayerSettings):
    """Security response headers, CSP with a per-request nonce, and its report endpoint.

    `monitor_only` sends the CSP as Report-Only everywhere (as `csp_report_only`).
    """

    strip_headers: tuple[str, ...] = DEFAULT_STRIP_HEADERS
    """Headers removed from every response the application sends."""

    csp_report_path: str | None = DEFAULT_REPORT_PATH
    """Path of the built-in violation report endpoint, named in `report-uri` and
    `report-to`; `None` turns the endpoint and both directives off."""

    csp_report_max_bytes: int = Field(DEFAULT_MAX_REPORT_BYTES, ge=1024, le=1024 * 1024)
    csp_report_max_reports: int = Field(DEFAULT_MAX_REPORTS, ge=1, le=100)
    csp_report_max_events_per_minute: int = Field(
        DEFAULT_MAX_REPORT_EVENTS_PER_MINUTE, ge=1, le=MAX_REPORT_EVENTS_PER_MINUTE
    )
    """Violation events one process writes per minute at most, bursts included;
    the rest are counted in a `csp-report-rate-limited` event and dropped."""

    resource_types: tuple[str, ...] = DEFAULT_RESOURCE_TYPES
    """Media types answered with the resource set instead of the document set: a
    response whose `Content-Type` is one of these (`type/subtype`, `type/*` or
    `*/*+suffix`) renders no page, so it gets `X-Content-Type-Options`,
    `Cross-Origin-Resource-Policy`, `X-Frame-Options`, any `extra_headers`, and
    `Content-Security-Policy: default-src 'none'` with the policy's `frame-ancestors`
    (no nonce, no report endpoint); the headers that act on a page only
    (`DOCUMENT_ONLY_HEADERS`) are left out. Empty: the document set everywhere."""

    routes: dict[str, RouteHeadersSettings] = Field(default_factory=dict)
    """Per-route overrides by route pattern, e.g. `{"/embed/*": {...}}`."""

    def weakenings(self) -> list[str]:
        """The layer's weakened headers (`header_weakenings`), fingerprinting headers
        it no longer strips, then each route's: what the route's merged policy
        weakens beyond what the layer already does, as `routes[pattern].<weakening>`.
        """
        if not self.enabled:
            return []  # `enabled=false` is reported, and none of this is sent
        layer = header_weakenings(self, force_report_only=self.monitor_only)
        found = list(layer)
        found.extend(
            f"strip_headers ({name} not stripped)"
            for name in DEFAULT_STRIP_HEADERS
            if name not in self.strip_headers
        )
        for pattern, route in self.routes.items():
            merged = merge_route(self, route)
            found.extend(
                f"routes[{pattern}].{weakening}"
                for weakening in header_weakenings(merged, force_report_only=self.monitor_only)
                if weakening not in layer
            )
        return found

    @field_validator("strip_headers")
    @classmethod
    def _parse_strip(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_parse_header_name(name, "strip_headers") for name in value)

    @field_validator("resource_types")
    @classmethod
    def _parse_resource_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parsed: list[str] = []
        for pattern in value:
            lowered = pattern.strip().lower()
            if not _MEDIA_PATTERN.match(lowered):
                raise ValueError(
                    f"resource_types: {pattern!r} is not a media type: write type/subtype, "
                    "type/* or */*+suffix"
                )
            if lowered not in parsed:
                parsed.append(lowered)
        return tuple(parsed)

    @field_validator("csp_report_path")
    @classmethod
    def _check_report_path(cls, value: str | None) -> str | None:
        if value is not None and not _REPORT_PATH.match(value):
            raise ValueError("csp_report_path: an absolute path of letters, digits, ._~/-")
        return value

    @field_validator("routes")
    @classmethod
    def _check_routes(
        cls, value: dict[str, RouteHeadersSettings]
    ) -> dict[str, RouteHeadersSettings]:
        for pattern in value:
            parse_route_pattern(pattern)
        return value


def merge_route(base: HeaderPolicy, route: HeaderPolicy) -> HeaderPolicy:
    """The policy of one route: `base` with what `route` set explicitly."""
    fields: dict[str, Any] = {name: getattr(base, name) for name in HeaderPolicy.model_fields}
    for name in route.model_fields_set:
        value = getattr(route, name)
        if name in ("csp_directives", "permissions_policy", "extra_headers"):
            value = {**fields[name], **value}
        elif name == "csp_extra_sources":
            merged = dict(fields[name])
            for directive, added in value.items():
                current = merged.get(directive, ())
                merged[directive] = current + tuple(s for s in added if s not in current)
            value = merged
        fields[name] = value
    # Both inputs were validated; merging cannot produce anything they did not allow.
    return HeaderPolicy.model_construct(**fields)


# --- Weakenings --------------------------------------------------------------------


def _sent(
    policy: HeaderPolicy, header: str, setting: str, value: str | None
) -> tuple[str, str | None]:
    """The value sent for one of our headers, and the setting that decided it:
    `extra_headers` replaces or drops what the header's own setting chose."""
    if header in policy.extra_headers:
        return f"extra_headers.{header}", policy.extra_headers[header]
    return setting, value


def _shown(setting: str, value: str | None) -> str:
    return f"{setting}={'null' if value is None else value}"


def _first_token(value: str) -> str:
    """The value before any parameters or list items, as browsers compare it."""
    return value.split(";", 1)[0].split(",", 1)[0].strip().lower()


def _referrer_leaks(value: str | None) -> bool:
    if value is None:
        return True
    # Referrer Policy section 8.1: unknown tokens are skipped, the last known one wins,
    # and a header with none leaves the browser's default in place.
    tokens = (part.strip().lower() for part in value.split(","))
    known = [token for token in tokens if token in _REFERRER_POLICIES]
    return not known or known[-1] in _LEAKY_REFERRER_POLICIES


def header_weakenings(policy: HeaderPolicy, *, force_report_only: bool = False) -> list[str]:
    """What in one route's policy weakens a protection, as stable `setting=value`
    strings (shown at start-up and by `bastion config`, diffed in CI).

    Each header is judged by the value actually sent, so `extra_headers` replacing
    or dropping one of ours (`extra_headers.x-content-type-options=null`) is named
    rather than the header's own setting. Reported: a Referrer-Policy that sends
    full URLs to other sites, or none; COOP `unsafe-none` or none; CORP
    `cross-origin` or none; nosniff or Permissions-Policy dropped; the CSP's
    weakenings (`csp.policy_weakenings`; none when `insecure_disable_csp`, which is
    reported as the switch it is); and a page nothing keeps from being framed:
    neither an enforced `frame-ancestors` nor an X-Frame-Options of DENY or
    SAMEORIGIN (`frame_options_for` explains why either is enough). The legacy
    X-XSS-Protection, Origin-Agent-Cluster and Permissions-Policy grants are not
    judged: each is a deliberate choice for the application to make.
    """
    found: list[str] = []
    setting, value = _sent(policy, "referrer-policy", "referrer_policy", policy.referrer_policy)
    if _referrer_leaks(value):
        found.append(_shown(setting, value))
    setting, value = _sent(
        policy,
        "cross-origin-opener-policy",
        "cross_origin_opener_policy",
        policy.cross_origin_opener_policy,
    )
    if value is None or _first_token(value) not in _ISOLATING_OPENER_POLICIES:
        found.append(_shown(setting, value))
    setting, value = _sent(
        policy,
        "cross-origin-resource-policy",
        "cross_origin_resource_policy",
        policy.cross_origin_resource_policy,
    )
    if value is None or _first_token(value) not in _SAME_SITE_RESOURCE_POLICIES:
        found.append(_shown(setting, value))
    # nosniff has no setting of its own; only `extra_headers` can drop or replace it.
    nosniff = policy.extra_headers.get("x-content-type-options", "nosniff")
    if nosniff is None or _first_token(nosniff) != "nosniff":
        found.append(_shown("extra_headers.x-content-type-options", nosniff))
    if policy.extra_headers.get("permissions-policy", "") is None:
        found.append("extra_headers.permissions-policy=null")

    directives = resolve_directives(policy.csp_directives, policy.csp_extra_sources)
    if not policy.insecure_disable_csp:
        found.extend(policy_weakenings(directives))
    # Framing: an enforced frame-ancestors decides (its wildcards are reported above);
    # without one, only X-Frame-Options stands between the page and clickjacking.
    ancestors_enforced = (
        not policy.insecure_disable_csp
        and not (policy.csp_report_only or force_report_only)
        and "frame-ancestors" in directives
    )
    frame_options = (
        frame_options_for(directives)
        if policy.x_frame_options == "auto"
        else policy.x_frame_options
    )
    setting, value = _sent(policy, "x-frame-options", "x_frame_options", frame_options)
    if not ancestors_enforced and (
        value is None or _first_token(value) not in _FRAME_DENYING_OPTIONS
    ):
        if setting != "x_frame_options" or policy.x_frame_options is None:
            found.append(_shown(setting, value))
        elif "frame-ancestors" not in directives:
            found.append("csp.frame-ancestors=null")
        # Otherwise `auto` found frame-ancestors to follow, but the CSP is off or
        # report-only: that switch is reported by its own name.
    return found


@dataclass(frozen=True, slots=True)
class ResourceTypes:
    """`HeadersSettings.resource_types`, compiled: which `Content-Type` renders no page."""

    exact: frozenset[bytes]
    prefixes: tuple[bytes, ...]  # `type/` of each `type/*`
    suffixes: tuple[bytes, ...]  # `+suffix` of each `*/*+suffix`
    memo: dict[bytes, bool] = field(default_factory=dict, compare=False)
    """`match` by the raw value: an application sends a few types all day. Emptied
    when full (`_RESOURCE_MEMO_ENTRIES`), as a value may echo what a client sent."""

    @classmethod
    def compile(cls, patterns: Iterable[str]) -> ResourceTypes:
        exact: set[bytes] = set()
        prefixes: list[bytes] = []
        suffixes: list[bytes] = []
        for pattern in patterns:
            encoded = pattern.encode("ascii")
            if encoded.startswith(b"*/*"):
                suffixes.append(encoded[3:])
            elif encoded.endswith(b"/*"):
                prefixes.append(encoded[:-1])
            else:
                exact.add(encoded)
        return cls(frozenset(exact), tuple(prefixes), tuple(suffixes))

    def match(self, content_type: bytes) -> bool:
        """Whether a response of this `Content-Type` value gets the resource set. The
        essence (before any parameter, RFC 9110 section 8.3.1) is compared."""
        known = self.memo.get(content_type)
        if known is not None:
            return known
        essence = content_type.split(b";", 1)[0].strip(b" \t").lower()
        matched = (
            essence in self.exact
            or essence.startswith(self.prefixes)
            or essence.endswith(self.suffixes)
        )
        if len(content_type) <= _RESOURCE_MEMO_MAX_BYTES:
            if len(self.memo) >= _RESOURCE_MEMO_ENTRIES:
                self.memo.clear()
            self.memo[content_type] = matched
        return matched


# What `merge_headers` does with an application's line, by lower-case name
# (`HeaderSet.kinds`); a name not listed is kept as it is.
_STRIP: Final = 0
_MANAGED: Final = 1
_CONTENT_TYPE: Final = 2


@dataclass(frozen=True, slots=True)
class HeaderSet:
    """The headers one route adds, encoded once.

    `static` holds every header but the CSP; `csp` is its template (None when no
    CSP is sent); `appended` is merged with the application's own lines rather
    than checked against them (a structured dictionary, like `Vary`); `managed` is
    every name whose presence in the application's answer keeps ours out.

    `resource` is the set sent instead when the response's `Content-Type` is one of
    `resource_types` (`HeadersSettings.resource_types`); both None when every
    response gets this set.

    Precomputed for `merge_headers` (`_header_set` builds both): `kinds` says what
    to do with an application line of each lower-case name (one lookup per line:
    strip, managed, or the `Content-Type`), and `lines` is everything the set adds
    to an answer that set none of `managed` (`static`, the CSP, `appended`), or None
    when the CSP has a nonce slot and is rendered per response. `plain` remembers
    the names `merge_for_response` keeps as they are (lower-case, not in `kinds`),
    so the usual line costs one set lookup: a name's verdict never changes, and the
    memo is emptied when full (`_PLAIN_MEMO_ENTRIES`), as an answer's names may echo
    what a client sent.
    """

    static: tuple[tuple[bytes, bytes], ...]
    csp_name: bytes
    csp: CSPTemplate | None
    appended: tuple[tuple[bytes, bytes], ...]
    managed: frozenset[bytes]
    strip: frozenset[bytes]
    enforce: bool
    resource: HeaderSet | None = None
    resource_types: ResourceTypes | None = None
    kinds: Mapping[bytes, int] = field(default_factory=dict, compare=False)
    lines: tuple[tuple[bytes, bytes], ...] | None = None
    plain: set[bytes] = field(default_factory=set, compare=False)

    @property
    def needs_nonce(self) -> bool:
        return self.csp is not None and self.csp.has_nonce


def _header_set(
    static: tuple[tuple[bytes, bytes], ...],
    csp_name: bytes,
    csp: CSPTemplate | None,
    appended: tuple[tuple[bytes, bytes], ...],
    strip: frozenset[bytes],
    *,
    enforce: bool,
    resource: HeaderSet | None = None,
    resource_types: ResourceTypes | None = None,
) -> HeaderSet:
    """A `HeaderSet`, with what `merge_headers` reads per response precomputed."""
    managed = frozenset(name for name, _ in static) | ({csp_name} if csp else frozenset())
    # Later assignments win, in the order `merge_headers` used to test them one by
    # one: a stripped name is stripped even if managed, a managed `Content-Type`
    # (through `extra_headers`) is managed.
    kinds: dict[bytes, int] = {b"content-type": _CONTENT_TYPE}
    kinds.update(dict.fromkeys(managed, _MANAGED))
    kinds.update(dict.fromkeys(strip, _STRIP))
    lines: tuple[tuple[bytes, bytes], ...] | None = None
    if csp is None:
        lines = static + appended
    elif not csp.has_nonce:
        lines = (*static, (csp_name, csp.render("")), *appended)
    return HeaderSet(
        static=static,
        csp_name=csp_name,
        csp=csp,
        appended=appended,
        managed=managed,
        strip=strip,
        enforce=enforce,
        resource=resource,
        resource_types=resource_types,
        kinds=kinds,
        lines=lines,
    )


def _serialize_permissions(policy: Mapping[str, tuple[str, ...] | None]) -> str:
    return ", ".join(
        f"{feature}=({' '.join(allowlist)})"
        for feature, allowlist in policy.items()
        if allowlist is not None
    )


def build_header_set(
    policy: HeaderPolicy,
    *,
    report_path: str | None = DEFAULT_REPORT_PATH,
    strip: Iterable[str] = (),
    force_report_only: bool = False,
    resource_types: Iterable[str] = (),
) -> HeaderSet:
    """Compile one route's policy into encoded header tuples and a CSP template,
    with its resource set when `resource_types` names any media type."""
    directives = resolve_directives(
        policy.csp_directives,
        policy.csp_extra_sources,
        report_uri=report_path,
        report_to=REPORT_ENDPOINT_NAME if report_path is not None else None,
    )
    headers: dict[str, str] = {"x-content-type-options": "nosniff"}
    if policy.referrer_policy is not None:
        headers["referrer-policy"] = policy.referrer_policy
    permissions = _serialize_permissions(
        {**DEFAULT_PERMISSIONS_POLICY, **policy.permissions_policy}
    )
    if permissions:
        headers["permissions-policy"] = permissions
    if policy.cross_origin_opener_policy is not None:
        headers["cross-origin-opener-policy"] = policy.cross_origin_opener_policy
    if policy.cross_origin_resource_policy is not None:
        headers["cross-origin-resource-policy"] = policy.cross_origin_resource_policy
    frame_options = (
        frame_options_for(directives)
        if policy.x_frame_options == "auto"
        else policy.x_frame_options
    )
    if frame_options is not None:
        headers["x-frame-options"] = frame_options
    if policy.origin_agent_cluster:
        # Origin-keyed agent cluster: no `document.domain` relaxation between
        # sibling subdomains, and process isolation where the browser can.
        headers["origin-agent-cluster"] = "?1"
    # Turn off the legacy XSS auditor of old browsers: it could be abused to delete
    # chosen scripts from a page and to leak data (OWASP: set it to 0).
    headers["x-xss-protection"] = "0"
    for name, value in policy.extra_headers.items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value

    csp: CSPTemplate | None = None
    csp_name = b""
    appended: tuple[tuple[bytes, bytes], ...] = ()
    if not policy.insecure_disable_csp and directives:
        csp = compile_policy(directives)
        report_only = policy.csp_report_only or force_report_only
        csp_name = (
            b"content-security-policy-report-only" if report_only else b"content-security-policy"
        )
        if report_path is not None and directives.get("report-to") == (REPORT_ENDPOINT_NAME,):
            value = f'{REPORT_ENDPOINT_NAME}="{report_path}"'
            appended = ((b"reporting-endpoints", value.encode("ascii")),)

    static = tuple((name.encode("ascii"), value.encode("ascii")) for name, value in headers.items())
    stripped = frozenset(name.encode("ascii") for name in strip)
    types = tuple(resource_types)
    resource: HeaderSet | None = None
    if types:
        resource_csp: CSPTemplate | None = None
        if csp is not None:
            # Nothing loads and nothing frames: a resource opened as a page runs
            # nothing, and keeps the framing rule of the route's pages.
            resource_directives: dict[str, tuple[str, ...]] = {"default-src": ("'none'",)}
            if "frame-ancestors" in directives:
                resource_directives["frame-ancestors"] = directives["frame-ancestors"]
            resource_csp = compile_policy(resource_directives)
        resource_static = tuple(
            (name, value) for name, value in static if name.decode() not in DOCUMENT_ONLY_HEADERS
        )
        resource = _header_set(
            resource_static, csp_name, resource_csp, (), stripped, enforce=policy.enforce
        )
    return _header_set(
        static,
        csp_name,
        csp,
        appended,
        stripped,
        enforce=policy.enforce,
        resource=resource,
        resource_types=ResourceTypes.compile(types) if types else None,
    )


def compile_header_sets(settings: HeadersSettings) -> tuple[HeaderSet, dict[str, HeaderSet]]:
    """The default header set and one per route pattern."""
    options: dict[str, Any] = {
        "report_path": settings.csp_report_path,
        "strip": settings.strip_headers,
        "force_report_only": settings.monitor_only,
        "resource_types": settings.resource_types,
    }
    default = build_header_set(settings, **options)
    routes = {
        pattern: build_header_set(merge_route(settings, route), **options)
        for pattern, route in settings.routes.items()
    }
    return default, routes


def edited_names(header_sets: Iterable[HeaderSet]) -> frozenset[bytes]:
    """Every response header name one of `header_sets` (or the resource set sent in
    its place) may add, keep out or strip: the names the headers layer may change
    in an answer. Any other line passes it as the application sent it."""
    names: set[bytes] = set()
    for header_set in header_sets:
        for one in (header_set, header_set.resource):
            if one is not None:
                names |= one.managed | one.strip
                names.update(name for name, _ in one.appended)
    return frozenset(names)


def merge_headers(
    app_headers: Iterable[Any],
    header_set: HeaderSet,
    nonce: str = "",
    *,
    context: RequestContext | None = None,
) -> RawHeaders:
    """The application's headers, stripped, with ours added: one list per response.

    A header the application set is kept and ours is left out, unless the set
    enforces, in which case the application's lines of that name are dropped. A
    response whose `Content-Type` is one of the set's `resource_types` gets the
    resource set instead (`HeaderSet.resource`). With a `context`, the nonce is its
    `csp_nonce`, read (and so drawn) only when the CSP sent has a nonce slot.
    """
    return merge_for_response(header_set, nonce, context, app_headers)


def merge_for_response(
    header_set: HeaderSet,
    nonce: str,
    context: RequestContext | None,
    app_headers: Iterable[Any],
) -> RawHeaders:
    """`merge_headers`, with the response's headers last: the headers layer binds
    the first three once (`functools.partial`, positional, so a call makes no
    keyword dictionary; the context through a bound method, `HeadersMiddleware`)
    and the flow hands it the application's lines.

    The usual answer (a list whose every name is kept as it is, `HeaderSet.plain`,
    or is `content-type`) is told by one loop of set lookups; its lines are then
    copied in one call and the set's precomputed `lines` added in the same list
    display (a CSP without a nonce slot is rendered already). Any other answer
    takes `_merge_lines`: one pass, one lookup per line (`HeaderSet.kinds`).
    """
    if app_headers.__class__ is list:  # read twice
        plain, kinds = header_set.plain, header_set.kinds
        content_type: bytes | None = None
        content_types_seen = 0
        for name, value in app_headers:
            if name in plain:
                continue
            kind = kinds.get(name)
            if kind is None and name.islower():  # kept as it is: remembered
                if len(name) <= _PLAIN_MEMO_MAX_BYTES:
                    if len(plain) >= _PLAIN_MEMO_ENTRIES:
                        plain.clear()
                    plain.add(name)
                continue
            if kind != _CONTENT_TYPE:
                break  # a name to strip, to check against the set's, or not lower-case
            content_type = value
            content_types_seen += 1
        else:
            # Every line is kept, and the `content-type` lines are all the lines
            # `_merge_lines`, and its enforcing pass, would count.
            resource_types = header_set.resource_types
            if content_types_seen == 1 and content_type is not None and resource_types is not None:
                matched = resource_types.memo.get(content_type)  # `match`'s memo, inlined
                if matched is None:
                    matched = resource_types.match(content_type)
                if matched:
                    header_set = header_set.resource or header_set
            # `tuple` returns a tuple line itself, and makes one of a list pair, as the
            # general pass does.
            lines = header_set.lines
            if lines is not None:
                return [*map(tuple, app_headers), *lines]
            return _add_set([*map(tuple, app_headers)], header_set, nonce, context, None)
    return _merge_lines(header_set, nonce, context, app_headers)


def _merge_lines(
    header_set: HeaderSet,
    nonce: str,
    context: RequestContext | None,
    app_headers: Iterable[Any],
) -> RawHeaders:
    """`merge_for_response` for any answer: one pass over the application's lines,
    one lookup each (`HeaderSet.kinds`), then the set's lines (`_add_set`)."""
    resource_types = header_set.resource_types
    if resource_types is not None and header_set.enforce:
        # Enforcing drops the application's lines of the chosen set's names, so the
        # set is chosen first, in a pass of its own.
        if not isinstance(app_headers, list | tuple):
            app_headers = list(app_headers)  # read twice
        content_types = [value for name, value in app_headers if name.lower() == b"content-type"]
        if len(content_types) == 1 and resource_types.match(content_types[0]):
            header_set = header_set.resource or header_set
        resource_types = None
    result: RawHeaders = []
    present: set[bytes] | None = None
    kinds, enforce = header_set.kinds, header_set.enforce
    content_type: bytes | None = None
    content_types_seen = 0
    for name, value in app_headers:
        # Names come lower-case (as ASGI servers send them): looked up as they are,
        # and lower-cased (a copy) only when they are not.
        if name in kinds:
            kind: int | None = kinds[name]
        elif name.islower():
            kind = None
        else:
            kind = kinds.get(name.lower())
        if kind is not None:
            if kind == _STRIP:
                continue
            if kind == _MANAGED:
                if enforce:
                    continue
                if present is None:
                    present = {name.lower()}
                else:
                    present.add(name.lower())
            else:  # _CONTENT_TYPE
                content_type = value
                content_types_seen += 1
        result.append((name, value))
    # Two Content-Type lines are read by browsers in ways that differ (Fetch,
    # "extract a MIME type"): only a single, listed type gets the resource set. The
    # resource set's names are among the document set's, so `present` holds for both.
    if content_types_seen == 1 and content_type is not None and resource_types is not None:
        matched = resource_types.memo.get(content_type)  # `match`'s memo, inlined
        if matched is None:
            matched = resource_types.match(content_type)
        if matched:
            header_set = header_set.resource or header_set
    if present is None:
        lines = header_set.lines
        if lines is not None:
            result.extend(lines)
            return result
    return _add_set(result, header_set, nonce, context, present)


def _add_set(
    result: RawHeaders,
    header_set: HeaderSet,
    nonce: str,
    context: RequestContext | None,
    present: set[bytes] | None,
) -> RawHeaders:
    """`result` (the application's lines kept) with the set's lines added, but those
    of the names in `present` (set by the application): the CSP rendered here."""
    if present is None:
        result.extend(header_set.static)
    else:
        result.extend(item for item in header_set.static if item[0] not in present)
    csp = header_set.csp
    if csp is not None and (present is None or header_set.csp_name not in present):
        if context is not None and len(csp.parts) > 1:
            nonce = context.csp_nonce
        result.append((header_set.csp_name, csp.render(nonce)))
    result.extend(header_set.appended)
    return result


def build_response_headers(
    settings: HeadersSettings | None = None,
    route: str | None = None,
    *,
    kind: Literal["document", "resource"] = "document",
) -> list[tuple[str, str]]:
    """The headers the layer adds, as text, with the nonce shown as `'nonce-{nonce}'`.

    `route` names one of `settings.routes` to show that route's headers instead;
    `kind="resource"` shows those sent with a `resource_types` response (the
    document set when `resource_types` is empty).
    """
    settings = settings or HeadersSettings()
    if not settings.enabled:
        return []
    default, routes = compile_header_sets(settings)
    if route is None:
        header_set = default
    elif route in routes:
        header_set = routes[route]
    else:
        raise ValueError(f"no headers.routes entry for {route!r}")
    if kind == "resource" and header_set.resource is not None:
        header_set = header_set.resource
    headers = [(name.decode(), value.decode()) for name, value in header_set.static]
    if header_set.csp is not None:
        headers.append((header_set.csp_name.decode(), header_set.csp.render("{nonce}").decode()))
    headers.extend((name.decode(), value.decode()) for name, value in header_set.appended)
    return headers
