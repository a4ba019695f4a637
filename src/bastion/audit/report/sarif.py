"""The audit as SARIF 2.1.0, for code scanning (GitHub, GitLab, IDEs).

Threat: findings a code-scanning dashboard drops or ranks wrongly, because a result
has no location, no rule, or a severity the tool does not read. A hostile target
whose words reach the dashboard: the evidence quotes its headers and routes, and a
viewer makes `[Update now](https://evil.example)` a link, fills `{0}` placeholders,
renders some Markdown (GitHub does), and obeys a bidi override. And a grade from an
audit that did not verify TLS certificates, read as a verified one.
Defence: one run per target, one rule per check id, one result per failed finding,
each with a location (the target URL plus the route path, percent-encoded, or a
logical location when the target is not a URL), the level from `SARIF_LEVEL`, and
GitHub's `security-severity` and the grade in its properties. Each run has its own
`automationDetails.id`, and what was not tested is a `note` notification of the
run's invocation, so a missing result is never mistaken for a pass. Every text that
can quote the target goes through `escape.sarif_text` (invisible characters shown,
links, placeholders, HTML and character references escaped, length bounded);
logical location names through `escape.printable_bounded`, bounded the same.
Rules carry only Bastion's own text. An audit run with `--insecure` says so in each result's
message, in a `warning` notification, and as `insecureTls` in the properties.

Not covered: suppressions and baselines (the scanning service keeps those).

References: SARIF 2.1.0 (OASIS Standard, errata 01)
https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/sarif-v2.1.0-errata01-os-complete.html
sections 3.11.3 to 3.11.6 (plain text messages, placeholders, embedded links), 3.14
(run), 3.17 (runAutomationDetails), 3.20 (invocation), 3.58 (notification), 3.27
(result), 3.28 (location), 3.49 (reportingDescriptor);
GitHub code scanning, "SARIF support for code scanning" (`security-severity`)
https://docs.github.com/en/code-security/code-scanning ; RFC 3986 section 3.3 (path).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bastion.audit.findings import AuditReport, Finding, Severity
from bastion.audit.report.common import INSECURE_TLS_NOTE, failed_sorted
from bastion.audit.report.escape import printable_bounded, sarif_text

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
AUTOMATION_PREFIX: Final = "bastion-audit"

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


def _name(text: str) -> str:
    """A location name: invisible characters shown, as long as a message's quote,
    cut between characters (never inside an escape such as `\\u202e`)."""
    return printable_bounded(text)


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
                "name": _name(name),
                "fullyQualifiedName": _name(f"{report.target} {finding.route}".strip()),
                "kind": "resource",
            }
        ]
    }


def automation_id(target: str) -> str:
    """The run's `automationDetails.id`, one per target: `bastion-audit/<slug>/`.

    The trailing "/" makes the whole id the run's category (section 3.17), so
    code scanning keeps the alerts of two targets apart instead of letting the
    second upload close the first one's.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", target.lower()).strip("-") or "target"
    return f"{AUTOMATION_PREFIX}/{slug}/"


def _message(report: AuditReport, finding: Finding) -> str:
    """Read as a failure: the check's title states the property the target lacks.
    The first sentence is the alert's title; the TLS note comes before the
    evidence, which may be cut."""
    text = f"Failed: {sarif_text(finding.title.rstrip('.'))}."
    if report.insecure_tls:
        text += f" {INSECURE_TLS_NOTE}."
    return f"{text} Evidence: {sarif_text(finding.evidence)}" if finding.evidence else text


def _notifications(report: AuditReport) -> list[dict[str, Any]]:
    """What the run's invocation says: the TLS warning first, then what was not tested."""
    notes: list[dict[str, Any]] = []
    if report.insecure_tls:
        notes.append({"level": "warning", "message": {"text": f"{INSECURE_TLS_NOTE}."}})
    notes += (
        {"level": "note", "message": {"text": f"Not tested: {sarif_text(reason)}"}}
        for reason in report.skipped
    )
    return notes


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
    grade: dict[str, Any] = {"grade": report.grade.letter, "score": report.grade.score}
    if report.insecure_tls:
        grade["insecureTls"] = True
    results = [
        {
            "ruleId": finding.check,
            "ruleIndex": rule_index[finding.check],
            "level": SARIF_LEVEL[finding.severity],
            "message": {"text": _message(report, finding)},
            "locations": [_location(report, finding)],
            "properties": {**grade, "severity": finding.severity, "target": report.target},
        }
        for finding in failed_sorted(report)
    ]
    driver: dict[str, Any] = {"name": TOOL_NAME, "rules": list(rules.values())}
    if tool_version:
        driver["version"] = tool_version
    return {
        "tool": {"driver": driver},
        "automationDetails": {"id": automation_id(report.target)},
        "invocations": [
            {
                "executionSuccessful": True,
                "toolExecutionNotifications": _notifications(report),
            }
        ],
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
