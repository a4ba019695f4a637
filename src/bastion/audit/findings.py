"""What an audit finds: the shared data model of probes, grading and reports.

Threat: a weakness the auditor saw but reported vaguely (no evidence, no fix, no
stable id), so nobody can act on it or fail CI on it.
Defence: every probe result is a `Finding` with a stable check id, a severity, the
evidence that was observed (redacted: never a cookie value or token), and a fix.
A passed check is reported too, so "not tested" and "tested and fine" differ.

Not covered: this module decides nothing; probes (`bastion.audit.probes`) decide,
`bastion.audit.observatory` grades headers, `bastion.audit.report` writes the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

Severity = Literal["critical", "high", "medium", "low", "info"]

SEVERITIES: Final[tuple[Severity, ...]] = ("critical", "high", "medium", "low", "info")
"""Most severe first; `--fail-on high` fails on `high` and `critical`."""

_RANK: Final = {name: rank for rank, name in enumerate(reversed(SEVERITIES))}


def at_least(severity: Severity, threshold: Severity) -> bool:
    """Whether `severity` is `threshold` or more severe."""
    return _RANK[severity] >= _RANK[threshold]


@dataclass(frozen=True, slots=True)
class Finding:
    """One probe's verdict on one aspect of the target."""

    check: str
    """Stable id, `area.name` (`csrf.cross-site-post`, `headers.csp-missing`)."""
    title: str
    """One line a person reads first."""
    severity: Severity
    """How bad it is when the check fails (kept on passed checks too)."""
    passed: bool
    evidence: str
    """What was sent and seen, redacted: method, path, status, the header involved."""
    fix: str
    """What to change; names the Bastion setting when there is one."""
    route: str = ""
    """`METHOD /path` the finding is about, or "" for the whole target."""
    references: tuple[str, ...] = ()
    """Links to the spec or guidance (OWASP, MDN, RFC)."""


@dataclass(frozen=True, slots=True)
class ObservatoryTest:
    """One MDN HTTP Observatory test: its result id and score modifier."""

    name: str
    """The Observatory test name (`content-security-policy`, `cookies`, ...)."""
    result: str
    """The Observatory result id (`csp-implemented-with-no-unsafe`, ...)."""
    modifier: int
    passed: bool
    description: str


@dataclass(frozen=True, slots=True)
class Grade:
    """The header grade, computed the way the MDN HTTP Observatory computes it."""

    score: int
    letter: str
    tests: tuple[ObservatoryTest, ...]


@dataclass(slots=True)
class AuditReport:
    """Everything one audit of one target found."""

    target: str
    """What was audited: `module:attr`, a URL, or a demo label."""
    grade: Grade
    findings: list[Finding] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    """The routes probed, `METHOD /path`."""
    requests_sent: int = 0
    duration_seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    """What was not tested, and why (no login recipe, writes not allowed, ...):
    a check absent from `findings` is not a check passed."""
    insecure_tls: bool = False
    """TLS certificates were not verified (`--insecure`): whatever answered may not
    be the target, so every writer says so beside the grade."""

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if not f.passed]

    def fails_at(self, threshold: Severity) -> bool:
        """Whether any failed finding is `threshold` or more severe (for `--fail-on`)."""
        return any(at_least(f.severity, threshold) for f in self.failed)
