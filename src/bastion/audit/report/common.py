"""What every report format shares: the order of findings and the counts.

Threat: two formats of one audit that disagree (a finding first in the table and
last in SARIF, a count that differs between JSON and HTML), so a reader trusts
neither.
Defence: the order (most severe first, then check id, then route), the counts by
severity, the side-by-side verdict and the note on an audit without certificate
verification are decided here once, for every format.

Not covered: rendering; each format has its own module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from bastion.audit.findings import SEVERITIES, AuditReport, Finding, Severity

_RANK: Final = {severity: rank for rank, severity in enumerate(SEVERITIES)}

INSECURE_TLS_NOTE: Final = (
    "TLS certificates were not verified (--insecure): the grade and findings describe "
    "whatever answered, which may not be the target"
)
"""What every format says of an audit run without certificate verification, so a
grade read in CI is never taken for one from a verified connection."""
INSECURE_TLS_GRADE: Final = "{letter} (TLS unverified)"
"""The grade as the table shows it for such an audit."""


def failed_sorted(report: AuditReport) -> list[Finding]:
    """The failed findings, most severe first, then by check id and route."""
    return sorted(report.failed, key=lambda f: (_RANK[f.severity], f.check, f.route))


def count_failed(report: AuditReport) -> dict[Severity, int]:
    """How many findings failed at each severity, every severity present."""
    counts: dict[Severity, int] = dict.fromkeys(SEVERITIES, 0)
    for finding in report.failed:
        counts[finding.severity] += 1
    return counts


def checks_of(reports: Sequence[AuditReport]) -> list[str]:
    """Every check id any of the reports ran, sorted: the rows of a side-by-side view."""
    return sorted({f.check for report in reports for f in report.findings})


def verdict(report: AuditReport, check: str) -> str:
    """One side-by-side cell: `-` (not run), `pass`, or `FAIL <worst>` and a count."""
    findings = [f for f in report.findings if f.check == check]
    if not findings:
        return "-"
    failed = [f for f in findings if not f.passed]
    if not failed:
        return "pass"
    worst = min(failed, key=lambda f: _RANK[f.severity])
    return f"FAIL {worst.severity}" + (f" x{len(failed)}" if len(failed) > 1 else "")
