"""The CSRF decision: pure functions over plain facts.

`check_request` decides everything that does not need the session or the body: it
allows, refuses with a reason, or asks for the token (`needs_token`), which the
adapter then reads and hands to `bastion.csrf.tokens.check_token`. Nothing here
awaits, logs, reads a clock or touches the scope, except `RequestFacts.from_scope`,
which turns a scope into facts once, at the adapter's edge.

The algorithm, in order (each step returns):

1. A safe method (RFC 9110 section 9.2.1: GET, HEAD, OPTIONS, TRACE) passes, unless a
   method-override header or `_method` query parameter names another method: some
   frameworks would then run the request as that method, so it is checked as unsafe.
   An override never makes an unsafe request safe: the real method decides.
2. An exempt path (`insecure_exempt_paths`, compared exactly with `scope["path"]`)
   passes; so does a request with `Authorization: Bearer` and no cookie at all, when
   `exempt_bearer_without_cookies` is on (see `_is_bearer_without_cookies`).
3. `Sec-Fetch-Site`, sent by every current browser: `same-origin` and `none` (the user
   typed the URL or used a bookmark) pass; `cross-site` passes only from a trusted
   origin; `same-site` (a sibling subdomain) only with `insecure_allow_same_site` or
   from a trusted origin; any other value is refused.
4. Without Fetch Metadata, `Origin`: it must be the request's own origin (scheme,
   host and port, as the transport layer resolved them) or a trusted one. `null` and
   malformed values are refused.
5. With neither (browsers from before about 2020, or a privacy tool stripping both),
   the request must carry a valid token.

The decision never looks at `Content-Type`: a "simple" cross-site request
(`text/plain`, url-encoded, multipart) is checked exactly like a JSON one.

`check_common_request` gives `check_request`'s verdict on the two requests nearly
every browser sends (a safe method nothing overrides; an unsafe one whose single
`Sec-Fetch-Site` line is `same-origin` or `none`, on a path not exempt, without
`Authorization`) from the adapter's header index, without building the facts.
It only skips work: step 3 decides those requests on `Sec-Fetch-Site` alone
whatever else they carry, and whatever it does not recognise goes to
`check_request`.

Step 4 compares the scheme too, unlike Go's `CrossOriginProtection`, which compares
`Origin` with `Host` only and so lets an `http://` page post to the `https://` site.
Behind a TLS-terminating proxy this needs the transport layer's trusted proxies (or
the public origin in `trusted_origins`), or old browsers' same-origin posts fail.

References: RFC 9110 section 9.2.1 (safe methods); Fetch Metadata
https://www.w3.org/TR/fetch-metadata/#sec-fetch-site-header ; RFC 6454 section 7
(`Origin`); golang/go src/net/http/csrf.go (the same order, failing open in step 5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_to_bytes

from bastion.context import SCOPE_KEY, get_context
from bastion.cors import OriginPattern, parse_origin_rule
from bastion.csrf.reasons import (
    REASON_CROSS_SITE,
    REASON_FETCH_SITE_MALFORMED,
    REASON_METHOD_OVERRIDE,
    REASON_NULL_ORIGIN,
    REASON_ORIGIN_MALFORMED,
    REASON_ORIGIN_MISMATCH,
    REASON_SAME_SITE,
)
from bastion.hosts import DEFAULT_PORTS, Origin, parse_host_header, parse_origin
from bastion.types import Scope

# RFC 9110 section 9.2.1. Compared case-sensitively, as methods are (section 9.1):
# `get` is not GET, so it is checked.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

# Headers that frameworks and proxies read to replace the method: Express's
# method-override, Symfony and Laravel (`X-HTTP-Method-Override`), OData and
# Microsoft stacks (`X-HTTP-Method`), Google APIs (`X-Method-Override`).
METHOD_OVERRIDE_HEADERS: Final = frozenset(
    {b"x-http-method-override", b"x-http-method", b"x-method-override"}
)
# The query parameter of Rails, Laravel, Express's method-override and others.
METHOD_OVERRIDE_PARAMETER: Final = b"_method"
# Bound the work spent on one query string: a real one has a few parameters.
MAX_QUERY_OVERRIDES_SCANNED: Final = 1000
# The override a query string past that bound is taken to carry: a method no one
# reads as safe, so the request is checked as a write (fail closed). Otherwise a
# forger would put 1,000 parameters before `_method=DELETE`, which a framework
# reading the whole query string honours.
UNSCANNED_OVERRIDE: Final = b"(unscanned)"

FETCH_SITE_PASSES: Final = frozenset({b"same-origin", b"none"})
FETCH_SITE_SAME_SITE: Final = b"same-site"
FETCH_SITE_CROSS_SITE: Final = b"cross-site"
NULL_ORIGIN: Final = b"null"


@dataclass(frozen=True, slots=True)
class CSRFPolicy:
    """The parsed settings the decision needs; compiled once per middleware."""

    trusted_origins: frozenset[Origin] = frozenset()
    exempt_paths: frozenset[str] = frozenset()
    allow_same_site: bool = False
    exempt_bearer_without_cookies: bool = True


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the decision needs to know about one request, as the client sent it."""

    method: str
    path: str
    untrusted_fetch_site: bytes | None = None
    untrusted_origin: bytes | None = None
    own_origin: Origin | None = None  # None when no valid host is known
    method_overrides: tuple[bytes, ...] = ()  # every override value, as sent
    has_bearer: bool = False
    has_cookies: bool = False

    @classmethod
    def from_scope(cls, scope: Scope) -> RequestFacts:
        fetch_sites: list[bytes] = []
        origins: list[bytes] = []
        authorizations: list[bytes] = []
        overrides: list[bytes] = []
        hosts: list[bytes] = []
        has_cookies = False
        for raw_name, value in scope["headers"]:
            name = raw_name.lower()
            if name == b"sec-fetch-site":
                fetch_sites.append(value)
            elif name == b"origin":
                origins.append(value)
            elif name == b"authorization":
                authorizations.append(value)
            elif name == b"cookie":
                has_cookies = has_cookies or bool(value.strip())
            elif name == b"host":
                hosts.append(value)
            elif name in METHOD_OVERRIDE_HEADERS:
                overrides.extend(part.strip() for part in value.split(b","))
        overrides.extend(query_overrides(scope.get("query_string", b"")))
        return cls(
            method=scope["method"],
            path=scope["path"],
            untrusted_fetch_site=_joined(fetch_sites),
            untrusted_origin=_joined(origins),
            own_origin=own_origin(scope, hosts),
            method_overrides=tuple(overrides),
            has_bearer=len(authorizations) == 1 and _is_bearer(authorizations[0]),
            has_cookies=has_cookies,
        )

    @classmethod
    def from_index(cls, scope: Scope, headers: Mapping[bytes, list[bytes]]) -> RequestFacts:
        """`from_scope` on headers already read into a lower-cased index
        (`bastion.stages.Flow.headers`): the same facts, without another pass."""
        if not METHOD_OVERRIDE_HEADERS.isdisjoint(headers):
            return cls.from_scope(scope)  # rare: keep the overrides in the order sent
        authorizations = headers.get(b"authorization")
        has_cookies = False
        for value in headers.get(b"cookie", ()):
            if value.strip():
                has_cookies = True
                break
        query = scope.get("query_string", b"")
        return cls(
            method=scope["method"],
            path=scope["path"],
            untrusted_fetch_site=_joined(headers.get(b"sec-fetch-site")),
            untrusted_origin=_joined(headers.get(b"origin")),
            own_origin=own_origin(scope, headers.get(b"host", [])),
            method_overrides=tuple(query_overrides(query)) if query else (),
            has_bearer=(
                authorizations is not None
                and len(authorizations) == 1
                and _is_bearer(authorizations[0])
            ),
            has_cookies=has_cookies,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str = ""  # one of the REASON_* constants; "" when allowed
    needs_token: bool = False  # undecided: the adapter must check the token
    # The outcome depended on `Origin` and `Sec-Fetch-Site`: the response must say
    # so in `Vary`, or a shared cache could replay it to a request with other values.
    varies: bool = False
    cause: str = ""  # for REASON_METHOD_OVERRIDE: the reason the checks gave


ALLOW: Final = Verdict(allowed=True)
ALLOW_VARIES: Final = Verdict(allowed=True, varies=True)
NEEDS_TOKEN: Final = Verdict(allowed=False, needs_token=True, varies=True)


def _joined(lines: list[bytes] | None) -> bytes | None:
    """All lines of one header, comma-joined (RFC 9110 section 5.3), or None."""
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else b", ".join(lines)


def _is_bearer(value: bytes) -> bool:
    scheme, _, credentials = value.strip().partition(b" ")
    return scheme.lower() == b"bearer" and bool(credentials.strip())


def query_overrides(query_string: bytes) -> list[bytes]:
    """The values of every `_method` parameter in a query string.

    Keys are percent-decoded (`%5Fmethod` is `_method` to a framework that decodes)
    and compared case-insensitively; both `&` and `;` separate parameters, as some
    parsers accept either. Erring towards finding an override only makes a request
    be checked, never skipped: a query string of more parameters than
    `MAX_QUERY_OVERRIDES_SCANNED` whose rest may hold one counts as one
    (`UNSCANNED_OVERRIDE`).
    """
    # `find`, not `in`: CPython 3.11's `bytes in bytes` first tries the operand as
    # an integer, raising and clearing a TypeError (about 1.9k instructions), and
    # the middleware's inlined copy of this test runs on every safe request with a
    # query string.
    if query_string.lower().find(METHOD_OVERRIDE_PARAMETER) < 0 and query_string.find(b"%") < 0:
        return []
    found: list[bytes] = []
    pairs = query_string.replace(b";", b"&").split(b"&")
    rest = b"&".join(pairs[MAX_QUERY_OVERRIDES_SCANNED:])
    for pair in pairs[:MAX_QUERY_OVERRIDES_SCANNED]:
        key, _, value = pair.partition(b"=")
        if unquote_to_bytes(key.replace(b"+", b" ")).strip().lower() == METHOD_OVERRIDE_PARAMETER:
            found.append(unquote_to_bytes(value.replace(b"+", b" ")).strip())
    if rest.lower().find(METHOD_OVERRIDE_PARAMETER) >= 0 or rest.find(b"%") >= 0:
        found.append(UNSCANNED_OVERRIDE)
    return found


def own_origin(scope: Scope, untrusted_host_lines: list[bytes]) -> Origin | None:
    """The request's own origin: the transport layer's resolved scheme, host and port,
    or, when no transport layer validated the host, the one `Host` header parsed here."""
    context = scope.get(SCOPE_KEY) or get_context(scope)
    scheme = context.scheme
    default_port = DEFAULT_PORTS.get(scheme)
    if default_port is None:
        return None
    if context.host is not None:
        return Origin(scheme, context.host, context.port or default_port)
    if len(untrusted_host_lines) != 1:
        return None  # RFC 9112 section 3.2: no Host, or several, is a bad request
    parsed = parse_host_header(untrusted_host_lines[0])
    if parsed is None:
        return None
    return Origin(scheme, parsed.host, parsed.port or default_port)


def names_unsafe_method(overrides: tuple[bytes, ...]) -> bool:
    """Does any override name a method other than a safe one? Empty values name none."""
    return any(value and value.upper().decode("latin-1") not in SAFE_METHODS for value in overrides)


def _is_bearer_without_cookies(facts: RequestFacts, policy: CSRFPolicy) -> bool:
    # A deliberate fail-open, on by default. CSRF rides on credentials the browser
    # adds by itself (cookies); a bearer token is not one: a page on another site
    # cannot make the browser attach `Authorization` (that needs a CORS preflight,
    # which the CORS layer refuses unless the origin is allowed). With no cookie at
    # all there is nothing ambient for a forger to use, so API clients need neither
    # Fetch Metadata nor a token. Any cookie puts the request back under the checks,
    # so a forger cannot add a junk bearer header to a cookie-carrying request to
    # pass. What remains: apps that authenticate by something else ambient (client
    # TLS certificates, the client's IP address, HTTP Basic or NTLM cached by the
    # browser) must turn this off.
    return policy.exempt_bearer_without_cookies and facts.has_bearer and not facts.has_cookies


def _is_trusted(untrusted_origin: bytes | None, policy: CSRFPolicy) -> bool:
    if untrusted_origin is None or not policy.trusted_origins:
        return False
    origin = parse_origin(untrusted_origin)
    return origin is not None and origin in policy.trusted_origins


def _check_sources(facts: RequestFacts, policy: CSRFPolicy) -> Verdict:
    """Steps 3 to 5: Fetch Metadata, then `Origin`, then ask for the token."""
    site = facts.untrusted_fetch_site
    if site is not None:
        if site in FETCH_SITE_PASSES:
            return ALLOW_VARIES
        if site == FETCH_SITE_SAME_SITE:
            if policy.allow_same_site or _is_trusted(facts.untrusted_origin, policy):
                return ALLOW_VARIES
            return Verdict(allowed=False, reason=REASON_SAME_SITE, varies=True)
        if site == FETCH_SITE_CROSS_SITE:
            if _is_trusted(facts.untrusted_origin, policy):
                return ALLOW_VARIES
            return Verdict(allowed=False, reason=REASON_CROSS_SITE, varies=True)
        return Verdict(allowed=False, reason=REASON_FETCH_SITE_MALFORMED, varies=True)

    untrusted_origin = facts.untrusted_origin
    if untrusted_origin is None:
        return NEEDS_TOKEN
    if untrusted_origin.strip() == NULL_ORIGIN:
        return Verdict(allowed=False, reason=REASON_NULL_ORIGIN, varies=True)
    origin = parse_origin(untrusted_origin)
    if origin is None:
        return Verdict(allowed=False, reason=REASON_ORIGIN_MALFORMED, varies=True)
    if origin == facts.own_origin or origin in policy.trusted_origins:
        return ALLOW_VARIES
    return Verdict(allowed=False, reason=REASON_ORIGIN_MISMATCH, varies=True)


def check_request(facts: RequestFacts, policy: CSRFPolicy) -> Verdict:
    """Decide one request (the algorithm is in the module docstring)."""
    overridden = False
    if facts.method in SAFE_METHODS:
        if not names_unsafe_method(facts.method_overrides):
            return ALLOW
        overridden = True
    if facts.path in policy.exempt_paths or _is_bearer_without_cookies(facts, policy):
        return ALLOW
    verdict = _check_sources(facts, policy)
    if overridden and not verdict.allowed and not verdict.needs_token:
        return Verdict(
            allowed=False, reason=REASON_METHOD_OVERRIDE, varies=True, cause=verdict.reason
        )
    return verdict


def check_common_request(
    method: str,
    path: str,
    untrusted_query: bytes,
    headers: Mapping[bytes, list[bytes]],
    policy: CSRFPolicy,
) -> Verdict | None:
    """`check_request`'s verdict on the two requests nearly every browser sends,
    straight from the lower-cased header index, or None: then `check_request` decides.

    * A safe method with no method-override header and a query that cannot hold a
      `_method` parameter (no `_method` in any case, no percent-escape): ALLOW.
    * An unsafe method whose one `Sec-Fetch-Site` line is `same-origin` or `none`,
      on a path that is not exempt and without `Authorization` (so neither exemption
      of step 2 applies, and the answer varies): ALLOW_VARIES, whatever `Origin`,
      the cookies or the body say, as in step 3.

    It skips work, never a check: anything else (a method override, several
    `Sec-Fetch-Site` lines, any other value, a bearer token, an exempt path) gets
    None. The attack tables are run through both (tests/csrf/test_fast_path.py).
    """
    if method in SAFE_METHODS:
        if METHOD_OVERRIDE_HEADERS.isdisjoint(headers) and (
            not untrusted_query
            or (  # `find`, not `in`: `query_overrides`
                untrusted_query.lower().find(METHOD_OVERRIDE_PARAMETER) < 0
                and untrusted_query.find(b"%") < 0
            )
        ):
            return ALLOW
        return None
    sites = headers.get(b"sec-fetch-site")
    if (
        sites is not None
        and len(sites) == 1
        and sites[0] in FETCH_SITE_PASSES
        and b"authorization" not in headers
        and path not in policy.exempt_paths
    ):
        return ALLOW_VARIES
    return None


# --- Parsing settings ------------------------------------------------------------


def parse_trusted_origin(text: str) -> Origin:
    """Parse one `trusted_origins` entry: an exact http(s) origin, nothing else.

    Uses the CORS layer's parser, so both layers accept and refuse the same
    spellings; wildcards are refused here, since trusting every subdomain to post
    is what `insecure_allow_same_site` (with its warning) is for.
    """
    rule = parse_origin_rule(text)
    if isinstance(rule, OriginPattern):
        raise ValueError(f"{text!r}: trusted_origins takes exact origins only, no wildcards")
    return rule


def validate_exempt_path(text: str) -> str:
    """Check one `insecure_exempt_paths` entry, raising ValueError naming the rule.

    The entry is compared exactly with `scope["path"]`, which servers have already
    percent-decoded: so it must be a decoded, absolute path with no query, fragment,
    dot segment, empty segment or control character; anything else could never
    match, or would read as something it is not. Patterns (`/api/*`) are refused
    rather than taken literally: an exemption must be one path a reader can check.
    """
    if not text.startswith("/"):
        raise ValueError(f"exempt path {text!r}: must start with '/'")
    if any(c in text for c in "*{}"):
        raise ValueError(f"exempt path {text!r}: exact paths only, no '*' or '{{name}}' patterns")
    if any(c in text for c in "?#%\\") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise ValueError(
            f"exempt path {text!r}: no query, fragment, percent-escape, backslash, space "
            "or control character (write the decoded path the router sees)"
        )
    segments = text.split("/")[1:]
    if any(segment in (".", "..") for segment in segments):
        raise ValueError(f"exempt path {text!r}: no '.' or '..' segments")
    if "" in segments[:-1]:
        raise ValueError(f"exempt path {text!r}: no empty segments ('//')")
    return text
