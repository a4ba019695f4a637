"""Known-vulnerable dependencies: installed distributions checked against OSV advisories.

Threat: the application (or Bastion itself) runs a library version with a published
vulnerability, and nobody notices because nothing in the deploy pipeline looks.
Defence: list the installed distributions, match them against OSV advisories (a local
export, or the osv.dev API), and report each hit with its fixed versions and severity,
as a table, JSON or SARIF, with an exit code CI can gate on.

Hostile input: an export or an API answer is data from outside. Every file and answer
is read with a byte cap, the number of files and advisories is capped, a zip is read
member by member in memory (never extracted, so no path traversal or zip bomb on disk),
and a malformed advisory is skipped with a warning, never a crash. Advisory ids from
the API are validated before they become part of a URL.
Fail closed: a finding whose severity is unknown counts as meeting any `--fail-on`
threshold, because we cannot show it is below it; a withdrawn advisory is ignored.

Not covered: vendored code, non-PyPI ecosystems, `GIT` ranges, CVSS v4 scoring (a v4
vector alone gives severity "unknown"), reachability of the vulnerable code.

References: OSV schema https://ossf.github.io/osv-schema/ (section "Evaluation" for
the range algorithm); osv.dev API https://google.github.io/osv.dev/post-v1-querybatch/ ;
PEP 503 (name normalisation); PEP 440 (versions); CVSS v3.1 specification
https://www.first.org/cvss/v3.1/specification-document sections 5 and 7, Appendix A;
SARIF 2.1.0 https://docs.oasis-open.org/sarif/sarif/v2.1.0/sarif-v2.1.0.html
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from packaging.version import InvalidVersion, Version

# --- constants ------------------------------------------------------------------------

ECOSYSTEM: Final = "PyPI"
# The osv.dev PyPI export holds about twenty thousand advisories; ten times that
# bounds a hostile or mistaken directory without refusing any real export.
MAX_ADVISORY_FILES: Final = 200_000
# The largest real advisories (long explicit `versions` lists) are a few hundred KiB.
MAX_ADVISORY_BYTES: Final = 4 * 1024 * 1024
# The whole PyPI export is well under 200 MiB uncompressed; this stops a zip bomb.
MAX_EXPORT_BYTES: Final = 1024 * 1024 * 1024
# osv.dev accepts at most 1000 queries per querybatch request.
QUERYBATCH_SIZE: Final = 1000
# A querybatch answer carries only ids; 16 MiB is far above 1000 packages' worth.
MAX_BATCH_RESPONSE_BYTES: Final = 16 * 1024 * 1024
# Advisories fetched one by one after the batch; more means a broken or hostile answer.
MAX_ONLINE_ADVISORIES: Final = 5_000
# Pages per query (`next_page_token`); osv.dev pages only very large result sets.
MAX_PAGES: Final = 10
NETWORK_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_OSV_API: Final = "https://api.osv.dev"
# OSV ids are `<PREFIX>-<id>` (GHSA-xxxx-xxxx-xxxx, PYSEC-2024-1, CVE-…); nothing else
# may reach the URL path.
_ADVISORY_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_NAME_SEPARATORS: Final = re.compile(r"[-_.]+")

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
_SARIF_LEVEL: Final[Mapping[str, str]] = {
    "critical": "error",
    "high": "error",
    "medium": "warning",
    "low": "note",
    "unknown": "warning",
}
SARIF_SCHEMA: Final = "https://json.schemastore.org/sarif-2.1.0.json"


class AdvisoryError(ValueError):
    """An advisory that does not follow the OSV schema (skipped, with a warning)."""


class OSVUnavailable(Exception):
    """The OSV API could not be queried (network, status, size or format)."""


# --- the core: data types ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Installed:
    name: str  # PEP 503 normalised
    version: str


@dataclass(frozen=True, slots=True)
class Event:
    kind: Literal["introduced", "fixed", "last_affected"]
    version: Version | None  # None is the "0" of `introduced`: before every version


@dataclass(frozen=True, slots=True)
class AffectedPackage:
    name: str  # PEP 503 normalised
    ranges: tuple[tuple[Event, ...], ...]
    versions: frozenset[str]  # explicit affected versions, as written
    severity: Severity


@dataclass(frozen=True, slots=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    summary: str
    affected: tuple[AffectedPackage, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    aliases: tuple[str, ...]
    package: str
    installed_version: str
    fixed_versions: tuple[str, ...]
    severity: Severity
    summary: str


@dataclass(slots=True)
class Report:
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    packages_checked: int = 0
    advisories_loaded: int = 0


def normalise_name(name: str) -> str:
    """PEP 503: runs of `-`, `_`, `.` become one `-`, lower case."""
    return _NAME_SEPARATORS.sub("-", name).lower()


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


# --- the core: parsing and matching ---------------------------------------------------


def _version(raw: object, advisory_id: str) -> Version:
    if not isinstance(raw, str):
        raise AdvisoryError(f"{advisory_id}: an event version is not a string")
    try:
        return Version(raw)
    except InvalidVersion:
        raise AdvisoryError(f"{advisory_id}: {raw[:40]!r} is not a PEP 440 version") from None


def _parse_range(raw: object, advisory_id: str) -> tuple[Event, ...] | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("events"), list):
        raise AdvisoryError(f"{advisory_id}: a range has no events list")
    if raw.get("type") not in ("ECOSYSTEM", "SEMVER"):
        return None  # GIT ranges name commits, not releases
    events: list[Event] = []
    for item in raw["events"]:
        if not isinstance(item, Mapping):
            raise AdvisoryError(f"{advisory_id}: an event is not an object")
        if "introduced" in item:
            value = item["introduced"]
            events.append(
                Event("introduced", None if value == "0" else _version(value, advisory_id))
            )
        elif "fixed" in item:
            events.append(Event("fixed", _version(item["fixed"], advisory_id)))
        elif "last_affected" in item:
            events.append(Event("last_affected", _version(item["last_affected"], advisory_id)))
        elif "limit" not in item:  # `limit` only matters for GIT ranges
            raise AdvisoryError(f"{advisory_id}: an event has no known kind")
    return tuple(events)


def parse_advisory(document: object) -> Advisory | None:
    """The PyPI part of one OSV advisory; None if withdrawn or not about PyPI.

    Raises AdvisoryError when the document does not follow the schema.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("id"), str):
        raise AdvisoryError("an advisory has no string id")
    advisory_id: str = document["id"][:128]
    if document.get("withdrawn"):
        return None
    aliases = document.get("aliases", [])
    affected_raw = document.get("affected", [])
    if not isinstance(aliases, list) or not isinstance(affected_raw, list):
        raise AdvisoryError(f"{advisory_id}: aliases or affected is not a list")
    summary = document.get("summary") or document.get("details") or ""
    top_severity = severity_of(document)
    affected: list[AffectedPackage] = []
    for entry in affected_raw:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("package"), Mapping):
            raise AdvisoryError(f"{advisory_id}: an affected entry has no package")
        package = entry["package"]
        if package.get("ecosystem") != ECOSYSTEM:
            continue
        name, versions = package.get("name"), entry.get("versions", [])
        ranges_raw = entry.get("ranges", [])
        if not isinstance(name, str) or not isinstance(versions, list):
            raise AdvisoryError(f"{advisory_id}: a package name or versions list is invalid")
        if not isinstance(ranges_raw, list) or not all(isinstance(v, str) for v in versions):
            raise AdvisoryError(f"{advisory_id}: ranges or versions are invalid")
        ranges = tuple(r for r in (_parse_range(raw, advisory_id) for raw in ranges_raw) if r)
        own = severity_of(entry)
        affected.append(
            AffectedPackage(
                normalise_name(name),
                ranges,
                frozenset(versions),
                own if own != "unknown" else top_severity,
            )
        )
    if not affected:
        return None
    return Advisory(
        advisory_id,
        tuple(str(a) for a in aliases if isinstance(a, str)),
        str(summary).strip().splitlines()[0][:200] if str(summary).strip() else "",
        tuple(affected),
    )


def in_range(version: Version, events: Sequence[Event]) -> bool:
    """The OSV evaluation algorithm over one range's events, sorted by version.

    Walking upwards, `introduced` at or below the version opens the range; `fixed`
    at or below it closes the range; `last_affected` strictly below it closes it.
    """
    ordered = sorted(events, key=lambda e: (e.version is not None, e.version or Version("0")))
    affected = False
    for event in ordered:
        if event.version is None:  # introduced "0"
            affected = True
        elif event.kind == "introduced":
            affected = affected or version >= event.version
        elif event.kind == "fixed":
            affected = affected and version < event.version
        else:  # last_affected
            affected = affected and version <= event.version
    return affected


def is_affected(installed_version: str, package: AffectedPackage) -> bool:
    try:
        version = Version(installed_version)
    except InvalidVersion:
        # Not PEP 440: only an exact entry in the explicit list can match.
        return installed_version in package.versions
    for listed in package.versions:
        try:
            if Version(listed) == version:
                return True
        except InvalidVersion:
            if listed == installed_version:
                return True
    return any(in_range(version, events) for events in package.ranges)


def _fixed_versions(package: AffectedPackage) -> tuple[str, ...]:
    fixed = {e.version for events in package.ranges for e in events if e.kind == "fixed"}
    return tuple(str(v) for v in sorted(v for v in fixed if v is not None))


def match(installed: Iterable[Installed], advisories: Iterable[Advisory]) -> list[Finding]:
    """Findings, one per vulnerability and package; an advisory whose id is an alias
    of one already reported for that package (PYSEC and GHSA of one CVE) is dropped."""
    by_name: dict[str, list[Advisory]] = {}
    for advisory in sorted(advisories, key=lambda a: a.id):
        for package in advisory.affected:
            by_name.setdefault(package.name, []).append(advisory)
    findings: list[Finding] = []
    for dist in sorted(installed, key=lambda d: d.name):
        seen: set[str] = set()
        for advisory in by_name.get(dist.name, []):
            if advisory.id in seen:
                continue
            hits = [
                p for p in advisory.affected if p.name == dist.name and is_affected(dist.version, p)
            ]
            if not hits:
                continue
            seen.update((advisory.id, *advisory.aliases))
            fixed = sorted({v for p in hits for v in _fixed_versions(p)}, key=Version)
            severity = max((p.severity for p in hits), key=lambda s: _RANK.get(s, 0))
            findings.append(
                Finding(
                    advisory.id,
                    advisory.aliases,
                    dist.name,
                    dist.version,
                    tuple(fixed),
                    severity,
                    advisory.summary,
                )
            )
    return findings


def parse_documents(documents: Iterable[tuple[str, bytes]], report: Report) -> dict[str, Advisory]:
    """Advisories by id from (source name, raw bytes); bad ones become warnings."""
    advisories: dict[str, Advisory] = {}
    for source, raw in documents:
        try:
            advisory = parse_advisory(json.loads(raw))
        except (AdvisoryError, ValueError, RecursionError) as exc:
            reason = exc if isinstance(exc, AdvisoryError) else "not valid JSON"
            report.warnings.append(f"skipped malformed advisory {source}: {reason}")
            continue
        if advisory is not None:
            advisories[advisory.id] = advisory
    return advisories


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
        results.append(
            {
                "ruleId": f.id,
                "level": _SARIF_LEVEL[f.severity],
                "message": {
                    "text": f"{f.package} {f.installed_version} is affected by {f.id}"
                    f" ({f.severity}); fixed in: {fixed}"
                },
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


# --- I/O: installed distributions, local exports, the OSV API ------------------------


def installed_distributions() -> list[Installed]:
    from importlib.metadata import distributions

    found: dict[str, Installed] = {}
    for dist in distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if isinstance(name, str) and name and dist.version:
            found.setdefault(normalise_name(name), Installed(normalise_name(name), dist.version))
    return sorted(found.values(), key=lambda d: d.name)


def _read_export(path: Path, report: Report) -> Iterator[tuple[str, bytes]]:
    """Raw advisory documents from a directory of JSON files or a zip of them."""
    total = 0
    if path.is_dir():
        members = sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
        if len(members) > MAX_ADVISORY_FILES:
            raise ValueError(f"{path}: more than {MAX_ADVISORY_FILES} advisory files")
        for member in members:
            with member.open("rb") as handle:
                raw = handle.read(MAX_ADVISORY_BYTES + 1)
            if len(raw) > MAX_ADVISORY_BYTES:
                report.warnings.append(f"skipped oversized advisory {member.name}")
                continue
            total += len(raw)
            if total > MAX_EXPORT_BYTES:
                raise ValueError(f"{path}: export larger than {MAX_EXPORT_BYTES} bytes")
            yield member.name, raw
        return
    with zipfile.ZipFile(path) as archive:
        infos = [i for i in archive.infolist() if i.filename.endswith(".json")]
        if len(infos) > MAX_ADVISORY_FILES:
            raise ValueError(f"{path}: more than {MAX_ADVISORY_FILES} advisory files")
        for info in infos:
            # `file_size` is what the archive claims; the capped read is what we trust.
            with archive.open(info) as handle:
                raw = handle.read(MAX_ADVISORY_BYTES + 1)
            if len(raw) > MAX_ADVISORY_BYTES:
                report.warnings.append(f"skipped oversized advisory {info.filename[:100]}")
                continue
            total += len(raw)
            if total > MAX_EXPORT_BYTES:
                raise ValueError(f"{path}: export larger than {MAX_EXPORT_BYTES} bytes")
            yield info.filename[:100], raw


def load_export(path: Path, report: Report) -> dict[str, Advisory]:
    """Advisories from a local OSV export. Raises OSError or ValueError if unreadable."""
    try:
        return parse_documents(_read_export(path, report), report)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a directory or a zip of OSV advisories") from exc


def _read_capped(response: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise OSVUnavailable(f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def query_osv(
    packages: Sequence[Installed], report: Report, *, base_url: str = DEFAULT_OSV_API
) -> dict[str, Advisory]:
    """Ask osv.dev which advisories affect `packages`, then fetch each advisory.

    The batch endpoint answers with ids only; each advisory is fetched in full and
    matched locally, so the verdict never rests on the server's matching alone.
    Raises OSVUnavailable on any network, status, size or format failure.
    """
    import httpx

    base = base_url.rstrip("/")
    ids: set[str] = set()
    try:
        with httpx.Client(timeout=NETWORK_TIMEOUT_SECONDS, follow_redirects=False) as client:

            def post(body: Mapping[str, Any]) -> Any:
                with client.stream("POST", f"{base}/v1/querybatch", json=body) as response:
                    response.raise_for_status()
                    return json.loads(_read_capped(response, MAX_BATCH_RESPONSE_BYTES))

            for start in range(0, len(packages), QUERYBATCH_SIZE):
                pending: list[dict[str, Any]] = [
                    {"package": {"name": p.name, "ecosystem": ECOSYSTEM}, "version": p.version}
                    for p in packages[start : start + QUERYBATCH_SIZE]
                ]
                for _ in range(MAX_PAGES):
                    answer = post({"queries": pending})
                    results = answer.get("results") if isinstance(answer, dict) else None
                    if not isinstance(results, list) or len(results) != len(pending):
                        raise OSVUnavailable("querybatch answer has the wrong shape")
                    again: list[dict[str, Any]] = []
                    for query, result in zip(pending, results, strict=True):
                        vulns = result.get("vulns", []) if isinstance(result, dict) else None
                        if not isinstance(vulns, list):
                            raise OSVUnavailable("querybatch answer has the wrong shape")
                        for vuln in vulns:
                            vuln_id = vuln.get("id") if isinstance(vuln, dict) else None
                            if not isinstance(vuln_id, str) or not _ADVISORY_ID.match(vuln_id):
                                raise OSVUnavailable("querybatch answer has an invalid id")
                            ids.add(vuln_id)
                        token = result.get("next_page_token")
                        if isinstance(token, str) and token:
                            again.append({**query, "page_token": token})
                    if not again:
                        break
                    pending = again
                if len(ids) > MAX_ONLINE_ADVISORIES:
                    raise OSVUnavailable(f"more than {MAX_ONLINE_ADVISORIES} advisories")
            documents: list[tuple[str, bytes]] = []
            for vuln_id in sorted(ids):
                with client.stream("GET", f"{base}/v1/vulns/{vuln_id}") as response:
                    response.raise_for_status()
                    documents.append((vuln_id, _read_capped(response, MAX_ADVISORY_BYTES)))
    except httpx.HTTPError as exc:
        raise OSVUnavailable(f"{type(exc).__name__}: {exc}") from None
    except ValueError:
        raise OSVUnavailable("the answer is not valid JSON") from None
    return parse_documents(documents, report)
