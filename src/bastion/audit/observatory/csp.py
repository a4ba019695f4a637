"""The content-security-policy test: upstream's CSP parser and its verdicts.

A policy is parsed as upstream does (`src/analyzer/cspParser.js`): directives are
case-insensitive, sources lower-cased, a `-src` directive with no source means
`'none'`, a repeated directive makes the policy invalid (except `report-uri` and
`report-to`, which only lose the bonus), and several policies combine by keeping the
sources every policy allows. Then the verdict (`src/analyzer/tests/csp.js`), first
match wins:

1. nonces or hashes in `script-src`/`style-src` void their `'unsafe-inline'`; with
   `'strict-dynamic'` and a nonce or hash, `script-src` also drops `'self'`,
   `'unsafe-inline'` and scheme or wildcard sources (CSP3 browsers ignore them);
   `'strict-dynamic'` without a nonce or hash is an invalid policy;
2. `'unsafe-inline'`, `data:` or a broad source in `script-src`, or a broad source in
   `object-src` (either falling back to `default-src`, then to `*`): unsafe-inline;
3. an `http:` or `ftp:` source for active content on an HTTPS page: insecure scheme;
4. `'unsafe-eval'` in `script-src` or `style-src`: unsafe-eval;
5. `http:`/`ftp:` only in `img-src`/`media-src`: passive insecure scheme (passes);
6. unsafe sources in `style-src` only: passes, no bonus;
7. `default-src 'none'` alone: the bigger bonus; otherwise the smaller one.

`Content-Security-Policy-Report-Only` enforces nothing and never counts as a policy.
A `<meta http-equiv>` policy counts, without `frame-ancestors`, `report-uri` and
`sandbox`, which browsers ignore there (HTML, "Content security policy state").

Deviation: each header line is split on commas into policies (CSP3 section 3.1,
"serialized-policy-list"), where upstream receives one comma-joined string from its
HTTP client and parses it as one policy.
"""

from __future__ import annotations

import itertools
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bastion.audit.observatory.page import Observation, PageScan, header_values
from bastion.audit.observatory.scoring import ObservedTest, outcome

NAME: Final = "content-security-policy"

SHORTEST_POLICY_CHARS: Final = len("img-src") - 1
"""Upstream refuses a policy shorter than this as unparseable."""
DISALLOWED_IN_META: Final = ("frame-ancestors", "report-uri", "sandbox")
ALLOWED_DUPLICATES: Final = frozenset({"report-uri", "report-to"})
DANGEROUSLY_BROAD: Final = frozenset(
    {"ftp:", "http:", "https:", "*", "http://*", "http://*.*", "https://*", "https://*.*"}
)
UNSAFE_INLINE: Final = frozenset({"'unsafe-inline'", "data:"})
BROAD_OR_INLINE: Final = DANGEROUSLY_BROAD | UNSAFE_INLINE
PASSIVE_DIRECTIVES: Final = ("img-src", "media-src")
NONCE_HASH_PREFIXES: Final = ("'sha256-", "'sha384-", "'sha512-", "'nonce-")
INSECURE_SCHEMES: Final = ("http:", "ftp:")
EVIDENCE_CHARS: Final = 300

_PASSING: Final = frozenset(
    {
        "csp-implemented-with-no-unsafe",
        "csp-implemented-with-no-unsafe-default-src-none",
        "csp-implemented-with-unsafe-inline-in-style-src-only",
        "csp-implemented-with-insecure-scheme-in-passive-content-only",
    }
)
_MALFORMED_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


class CSPParseError(ValueError):
    """The policy cannot be parsed (upstream: `csp-header-invalid`)."""


@dataclass(frozen=True, slots=True)
class ParsedCSP:
    directives: dict[str, set[str]]
    duplicates: frozenset[str]
    """Allowed directives (`report-uri`, `report-to`) that were repeated."""


@dataclass(slots=True)
class _Source:
    text: str
    policy: int
    keep: bool


def _decode(piece: str) -> str:
    # JavaScript's decodeURIComponent throws on a malformed escape, and upstream lets
    # that make the whole policy invalid.
    if _MALFORMED_PERCENT.search(piece):
        raise CSPParseError("malformed percent-escape")
    try:
        return urllib.parse.unquote(piece, errors="strict")
    except UnicodeDecodeError as error:
        raise CSPParseError("malformed percent-escape") from error


def _path_part_match(a: str, b: str) -> bool:
    """Upstream `pathPartMatch`: whether source `a` covers source `b`, path piece by piece."""
    if not a or (a == "/" and not b):
        return True
    exact = not a.endswith("/")
    pieces_a, pieces_b = a.split("/"), b.split("/")
    if len(pieces_a) > len(pieces_b) or (exact and len(pieces_a) != len(pieces_b)):
        return False
    if not exact:
        pieces_a.pop()
    return all(_decode(x) == _decode(y) for x, y in zip(pieces_a, pieces_b, strict=False))


def split_policies(header_lines: Sequence[str]) -> list[str]:
    return [policy for line in header_lines for policy in line.split(",")]


def parse_csp(policies: Sequence[str]) -> ParsedCSP:
    """Upstream `parseCsp`: several policies into one map of directive to sources."""
    cleaned = [re.sub(r"[\r\n]", "", policy).strip() for policy in policies]
    combined: dict[str, list[_Source]] = {}
    duplicates: set[str] = set()
    for policy_index, policy in enumerate(cleaned):
        if len(policy) < SHORTEST_POLICY_CHARS:
            raise CSPParseError("policy too short")
        seen: set[str] = set()
        for entry in policy.split(";"):
            words = entry.split()
            if not words:
                continue
            directive = words[0].lower()
            if directive in seen:
                if directive not in ALLOWED_DUPLICATES:
                    raise CSPParseError("repeated directive")
                duplicates.add(directive)
            seen.add(directive)
            keep = policy_index == 0
            values = [_Source(word.lower(), policy_index, keep) for word in words[1:]]
            if not values and directive.endswith("-src"):
                values = [_Source("'none'", policy_index, keep)]
            sources = values if policy_index == 0 else [*combined.get(directive, []), *values]
            sources.sort(key=lambda source: source.text)
            for previous, source in itertools.pairwise(sources):
                # In one policy, a longer source under a shorter one adds nothing.
                if source.policy == previous.policy and source.text.startswith(previous.text):
                    source.keep = False
                # Across policies, a source counts only when both policies allow it.
                if source.policy != previous.policy and _path_part_match(
                    previous.text, source.text
                ):
                    source.keep = True
            combined[directive] = [source for source in sources if source.keep]
            if policy_index == 0 and len(cleaned) > 1:
                for source in combined[directive]:
                    source.keep = False
    directives = {
        directive: {source.text for source in sources} or {"'none'"}
        for directive, sources in combined.items()
    }
    return ParsedCSP(directives, frozenset(duplicates))


def parse_csp_meta(policies: Sequence[str]) -> ParsedCSP:
    parsed = parse_csp(policies)
    for directive in DISALLOWED_IN_META:
        parsed.directives.pop(directive, None)
    return parsed


def _has_nonce_or_hash(sources: set[str]) -> bool:
    return any(source.startswith(NONCE_HASH_PREFIXES) for source in sources)


@dataclass(frozen=True, slots=True)
class CSPVerdict:
    test: ObservedTest
    header_frame_ancestors: bool
    """Whether an enforced CSP header sets `frame-ancestors` (for x-frame-options)."""


def _evidence(headers: list[str], meta: list[str], report_only: list[str]) -> str:
    parts = [f"content-security-policy: {value}" for value in headers]
    parts += [f'<meta http-equiv="content-security-policy" content="{value}">' for value in meta]
    parts += [f"content-security-policy-report-only: {value}" for value in report_only]
    text = " | ".join(parts) or "no content-security-policy header or <meta> policy"
    return text if len(text) <= EVIDENCE_CHARS else text[: EVIDENCE_CHARS - 1] + "…"


def check_csp(observation: Observation, page: PageScan) -> CSPVerdict:
    header_lines = header_values(observation.headers, "content-security-policy")
    report_only = header_values(observation.headers, "content-security-policy-report-only")
    evidence = _evidence(header_lines, page.meta_csp, report_only)

    def verdict(result: str, *, frame_ancestors: bool = False) -> CSPVerdict:
        test = outcome(NAME, result, passed=result in _PASSING, evidence=evidence)
        return CSPVerdict(test, frame_ancestors)

    header_policies = split_policies(header_lines)
    try:
        csp = parse_csp([*header_policies, *page.meta_csp])
    except CSPParseError:
        return verdict("csp-header-invalid")
    try:
        header_only = parse_csp(header_policies).directives
    except CSPParseError:
        header_only = {}
    try:
        meta_only = parse_csp_meta(page.meta_csp).directives
    except CSPParseError:
        meta_only = {}
    if not header_only and not meta_only:
        # Report-Only is a header only; it enforces nothing (CSP3 section 3.2).
        if report_only and report_only[0]:
            return verdict("csp-not-implemented-but-reporting-enabled")
        return verdict("csp-not-implemented")

    directives = csp.directives
    default_src = directives.get("default-src")
    # Falling back shares the set, as upstream does: removing a source from a
    # `script-src` that is really `default-src` removes it from `default-src` too.
    object_src = directives.get("object-src") or default_src or {"*"}
    script_src = directives.get("script-src") or default_src or {"*"}
    style_src = directives.get("style-src") or default_src or {"*"}

    result: str | None = None
    for sources in (script_src, style_src):
        if _has_nonce_or_hash(sources):
            sources.discard("'unsafe-inline'")
    if "'strict-dynamic'" in script_src:
        if _has_nonce_or_hash(script_src):
            for source in list(script_src):
                if source.startswith(tuple(DANGEROUSLY_BROAD)) or source in (
                    "'self'",
                    "'unsafe-inline'",
                ):
                    script_src.discard(source)
        else:
            result = "csp-header-invalid"

    active = [
        source
        for directive, sources in directives.items()
        if directive not in PASSIVE_DIRECTIVES and directive != "script-src"
        for source in sources
    ]
    active += script_src
    passive = [
        source
        for directive in PASSIVE_DIRECTIVES
        for source in (directives.get(directive) or default_src or set())
    ]
    is_https = observation.url.lower().startswith("https:")

    if script_src & BROAD_OR_INLINE or object_src & DANGEROUSLY_BROAD:
        result = result or "csp-implemented-with-unsafe-inline"
    if is_https and any(source.startswith(INSECURE_SCHEMES) for source in active):
        result = result or "csp-implemented-with-insecure-scheme"
    if "'unsafe-eval'" in script_src | style_src:
        result = result or "csp-implemented-with-unsafe-eval"
    if is_https and any(source.startswith(INSECURE_SCHEMES) for source in passive):
        result = result or "csp-implemented-with-insecure-scheme-in-passive-content-only"
    if style_src & BROAD_OR_INLINE:
        result = result or "csp-implemented-with-unsafe-inline-in-style-src-only"
    if default_src == {"'none'"}:
        result = result or "csp-implemented-with-no-unsafe-default-src-none"
    result = result or "csp-implemented-with-no-unsafe"

    frame_ancestors = "frame-ancestors" in header_only
    if result in _PASSING and csp.duplicates:
        test = outcome(
            NAME, "csp-implemented-but-duplicate-directives", passed=True, evidence=evidence
        )
        return CSPVerdict(test, frame_ancestors)
    return verdict(result, frame_ancestors=frame_ancestors)
