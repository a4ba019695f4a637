"""The audit as Rich tables, for a person at a terminal.

Threat: findings quote what the audited site sent (header values, cookie
attributes), chosen by whoever controls the site; printed as Rich markup or raw,
that text could restyle the report or drive the terminal with escape sequences.
Defence: every cell from a report is a `Text`, never markup, so `[red]` in a header
value prints as typed, and control characters are shown as `\\xNN`. No colour
unless the caller says the output is a terminal.

Not covered: paging or filtering big reports.

References: ECMA-48 (control functions) https://ecma-international.org/publications-and-standards/standards/ecma-48/
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Sequence
from typing import Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bastion.audit.findings import SEVERITIES, AuditReport
from bastion.audit.report.common import checks_of, count_failed, failed_sorted, verdict

TABLE_WIDTH: Final = 120
# A terminal report stays short: the JSON, SARIF and HTML reports list every reason.
MAX_SKIPPED_SHOWN: Final = 8


def printable(text: str) -> str:
    """Control characters as `\\xNN`: a terminal would obey an escape sequence."""
    return "".join(
        f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" and c != "\n" else c for c in text
    )


def _cell(text: object) -> Text:
    # Text, never a markup string: the report quotes what the audited site sent.
    return Text(printable(str(text)))


def _summary_table(reports: Sequence[AuditReport]) -> Table:
    table = Table(title="Bastion audit", title_justify="left")
    for column in ("target", "grade", "score", "failed", *SEVERITIES, "requests"):
        table.add_column(column)
    for report in reports:
        counts = count_failed(report)
        table.add_row(
            _cell(report.target),
            _cell(report.grade.letter),
            _cell(report.grade.score),
            _cell(len(report.failed)),
            *(_cell(counts[severity]) for severity in SEVERITIES),
            _cell(report.requests_sent),
        )
    return table


def _findings_table(report: AuditReport) -> Table:
    table = Table(title=f"Failed checks: {report.target}", title_justify="left")
    table.add_column("severity", no_wrap=True)
    table.add_column("check", no_wrap=True)
    for column in ("route", "title", "fix"):
        table.add_column(column, overflow="fold", ratio=1)
    for finding in failed_sorted(report):
        table.add_row(
            _cell(finding.severity),
            _cell(finding.check),
            _cell(finding.route or "-"),
            _cell(finding.title),
            _cell(finding.fix),
        )
    return table


def _comparison_table(reports: Sequence[AuditReport]) -> Table:
    table = Table(title="Side by side", title_justify="left")
    table.add_column("check")
    for report in reports:
        table.add_column(_cell(report.target))
    for check in checks_of(reports):
        table.add_row(_cell(check), *(_cell(verdict(report, check)) for report in reports))
    return table


def render_table(reports: Sequence[AuditReport], *, color: bool = False) -> str:
    """The reports as Rich tables, `TABLE_WIDTH` wide; ANSI colour only if `color`."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=TABLE_WIDTH,
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        highlight=False,
        emoji=False,
    )
    console.print(_summary_table(reports))
    if len(reports) > 1:
        console.print(_comparison_table(reports))
    for report in reports:
        if report.failed:
            console.print(_findings_table(report))
        else:
            console.print(_cell(f"{report.target}: no failed checks."))
        if report.skipped:
            console.print(_cell(_not_tested(report)))
    return buffer.getvalue()


def _not_tested(report: AuditReport) -> str:
    shown = report.skipped[:MAX_SKIPPED_SHOWN]
    lines = [f"Not tested ({report.target}):", *(f"  - {reason}" for reason in shown)]
    if len(report.skipped) > len(shown):
        lines.append(f"  ... and {len(report.skipped) - len(shown)} more (see --format json)")
    return "\n".join(lines)
