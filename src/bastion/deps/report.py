"""The findings, written out: a table for people, JSON for scripts, SARIF for code scanning.

Threat: a finding that CI or a reviewer never sees, because the output hides it or a
tool cannot read it.
Defence: every finding is written with its id, aliases, package, installed version,
fixed versions and severity; SARIF gives one rule per advisory and one result per
finding, at a level from its severity ("unknown" is a warning, never a note).

Every SARIF result has a location, as code-scanning tools require: a dependency has no
line in the source, so it is a logical location `package==version` (kind `module`).
Not covered: a physical location (the installed `METADATA` file is not known here and
would name a path of the auditing machine); warnings are in the JSON report only (the
command prints them to stderr for the other formats).

References: SARIF 2.1.0 https://docs.oasis-open.org/sarif/sarif/v2.1.0/sarif-v2.1.0.html
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from bastion.deps.osv import Finding, Report

_SARIF_LEVEL: Final[Mapping[str, str]] = {
    "critical": "error",
    "high": "error",
    "medium": "warning",
    "low": "note",
    "unknown": "warning",
}
SARIF_SCHEMA: Final = "https://json.schemastore.org/sarif-2.1.0.json"


# --- the core: output ---------------------------------------------------------------


def finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.id,
        "aliases": list(finding.aliases),
        "package": finding.package,
        "installed_version": finding.installed_version,
        "fixed_versions": list(finding.fixed_versions),
        "severity": finding.severity,
        "summary": finding.summary,
    }


def render_json(report: Report) -> str:
    return json.dumps(
        {
            "findings": [finding_dict(f) for f in report.findings],
            "warnings": report.warnings,
            "packages_checked": report.packages_checked,
            "advisories_loaded": report.advisories_loaded,
        },
        indent=2,
    )


def render_table(report: Report) -> str:
    if not report.findings:
        return (
            f"No known vulnerabilities in {report.packages_checked} packages "
            f"({report.advisories_loaded} advisories)."
        )
    header = ("PACKAGE", "INSTALLED", "ID", "ALIASES", "SEVERITY", "FIXED IN")
    rows = [
        (
            f.package,
            f.installed_version,
            f.id,
            ", ".join(f.aliases) or "-",
            f.severity,
            ", ".join(f.fixed_versions) or "-",
        )
        for f in report.findings
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    count = len(report.findings)
    lines.append(f"{count} known vulnerabilit{'y' if count == 1 else 'ies'} found.")
    return "\n".join(lines)


def render_sarif(report: Report, *, tool_version: str = "") -> str:
    """A minimal SARIF 2.1.0 log: one rule per advisory, one result per finding."""
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for f in report.findings:
        rules.setdefault(
            f.id,
            {
                "id": f.id,
                "shortDescription": {"text": f.summary or f.id},
                "helpUri": f"https://osv.dev/vulnerability/{f.id}",
                "properties": {"tags": ["security", "dependency"], "severity": f.severity},
            },
        )
        fixed = ", ".join(f.fixed_versions) or "no fixed version published"
        pinned = f"{f.package}=={f.installed_version}"
        results.append(
            {
                "ruleId": f.id,
                "level": _SARIF_LEVEL[f.severity],
                "message": {
                    "text": f"{f.package} {f.installed_version} is affected by {f.id}"
                    f" ({f.severity}); fixed in: {fixed}"
                },
                "locations": [
                    {
                        "logicalLocations": [
                            {"name": pinned, "fullyQualifiedName": pinned, "kind": "module"}
                        ]
                    }
                ],
            }
        )
    driver: dict[str, Any] = {
        "name": "bastion deps",
        "informationUri": "https://osv.dev/",
        "rules": list(rules.values()),
    }
    if tool_version:
        driver["version"] = tool_version
    return json.dumps(
        {
            "$schema": SARIF_SCHEMA,
            "version": "2.1.0",
            "runs": [{"tool": {"driver": driver}, "results": results}],
        },
        indent=2,
    )
