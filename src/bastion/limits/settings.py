"""Settings of the limits layer, and the per-route `BodyLimits` compiled from them.

Every default below is justified against what peers ship. A limit is never
switched off by `None`: to lift one, set a large number, which stays visible in the
configuration and in `bastion check`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, TypeVar

from pydantic import Field, field_validator, model_validator

from bastion.routes import RouteTable
from bastion.sections import LayerSettings, Section

MiB: Final = 1024 * 1024
KiB: Final = 1024

# nginx `client_max_body_size` is 1m; Django's DATA_UPLOAD_MAX_MEMORY_SIZE is 2.5 MB.
# Routes that take uploads raise it for themselves (`routes`).
DEFAULT_MAX_BODY_BYTES: Final = 1 * MiB
# Apache `LimitRequestFields` is 100; a browser sends about 10 to 25.
DEFAULT_MAX_HEADER_COUNT: Final = 100
# h11 (uvicorn, hypercorn) and Node.js stop at 16 KiB of request head; nginx's
# default `large_client_header_buffers` is 4 x 8k.
DEFAULT_MAX_HEADER_BYTES: Final = 16 * KiB
# Ruby's JSON `max_nesting` is 100 and serde_json's recursion limit 128; real
# documents rarely pass 20. Far below CPython's recursion limit (1000), so the
# application's `json.loads` can never raise RecursionError.
DEFAULT_MAX_JSON_DEPTH: Final = 100
# Django's DATA_UPLOAD_MAX_NUMBER_FIELDS and Starlette's `max_fields` are 1000.
DEFAULT_MAX_FORM_FIELDS: Final = 1000
# Django's DATA_UPLOAD_MAX_NUMBER_FILES is 100 (Starlette's `max_files` is 1000).
DEFAULT_MAX_FORM_FILES: Final = 100
# Apache's `LimitRequestFieldSize` is 8190 bytes per header line; a part has one to
# three lines, and even a 255-character file name percent-encoded per RFC 5987 fits.
DEFAULT_MAX_FORM_PART_HEADER_BYTES: Final = 8 * KiB
# Longest wait for the next chunk of a body: Apache's mod_reqtimeout waits 20 s
# (`body=20`), nginx's `client_body_timeout` 60 s between two reads.
DEFAULT_BODY_IDLE_TIMEOUT_SECONDS: Final = 30.0
# Longest total wait for a whole body: a 1 MiB body at 10 KB/s (a poor mobile
# uplink) takes about 100 s. A slow-loris client that sends one byte just under the
# idle timeout can hold a request this long at most.
DEFAULT_BODY_TIMEOUT_SECONDS: Final = 120.0
# gunicorn's `worker_connections` is 1000; uvicorn's `--limit-concurrency` has no
# default. Above this, a process answers 503 at once instead of queueing work it
# cannot finish in time.
DEFAULT_MAX_CONCURRENT_REQUESTS: Final = 1000
# How long a shed client should wait: most in-flight requests finish well within it.
DEFAULT_OVERLOAD_RETRY_AFTER_SECONDS: Final = 5

T = TypeVar("T")

ANY_MEDIA_TYPE: Final = "*/*"
_MEDIA_RANGE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+\Z")


def _parse_media_ranges(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if not values:
        raise ValueError("list at least one media type, or '*/*' for any")
    parsed: list[str] = []
    for value in values:
        media_range = value.strip().lower()
        if ";" in media_range or not _MEDIA_RANGE.match(media_range):
            raise ValueError(
                f"{value!r} is not a media type: use 'type/subtype', 'type/*' or '*/*', "
                "without parameters"
            )
        kind, subtype = media_range.split("/")
        if kind == "*" and subtype != "*":
            raise ValueError(f"{value!r}: '*' as the type needs '*' as the subtype")
        parsed.append(media_range)
    return tuple(parsed)


class RouteLimitsSettings(Section):
    """Body limits for the routes one pattern names; unset fields inherit the layer's.

    Header limits and the concurrency cap are per process, not per route: the
    request head is read before any route is known.
    """

    max_body_bytes: int | None = Field(default=None, gt=0)
    allowed_content_types: tuple[str, ...] | None = None
    max_json_depth: int | None = Field(default=None, gt=0)
    max_json_bytes: int | None = Field(default=None, gt=0)
    max_form_fields: int | None = Field(default=None, gt=0)
    max_form_files: int | None = Field(default=None, ge=0)
    max_form_part_bytes: int | None = Field(default=None, gt=0)
    max_form_part_header_bytes: int | None = Field(default=None, gt=0)
    body_idle_timeout_seconds: float | None = Field(default=None, gt=0)
    body_timeout_seconds: float | None = Field(default=None, gt=0)

    @field_validator("allowed_content_types")
    @classmethod
    def _check_media_ranges(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _parse_media_ranges(value)


class LimitsSettings(LayerSettings):
    """Request size, shape, pace and concurrency limits; see the README reference."""

    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    """Largest request body, declared or streamed (413)."""

    max_header_count: int = Field(default=DEFAULT_MAX_HEADER_COUNT, gt=0)
    """Most request header lines (431). Applies to WebSocket handshakes too."""

    max_header_bytes: int = Field(default=DEFAULT_MAX_HEADER_BYTES, gt=0)
    """Largest total of header names and values, plus 4 bytes a line for `: ` and
    CRLF as on the wire (431). Applies to WebSocket handshakes too."""

    allowed_content_types: tuple[str, ...] | None = None
    """Media types a request body may have (415): `type/subtype`, `type/*` or `*/*`,
    matched case-insensitively on the media type alone. `None` allows any: a global
    guess would break uploads (`application/octet-stream`), XML and CSP reports
    (`application/csp-report`) in apps that take them, so restrict per route."""

    max_json_depth: int = Field(default=DEFAULT_MAX_JSON_DEPTH, gt=0)
    """Deepest nesting of a JSON body (400): a body labelled JSON (`application/json`,
    `*/*+json`) or not labelled, and any other body, forms included, whose first
    character other than whitespace is `[` or `{`, since `json.loads` ignores the
    label (see `bastion.limits.json`)."""

    max_json_bytes: int | None = Field(default=None, gt=0)
    """Largest body labelled JSON or not labelled (413); `None` means the body limit."""

    max_form_fields: int = Field(default=DEFAULT_MAX_FORM_FIELDS, gt=0)
    """Most fields of a url-encoded body, or parts (files included) of a multipart
    body (400)."""

    max_form_files: int = Field(default=DEFAULT_MAX_FORM_FILES, ge=0)
    """Most file parts of a multipart body (400)."""

    max_form_part_bytes: int | None = Field(default=None, gt=0)
    """Largest single field or file of a form (413); `None` means the body limit."""

    max_form_part_header_bytes: int = Field(default=DEFAULT_MAX_FORM_PART_HEADER_BYTES, gt=0)
    """Largest header block of one multipart part (413)."""

    body_idle_timeout_seconds: float = Field(default=DEFAULT_BODY_IDLE_TIMEOUT_SECONDS, gt=0)
    """Longest wait for the next chunk of a body the application is reading (408)."""

    body_timeout_seconds: float = Field(default=DEFAULT_BODY_TIMEOUT_SECONDS, gt=0)
    """Longest total wait for a whole body, summed over the reads (408)."""

    max_concurrent_requests: int = Field(default=DEFAULT_MAX_CONCURRENT_REQUESTS, gt=0)
    """Most HTTP requests in flight in one middleware instance; above, 503."""

    overload_retry_after_seconds: int = Field(default=DEFAULT_OVERLOAD_RETRY_AFTER_SECONDS, ge=0)
    """The `Retry-After` of a 503 for overload."""

    routes: dict[str, RouteLimitsSettings] = Field(default_factory=dict)
    """Per-route body limits by route pattern (`bastion.routes`), e.g.
    `{"POST /upload": {"max_body_bytes": 10000000}}`."""

    @field_validator("allowed_content_types")
    @classmethod
    def _check_media_ranges(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _parse_media_ranges(value)

    @model_validator(mode="after")
    def _check_routes(self) -> LimitsSettings:
        RouteTable(self.routes)  # raises ValueError naming the pattern and the rule
        return self


@dataclass(frozen=True, slots=True)
class ContentTypes:
    """A compiled allowlist of media ranges."""

    exact: frozenset[str]
    any_subtype: frozenset[str]  # "text" for "text/*"
    allow_any: bool

    @classmethod
    def compile(cls, ranges: tuple[str, ...] | None) -> ContentTypes:
        if ranges is None or ANY_MEDIA_TYPE in ranges:
            return cls(frozenset(), frozenset(), True)
        exact = frozenset(r for r in ranges if not r.endswith("/*"))
        return cls(exact, frozenset(r[:-2] for r in ranges if r.endswith("/*")), False)

    def allows(self, media_type: str | None) -> bool:
        """`media_type` is lower-case `type/subtype`, or None when the request has none."""
        if self.allow_any:
            return True
        if media_type is None:
            return False
        return media_type in self.exact or media_type.partition("/")[0] in self.any_subtype


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The resolved body limits of one route (or of every route without a rule)."""

    max_body_bytes: int
    content_types: ContentTypes
    max_json_depth: int
    max_json_bytes: int
    max_form_fields: int
    max_form_files: int
    max_form_part_bytes: int
    max_form_part_header_bytes: int
    body_idle_timeout_seconds: float
    body_timeout_seconds: float


def resolve_limits(settings: LimitsSettings, rule: RouteLimitsSettings | None = None) -> BodyLimits:
    """Merge a route's rule over the layer's settings. Unset size limits of JSON and
    form parts follow the route's body limit, so raising `max_body_bytes` for an
    upload route is enough to accept a large file there."""
    rule = rule or RouteLimitsSettings()
    body = _first(rule.max_body_bytes, settings.max_body_bytes)
    return BodyLimits(
        max_body_bytes=body,
        content_types=ContentTypes.compile(
            rule.allowed_content_types
            if rule.allowed_content_types is not None
            else settings.allowed_content_types
        ),
        max_json_depth=_first(rule.max_json_depth, settings.max_json_depth),
        max_json_bytes=_first(rule.max_json_bytes, settings.max_json_bytes, body),
        max_form_fields=_first(rule.max_form_fields, settings.max_form_fields),
        max_form_files=_first(rule.max_form_files, settings.max_form_files),
        max_form_part_bytes=_first(rule.max_form_part_bytes, settings.max_form_part_bytes, body),
        max_form_part_header_bytes=_first(
            rule.max_form_part_header_bytes, settings.max_form_part_header_bytes
        ),
        body_idle_timeout_seconds=_first(
            rule.body_idle_timeout_seconds, settings.body_idle_timeout_seconds
        ),
        body_timeout_seconds=_first(rule.body_timeout_seconds, settings.body_timeout_seconds),
    )


def compile_routes(settings: LimitsSettings) -> RouteTable[BodyLimits]:
    return RouteTable(
        {pattern: resolve_limits(settings, rule) for pattern, rule in settings.routes.items()}
    )


def _first(*values: T | None) -> T:
    for value in values:
        if value is not None:
            return value
    raise ValueError("no value")  # unreachable: the last value is never None
