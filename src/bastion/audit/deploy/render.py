"""Deploy findings as text for people and JSON for machines, and the exit status.

Both writers print only what the findings hold: ids, severities, messages, hints
and setting names. Findings never carry a secret's value (see `checks.finding`), so
neither output can.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from bastion.audit.deploy.checks import sort_key
from bastion.audit.deploy.model import DeployFinding
from bastion.audit.findings import SEVERITIES, Severity, at_least

EXIT_OK = 0
EXIT_FINDINGS = 1

_ID_WIDTH = 16  # the longest ids (`websocket.W006`) are 14 characters
_SEVERITY_WIDTH = max(len(name) for name in SEVERITIES)


def _summary(findings: Sequence[DeployFinding]) -> str:
    if not findings:
        return "bastion check: no findings"
    counts = Counter(item.severity for item in findings)
    parts = ", ".join(f"{counts[name]} {name}" for name in SEVERITIES if counts[name])
    noun = "finding" if len(findings) == 1 else "findings"
    return f"bastion check: {len(findings)} {noun} ({parts})"


def render_text(findings: Sequence[DeployFinding]) -> str:
    """One line per finding (`id  severity  message`, then its `HINT:`), most severe
    first, and a summary line, as Django's `check --deploy` prints."""
    lines: list[str] = []
    for item in sorted(findings, key=sort_key):
        lines.append(f"{item.id:<{_ID_WIDTH}}  {item.severity:<{_SEVERITY_WIDTH}}  {item.message}")
        lines.append(f"    HINT: {item.hint}")
    lines.append(_summary(findings))
    return "\n".join(lines) + "\n"


def render_json(findings: Sequence[DeployFinding]) -> str:
    """`{"findings": [...], "summary": {"total": n, "<severity>": n, ...}}`, sorted
    as the text is."""
    counts = Counter(item.severity for item in findings)
    summary: dict[str, int] = {"total": len(findings)}
    summary.update((name, counts[name]) for name in SEVERITIES)
    document = {
        "findings": [
            {
                "id": item.id,
                "severity": item.severity,
                "setting": item.setting,
                "message": item.message,
                "hint": item.hint,
            }
            for item in sorted(findings, key=sort_key)
        ],
        "summary": summary,
    }
    return json.dumps(document, indent=2)


def exit_code(findings: Sequence[DeployFinding], fail_on: Severity) -> int:
    """1 if any finding is `fail_on` or more severe, else 0 (for `--fail-on`)."""
    failed = any(at_least(item.severity, fail_on) for item in findings)
    return EXIT_FINDINGS if failed else EXIT_OK
