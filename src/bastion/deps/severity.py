"""Severity of an OSV advisory: the curated word, else the CVSS v3 base score.

Threat: a finding whose severity is misread (or unreadable) slips under the
`--fail-on` threshold that CI gates on.
Defence: `database_specific.severity` (curated) first, then a CVSS v3.0/v3.1 vector
scored exactly as the specification says (its own round-up, free of float
artefacts); anything else is "unknown". Fail closed: a finding whose severity is
unknown counts as meeting any `--fail-on` threshold, because we cannot show it is
below it.

Not covered: CVSS v4 scoring (a v4 vector alone gives severity "unknown"); temporal
and environmental CVSS metrics.

References: CVSS v3.1 specification
https://www.first.org/cvss/v3.1/specification-document sections 5 and 7, Appendix A;
OSV schema https://ossf.github.io/osv-schema/ (`severity`, `database_specific`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal

Severity = Literal["unknown", "low", "medium", "high", "critical"]
Threshold = Literal["low", "medium", "high", "critical"]
_RANK: Final[Mapping[str, int]] = {"low": 1, "medium": 2, "high": 3, "critical": 4}
_DATABASE_SEVERITY: Final[Mapping[str, Severity]] = {
    "LOW": "low",
    "MODERATE": "medium",  # GitHub's word for it
    "MEDIUM": "medium",
    "HIGH": "high",
    "CRITICAL": "critical",
}

# --- the core: severity ---------------------------------------------------------------


def _roundup(value: float) -> float:
    """CVSS v3.1 Appendix A: round up to one decimal, free of float artefacts."""
    as_int = round(value * 100_000)
    if as_int % 10_000 == 0:
        return as_int / 100_000.0
    return (math.floor(as_int / 10_000) + 1) / 10.0


_CVSS3_WEIGHTS: Final[Mapping[str, Mapping[str, float]]] = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
_CVSS3_PR: Final[Mapping[tuple[str, str], float]] = {
    ("N", "U"): 0.85,
    ("L", "U"): 0.62,
    ("H", "U"): 0.27,
    ("N", "C"): 0.85,
    ("L", "C"): 0.68,
    ("H", "C"): 0.5,
}


def cvss3_base_score(vector: str) -> float | None:
    """The CVSS v3.0/v3.1 base score of a vector string, or None if it is not one."""
    parts = vector.split("/")
    if not parts or parts[0] not in ("CVSS:3.0", "CVSS:3.1"):
        return None
    metrics: dict[str, str] = {}
    for part in parts[1:]:
        name, _, value = part.partition(":")
        metrics[name] = value
    try:
        scope = metrics["S"]
        pr = _CVSS3_PR[(metrics["PR"], scope)]
        w = {name: _CVSS3_WEIGHTS[name][metrics[name]] for name in _CVSS3_WEIGHTS}
    except KeyError:
        return None
    if scope not in ("U", "C"):
        return None
    iss = 1 - (1 - w["C"]) * (1 - w["I"]) * (1 - w["A"])
    # Section 7.1: a changed scope scales impact differently.
    unchanged = scope == "U"
    impact = 6.42 * iss if unchanged else 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15
    exploitability = 8.22 * w["AV"] * w["AC"] * pr * w["UI"]
    if impact <= 0:
        return 0.0
    total = impact + exploitability if unchanged else 1.08 * (impact + exploitability)
    return _roundup(min(total, 10.0))


def severity_from_score(score: float) -> Severity:
    """CVSS v3.1 section 5 ratings; a score of 0.0 ("None") is reported as low."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low"


def severity_of(document: Mapping[str, Any]) -> Severity:
    """`database_specific.severity` (curated) first, then a CVSS v3 vector, else unknown."""
    database = document.get("database_specific")
    if isinstance(database, Mapping):
        word = database.get("severity")
        if isinstance(word, str) and word.upper() in _DATABASE_SEVERITY:
            return _DATABASE_SEVERITY[word.upper()]
    entries = document.get("severity")
    if isinstance(entries, list):
        for entry in entries:
            if not isinstance(entry, Mapping) or entry.get("type") != "CVSS_V3":
                continue
            score = entry.get("score")
            base = cvss3_base_score(score) if isinstance(score, str) else None
            if base is not None:
                return severity_from_score(base)
    return "unknown"


def meets_threshold(severity: Severity, threshold: Threshold) -> bool:
    # Unknown fails closed: we cannot show the finding is below the threshold.
    return severity == "unknown" or _RANK[severity] >= _RANK[threshold]
