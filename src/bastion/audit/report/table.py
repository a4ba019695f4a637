"""The audit as Rich tables, for a person at a terminal.

Threat: findings quote what the audited site sent (header values, cookie
attributes, routes from its OpenAPI document), chosen by whoever controls the site;
printed as Rich markup or raw, that text could restyle the report, drive the
terminal with escape sequences, or reorder what the reader sees (a bidi override).
And a grade from an audit that did not verify TLS certificates, read as any other.
Defence: every cell and title from a report is a `Text`, never markup, so `[red]` in
a header value prints as typed, and every character a reader cannot see as itself
is shown escaped (`escape.printable`: `\\x1b`, `\\u202e`). An audit run with
`--insecure` has its grade marked and a warning under the summary. No colour unless
the caller says the output is a terminal.

Not covered: paging or filtering big reports.

References: ECMA-48 (control functions) https://ecma-international.org/publications-and-standards/standards/ecma-48/
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bastion.audit.findings import SEVERITIES, AuditReport
from bastion.audit.report.common import (
    INSECURE_TLS_GRADE,
    INSECURE_TLS_NOTE,
    checks_of,
    count_failed,
    failed_sorted,
    verdict,
)
from bastion.audit.report.escape import printable

TABLE_WIDTH: Final = 120
# A terminal report stays short: the JSON, SARIF and HTML reports list every reason.
MAX_SKIPPED_SHOWN: Final = 8


def _cell(text: object, style: str = "") -> Text:
    # Text, never a markup string: the report quotes what the audited site sent.
    return Text(printable(str(text)), style=style)


def _grade(report: AuditReport) -> str:
    letter = report.grade.letter
    return INSECURE_TLS_GRADE.format(letter=letter) if report.insecure_tls else letter


def _summary_table(reports: Sequence[AuditReport]) -> Table:
    table = Table(title="Bastion audit", title_justify="left")
    for column in ("target", "grade", "score", "failed", *SEVERITIES, "requests"):
        table.add_column(column)
    for report in reports:
        counts = count_failed(report)
        table.add_row(
            _cell(report.target),
            _cell(_grade(report)),
            _cell(report.grade.score),
            _cell(len(report.failed)),
            *(_cell(counts[severity]) for severity in SEVERITIES),
            _cell(report.requests_sent),
        )
    return table


def _findings_table(report: AuditReport) -> Table:
    table = Table(
        title=_cell(f"Failed checks: {report.target}", "table.title"), title_justify="left"
    )
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
    for report in reports:
        if report.insecure_tls:
            console.print(_cell(f"WARNING {report.target}: {INSECURE_TLS_NOTE}.", "bold red"))
    if len(reports) > 1:
        console.print(_comparison_table(reports))
    for report in reports:
        if report.failed:
            console.print(_findings_table(report))
        else:
            console.print(_cell(f"{report.target}: no failed checks."))
        if report.skipped:
            console.print(_not_tested(report))
    return buffer.getvalue()


def _not_tested(report: AuditReport) -> Text:
    # Each line escaped on its own: a newline the site put in a reason shows as
    # `\\x0a`, and cannot add a line that seems to be another reason.
    shown = report.skipped[:MAX_SKIPPED_SHOWN]
    lines = [f"Not tested ({report.target}):", *(f"  - {reason}" for reason in shown)]
    if len(report.skipped) > len(shown):
        lines.append(f"  ... and {len(report.skipped) - len(shown)} more (see --format json)")
    return Text("\n").join(_cell(line) for line in lines)
