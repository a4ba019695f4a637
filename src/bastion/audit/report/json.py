"""The audit as JSON, for scripts: stable keys, and a reader for them.

Threat: a script that fails CI on the wrong thing, or silently on nothing, because
a key changed meaning or moved between versions.
Defence: the document names its format (`JSON_FORMAT`); the keys are the ones
`JSON_KEYS` documents, spelt out here rather than derived from the dataclasses, so
a new field on `Finding` does not change the format by accident; `parse_json`
reads it back and refuses another format. `insecure_tls` is always written, so a
script can refuse a grade from an audit that did not verify TLS certificates.
The text is written by `escape.inert_json`: a bidi override or terminal escape the
audited site put in a header reads back unchanged, but is written as `\\u202e`, so
the document is safe to print.

Not covered: reading other versions of the format.

References: RFC 8259 (JSON) https://www.rfc-editor.org/rfc/rfc8259
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bastion.audit.findings import SEVERITIES, AuditReport, Finding, Grade, Severity
from bastion.audit.observatory.scoring import ObservedTest
from bastion.audit.report.common import count_failed
from bastion.audit.report.escape import inert_json

JSON_FORMAT: Final = "bastion-audit/1"
# The keys of one Observatory test and of one finding, in the order written.
_TEST_KEYS: Final = ("name", "result", "modifier", "passed", "description", "evidence")
_FINDING_KEYS: Final = (
    "check",
    "title",
    "severity",
    "passed",
    "evidence",
    "fix",
    "route",
    "references",
)
JSON_KEYS: Final = {
    "format": f'always "{JSON_FORMAT}"; a new name if a key changes meaning',
    "targets": "one object per audited target, in the order given",
    "targets[].target": "what was audited: module:attr, a URL or a demo label",
    "targets[].insecure_tls": "true when TLS certificates were not verified (--insecure): "
    "the grade and findings may describe whatever answered, not the target",
    "targets[].grade": f"{{letter, score, tests: [{{{', '.join(_TEST_KEYS)}}}]}}, "
    "the MDN HTTP Observatory grade",
    "targets[].summary": "{findings, failed, failed_by_severity: {critical..info}}",
    "targets[].findings": f"[{{{', '.join(_FINDING_KEYS)}}}], passed and failed",
    "targets[].routes": "the routes probed, METHOD /path",
    "targets[].requests_sent": "how many requests the audit sent",
    "targets[].duration_seconds": "how long it took",
    "targets[].skipped": "[reason], what was not tested and why (a missing check is not a pass)",
}
"""The JSON report's keys, as documentation and as the test's contract."""


def _fields(item: object, keys: Sequence[str]) -> dict[str, Any]:
    """`item`'s attributes named by `keys`, in that order; one it lacks is ""
    (a plain `ObservatoryTest` has no evidence)."""
    return {key: getattr(item, key, "") for key in keys}


def report_dict(report: AuditReport) -> dict[str, Any]:
    """One target as the JSON report writes it (keys: `JSON_KEYS`)."""
    return {
        "target": report.target,
        "insecure_tls": report.insecure_tls,
        "grade": {
            "letter": report.grade.letter,
            "score": report.grade.score,
            "tests": [_fields(test, _TEST_KEYS) for test in report.grade.tests],
        },
        "summary": {
            "findings": len(report.findings),
            "failed": len(report.failed),
            "failed_by_severity": count_failed(report),
        },
        "findings": [
            {**_fields(f, _FINDING_KEYS), "references": list(f.references)} for f in report.findings
        ],
        "routes": list(report.routes),
        "requests_sent": report.requests_sent,
        "duration_seconds": report.duration_seconds,
        "skipped": list(report.skipped),
    }


def render_json(reports: Sequence[AuditReport]) -> str:
    return inert_json({"format": JSON_FORMAT, "targets": [report_dict(r) for r in reports]})


def _severity(value: object) -> Severity:
    for severity in SEVERITIES:
        if value == severity:
            return severity
    raise ValueError(f"unknown severity {value!r}")


def _insecure_tls(target: Mapping[str, object]) -> bool:
    # Absent in documents written before the key existed; anything but a boolean
    # is refused rather than read as "verified".
    value = target.get("insecure_tls", False)
    if not isinstance(value, bool):
        raise ValueError("insecure_tls must be true or false")
    return value


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
                skipped=[str(reason) for reason in target.get("skipped", [])],
                insecure_tls=_insecure_tls(target),
            )
        )
    return reports
