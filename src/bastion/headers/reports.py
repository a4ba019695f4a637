"""CSP violation reports: parsing what browsers post to the report endpoint.

Threat: the report endpoint takes unauthenticated input from anyone. An attacker can
post huge bodies (memory), deeply nested JSON (stack), thousands of reports (log
flooding), or values crafted to forge log lines or to plant secrets in the logs.
Defence: the adapter reads at most `csp_report_max_bytes` and refuses the rest; this
module refuses nesting deeper than any report has before `json.loads` runs, keeps at
most `csp_report_max_reports` violations per request, and turns each into a few
bounded fields: URLs lose their query and fragment (where tokens live), the page
address is reduced to its path, and nothing else of the report is kept. The event
emitter then escapes control characters and redacts sensitive keys centrally. The
endpoint answers before any rate limiting, so a per-process `ReportBudget` caps the
violation events written per minute, however many requests arrive.
Not covered: reports are evidence, not proof; anyone can forge one. They tell you
where your policy breaks pages and where injection is attempted; no decision is
ever based on them.

Two formats exist, told apart by the content type:

* `application/csp-report`: the legacy `report-uri` format, one object
  `{"csp-report": {"document-uri": ..., "blocked-uri": ..., ...}}` (CSP3, "obtain
  the deprecated serialization of violation");
* `application/reports+json`: the Reporting API, an array of reports
  `[{"type": "csp-violation", "url": ..., "body": {"blockedURL": ..., ...}}]`
  (Reporting API, "media type"; CSP3 `CSPViolationReportBody`). Reports of other
  types sent to the same endpoint are skipped.

References: CSP3 https://www.w3.org/TR/CSP3/#reporting ; Reporting API
https://w3c.github.io/reporting/ ; CWE-117 (log forging)
https://cwe.mitre.org/data/definitions/117.html
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

ReportFormat = Literal["report-uri", "reporting-api"]

LEGACY_MEDIA_TYPE: Final = b"application/csp-report"
REPORTING_API_MEDIA_TYPE: Final = b"application/reports+json"

REASON_CSP_VIOLATION: Final = "csp-violation"
REASON_REPORT_TOO_LARGE: Final = "csp-report-too-large"
REASON_REPORT_WRONG_METHOD: Final = "csp-report-wrong-method"
REASON_REPORT_WRONG_CONTENT_TYPE: Final = "csp-report-wrong-content-type"
REASON_REPORT_INVALID_JSON: Final = "csp-report-invalid-json"
REASON_REPORT_DEEPLY_NESTED: Final = "csp-report-deeply-nested"
REASON_REPORT_MALFORMED: Final = "csp-report-malformed"
REASON_REPORT_TOO_MANY: Final = "csp-report-too-many"
REASON_REPORT_RATE_LIMITED: Final = "csp-report-rate-limited"

# A Reporting API batch is three levels deep (array, report, body); the legacy
# format two. Eight leaves room for extensions and refuses nesting bombs long before
# the parser's recursion limit.
MAX_JSON_DEPTH: Final = 8
# Enough for any URL worth reading in a log line; the emitter's own cap is larger.
MAX_FIELD_CHARS: Final = 256
_MAX_POSITION: Final = 10**9  # line and column numbers beyond this are garbage
# While the budget is spent, one event a minute says how many violations were
# dropped: enough to see an attack last, too few to flood the log themselves.
DROP_NOTICE_INTERVAL_SECONDS: Final = 60.0

# Strings are matched whole so brackets inside them are not counted.
_JSON_NESTING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_DIRECTIVE: Final = re.compile(r"[a-z0-9-]{1,64}\Z")


def report_format(content_type: bytes | None) -> ReportFormat | None:
    """Which report format a `Content-Type` announces, ignoring parameters."""
    if content_type is None:
        return None
    media_type = content_type.split(b";", 1)[0].strip().lower()
    if media_type == LEGACY_MEDIA_TYPE:
        return "report-uri"
    if media_type == REPORTING_API_MEDIA_TYPE:
        return "reporting-api"
    return None


def json_too_deep(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects in `body` nest deeper than `max_depth`.

    A linear scan that stops at the first level too deep, so `json.loads` never
    recurses on attacker-chosen depth.
    """
    depth = 0
    for match in _JSON_NESTING.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


@dataclass(frozen=True, slots=True)
class Violation:
    """The facts of one violation that are worth an event, already bounded."""

    effective_directive: str
    blocked_uri: str
    document_path: str
    source_file: str
    line: int | None
    column: int | None
    disposition: str  # "enforce", "report" or "unknown"
    report_format: ReportFormat

    def details(self) -> dict[str, object]:
        details: dict[str, object] = {
            "effective_directive": self.effective_directive,
            "blocked_uri": self.blocked_uri,
            "document_path": self.document_path,
            "disposition": self.disposition,
            "format": self.report_format,
        }
        if self.source_file:
            details["source_file"] = self.source_file
        if self.line is not None:
            details["line"] = self.line
        if self.column is not None:
            details["column"] = self.column
        return details


@dataclass(frozen=True, slots=True)
class ReportBatch:
    """What one request to the report endpoint carried, or why it is refused."""

    violations: tuple[Violation, ...] = ()
    dropped: int = 0  # violations beyond the per-request cap
    error: str = ""  # a REASON_* constant when the body is refused


def _text(value: object) -> str:
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else ""


def _without_query(untrusted_url: object) -> str:
    """A URL without query and fragment (where tokens and ids live), truncated.

    Keywords such as `inline`, `eval` or `data` pass unchanged.
    """
    if not isinstance(untrusted_url, str):
        return ""
    end = len(untrusted_url)
    for separator in "?#":
        found = untrusted_url.find(separator)
        if found != -1:
            end = min(end, found)
    return untrusted_url[:end][:MAX_FIELD_CHARS]


def _path_only(untrusted_url: object) -> str:
    """The path of the page a report comes from: no origin, query or fragment."""
    url = _without_query(untrusted_url)
    scheme_end = url.find("://")
    if scheme_end != -1:
        path_start = url.find("/", scheme_end + 3)
        return url[path_start:] if path_start != -1 else "/"
    return url


def _position(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_POSITION:
        return value
    return None


def _directive(value: object) -> str:
    name = value.strip().lower() if isinstance(value, str) else ""
    return name if _DIRECTIVE.match(name) else "invalid"


def _disposition(value: object) -> str:
    return value if value in ("enforce", "report") else "unknown"


def _legacy_violation(report: Mapping[str, object]) -> Violation:
    return Violation(
        # `violated-directive` is the CSP2 name of the same field.
        effective_directive=_directive(
            report.get("effective-directive", report.get("violated-directive"))
        ),
        blocked_uri=_without_query(report.get("blocked-uri")),
        document_path=_path_only(report.get("document-uri")),
        source_file=_without_query(report.get("source-file")),
        line=_position(report.get("line-number")),
        column=_position(report.get("column-number")),
        disposition=_disposition(report.get("disposition")),
        report_format="report-uri",
    )


def _reporting_api_violation(report: Mapping[str, object], body: Mapping[str, object]) -> Violation:
    return Violation(
        effective_directive=_directive(body.get("effectiveDirective")),
        blocked_uri=_without_query(body.get("blockedURL")),
        document_path=_path_only(body.get("documentURL", report.get("url"))),
        source_file=_without_query(body.get("sourceFile")),
        line=_position(body.get("lineNumber")),
        column=_position(body.get("columnNumber")),
        disposition=_disposition(body.get("disposition")),
        report_format="reporting-api",
    )


def parse_reports(fmt: ReportFormat, body: bytes, *, max_reports: int) -> ReportBatch:
    """Parse a report body whose size the caller has already bounded."""
    if json_too_deep(body):
        return ReportBatch(error=REASON_REPORT_DEEPLY_NESTED)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        # ValueError covers bad JSON, bad UTF-8 and integers too long to convert.
        return ReportBatch(error=REASON_REPORT_INVALID_JSON)
    if fmt == "report-uri":
        report = document.get("csp-report") if isinstance(document, dict) else None
        if not isinstance(report, dict):
            return ReportBatch(error=REASON_REPORT_MALFORMED)
        return ReportBatch(violations=(_legacy_violation(report),))
    if not isinstance(document, list):
        return ReportBatch(error=REASON_REPORT_MALFORMED)
    violations: list[Violation] = []
    dropped = 0
    for report in document:
        if not isinstance(report, dict):
            return ReportBatch(error=REASON_REPORT_MALFORMED)
        if report.get("type") != "csp-violation":
            continue
        report_body = report.get("body")
        if not isinstance(report_body, dict):
            return ReportBatch(error=REASON_REPORT_MALFORMED)
        if len(violations) < max_reports:
            violations.append(_reporting_api_violation(report, report_body))
        else:
            dropped += 1
    return ReportBatch(violations=tuple(violations), dropped=dropped)


@dataclass(frozen=True, slots=True)
class Allowance:
    """How many of a request's violations may become events, and how many dropped
    violations to report now (0: no drop event)."""

    granted: int
    report_dropped: int


class ReportBudget:
    """A token bucket for violation events, shared by every request of one process.

    The bucket holds one minute's allowance (`per_minute`) and refills continuously
    at `per_minute / 60` a second. Each violation takes a token; what finds none is
    dropped and counted. The count is reported (and restarts) on the first drop, then
    at most once per DROP_NOTICE_INTERVAL_SECONDS while dropping lasts, and at the
    first request granted in full afterwards, so the drop events cannot flood the log
    either.

    Time comes in as `now` (monotonic seconds), so tests move it. `take` never
    awaits, so requests on one event loop cannot interleave inside it. The budget is
    per process: N workers write up to N times as much.
    """

    __slots__ = ("_capacity", "_dropped", "_noticed_at", "_per_second", "_tokens", "_updated")

    def __init__(self, per_minute: int, now: float) -> None:
        if per_minute < 1:
            raise ValueError("a report budget allows at least one event a minute")
        self._capacity = float(per_minute)
        self._per_second = per_minute / 60.0
        self._tokens = self._capacity
        self._updated = now
        self._dropped = 0
        self._noticed_at = float("-inf")

    def take(self, wanted: int, now: float) -> Allowance:
        # A clock that steps back refills nothing rather than draining the bucket.
        elapsed = max(0.0, now - self._updated)
        self._updated = max(self._updated, now)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._per_second)
        # The epsilon keeps float refills that add up to a whole token (0.1 + 0.9)
        # from rounding down to none.
        granted = min(wanted, int(self._tokens + 1e-9))
        self._tokens = max(0.0, self._tokens - granted)
        self._dropped += wanted - granted
        report = 0
        # The flush needs a token granted, so notices never outnumber the refill.
        full_grant = granted > 0 and granted == wanted
        if self._dropped and (full_grant or now - self._noticed_at >= DROP_NOTICE_INTERVAL_SECONDS):
            report, self._dropped, self._noticed_at = self._dropped, 0, now
        return Allowance(granted, report)
