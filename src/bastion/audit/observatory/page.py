"""What the grade reads: the `Observation` of one page, its headers and its HTML.

The HTML is hostile input (the audited site wrote it). It is read with the stdlib
`html.parser`, which never builds a tree and never fetches anything, over at most
`MAX_HTML_CHARS` characters, keeping at most `MAX_ELEMENTS` `<meta>` and `<script>`
elements; a page that breaks the parser is reported, not raised.

Upstream reads `<meta http-equiv="content-security-policy">` and `<meta
name="referrer">` only when the response is HTML (`src/retriever/utils.js`
`parseHttpEquivHeaders`, called from `src/retriever/retriever.js`), and so do we.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Final

MAX_HTML_CHARS: Final = 1024 * 1024
"""The probe already caps bodies at 1 MiB; the parser never reads more either way."""
MAX_ELEMENTS: Final = 2048
"""`<meta>` and `<script>` elements kept; a real page has tens."""
HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})
"""Upstream `HTML_TYPES` (`src/types.js`)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What the auditor saw of one page, the input of the grade."""

    url: str
    """The URL of the page graded, after redirects (`https://host/`)."""
    status: int
    headers: tuple[tuple[str, str], ...]
    """Response headers as received: names lower-case, repeats kept (`set-cookie`)."""
    body: str
    """The decoded body text, at most 1 MiB (HTML for `<meta>` CSP and SRI)."""
    cors_headers: tuple[tuple[str, str], ...] = ()
    """Headers of the same GET sent with a foreign `Origin` (`CORS_PROBE_ORIGIN`)."""
    http_redirects: tuple[tuple[str, int], ...] | None = None
    """The chain followed from the `http://` URL, one `(url, status)` per response,
    ending at the final page; None when plain HTTP was not probed."""


def header_values(headers: tuple[tuple[str, str], ...], name: str) -> list[str]:
    """Every line of header `name` (lower-case), in order."""
    return [value for key, value in headers if key.lower() == name]


def first_header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    """The first line of header `name`, as upstream's `getFirstHttpHeader`."""
    values = header_values(headers, name)
    return values[0] if values else None


def media_type(headers: tuple[tuple[str, str], ...]) -> str:
    """`text/html` from `Text/HTML; charset=utf-8` (RFC 9110 section 8.3.1: case-insensitive)."""
    return (first_header(headers, "content-type") or "").split(";")[0].strip().lower()


def is_html(observation: Observation) -> bool:
    return media_type(observation.headers) in HTML_TYPES


@dataclass(frozen=True, slots=True)
class Script:
    src: str
    integrity: str | None
    crossorigin: str | None


@dataclass(slots=True)
class PageScan:
    """What the HTML says for the grade."""

    meta_csp: list[str] = field(default_factory=list)
    meta_referrer: list[str] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)
    """`<script src>` elements, in order (inline scripts are only counted)."""
    script_count: int = 0
    """Every `<script>` element, with or without `src` (upstream counts them all)."""
    parse_failed: bool = False


class _Collector(HTMLParser):
    def __init__(self, scan: PageScan) -> None:
        super().__init__(convert_charrefs=True)
        self.scan = scan
        self.kept = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("meta", "script") or self.kept >= MAX_ELEMENTS:
            return
        self.kept += 1
        attributes: dict[str, str] = {}
        for name, value in attrs:
            # HTML: the first of repeated attributes wins.
            attributes.setdefault(name, value or "")
        if tag == "script":
            self.scan.script_count += 1
            src = attributes.get("src", "").strip()
            if src:
                self.scan.scripts.append(
                    Script(src, attributes.get("integrity"), attributes.get("crossorigin"))
                )
            return
        content = attributes.get("content")
        if "http-equiv" in attributes and content is not None:
            if attributes["http-equiv"].strip().lower() == "content-security-policy" and content:
                self.scan.meta_csp.append(content)
        elif attributes.get("name", "").strip().lower() == "referrer" and content:
            # Upstream keeps only the last `<meta name="referrer">`.
            self.scan.meta_referrer[:] = [content]


def scan_html(body: str) -> PageScan:
    """The `<meta>` policies and `<script>` elements of `body`, bounded."""
    scan = PageScan()
    collector = _Collector(scan)
    try:
        collector.feed(body[:MAX_HTML_CHARS])
        collector.close()
    except Exception:  # hostile markup must grade, not crash the audit
        scan.parse_failed = True
    return scan
