"""Cross-origin resource sharing (CORS): who may read our responses from another site.

Threat: a page on another origin uses the visitor's browser, and the visitor's
cookies, to read responses it must not see (account data, CSRF tokens). The browser
blocks such reads unless the response grants them with `Access-Control-Allow-Origin`
(ACAO), so every grant we send is a hole we punched on purpose. The classic mistakes
are granting by reflection (echoing whatever `Origin` came in), by a sloppy suffix
or regular expression (`example.com.evil.net`, `evilexample.com`), to `null` (which
any sandboxed iframe or `data:` page can send), and `*` combined with credentials.

Defence:

* An allowlist of exact origins and explicit `https://*.example.com` patterns,
  parsed once, when the settings are validated, with `bastion.hosts`. A pattern
  matches whole labels only, with the same scheme and port. The ACAO value we send
  is always built from the allowlist or from the parsed origin, never copied from
  the request.
* `null` and malformed origins are never allowed. `*` must be asked for by name
  (`insecure_allow_any_origin`) and is refused with credentials.
* Preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) are
  answered here, never by the app: 204 with the grant when the origin, the method
  and every requested header are allowed; otherwise 403 with the generic body and a
  `malicious_cors` event. Private Network Access preflights are granted only with
  `allow_private_network`.
* Actual requests are never refused: a cross-origin request from an origin we do
  not allow still reaches the app, but its response carries no grant, so the browser
  keeps it from the page. Refusing it would not stop the request being sent (that is
  CSRF, the csrf layer's job) and would break same-origin requests, whose `Origin`
  we do not list.
* The allowlist is the one source of truth: `Access-Control-*` headers the app set
  are removed from every response, so an inner CORS middleware or a handler that
  reflects `Origin` cannot widen the policy.
* `Vary: Origin` is on every response, granted or not, with or without `Origin`,
  so a shared cache never serves one origin's answer (or lack of a grant) to another.

With the default settings (empty allowlist) the layer grants nothing: every preflight
is refused and responses only gain `Vary: Origin`.

Speed: the response edits are built once per decision (no grant, the grant of each
exact origin, `*`), so an actual request only picks one. With the default settings
there is nothing to decide, and `Origin` is not parsed. Otherwise the edit chosen
for an `Origin` value is remembered by its raw bytes, in a memo bounded in entries
and key size (cleared when full), since nothing else of the request changes it;
preflights are always decided afresh. The edit skips the response header names
known to be neither `Vary` nor `Access-Control-*` (a bounded memo, `_PLAIN_NAMES`),
lower-cases only the others whose first byte could start one of those, and copies
the lines whole unless an app-set CORS line must go or a `Vary` line lacks `Origin`.

`monitor_only`: a preflight that would be refused is reported (`action="monitored"`)
and passed on to the app unchanged, and app-set `Access-Control-*` headers are kept
on responses we do not grant, so an app's existing CORS handling keeps working while
the allowlist is tried out. Bastion still answers the preflights it would grant: its
grant never depends on the mode.

Not covered: whether a cross-origin request may change state (csrf layer), WebSocket
handshakes, which browsers do not subject to CORS (websocket guard's origin
allowlist), and public suffixes with more than one label: without the Public Suffix
List, `https://*.co.uk` or `https://*.github.io` is accepted, so list such origins
exactly.

References: Fetch standard, CORS protocol, section 3.2
https://fetch.spec.whatwg.org/#http-cors-protocol (3.2.2 requests, 3.2.3 responses,
3.2.5 credentials); CORS-preflight fetch and cache, sections 4.8 and 4.9
https://fetch.spec.whatwg.org/#cors-preflight-fetch ; CORS-safelisted request-header
https://fetch.spec.whatwg.org/#cors-safelisted-request-header ; RFC 6454 sections 6.1
and 7 (origin serialisation, `Origin`); RFC 9110 sections 5.6.2 (token) and 12.5.5
(`Vary`); Private Network Access https://wicg.github.io/private-network-access/
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Annotated, Final

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)

from bastion.events import KIND_MALICIOUS_CORS, EventEmitter
from bastion.hosts import DEFAULT_PORTS, Origin, host_matches, is_loopback_host, parse_origin
from bastion.responses import Refuser
from bastion.sections import LayerSettings
from bastion.stages import EDIT, Flow, HeaderEdit, Hook, run_stages
from bastion.types import ASGIApp, RawHeaders, Receive, Scope, Send

LAYER: Final = "cors"

REASON_ORIGIN_NOT_ALLOWED: Final = "origin-not-allowed"
REASON_NULL_ORIGIN: Final = "origin-null"
REASON_MALFORMED_ORIGIN: Final = "origin-malformed"
REASON_METHOD_NOT_ALLOWED: Final = "method-not-allowed"
REASON_HEADER_NOT_ALLOWED: Final = "header-not-allowed"
REASON_PRIVATE_NETWORK_NOT_ALLOWED: Final = "private-network-not-allowed"

# Fetch sends CORS only for http(s) requests; an `Origin` of any other scheme
# (`ws:`, `chrome-extension:`, `file:`) is not one we can grant.
CORS_SCHEMES: Final = frozenset({"http", "https"})

# 600 s is Starlette's default: long enough to save most preflights of a session,
# short enough that removing an origin takes effect within minutes. The cap is
# Chromium's own (it truncates larger values to 2 hours); Firefox would keep a grant
# for up to 24 hours, longer than a revoked origin should keep it.
DEFAULT_MAX_AGE_SECONDS: Final = 600
MAX_AGE_CAP_SECONDS: Final = 7200

# GET, HEAD and POST are the CORS-safelisted methods: browsers send them cross-origin
# without asking, so allowing them in a preflight grants nothing new by itself.
DEFAULT_ALLOW_METHODS: Final = ("GET", "HEAD", "POST")

# Fetch "normalize a method": browsers upper-case these six and send every other
# method exactly as the page wrote it; methods are then compared case-sensitively.
_NORMALISED_METHODS: Final = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"})
# Forbidden methods: no browser sends them, so allowing one is a configuration mistake.
_FORBIDDEN_METHODS: Final = frozenset({"CONNECT", "TRACE", "TRACK"})

# Header names whose values are CORS-safelisted in almost every case; a browser lists
# them in Access-Control-Request-Headers only for an unusual value, which is harmless,
# so they are always allowed. `content-type` and `range` are not: a browser lists
# them exactly when the value is not safelisted (`application/json`, a multi-range),
# which is what makes a request "non-simple", so they must be allowed by name.
ALWAYS_ALLOWED_HEADERS: Final = frozenset({"accept", "accept-language", "content-language"})

# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

_ACAO: Final = b"access-control-allow-origin"
_ACAC: Final = (b"access-control-allow-credentials", b"true")
_ACAPN: Final = (b"access-control-allow-private-network", b"true")
_ACRM: Final = b"access-control-request-method"
_ACRH: Final = b"access-control-request-headers"
_ACRPN: Final = b"access-control-request-private-network"
_CORS_PREFIX: Final = b"access-control-"
_VARY_ORIGIN: Final = (b"vary", b"Origin")
# A preflight answer depends on each of these request headers.
_VARY_PREFLIGHT: Final = (
    b"vary",
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
    b"Access-Control-Request-Private-Network",
)
# The first byte of every response header name the edits act on (`Vary`,
# `Access-Control-*`), in either case: a line whose name starts otherwise is kept
# without lower-casing its name.
_EDITED_NAME_STARTS: Final = frozenset({b"a", b"A", b"v", b"V"})
_CORS_NAME_STARTS: Final = frozenset({b"a", b"A"})
# A `Vary` value that already names `Origin`, or is `*`: one of its comma-separated
# members is exactly that, with optional whitespace (RFC 9110 sections 5.6.1, 12.5.5;
# header field names are case-insensitive, and a bytes pattern folds ASCII only).
_VARIES_ON_ORIGIN: Final = re.compile(rb"(?:\A|,)[ \t]*(?:origin|\*)[ \t]*(?:,|\Z)", re.IGNORECASE)

# The memo of actual-request decisions (`CORSMiddleware`) is keyed by the raw
# `Origin` bytes, which the client chooses, so it is bounded twice. Entries: a site
# sees a handful of origins (its own, its allowlist, a few extensions), and a spray
# of distinct values only clears the memo each time it fills, costing the sprayer's
# next requests a fresh decision, as without a memo. Key size: 268 bytes is the
# longest origin with a host name (`https://`, a 253-byte name with its trailing
# dot, `:65535`); a longer value is decided afresh and never stored. Together: at
# most 256 keys of 268 bytes (about 70 kB), each with an edit, shared by all the
# keys of one decision except pattern grants (a closure and a few tuples each).
_MEMO_MAX_ORIGINS: Final = 256
_MEMO_MAX_ORIGIN_BYTES: Final = 268

# Response header names seen that are neither `Vary` nor `Access-Control-*`, in any
# case: the response edits skip them with one set lookup. A name's verdict never
# changes, so one memo serves every instance; it is bounded like the one above (an
# answer's names may echo what a client sent), in entries and in name length (every
# registered response header name is shorter).
_PLAIN_NAMES: Final[set[bytes]] = set()
_PLAIN_NAMES_ENTRIES: Final = 64
_PLAIN_NAMES_MAX_BYTES: Final = 64


# --- The core --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OriginPattern:
    """`scheme://*.suffix[:port]`: any origin one or more whole labels below `suffix`."""

    scheme: str
    suffix: str  # normalised host name, at least two labels, e.g. "example.com"
    port: int  # always explicit

    def matches(self, origin: Origin) -> bool:
        return (
            origin.scheme == self.scheme
            and origin.port == self.port
            and host_matches("*." + self.suffix, origin.host)
        )

    def serialise(self) -> str:
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://*.{self.suffix}{port}"


@dataclass(frozen=True, slots=True)
class CORSPolicy:
    """The parsed, validated policy a `CORSSettings` describes."""

    exact_origins: frozenset[Origin] = frozenset()
    patterns: tuple[OriginPattern, ...] = ()
    allow_any_origin: bool = False
    allow_methods: frozenset[str] = frozenset(DEFAULT_ALLOW_METHODS)
    allow_headers: frozenset[str] = ALWAYS_ALLOWED_HEADERS  # lower-case
    allow_private_network: bool = False


@dataclass(frozen=True, slots=True)
class PreflightRequest:
    """The facts of a preflight, all as the client sent them."""

    untrusted_origin: bytes
    untrusted_method: bytes
    untrusted_headers: bytes | None = None
    private_network: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str  # one of the REASON_* constants; "" when allowed
    origin: Origin | None = None  # the parsed request origin, when it parsed


def parse_origin_rule(text: str) -> Origin | OriginPattern:
    """Parse one `allow_origins` entry, raising ValueError naming the rule it breaks.

    An entry is a serialised origin (`https://app.example`, `http://localhost:3000`)
    or a pattern whose leftmost label is exactly `*` (`https://*.example.com`). The
    pattern's suffix needs two labels or more and must not look like an IP address:
    `*.com` would trust every site in a top-level domain.
    """
    if text == "null":
        raise ValueError(
            "'null' is never allowed: sandboxed iframes, data: URLs and redirects "
            "all send it, so it cannot identify a trusted site"
        )
    if text == "*":
        raise ValueError("'*' is not an origin; set insecure_allow_any_origin instead")
    scheme, separator, authority = text.partition("://")
    if not separator or scheme.lower() not in CORS_SCHEMES:
        raise ValueError(f"{text!r} must start with http:// or https://")
    if "@" in authority:
        raise ValueError(f"{text!r} has userinfo; an origin is scheme://host[:port] only")
    if any(c in authority for c in "/?#\\"):
        raise ValueError(
            f"{text!r} has a path, query or fragment; an origin is scheme://host[:port] "
            "only (no trailing slash)"
        )
    if "*" not in authority:
        origin = parse_origin(text)
        if origin is None:
            raise ValueError(f"{text!r} is not a valid origin")
        return origin
    if not authority.startswith("*.") or "*" in authority[2:]:
        raise ValueError(
            f"{text!r}: a wildcard must be the whole leftmost label, as in "
            "https://*.example.com (never *example.com or example.*)"
        )
    base = parse_origin(f"{scheme}://{authority[2:]}")
    if base is None:
        raise ValueError(f"{text!r} is not a valid origin pattern")
    labels = base.host.split(".")
    if base.host.startswith("[") or labels[-1].isdigit():
        raise ValueError(f"{text!r}: a wildcard cannot stand for part of an IP address")
    if len(labels) < 2:
        raise ValueError(
            f"{text!r}: a wildcard over a top-level domain trusts every site in it; "
            "name a registered domain (https://*.example.com)"
        )
    return OriginPattern(base.scheme, base.host, base.port)


def _validate_origin_rule(value: object) -> Origin | OriginPattern:
    """An `allow_origins` entry as typed (a string), or an already parsed rule,
    which is checked again through its serialisation so no hand-built `Origin`
    (another scheme, an unnormalised host) escapes the rules."""
    if isinstance(value, Origin | OriginPattern):
        value = value.serialise()
    if not isinstance(value, str):
        # ValueError, not TypeError: pydantic reports only the former as a rule broken.
        raise ValueError("an origin is a string such as https://app.example")
    return parse_origin_rule(value)


def _serialise_origin_rule(rule: Origin | OriginPattern) -> str:
    return rule.serialise()


OriginRule = Annotated[
    Origin | OriginPattern,
    PlainValidator(_validate_origin_rule, json_schema_input_type=str),
    PlainSerializer(_serialise_origin_rule, return_type=str),
]
"""One parsed `allow_origins` entry; dumped (and shown by `bastion config`) as its
canonical string, from which it validates again."""


def normalise_method(text: str) -> str:
    """A configured method as browsers send it (Fetch "normalize a method")."""
    if not _TOKEN.match(text) or text == "*":
        raise ValueError(f"{text!r} is not an HTTP method (list methods explicitly, no '*')")
    method = text.upper() if text.upper() in _NORMALISED_METHODS else text
    if method.upper() in _FORBIDDEN_METHODS:
        raise ValueError(f"{text!r} is a forbidden method; browsers never send it")
    return method


def normalise_header_name(text: str) -> str:
    if not _TOKEN.match(text) or text == "*":
        raise ValueError(f"{text!r} is not a header name (list headers explicitly, no '*')")
    return text.lower()


def parse_header_names(untrusted_value: bytes) -> tuple[str, ...] | None:
    """Access-Control-Request-Headers as lower-case names; None if any is not a token."""
    names: list[str] = []
    for part in untrusted_value.split(b","):
        name = part.strip(b" \t").decode("latin-1")
        if not name:
            continue
        if not _TOKEN.match(name):
            return None
        names.append(name.lower())
    return tuple(names)


def check_origin(untrusted_origin: bytes, policy: CORSPolicy) -> Verdict:
    """May a page of `untrusted_origin` read our responses?"""
    if untrusted_origin == b"null":
        return Verdict(False, REASON_NULL_ORIGIN)
    origin = parse_origin(untrusted_origin)
    if origin is None or origin.scheme not in CORS_SCHEMES:
        return Verdict(False, REASON_MALFORMED_ORIGIN)
    if (
        policy.allow_any_origin
        or origin in policy.exact_origins
        or any(pattern.matches(origin) for pattern in policy.patterns)
    ):
        return Verdict(True, "", origin)
    return Verdict(False, REASON_ORIGIN_NOT_ALLOWED, origin)


def check_preflight(request: PreflightRequest, policy: CORSPolicy) -> Verdict:
    """Decide a preflight: origin, then method, then each header, then private network.

    The requested method is compared case-sensitively, as browsers compare it with
    Access-Control-Allow-Methods. Requested header names are compared lower-case.
    """
    verdict = check_origin(request.untrusted_origin, policy)
    if not verdict.allowed:
        return verdict
    if request.untrusted_method.decode("latin-1") not in policy.allow_methods:
        return Verdict(False, REASON_METHOD_NOT_ALLOWED, verdict.origin)
    if request.untrusted_headers is not None:
        names = parse_header_names(request.untrusted_headers)
        if names is None or not policy.allow_headers.issuperset(names):
            return Verdict(False, REASON_HEADER_NOT_ALLOWED, verdict.origin)
    if request.private_network and not policy.allow_private_network:
        return Verdict(False, REASON_PRIVATE_NETWORK_NOT_ALLOWED, verdict.origin)
    return verdict


# --- Settings ----------------------------------------------------------------------


class CORSSettings(LayerSettings):
    """Which other origins may read responses, and with what."""

    allow_origins: tuple[OriginRule, ...] = ()
    """Exact origins (`https://app.example`) and `https://*.example.com` patterns,
    stored parsed (`Origin`, `OriginPattern`) and dumped in canonical form (lower
    case, default port omitted)."""

    insecure_allow_any_origin: bool = False
    """Grant every well-formed origin with `Access-Control-Allow-Origin: *` (never
    `null`). Only for public, cookie-less APIs; refused with `allow_credentials`."""

    allow_credentials: bool = False
    """Let allowed origins send cookies and read credentialed responses."""

    allow_methods: tuple[str, ...] = DEFAULT_ALLOW_METHODS
    """Methods a preflight may ask for, compared case-sensitively."""

    allow_headers: tuple[str, ...] = ()
    """Request headers a preflight may ask for (`content-type` for JSON bodies,
    `authorization`, ...). `accept`, `accept-language` and `content-language` are
    always allowed."""

    expose_headers: tuple[str, ...] = ()
    """Response headers, beyond the safelisted ones, that pages may read."""

    max_age_seconds: Annotated[int, Field(ge=0, le=MAX_AGE_CAP_SECONDS)] = DEFAULT_MAX_AGE_SECONDS
    """How long browsers may cache a preflight answer."""

    allow_private_network: bool = False
    """Grant Private Network Access preflights: let allowed public sites reach this
    server on a private network."""

    @field_validator("allow_origins")
    @classmethod
    def _deduplicate_origins(
        cls, value: tuple[Origin | OriginPattern, ...]
    ) -> tuple[Origin | OriginPattern, ...]:
        return tuple(dict.fromkeys(value))

    @field_validator("allow_methods")
    @classmethod
    def _normalise_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(normalise_method(text) for text in value))

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _normalise_headers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(normalise_header_name(text) for text in value))

    @model_validator(mode="after")
    def _check_any_origin(self) -> CORSSettings:
        if self.insecure_allow_any_origin and self.allow_credentials:
            raise ValueError(
                "insecure_allow_any_origin cannot be combined with allow_credentials: "
                "that would let every site read responses made with the user's cookies"
            )
        if self.insecure_allow_any_origin and self.allow_origins:
            raise ValueError("set either allow_origins or insecure_allow_any_origin, not both")
        return self

    def weakenings(self) -> list[str]:
        """Grants whose value weakens the policy, as stable strings:

        * `allow_origins=http://app.example (with credentials)`: an `http://` origin
          (other than loopback) trusted with credentialed reads. Anyone on the network
          path to that page (public Wi-Fi, a compromised router) can inject script
          into it and read, with the user's cookies, whatever the origin may read.
        * `allow_private_network=true`: allowed public sites may reach this server on
          a private network, so a compromise of any of them reaches it too.
        """
        if not self.enabled:
            return []  # `enabled=false` is reported, and nothing is granted
        found: list[str] = []
        if self.allow_credentials:
            found.extend(
                f"allow_origins={rule.serialise()} (with credentials)"
                for rule in self.allow_origins
                if rule.scheme == "http"
                and not is_loopback_host(rule.host if isinstance(rule, Origin) else rule.suffix)
            )
        if self.allow_private_network:
            found.append("allow_private_network=true")
        return found


def compile_policy(settings: CORSSettings) -> CORSPolicy:
    rules = settings.allow_origins
    return CORSPolicy(
        exact_origins=frozenset(rule for rule in rules if isinstance(rule, Origin)),
        patterns=tuple(rule for rule in rules if isinstance(rule, OriginPattern)),
        allow_any_origin=settings.insecure_allow_any_origin,
        allow_methods=frozenset(settings.allow_methods),
        allow_headers=ALWAYS_ALLOWED_HEADERS | frozenset(settings.allow_headers),
        allow_private_network=settings.allow_private_network,
    )


def grants_any_origin(policy: CORSPolicy) -> bool:
    """Whether some `Origin` could get a grant: only then does a response vary on it."""
    return bool(policy.allow_any_origin or policy.exact_origins or policy.patterns)


# --- Response headers --------------------------------------------------------------


def rewrite_headers(
    headers: Iterable[tuple[bytes, bytes]],
    grant: tuple[tuple[bytes, bytes], ...],
    *,
    keep_app_cors: bool = False,
) -> list[tuple[bytes, bytes]]:
    """The response headers with the app's CORS headers removed, `grant` added and
    `Origin` appended to `Vary` (to the app's last `Vary` line, or as a new line),
    unless `Vary` already names it or is `*`."""
    result: list[tuple[bytes, bytes]] = []
    vary_index = -1
    varies_on_origin = False
    for name, value in headers:
        if name[:1] in _EDITED_NAME_STARTS:
            lower = name.lower()
            if lower.startswith(_CORS_PREFIX) and not keep_app_cors:
                continue
            if lower == b"vary":
                vary_index = len(result)
                varies_on_origin = varies_on_origin or _VARIES_ON_ORIGIN.search(value) is not None
        result.append((name, value))
    if not varies_on_origin:
        if vary_index >= 0:
            name, value = result[vary_index]
            result[vary_index] = (name, value + b", Origin" if value.strip() else b"Origin")
        else:
            result.append(_VARY_ORIGIN)
    result.extend(grant)
    return result


def strip_app_cors(headers: RawHeaders) -> RawHeaders:
    """The response edit of a policy that grants nothing: the application's own
    `Access-Control-*` lines removed, and nothing added. No response of such a
    policy depends on the request's `Origin`, so none carries `Vary: Origin`. The
    usual response has no such line and goes on as it is (the same list); a name
    known to be neither (`_PLAIN_NAMES`) costs one set lookup, and a lower-case
    `vary` line, which that memo never holds, one comparison."""
    plain = _PLAIN_NAMES
    for name, _ in headers:
        if name in plain:
            continue
        if name[:1] in _CORS_NAME_STARTS:
            if name.lower().startswith(_CORS_PREFIX):
                return [line for line in headers if not line[0].lower().startswith(_CORS_PREFIX)]
        elif name == b"vary":
            # Never memoised (the grant edits act on it), and nothing for this edit:
            # the csrf layer's line, on most posts, costs no call.
            continue
        _remember_plain(name)
    return headers


def _remember_plain(name: bytes) -> None:
    """Add `name` to `_PLAIN_NAMES` when it is neither `Vary` nor `Access-Control-*`
    (in any case), bytes and not too long; a full memo is emptied first."""
    if name.__class__ is not bytes or len(name) > _PLAIN_NAMES_MAX_BYTES:
        return
    lower = name.lower()
    if lower == b"vary" or lower.startswith(_CORS_PREFIX):
        return
    if len(_PLAIN_NAMES) >= _PLAIN_NAMES_ENTRIES:
        _PLAIN_NAMES.clear()
    _PLAIN_NAMES.add(name)


def build_response_edit(
    grant: tuple[tuple[bytes, bytes], ...], *, keep_app_cors: bool
) -> HeaderEdit:
    """`rewrite_headers` with its arguments bound, built once per decision.

    Most responses need neither a removal nor a merge: no `Access-Control-*` line,
    and no `Vary` line, or only lines already naming `Origin` (as the csrf layer's
    does). The edit checks that in one pass, skipping the names known to be
    neither (`_PLAIN_NAMES`) and lower-casing only the names that start as those
    two do, and then returns the lines with the grant appended (and `Vary: Origin`
    when no line had it). Any other `Vary` or `Access-Control-*` line sends the
    response through `rewrite_headers`.
    """
    with_vary = (_VARY_ORIGIN, *grant)

    def edit(headers: RawHeaders) -> RawHeaders:
        plain = _PLAIN_NAMES
        varies_on_origin = False
        for name, value in headers:
            if name in plain:
                continue
            if name[:1] in _EDITED_NAME_STARTS:
                lower = name.lower()
                if lower == b"vary" and _VARIES_ON_ORIGIN.search(value) is not None:
                    varies_on_origin = True
                elif lower == b"vary" or (lower.startswith(_CORS_PREFIX) and not keep_app_cors):
                    return rewrite_headers(headers, grant, keep_app_cors=keep_app_cors)
            _remember_plain(name)
        if varies_on_origin:
            return [*headers, *grant]
        return [*headers, *with_vary]

    return edit


# --- The adapter -------------------------------------------------------------------


class CORSMiddleware:
    """Answers preflights and adds the grant to responses for allowed origins.

    An actual request's decision is one of a few response edits, each built once:
    no grant (no `Origin`, or one not allowed), the grant of an exact origin, of
    `*`, or of one origin a pattern matched. The edit for an `Origin` value is
    remembered by its raw bytes (a bounded memo, see `_MEMO_MAX_ORIGINS`), since
    the policy is fixed and the decision depends on nothing else of the request;
    a policy that grants nothing (the default) needs no decision at all.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: CORSSettings | None = None,
        *,
        events: EventEmitter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings if settings is not None else CORSSettings()
        self.policy = compile_policy(self.settings)
        self._refuse = Refuser(LAYER, events, monitor_only=self.settings.monitor_only)
        self._grants_nothing = not grants_any_origin(self.policy)
        # The edit of a response with no grant (most requests: no `Origin`, or one
        # not allowed).
        self._no_grant_hook: Hook = (
            EDIT,
            build_response_edit((), keep_app_cors=self.settings.monitor_only),
        )
        # When the policy can grant nothing and the application's CORS lines are
        # removed, no response varies on `Origin`: the edit only strips them. In
        # monitor-only mode they are kept, and the application's own CORS may reflect
        # the `Origin`, so the response keeps `Vary: Origin` (found in review).
        self._ungranted_hook: Hook = self._no_grant_hook
        if self._grants_nothing and not self.settings.monitor_only:
            self._ungranted_hook = (EDIT, strip_app_cors)

        common: list[tuple[bytes, bytes]] = []
        if self.settings.allow_credentials:
            common.append(_ACAC)
        actual = list(common)
        if self.settings.expose_headers:
            actual.append(
                (b"access-control-expose-headers", ", ".join(self.settings.expose_headers).encode())
            )
        preflight = [_VARY_PREFLIGHT, *common]
        if self.settings.allow_methods:
            preflight.append(
                (b"access-control-allow-methods", ", ".join(self.settings.allow_methods).encode())
            )
        preflight.append(
            (b"access-control-allow-headers", ", ".join(sorted(self.policy.allow_headers)).encode())
        )
        preflight.append((b"access-control-max-age", str(self.settings.max_age_seconds).encode()))
        self._actual_extra = tuple(actual)
        self._preflight_extra = tuple(preflight)
        # Grants for exact origins are built once; pattern grants name the parsed
        # request origin (never its raw bytes) and are built per decision.
        self._actual_grants = {
            origin: ((_ACAO, origin.serialise().encode()), *self._actual_extra)
            for origin in self.policy.exact_origins
        }
        self._preflight_grants = {
            origin: (*self._preflight_extra, (_ACAO, origin.serialise().encode()))
            for origin in self.policy.exact_origins
        }
        self._any_actual_grant = ((_ACAO, b"*"), *self._actual_extra)
        self._any_preflight_grant = (*self._preflight_extra, (_ACAO, b"*"))
        # A grant replaces the application's CORS headers even in monitor-only mode.
        self._exact_hooks: dict[Origin, Hook] = {
            origin: (EDIT, build_response_edit(grant, keep_app_cors=False))
            for origin, grant in self._actual_grants.items()
        }
        self._any_hook: Hook = (
            EDIT,
            build_response_edit(self._any_actual_grant, keep_app_cors=False),
        )
        self._hooks_by_origin: dict[bytes, Hook] = {}
        """The bounded memo: raw `Origin` value to its response edit."""

    def _grant(self, origin: Origin, *, preflight: bool) -> tuple[tuple[bytes, bytes], ...]:
        if self.policy.allow_any_origin:
            return self._any_preflight_grant if preflight else self._any_actual_grant
        grant = (self._preflight_grants if preflight else self._actual_grants).get(origin)
        if grant is not None:
            return grant
        acao = (_ACAO, origin.serialise().encode())
        if preflight:
            return (*self._preflight_extra, acao)
        return (acao, *self._actual_extra)

    def _decide_actual(self, untrusted_origin: bytes) -> Hook:
        """The response edit for an actual request from `untrusted_origin`, decided
        afresh by `check_origin` (the memo's source, and its reference in tests)."""
        verdict = check_origin(untrusted_origin, self.policy)
        if not verdict.allowed or verdict.origin is None:
            return self._no_grant_hook
        if self.policy.allow_any_origin:
            return self._any_hook
        hook = self._exact_hooks.get(verdict.origin)
        if hook is not None:
            return hook
        return (
            EDIT,
            build_response_edit(self._grant(verdict.origin, preflight=False), keep_app_cors=False),
        )

    def _remember_actual(self, untrusted_origin: bytes) -> Hook:
        """`_decide_actual`, kept in the memo when the key is small enough; a full memo
        is cleared first (the bound holds however many distinct values arrive)."""
        hook = self._decide_actual(untrusted_origin)
        if len(untrusted_origin) <= _MEMO_MAX_ORIGIN_BYTES:
            memo = self._hooks_by_origin
            if len(memo) >= _MEMO_MAX_ORIGINS:
                memo.clear()
            memo[untrusted_origin] = hook
        return hook

    async def _answer_preflight(self, scope: Scope, send: Send, request: PreflightRequest) -> bool:
        """Answer a preflight; False when a refusal is only monitored."""
        verdict = check_preflight(request, self.policy)
        if verdict.allowed and verdict.origin is not None:
            headers = list(self._grant(verdict.origin, preflight=True))
            if request.private_network:
                headers.append(_ACAPN)
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return True
        return await self._refuse(
            scope,
            send,
            status=403,
            kind=KIND_MALICIOUS_CORS,
            reason=verdict.reason,
            headers=(_VARY_PREFLIGHT,),
            details={
                "origin": request.untrusted_origin,
                "requested_method": request.untrusted_method,
                "requested_headers": request.untrusted_headers,
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.settings.enabled:
            await self.app(scope, receive, send)
            return
        await run_stages((self,), self.app, scope, receive, send)

    def enter(self, flow: Flow) -> Awaitable[bool] | None:
        """The request phase (`bastion.stages`): None when the request goes on, else
        the awaitable of the preflight's answer (True when answered)."""
        origin_lines = flow.headers.get(b"origin")
        if origin_lines is None:
            flow.hooks.append(self._ungranted_hook)
            return None
        if flow.scope["method"] == "OPTIONS":
            untrusted_method = flow.header(_ACRM)
            if untrusted_method is not None:
                private_network = flow.header(_ACRPN)
                preflight = PreflightRequest(
                    b", ".join(origin_lines),  # all lines comma-joined, as `Flow.header`
                    untrusted_method,
                    flow.header(_ACRH),
                    private_network is not None and private_network.lower() == b"true",
                )
                return self._preflight(flow, preflight)
        if self._grants_nothing:  # before the `Origin` value is read: nothing to decide
            flow.hooks.append(self._ungranted_hook)
            return None
        # All lines comma-joined (`Flow.header`), inlined: this runs on every request.
        untrusted_origin = origin_lines[0] if len(origin_lines) == 1 else b", ".join(origin_lines)
        hook = self._hooks_by_origin.get(untrusted_origin)
        flow.hooks.append(hook if hook is not None else self._remember_actual(untrusted_origin))
        return None

    async def _preflight(self, flow: Flow, preflight: PreflightRequest) -> bool:
        if await self._answer_preflight(flow.scope, flow.send, preflight):
            return True
        # Monitor-only: the refused preflight goes on to the app, ungranted.
        flow.hooks.append(self._ungranted_hook)
        return False
