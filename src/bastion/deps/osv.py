"""OSV advisories: parsing the PyPI part, and matching installed versions against it.

Threat: the application (or Bastion itself) runs a library version with a published
vulnerability, and a hostile or malformed advisory hides it or crashes the check.
Defence: each advisory is parsed against the OSV schema; a malformed one is skipped
with a warning, never a crash; a withdrawn advisory is ignored. Ids and aliases must
look like OSV ids (an alias that does not is dropped) and a file name in a warning
has its control characters escaped, so what an export or a server wrote cannot drive
the terminal the table or a warning is printed on (an escape sequence in an id).
Ranges are evaluated with the OSV algorithm over PEP 440 versions, explicit
`versions` lists are honoured, and one finding is reported per vulnerability and
package (an advisory whose id is an alias of one already reported, PYSEC and GHSA of
one CVE, is dropped), with its fixed versions and severity.

Not covered: vendored code, non-PyPI ecosystems, `GIT` ranges, reachability of the
vulnerable code.

References: OSV schema https://ossf.github.io/osv-schema/ (section "Evaluation" for
the range algorithm); PEP 503 (name normalisation); PEP 440 (versions).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from packaging.version import InvalidVersion, Version

from bastion.deps.severity import _RANK, Severity, severity_of

ECOSYSTEM: Final = "PyPI"
_NAME_SEPARATORS: Final = re.compile(r"[-_.]+")
# OSV ids are `<PREFIX>-<id>` (GHSA-xxxx-xxxx-xxxx, PYSEC-2024-1, CVE-…): printed in
# the table and put in URL paths, so nothing else is taken for one.
ADVISORY_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class AdvisoryError(ValueError):
    """An advisory that does not follow the OSV schema (skipped, with a warning)."""


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


def shown(untrusted: str) -> str:
    """A name from an export (a file or zip member name) fit for a terminal: control
    and format characters escaped as Python writes them (`\\x1b`)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in untrusted)


def normalise_name(name: str) -> str:
    """PEP 503: runs of `-`, `_`, `.` become one `-`, lower case."""
    return _NAME_SEPARATORS.sub("-", name).lower()


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
    advisory_id: str = document["id"]
    if not ADVISORY_ID.match(advisory_id):
        raise AdvisoryError("an advisory id is not an OSV id")
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
        tuple(a for a in aliases if isinstance(a, str) and ADVISORY_ID.match(a)),
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
            report.warnings.append(f"skipped malformed advisory {shown(source)}: {reason}")
            continue
        if advisory is not None:
            advisories[advisory.id] = advisory
    return advisories
