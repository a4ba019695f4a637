"""Content Security Policy: the pure builder.

Threat: cross-site scripting. Markup an attacker manages to inject (a stored comment,
a reflected parameter, a compromised template variable) runs script with the page's
authority.
Defence: a strict, nonce-based policy (web.dev "Strict CSP"). Only `<script>` and
`<style>` elements carrying this response's nonce run; scripts they load inherit that
trust (`'strict-dynamic'`), so an allowlist of hosts, which is bypassable through any
JSONP endpoint or script gadget on an allowed host, is never needed. The nonce is
fresh for every response (128+ bits), so an attacker cannot know it in advance.
Not covered: injection *inside* a nonced script or a template that puts the nonce on
a tag whose content the attacker controls; DOM XSS through sinks reached by trusted
scripts (add `require-trusted-types-for 'script'` when the application is ready);
a page stored by a shared cache repeats its nonce to every reader (serve nonced HTML
with `Cache-Control: private` or `no-store`).

This module validates what users type (unknown or misspelt directives, header
injection through `;`, `,` or control characters, unquoted keywords, fixed nonces),
merges overrides over the defaults, and compiles the resolved policy once into a
`CSPTemplate`: the serialised policy split around each nonce slot, so that rendering
it per response is one `bytes.join`. `policy_weakenings` names what in a resolved
policy undoes the defence (`'unsafe-eval'`, an open script list, plugins, `<base>`),
for the start-up log and `bastion config`.

References: CSP Level 3 https://www.w3.org/TR/CSP3/ : policy grammar
#grammardef-serialized-policy, source lists and nonces #framework-directive-source-list
and #grammardef-nonce-source, fallbacks #directive-fallback-list, 'strict-dynamic'
#strict-dynamic-usage; web.dev "Mitigate XSS with a strict CSP"
https://web.dev/articles/strict-csp ; OWASP CSP Cheat Sheet
https://cheatsheetseries.owasp.org/cheatsheets/Content_Security_Policy_Cheat_Sheet.html
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

# The placeholder a user writes (and `build_response_headers` shows) where the
# per-response nonce goes. It is the only nonce-source the builder accepts.
NONCE_SOURCE: Final = "'nonce-{nonce}'"

# CSP3 (#grammardef-nonce-source, note) asks for nonces of at least 128 bits from a CSPRNG. 18 bytes
# give 144 bits and, being a multiple of 3, encode to 24 base64url characters with
# no `=` padding.
NONCE_BYTES: Final = 18

# CSP3 #grammardef-base64-value: base64-value = 1*( ALPHA / DIGIT / "+" / "/" / "-" / "_" )*2( "=" )
# Both the base64 and the base64url alphabets are valid, so `token_urlsafe` is.
NONCE_VALUE: Final = re.compile(r"[A-Za-z0-9+/_-]+={0,2}\Z")

# CSP3 #grammardef-directive-name: directive-name = 1*( ALPHA / DIGIT / "-" ), compared ASCII
# case-insensitively; we store the lower-case form.
_DIRECTIVE_NAME: Final = re.compile(r"[a-z0-9-]+\Z")

# CSP3 #grammardef-directive-value: directive-value = *( required-ascii-whitespace / ( %x21-%x2B /
# %x2D-%x3A / %x3C-%x7E ) ): visible ASCII except "," (0x2C), which separates policies,
# and ";" (0x3B), which separates directives. One source token is a run of these.
_SOURCE_TOKEN: Final = re.compile(r"[\x21-\x2b\x2d-\x3a\x3c-\x7e]+\Z")

# CSP3 also counts TAB, LF, FF and CR as whitespace between sources, but in an HTTP
# field CR and LF end the header (RFC 9110 section 5.5): a value typed with them is
# refused, never split, so a setting can never smuggle a second header line.
_TYPED_VALUE: Final = re.compile(r"[\x20-\x7e]*\Z")

# CSP3 #grammardef-keyword-source plus the Trusted Types keywords of
# `require-trusted-types-for` and `trusted-types`.
_KEYWORDS: Final = frozenset(
    {
        "'self'",
        "'none'",
        "'unsafe-inline'",
        "'unsafe-eval'",
        "'strict-dynamic'",
        "'unsafe-hashes'",
        "'report-sample'",
        "'unsafe-allow-redirects'",
        "'wasm-unsafe-eval'",
        "'inline-speculation-rules'",
        "'script'",
        "'allow-duplicates'",
    }
)
# Written without quotes these are host names, silently allowing nothing (`self`) or
# a host called "unsafe-inline": a classic misconfiguration, refused.
_BARE_KEYWORDS: Final = frozenset(k.strip("'") for k in _KEYWORDS if k != "'script'")
_HASH_SOURCE: Final = re.compile(r"'(?:sha256|sha384|sha512)-[A-Za-z0-9+/_-]+={0,2}'\Z")

# CSP3 #directive-fallback-list: where a fetch directive that is absent takes its sources from.
# Adding sources to an absent directive starts from these, so "also allow X" never
# silently narrows what was allowed before.
FALLBACKS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "script-src-elem": ("script-src", "default-src"),
        "script-src-attr": ("script-src", "default-src"),
        "style-src-elem": ("style-src", "default-src"),
        "style-src-attr": ("style-src", "default-src"),
        "worker-src": ("child-src", "script-src", "default-src"),
        "frame-src": ("child-src", "default-src"),
        "fenced-frame-src": ("frame-src", "child-src", "default-src"),
        "child-src": ("default-src",),
        "connect-src": ("default-src",),
        "font-src": ("default-src",),
        "img-src": ("default-src",),
        "manifest-src": ("default-src",),
        "media-src": ("default-src",),
        "object-src": ("default-src",),
        "script-src": ("default-src",),
        "style-src": ("default-src",),
    }
)
VALUELESS_DIRECTIVES: Final = frozenset({"upgrade-insecure-requests", "block-all-mixed-content"})
# A misspelt directive is ignored by browsers, leaving the policy weaker than the
# user believes, so only these names are accepted.
KNOWN_DIRECTIVES: Final = frozenset(
    {
        *FALLBACKS,
        *VALUELESS_DIRECTIVES,
        "default-src",
        "base-uri",
        "sandbox",
        "form-action",
        "frame-ancestors",
        "report-uri",
        "report-to",
        "require-trusted-types-for",
        "trusted-types",
        "webrtc",
    }
)

# The default policy, directive by directive (web.dev Strict CSP, plus the
# OWASP-recommended restrictions for everything that is not a script):
DEFAULT_DIRECTIVES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        # Anything without its own directive (fonts, fetch/XHR, frames, media,
        # workers, manifests) loads from this origin only.
        "default-src": ("'self'",),
        # The nonce and 'strict-dynamic' are the policy. 'unsafe-inline' and https:
        # are the fallbacks strict-CSP guidance recommends: CSP3 browsers ignore both
        # when 'strict-dynamic' is present, CSP2 browsers ignore 'unsafe-inline' when
        # a nonce is present, so they only take effect in browsers too old to honour
        # the nonce, which then keep working instead of breaking.
        "script-src": (NONCE_SOURCE, "'strict-dynamic'", "'unsafe-inline'", "https:"),
        # Stylesheets from this origin and nonced <style> elements; CSS injection can
        # exfiltrate data (attribute selectors), so inline style is not open.
        "style-src": ("'self'", NONCE_SOURCE),
        # data: images are inert (no script runs in an <img>) and common for icons.
        "img-src": ("'self'", "data:"),
        # Plugins (<object>, <embed>) run outside the policy: none at all.
        "object-src": ("'none'",),
        # An injected <base href> would re-point every relative script URL.
        "base-uri": ("'none'",),
        # Clickjacking: no site may frame these pages (X-Frame-Options follows it).
        "frame-ancestors": ("'none'",),
        # An injected <form action> cannot post the user's input elsewhere.
        "form-action": ("'self'",),
    }
)


_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")  # base64 to base64url (RFC 4648 section 5)


def new_nonce() -> str:
    # `secrets.token_urlsafe`, spelt out: the same CSPRNG bytes (`os.urandom`, which
    # is what `secrets.token_bytes` returns) in one C call each, on every request.
    encoded = binascii.b2a_base64(os.urandom(NONCE_BYTES), newline=False)
    return encoded.rstrip(b"=").translate(_URLSAFE).decode("ascii")


def parse_directive_name(untrusted_name: str) -> str:
    """The canonical (lower-case) name of a known directive; ValueError otherwise."""
    name = untrusted_name.strip().lower()
    if not _DIRECTIVE_NAME.match(name):
        raise ValueError(f"CSP directive name {untrusted_name!r} is not a token")
    if name not in KNOWN_DIRECTIVES:
        raise ValueError(f"unknown CSP directive {name!r}")
    return name


def parse_sources(directive: str, value: str | Iterable[str]) -> tuple[str, ...]:
    """Validate the sources typed for `directive` (a string or a list of sources).

    Raises ValueError naming the directive and the rule; never echoes the value,
    which may contain control characters.
    """
    if isinstance(value, str):
        if not _TYPED_VALUE.match(value):
            raise ValueError(f"CSP directive {directive!r}: control or non-ASCII character")
        words = tuple(value.split(" "))
    else:
        words = tuple(value)
    sources = tuple(word for word in words if word)
    for source in sources:
        _check_source(directive, source)
    if directive in VALUELESS_DIRECTIVES and sources:
        raise ValueError(f"CSP directive {directive!r} takes no value")
    if "'none'" in sources and len(sources) > 1:
        raise ValueError(f"CSP directive {directive!r}: 'none' must be the only source")
    return sources


def _check_source(directive: str, source: str) -> None:
    if not isinstance(source, str) or not _SOURCE_TOKEN.match(source):
        raise ValueError(
            f"CSP directive {directive!r}: a source may not contain ';', ',', spaces, "
            "control or non-ASCII characters"
        )
    lowered = source.lower()
    if lowered in _BARE_KEYWORDS:
        raise ValueError(f"CSP directive {directive!r}: keywords must be quoted ('{lowered}')")
    if not source.startswith("'"):
        return
    if source == NONCE_SOURCE or lowered in _KEYWORDS or _HASH_SOURCE.match(source):
        return
    if lowered.startswith("'nonce-"):
        # A nonce written into settings is the same on every response: no protection.
        raise ValueError(
            f"CSP directive {directive!r}: a fixed nonce is no protection; "
            f'write "{NONCE_SOURCE}" for the per-response nonce'
        )
    raise ValueError(f"CSP directive {directive!r}: unknown quoted keyword")


def resolve_directives(
    overrides: Mapping[str, tuple[str, ...] | None] = MappingProxyType({}),
    extra_sources: Mapping[str, tuple[str, ...]] = MappingProxyType({}),
    *,
    report_uri: str | None = None,
    report_to: str | None = None,
    base: Mapping[str, tuple[str, ...]] = DEFAULT_DIRECTIVES,
) -> dict[str, tuple[str, ...]]:
    """The policy's directives, in order, from validated settings.

    1. Start from `base` (the defaults).
    2. Each override replaces its directive in place, adds it at the end, or (None)
       removes it.
    3. Extra sources are appended to their directive. An absent fetch directive is
       first filled from its fallback (CSP3 #directive-fallback-list), so adding a source only
       ever widens what was allowed; 'none' is dropped once a source is added.
    4. `report-uri` and `report-to` are added last, unless overridden in step 2.
    """
    directives = dict(base)
    for name, sources in overrides.items():
        if sources is None:
            directives.pop(name, None)
        else:
            directives[name] = sources
    for name, added in extra_sources.items():
        current = directives.get(name)
        if current is None:
            current = next((directives[f] for f in FALLBACKS.get(name, ()) if f in directives), ())
        merged = [source for source in current if source != "'none'"]
        merged.extend(source for source in added if source not in merged)
        directives[name] = tuple(merged)
    if report_uri is not None and "report-uri" not in overrides:
        directives["report-uri"] = (report_uri,)
    if report_to is not None and "report-to" not in overrides:
        directives["report-to"] = (report_to,)
    return directives


class _Slot:
    """Marks where the nonce goes in a serialised policy."""


_SLOT: Final = _Slot()


def _pieces(directives: Mapping[str, tuple[str, ...]]) -> Iterator[str | _Slot]:
    """The serialised policy as text pieces and nonce slots (CSP3 #grammardef-serialized-policy)."""
    for index, (name, sources) in enumerate(directives.items()):
        if index:
            yield "; "
        yield name
        for source in sources:
            yield " "
            if source == NONCE_SOURCE:
                yield "'nonce-"
                yield _SLOT
                yield "'"
            else:
                yield source


def serialize_policy(directives: Mapping[str, tuple[str, ...]], nonce: str) -> str:
    """The policy as it is sent with `nonce` (the reference `CSPTemplate` must match)."""
    return "".join(nonce if piece is _SLOT else str(piece) for piece in _pieces(directives))


@dataclass(frozen=True, slots=True)
class CSPTemplate:
    """A serialised policy split around its nonce slots: `len(parts) - 1` slots."""

    parts: tuple[bytes, ...]

    @property
    def has_nonce(self) -> bool:
        return len(self.parts) > 1

    def render(self, nonce: str) -> bytes:
        return nonce.encode("ascii").join(self.parts)


def compile_policy(directives: Mapping[str, tuple[str, ...]]) -> CSPTemplate:
    parts: list[bytes] = []
    current: list[str] = []
    for piece in _pieces(directives):
        if isinstance(piece, _Slot):
            parts.append("".join(current).encode("ascii"))
            current = []
        else:
            current.append(piece)
    parts.append("".join(current).encode("ascii"))
    return CSPTemplate(tuple(parts))


def frame_options_for(directives: Mapping[str, tuple[str, ...]]) -> str | None:
    """The legacy `X-Frame-Options` value equivalent to `frame-ancestors`, if any.

    `'none'` is DENY and `'self'` alone is SAMEORIGIN. An allowlist of other origins
    has no X-Frame-Options equivalent (ALLOW-FROM is obsolete), so none is sent.
    Browsers ignore X-Frame-Options when an *enforced* policy has frame-ancestors
    (HTML, "check a navigation response's adherence to X-Frame-Options"), so the two
    never conflict, and under a report-only policy X-Frame-Options still protects.
    """
    ancestors = directives.get("frame-ancestors")
    if ancestors == ("'none'",):
        return "DENY"
    if ancestors == ("'self'",):
        return "SAMEORIGIN"
    return None


# --- Weakenings ---------------------------------------------------------------------

# Sources that admit any site (CSP3 #match-url-to-source-expression): `*`, a bare
# `http:`/`https:` scheme, a host-source whose host is `*`, and for scripts `data:`
# (an injected `<script src="data:,...">` needs no server at all).
_ANY_SITE_SOURCE: Final = re.compile(
    r"(?:https?:|data:|(?:[a-z][a-z0-9+.-]*://)?\*(?::(?:\*|[0-9]+))?(?:/\S*)?)\Z"
)
# The directives that decide whether a `<script>` element and an inline event handler
# run, each with its fallbacks (CSP3 #directive-fallback-list).
_SCRIPT_DIRECTIVES: Final = ("script-src-elem", "script-src-attr")
# base-uri has no fallback: absent, an injected `<base href>` re-points every
# relative script URL. Only this origin or nothing keeps it harmless.
_SAFE_BASE_URI: Final = frozenset({("'none'",), ("'self'",)})


def _script_weakenings(directive: str, sources: tuple[str, ...]) -> Iterator[str]:
    """Sources in one script list that let injected markup run script.

    CSP3 #allow-all-inline: a nonce or hash in the list makes browsers ignore
    'unsafe-inline', and so does 'strict-dynamic', which also makes them ignore every
    host and scheme source (#strict-dynamic-usage). So the strict-CSP fallbacks of
    the default policy (`'unsafe-inline' https:` beside a nonce and 'strict-dynamic')
    weaken nothing in browsers that understand the rest of the policy.
    """
    strict_dynamic = any(source.lower() == "'strict-dynamic'" for source in sources)
    inline_ignored = strict_dynamic or any(
        source == NONCE_SOURCE or _HASH_SOURCE.match(source) for source in sources
    )
    for source in sources:
        lower = source.lower()
        weakens = (
            lower == "'unsafe-eval'"
            or (lower == "'unsafe-inline'" and not inline_ignored)
            or (_ANY_SITE_SOURCE.match(lower) is not None and not strict_dynamic)
        )
        if weakens:
            yield f"csp.{directive}={source}"


def policy_weakenings(directives: Mapping[str, tuple[str, ...]]) -> list[str]:
    """What in a resolved policy weakens the XSS and clickjacking defences.

    Stable `csp.<directive>=<source>` strings (shown at start-up and diffed in CI):

    * script lists (`script-src-elem` and `script-src-attr`, through their
      fallbacks to `script-src` and `default-src`, reported under the directive that
      holds the source): `'unsafe-eval'`; `'unsafe-inline'` without a nonce, hash or
      'strict-dynamic'; `*`, `data:`, `http:`, `https:` or a `*` host without
      'strict-dynamic'. No script list at all is `csp.script-src=null`.
    * `object-src` (or its `default-src` fallback) other than `'none'`: plugins run
      outside the policy.
    * `base-uri` absent, or anything but `'none'` or `'self'`.
    * `frame-ancestors` admitting any site (`*`, `https:`): clickjacking. An absent
      frame-ancestors is judged with X-Frame-Options, by the caller.
    """
    found: list[str] = []
    for name in _SCRIPT_DIRECTIVES:
        governing = next((d for d in (name, *FALLBACKS[name]) if d in directives), None)
        if governing is None:
            found.append("csp.script-src=null")
        else:
            found.extend(_script_weakenings(governing, directives[governing]))
    object_src = directives.get("object-src", directives.get("default-src"))
    if object_src != ("'none'",):
        found.append(
            "csp.object-src=null"
            if "object-src" not in directives
            else f"csp.object-src={' '.join(directives['object-src'])}"
        )
    base_uri = directives.get("base-uri")
    if base_uri not in _SAFE_BASE_URI:
        found.append(f"csp.base-uri={'null' if base_uri is None else ' '.join(base_uri)}")
    found.extend(
        f"csp.frame-ancestors={source}"
        for source in directives.get("frame-ancestors", ())
        if _ANY_SITE_SOURCE.match(source.lower()) and source.lower() != "data:"
    )
    return list(dict.fromkeys(found))
