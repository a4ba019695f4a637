"""The audit as one self-contained HTML file, to hand around.

Threat: the report itself becomes an attack. Findings quote what the audited site
sent (header values, cookie attributes, script URLs), chosen by whoever controls the
site; in a page that text could carry markup and script, load a tracker, or reorder
what the reader sees (a bidi override). And a grade from an audit that did not verify
TLS certificates, read as any other.
Defence: every text shows its invisible characters escaped (`escape.printable`) and
is then HTML-escaped (`_e`); the page has inline CSS, an inline SVG chart, no
external resource and no script, and carries its own CSP (`default-src 'none'`, the
stylesheet allowed by hash), so that an escaping mistake still could not run script
or load anything. An audit run with `--insecure` says so under its grade.

Not covered: paging or filtering big reports; localisation.

References: OWASP XSS Prevention Cheat Sheet, rule 1
https://cheatsheetseries.owasp.org/cheatsheets/Cross_Site_Scripting_Prevention_Cheat_Sheet.html ;
CSP Level 3, hash sources https://www.w3.org/TR/CSP3/#grammardef-hash-source
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from typing import Final

from bastion.audit.findings import SEVERITIES, AuditReport, Severity
from bastion.audit.report.common import (
    INSECURE_TLS_NOTE,
    checks_of,
    count_failed,
    failed_sorted,
    verdict,
)
from bastion.audit.report.escape import printable

_SEVERITY_COLOURS: Final[Mapping[Severity, str]] = {
    "critical": "#7f1d1d",
    "high": "#dc2626",
    "medium": "#f59e0b",
    "low": "#2563eb",
    "info": "#6b7280",
}


_CSS: Final = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem;color:#111;background:#fafafa}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}
.targets{display:grid;grid-template-columns:repeat(auto-fit,minmax(22rem,1fr));gap:1.5rem}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1rem}
.grade{font-size:4.5rem;font-weight:700;line-height:1;margin:.25rem 0}
.score{color:#555}
table{border-collapse:collapse;width:100%;background:#fff;margin-top:.5rem}
th,td{border:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.evidence{font-family:ui-monospace,monospace;font-size:.85rem;
word-break:break-all}
.sev-critical,.sev-high{color:#b91c1c;font-weight:600}.sev-medium{color:#b45309}
.sev-low{color:#1d4ed8}.sev-info{color:#555}.pass{color:#15803d}
"""
_CSS_HASH: Final = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
# The report's own policy: nothing loads, nothing runs; only the stylesheet above.
_REPORT_CSP: Final = f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; base-uri 'none'"
_BAR_WIDTH: Final = 240
_BAR_HEIGHT: Final = 18


def _e(text: object) -> str:
    return html.escape(printable(str(text)), quote=True)


def _chart(report: AuditReport) -> str:
    """An inline SVG bar chart of the failed findings by severity."""
    counts = count_failed(report)
    most = max(counts.values()) or 1
    rows = []
    for index, severity in enumerate(SEVERITIES):
        y = index * (_BAR_HEIGHT + 6)
        width = round(_BAR_WIDTH * counts[severity] / most)
        rows.append(
            f'<text x="0" y="{y + 14}" font-size="12">{_e(severity)}</text>'
            f'<rect x="70" y="{y}" width="{width}" height="{_BAR_HEIGHT}" '
            f'fill="{_SEVERITY_COLOURS[severity]}"></rect>'
            f'<text x="{76 + width}" y="{y + 14}" font-size="12">{counts[severity]}</text>'
        )
    height = len(SEVERITIES) * (_BAR_HEIGHT + 6)
    label = f"Failed findings by severity for {report.target}"
    return (
        f'<svg role="img" aria-label="{_e(label)}" width="{_BAR_WIDTH + 110}" '
        f'height="{height}" viewBox="0 0 {_BAR_WIDTH + 110} {height}">'
        f"<title>{_e(label)}</title>{''.join(rows)}</svg>"
    )


def _card(report: AuditReport) -> str:
    failed = len(report.failed)
    unverified = (
        f'<p class="sev-critical">{_e(INSECURE_TLS_NOTE)}.</p>' if report.insecure_tls else ""
    )
    return (
        '<section class="card">'
        f"<h2>{_e(report.target)}</h2>"
        f'<div class="grade" aria-label="grade">{_e(report.grade.letter)}</div>{unverified}'
        f'<div class="score">score {_e(report.grade.score)}; {failed} failed of '
        f"{len(report.findings)} checks; {_e(report.requests_sent)} requests</div>"
        f"{_chart(report)}</section>"
    )


def _findings_html(report: AuditReport) -> str:
    failed = failed_sorted(report)
    if not failed:
        return f'<h2>{_e(report.target)}</h2><p class="pass">No failed checks.</p>'
    rows = "".join(
        "<tr>"
        f'<td class="sev-{_e(f.severity)}">{_e(f.severity)}</td>'
        f"<td>{_e(f.check)}</td><td>{_e(f.route or '-')}</td><td>{_e(f.title)}</td>"
        f'<td class="evidence">{_e(f.evidence)}</td><td>{_e(f.fix)}</td>'
        "</tr>"
        for f in failed
    )
    return (
        f"<h2>Failed checks: {_e(report.target)}</h2><table><thead><tr><th>severity</th>"
        "<th>check</th><th>route</th><th>title</th><th>evidence</th><th>fix</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )


def _skipped_html(report: AuditReport) -> str:
    if not report.skipped:
        return ""
    items = "".join(f"<li>{_e(reason)}</li>" for reason in report.skipped)
    return f"<h2>Not tested: {_e(report.target)}</h2><ul>{items}</ul>"


def _verdict_class(verdict: str) -> str:
    if verdict == "pass":
        return "pass"
    if verdict.startswith("FAIL "):
        return f"sev-{verdict.split()[1]}"
    return ""


def _comparison_html(reports: Sequence[AuditReport]) -> str:
    head = "".join(f"<th>{_e(r.target)}</th>" for r in reports)
    rows = []
    for check in checks_of(reports):
        cells = []
        for report in reports:
            cell = verdict(report, check)
            cells.append(f'<td class="{_e(_verdict_class(cell))}">{_e(cell)}</td>')
        rows.append(f"<tr><td>{_e(check)}</td>{''.join(cells)}</tr>")
    return (
        f"<h2>Side by side</h2><table><thead><tr><th>check</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def render_html(reports: Sequence[AuditReport]) -> str:
    """One self-contained HTML page: no external resource, no script, all text escaped."""
    title = "Bastion audit: " + ", ".join(r.target for r in reports)
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<div class="targets">{"".join(_card(r) for r in reports)}</div>',
    ]
    if len(reports) > 1:
        body.append(_comparison_html(reports))
    body.extend(_findings_html(r) + _skipped_html(r) for r in reports)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_REPORT_CSP)}">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
