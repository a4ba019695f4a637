"""The audit, written out: a table for people, JSON for scripts, SARIF for code scanning,
one HTML file to hand around.

Threat: a finding nobody sees or nobody can act on, because the output hides it, a tool
cannot read it, or the report itself becomes an attack. Findings quote what the audited
site sent (header values, cookie attributes, script URLs), and that text is chosen by
whoever controls the site: in a terminal it could carry Rich markup, in the HTML report
it could carry markup and script.
Defence: every writer takes a list of `AuditReport` (one target, or two side by side) and
shows every failed finding with its check id, route, severity and fix.

* `render_table`: Rich tables rendered to a string; every cell from a report is a
  `Text`, never markup, so `[red]` in a header value prints as typed, and control
  characters are shown as `\\xNN`, so an escape sequence in a header cannot drive the
  terminal. No colour unless the caller says the output is a terminal.
* `render_json`: the keys documented in `JSON_KEYS`, stable; `parse_json` reads it back.
* `render_sarif`: SARIF 2.1.0, one run per target, one rule per check id, one result per
  failed finding, each with a location (the target URL plus the route path, or a
  logical location when the target is not a URL) and the grade in its properties.
* `render_html`: one self-contained file: inline CSS, an inline SVG chart, no external
  resource, no script. Every text is HTML-escaped, and the page carries its own CSP
  (`default-src 'none'`, the stylesheet allowed by hash) so that an escaping mistake
  still could not run script or load anything.

Not covered: paging or filtering big reports; localisation.

References: SARIF 2.1.0 (OASIS Standard, errata 01)
https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/sarif-v2.1.0-errata01-os-complete.html
sections 3.19 (run), 3.27 (result), 3.28 (location), 3.49 (reportingDescriptor);
GitHub code scanning, "SARIF support for code scanning" (`security-severity`)
https://docs.github.com/en/code-security/code-scanning ;
HTML escaping: OWASP XSS Prevention Cheat Sheet, rule 1.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import unicodedata
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bastion.audit.findings import (
    SEVERITIES,
    AuditReport,
    Finding,
    Grade,
    ObservatoryTest,
    Severity,
)
from bastion.audit.observatory.scoring import ObservedTest

JSON_FORMAT: Final = "bastion-audit/1"
JSON_KEYS: Final = {
    "format": f'always "{JSON_FORMAT}"; a new name if a key changes meaning',
    "targets": "one object per audited target, in the order given",
    "targets[].target": "what was audited: module:attr, a URL or a demo label",
    "targets[].grade": "{letter, score, tests: [{name, result, modifier, passed, "
    "description, evidence}]}, the MDN HTTP Observatory grade",
    "targets[].summary": "{findings, failed, failed_by_severity: {critical..info}}",
    "targets[].findings": "[{check, title, severity, passed, evidence, fix, route, "
    "references}], passed and failed",
    "targets[].routes": "the routes probed, METHOD /path",
    "targets[].requests_sent": "how many requests the audit sent",
    "targets[].duration_seconds": "how long it took",
}
"""The JSON report's keys, as documentation and as the test's contract."""

SARIF_SCHEMA: Final = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
SARIF_LEVEL: Final[Mapping[Severity, str]] = {
    "critical": "error",
    "high": "error",
    "medium": "warning",
    "low": "note",
    "info": "note",
}
# GitHub ranks code-scanning alerts by this CVSS-like number: critical above 9.0,
# high 7.0 to 8.9, medium 4.0 to 6.9, low below 4.0.
SECURITY_SEVERITY: Final[Mapping[Severity, str]] = {
    "critical": "9.5",
    "high": "8.0",
    "medium": "5.5",
    "low": "3.0",
    "info": "0.0",
}
TOOL_NAME: Final = "bastion audit"
TABLE_WIDTH: Final = 120
_RANK: Final = {severity: rank for rank, severity in enumerate(SEVERITIES)}
_SEVERITY_COLOURS: Final[Mapping[Severity, str]] = {
    "critical": "#7f1d1d",
    "high": "#dc2626",
    "medium": "#f59e0b",
    "low": "#2563eb",
    "info": "#6b7280",
}


def _failed_sorted(report: AuditReport) -> list[Finding]:
    return sorted(report.failed, key=lambda f: (_RANK[f.severity], f.check, f.route))


def _counts(report: AuditReport) -> dict[Severity, int]:
    counts: dict[Severity, int] = dict.fromkeys(SEVERITIES, 0)
    for finding in report.failed:
        counts[finding.severity] += 1
    return counts


# --- table -------------------------------------------------------------------------


def _printable(text: str) -> str:
    """Control characters as `\\xNN`: a terminal would obey an escape sequence."""
    return "".join(
        f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" and c != "\n" else c for c in text
    )


def _cell(text: object) -> Text:
    # Text, never a markup string: the report quotes what the audited site sent.
    return Text(_printable(str(text)))


def _summary_table(reports: Sequence[AuditReport]) -> Table:
    table = Table(title="Bastion audit", title_justify="left")
    for column in ("target", "grade", "score", "failed", *SEVERITIES, "requests"):
        table.add_column(column)
    for report in reports:
        counts = _counts(report)
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
    for finding in _failed_sorted(report):
        table.add_row(
            _cell(finding.severity),
            _cell(finding.check),
            _cell(finding.route or "-"),
            _cell(finding.title),
            _cell(finding.fix),
        )
    return table


def _verdict(findings: Sequence[Finding]) -> str:
    if not findings:
        return "-"
    failed = [f for f in findings if not f.passed]
    if not failed:
        return "pass"
    worst = min(failed, key=lambda f: _RANK[f.severity])
    return f"FAIL {worst.severity}" + (f" x{len(failed)}" if len(failed) > 1 else "")


def _comparison_table(reports: Sequence[AuditReport]) -> Table:
    table = Table(title="Side by side", title_justify="left")
    table.add_column("check")
    for report in reports:
        table.add_column(_cell(report.target))
    checks = sorted({f.check for report in reports for f in report.findings})
    for check in checks:
        cells = [_verdict([f for f in r.findings if f.check == check]) for r in reports]
        table.add_row(_cell(check), *(_cell(cell) for cell in cells))
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
    return buffer.getvalue()


# --- JSON --------------------------------------------------------------------------


def _test_dict(test: ObservatoryTest) -> dict[str, Any]:
    return {
        "name": test.name,
        "result": test.result,
        "modifier": test.modifier,
        "passed": test.passed,
        "description": test.description,
        "evidence": test.evidence if isinstance(test, ObservedTest) else "",
    }


def _finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "check": finding.check,
        "title": finding.title,
        "severity": finding.severity,
        "passed": finding.passed,
        "evidence": finding.evidence,
        "fix": finding.fix,
        "route": finding.route,
        "references": list(finding.references),
    }


def report_dict(report: AuditReport) -> dict[str, Any]:
    """One target as the JSON report writes it (keys: `JSON_KEYS`)."""
    return {
        "target": report.target,
        "grade": {
            "letter": report.grade.letter,
            "score": report.grade.score,
            "tests": [_test_dict(test) for test in report.grade.tests],
        },
        "summary": {
            "findings": len(report.findings),
            "failed": len(report.failed),
            "failed_by_severity": _counts(report),
        },
        "findings": [_finding_dict(f) for f in report.findings],
        "routes": list(report.routes),
        "requests_sent": report.requests_sent,
        "duration_seconds": report.duration_seconds,
    }


def render_json(reports: Sequence[AuditReport]) -> str:
    return json.dumps(
        {"format": JSON_FORMAT, "targets": [report_dict(r) for r in reports]},
        indent=2,
        ensure_ascii=False,
    )


def _severity(value: object) -> Severity:
    for severity in SEVERITIES:
        if value == severity:
            return severity
    raise ValueError(f"unknown severity {value!r}")


def parse_json(text: str) -> list[AuditReport]:
    """Read `render_json` output back (for tooling that merges or compares audits)."""
    document = json.loads(text)
    if document.get("format") != JSON_FORMAT:
        raise ValueError(f"not a {JSON_FORMAT} document")
    reports = []
    for target in document["targets"]:
        tests = tuple(
            ObservedTest(
                name=t["name"],
                result=t["result"],
                modifier=int(t["modifier"]),
                passed=bool(t["passed"]),
                description=t["description"],
                evidence=t.get("evidence", ""),
            )
            for t in target["grade"]["tests"]
        )
        findings = [
            Finding(
                check=f["check"],
                title=f["title"],
                severity=_severity(f["severity"]),
                passed=bool(f["passed"]),
                evidence=f["evidence"],
                fix=f["fix"],
                route=f["route"],
                references=tuple(f["references"]),
            )
            for f in target["findings"]
        ]
        grade = Grade(score=target["grade"]["score"], letter=target["grade"]["letter"], tests=tests)
        reports.append(
            AuditReport(
                target=target["target"],
                grade=grade,
                findings=findings,
                routes=list(target["routes"]),
                requests_sent=int(target["requests_sent"]),
                duration_seconds=float(target["duration_seconds"]),
            )
        )
    return reports


# --- SARIF -------------------------------------------------------------------------

# Characters kept as they are when a route path becomes part of a URI (RFC 3986
# section 3.3 pchar plus "/"); anything else is percent-encoded.
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~%"


def _is_url(target: str) -> bool:
    parts = urllib.parse.urlsplit(target)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _route_path(route: str) -> str:
    """`/login` from `POST /login`; "" for a whole-target finding."""
    path = route.split(" ", 1)[-1] if route else ""
    return path if path.startswith("/") else ""


def _location(report: AuditReport, finding: Finding) -> dict[str, Any]:
    if _is_url(report.target):
        base = urllib.parse.urlsplit(report.target)
        path = _route_path(finding.route) or base.path or "/"
        uri = urllib.parse.urlunsplit(
            (base.scheme, base.netloc, urllib.parse.quote(path, safe=_PATH_SAFE), "", "")
        )
        return {"physicalLocation": {"artifactLocation": {"uri": uri}}}
    name = finding.route or report.target
    return {
        "logicalLocations": [
            {
                "name": name,
                "fullyQualifiedName": f"{report.target} {finding.route}".strip(),
                "kind": "resource",
            }
        ]
    }


def _rule(finding: Finding) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": finding.check,
        "shortDescription": {"text": finding.check},
        "fullDescription": {"text": finding.title},
        "help": {"text": finding.fix or finding.title},
        "defaultConfiguration": {"level": SARIF_LEVEL[finding.severity]},
        "properties": {
            "tags": ["security", "bastion-audit"],
            "security-severity": SECURITY_SEVERITY[finding.severity],
        },
    }
    if finding.references:
        rule["helpUri"] = finding.references[0]
    return rule


def _run(report: AuditReport, tool_version: str) -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = {}
    for finding in report.findings:
        rules.setdefault(finding.check, _rule(finding))
    rule_index = {check: index for index, check in enumerate(rules)}
    grade = {"grade": report.grade.letter, "score": report.grade.score}
    results = [
        {
            "ruleId": finding.check,
            "ruleIndex": rule_index[finding.check],
            "level": SARIF_LEVEL[finding.severity],
            "message": {
                "text": f"{finding.title} Evidence: {finding.evidence}"
                if finding.evidence
                else finding.title
            },
            "locations": [_location(report, finding)],
            "properties": {**grade, "severity": finding.severity, "target": report.target},
        }
        for finding in _failed_sorted(report)
    ]
    driver: dict[str, Any] = {"name": TOOL_NAME, "rules": list(rules.values())}
    if tool_version:
        driver["version"] = tool_version
    return {
        "tool": {"driver": driver},
        "results": results,
        "properties": {**grade, "target": report.target},
    }


def render_sarif(reports: Sequence[AuditReport], *, tool_version: str = "") -> str:
    """SARIF 2.1.0: one run per target, one result per failed finding."""
    return json.dumps(
        {
            "$schema": SARIF_SCHEMA,
            "version": "2.1.0",
            "runs": [_run(report, tool_version) for report in reports],
        },
        indent=2,
    )


# --- HTML --------------------------------------------------------------------------

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
    return html.escape(str(text), quote=True)


def _chart(report: AuditReport) -> str:
    """An inline SVG bar chart of the failed findings by severity."""
    counts = _counts(report)
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
    return (
        '<section class="card">'
        f"<h2>{_e(report.target)}</h2>"
        f'<div class="grade" aria-label="grade">{_e(report.grade.letter)}</div>'
        f'<div class="score">score {_e(report.grade.score)}; {failed} failed of '
        f"{len(report.findings)} checks; {_e(report.requests_sent)} requests</div>"
        f"{_chart(report)}</section>"
    )


def _findings_html(report: AuditReport) -> str:
    failed = _failed_sorted(report)
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


def _verdict_class(verdict: str) -> str:
    if verdict == "pass":
        return "pass"
    if verdict.startswith("FAIL "):
        return f"sev-{verdict.split()[1]}"
    return ""


def _comparison_html(reports: Sequence[AuditReport]) -> str:
    checks = sorted({f.check for report in reports for f in report.findings})
    head = "".join(f"<th>{_e(r.target)}</th>" for r in reports)
    rows = []
    for check in checks:
        cells = []
        for report in reports:
            verdict = _verdict([f for f in report.findings if f.check == check])
            css = _verdict_class(verdict)
            cells.append(f'<td class="{_e(css)}">{_e(verdict)}</td>')
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
    body.extend(_findings_html(r) for r in reports)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_REPORT_CSP)}">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
