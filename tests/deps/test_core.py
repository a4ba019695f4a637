"""The pure core of bastion.deps: range evaluation, severity, parsing, output."""

from __future__ import annotations

import json
from typing import Any

import pytest
from packaging.version import Version

from bastion.deps import (
    SARIF_SCHEMA,
    AffectedPackage,
    Event,
    Finding,
    Installed,
    Report,
    cvss3_base_score,
    in_range,
    is_affected,
    match,
    meets_threshold,
    normalise_name,
    parse_advisory,
    parse_documents,
    render_json,
    render_sarif,
    render_table,
    severity_of,
)


def advisory(*affected: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "TEST-1", "aliases": ["CVE-0000-1"], "affected": list(affected), **extra}


def pypi(name: str, *events: dict[str, Any], versions: tuple[str, ...] = ()) -> dict[str, Any]:
    entry: dict[str, Any] = {"package": {"ecosystem": "PyPI", "name": name}}
    if events:
        entry["ranges"] = [{"type": "ECOSYSTEM", "events": list(events)}]
    if versions:
        entry["versions"] = list(versions)
    return entry


def package(*events: dict[str, str], versions: tuple[str, ...] = ()) -> AffectedPackage:
    parsed = parse_advisory(advisory(pypi("lib", *events, versions=versions)))
    assert parsed is not None
    return parsed.affected[0]


INTRO_0 = {"introduced": "0"}

RANGES = [
    pytest.param([INTRO_0, {"fixed": "1.2"}], "1.1.9", True, id="below-fixed"),
    pytest.param([INTRO_0, {"fixed": "1.2"}], "1.2", False, id="at-fixed"),
    pytest.param([INTRO_0, {"fixed": "1.2"}], "1.2.0", False, id="at-fixed-padded"),
    pytest.param([INTRO_0, {"fixed": "1.2"}], "1.3", False, id="above-fixed"),
    pytest.param([{"introduced": "1.0"}, {"fixed": "1.2"}], "0.9", False, id="below-introduced"),
    pytest.param([{"introduced": "1.0"}, {"fixed": "1.2"}], "1.0", True, id="at-introduced"),
    pytest.param([INTRO_0, {"last_affected": "1.2"}], "1.2", True, id="at-last-affected"),
    pytest.param([INTRO_0, {"last_affected": "1.2"}], "1.2.post1", False, id="after-last"),
    pytest.param([INTRO_0], "1000", True, id="never-fixed"),
    pytest.param([{"fixed": "2.0"}, INTRO_0], "1.0", True, id="events-unsorted"),
    pytest.param(
        [INTRO_0, {"fixed": "1.0"}, {"introduced": "2.0"}, {"fixed": "2.1"}],
        "1.5",
        False,
        id="between-two-ranges",
    ),
    pytest.param(
        [INTRO_0, {"fixed": "1.0"}, {"introduced": "2.0"}, {"fixed": "2.1"}],
        "2.0.5",
        True,
        id="in-second-range",
    ),
    # Pre-releases sort before their release (PEP 440).
    pytest.param([INTRO_0, {"fixed": "2.0"}], "2.0rc1", True, id="prerelease-before-fix"),
    pytest.param([{"introduced": "2.0"}], "2.0rc1", False, id="prerelease-before-intro"),
    pytest.param([{"introduced": "2.0b1"}, {"fixed": "2.0"}], "2.0b2", True, id="prerelease-in"),
    pytest.param([INTRO_0, {"fixed": "2.0rc2"}], "2.0rc1", True, id="fixed-in-prerelease"),
    pytest.param([INTRO_0, {"fixed": "2.0rc2"}], "2.0", False, id="release-after-fixed-rc"),
]


@pytest.mark.parametrize(("events", "installed", "expected"), RANGES)
def test_range_evaluation(events: list[dict[str, str]], installed: str, expected: bool) -> None:
    assert is_affected(installed, package(*events)) is expected


EXPLICIT = [
    pytest.param(("1.0", "1.1"), "1.1", True, id="listed"),
    pytest.param(("1.0", "1.1"), "1.1.0", True, id="listed-normalised"),
    pytest.param(("1.0", "1.1"), "1.2", False, id="not-listed"),
    pytest.param(("2004d",), "2004d", True, id="legacy-version-exact"),
    pytest.param(("2004d",), "2004e", False, id="legacy-version-other"),
]


@pytest.mark.parametrize(("versions", "installed", "expected"), EXPLICIT)
def test_explicit_versions(versions: tuple[str, ...], installed: str, expected: bool) -> None:
    assert is_affected(installed, package(versions=versions)) is expected


def test_in_range_with_no_events_is_not_affected() -> None:
    assert in_range(Version("1.0"), ()) is False
    assert in_range(Version("1.0"), (Event("fixed", Version("2.0")),)) is False


CVSS = [
    pytest.param("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8, id="9.8"),
    pytest.param("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0, id="10.0-changed"),
    pytest.param("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8, id="7.8"),
    pytest.param("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1, id="6.1-xss"),
    pytest.param("CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:N/A:N", 3.7, id="3.7-v3.0"),
    pytest.param("CVSS:3.1/AV:N/AC:L/PR:H/UI:R/S:C/C:L/I:L/A:N", 4.8, id="4.8-pr-high-changed"),
    pytest.param("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0, id="no-impact"),
]


@pytest.mark.parametrize(("vector", "score"), CVSS)
def test_cvss3_base_score(vector: str, score: float) -> None:
    assert cvss3_base_score(vector) == score


@pytest.mark.parametrize(
    "vector",
    [
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        "CVSS:3.1/AV:N/AC:L",
        "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "AV:N/AC:L/Au:N/C:P/I:P/A:P",
        "",
    ],
)
def test_cvss3_refuses_what_it_cannot_score(vector: str) -> None:
    assert cvss3_base_score(vector) is None


def cvss(vector: str) -> dict[str, Any]:
    return {"severity": [{"type": "CVSS_V3", "score": vector}]}


SEVERITIES = [
    pytest.param({"database_specific": {"severity": "LOW"}}, "low", id="db-low"),
    pytest.param({"database_specific": {"severity": "MODERATE"}}, "medium", id="db-moderate"),
    pytest.param({"database_specific": {"severity": "high"}}, "high", id="db-lowercase"),
    pytest.param({"database_specific": {"severity": "CRITICAL"}}, "critical", id="db-critical"),
    pytest.param(cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"), "critical", id="cvss"),
    pytest.param(cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"), "medium", id="cvss-6.1"),
    pytest.param(cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N"), "low", id="cvss-zero"),
    pytest.param(
        {"database_specific": {"severity": "LOW"}}
        | cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
        "low",
        id="db-wins-over-cvss",
    ),
    pytest.param(cvss("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H"), "unknown", id="cvss4-only"),
    pytest.param({"database_specific": {"severity": "SEVERE"}}, "unknown", id="db-unknown-word"),
    pytest.param({"severity": "HIGH"}, "unknown", id="severity-not-a-list"),
    pytest.param({}, "unknown", id="none"),
]


@pytest.mark.parametrize(("document", "expected"), SEVERITIES)
def test_severity_mapping(document: dict[str, Any], expected: str) -> None:
    assert severity_of(document) == expected


def test_affected_level_severity_overrides_the_advisory() -> None:
    entry = pypi("lib", INTRO_0) | {"database_specific": {"severity": "LOW"}}
    parsed = parse_advisory(advisory(entry, database_specific={"severity": "CRITICAL"}))
    assert parsed is not None
    assert parsed.affected[0].severity == "low"


THRESHOLDS = [
    pytest.param("low", "low", True, id="low-at-low"),
    pytest.param("medium", "high", False, id="medium-below-high"),
    pytest.param("critical", "high", True, id="critical-above-high"),
    pytest.param("high", "critical", False, id="high-below-critical"),
    pytest.param("unknown", "critical", True, id="unknown-fails-closed"),
]


@pytest.mark.parametrize(("severity", "threshold", "expected"), THRESHOLDS)
def test_threshold(severity: Any, threshold: Any, expected: bool) -> None:
    assert meets_threshold(severity, threshold) is expected


MALFORMED = [
    pytest.param([], id="not-an-object"),
    pytest.param({"affected": []}, id="no-id"),
    pytest.param({"id": 7}, id="id-not-string"),
    pytest.param({"id": "X", "affected": {}}, id="affected-not-list"),
    pytest.param({"id": "X", "aliases": "CVE-1"}, id="aliases-not-list"),
    pytest.param({"id": "X", "affected": ["starlette"]}, id="affected-entry-not-object"),
    pytest.param({"id": "X", "affected": [{"package": "x"}]}, id="package-not-object"),
    pytest.param(advisory(pypi("lib", {"fixed": "not a version!"})), id="bad-event-version"),
    pytest.param(advisory(pypi("lib", {"fixed": 2})), id="event-version-not-string"),
    pytest.param(advisory(pypi("lib", {"sometime": "1.0"})), id="unknown-event"),
    pytest.param(
        advisory(
            {"package": {"ecosystem": "PyPI", "name": "x"}, "ranges": [{"type": "ECOSYSTEM"}]}
        ),
        id="range-without-events",
    ),
    pytest.param(
        advisory({"package": {"ecosystem": "PyPI", "name": "x"}, "versions": [1]}),
        id="version-not-string",
    ),
]


@pytest.mark.parametrize("document", MALFORMED)
def test_malformed_advisory_is_skipped_with_a_warning(document: object) -> None:
    report = Report()
    good = json.dumps(advisory(pypi("lib", INTRO_0), id="GOOD-1")).encode()
    parsed = parse_documents([("bad.json", json.dumps(document).encode()), ("ok", good)], report)
    assert list(parsed) == ["GOOD-1"]
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith("skipped malformed advisory bad.json")


@pytest.mark.parametrize(
    "raw", [b"{", b"\xff\xfe", b"[" * 100_000], ids=["truncated", "not-utf8", "deep"]
)
def test_unparsable_json_is_skipped_with_a_warning(raw: bytes) -> None:
    report = Report()
    assert parse_documents([("bad.json", raw)], report) == {}
    assert report.warnings == ["skipped malformed advisory bad.json: not valid JSON"]


def test_withdrawn_non_pypi_and_git_ranges_are_ignored() -> None:
    assert parse_advisory(advisory(pypi("lib", INTRO_0), withdrawn="2024-01-01")) is None
    npm = {"package": {"ecosystem": "npm", "name": "lib"}, "ranges": []}
    assert parse_advisory(advisory(npm)) is None
    git = pypi("lib") | {
        "ranges": [{"type": "GIT", "repo": "https://x", "events": [{"introduced": "abc"}]}]
    }
    parsed = parse_advisory(advisory(git))
    assert parsed is not None
    assert parsed.affected[0].ranges == ()
    assert not is_affected("1.0", parsed.affected[0])


def test_names_are_normalised_per_pep_503() -> None:
    assert normalise_name("Foo.Bar__baz-QUX") == "foo-bar-baz-qux"
    parsed = parse_advisory(advisory(pypi("Zope.Interface", INTRO_0)))
    assert parsed is not None
    findings = match([Installed("zope-interface", "5.0")], [parsed])
    assert [f.package for f in findings] == ["zope-interface"]


def test_match_reports_fixed_versions_and_drops_aliased_duplicates() -> None:
    ghsa = parse_advisory(
        advisory(
            pypi("lib", INTRO_0, {"fixed": "1.10"}, {"introduced": "2.0"}, {"fixed": "2.3"}),
            id="GHSA-aaaa-bbbb-cccc",
            aliases=["CVE-2099-1", "PYSEC-2099-1"],
            database_specific={"severity": "MODERATE"},
        )
    )
    pysec = parse_advisory(
        advisory(pypi("lib", INTRO_0, {"fixed": "1.10"}), id="PYSEC-2099-1", aliases=[])
    )
    other = parse_advisory(advisory(pypi("other", INTRO_0), id="OTHER-1"))
    assert ghsa is not None
    assert pysec is not None
    assert other is not None
    findings = match([Installed("lib", "1.9"), Installed("safe", "1.0")], [pysec, ghsa, other])
    assert findings == [
        Finding(
            id="GHSA-aaaa-bbbb-cccc",
            aliases=("CVE-2099-1", "PYSEC-2099-1"),
            package="lib",
            installed_version="1.9",
            fixed_versions=("1.10", "2.3"),
            severity="medium",
            summary="",
        )
    ]


FINDINGS = [
    Finding("GHSA-1", ("CVE-1",), "lib", "1.0", ("1.1",), "critical", "Bad thing"),
    Finding("PYSEC-2", (), "lib", "1.0", (), "unknown", ""),
    Finding("PYSEC-3", (), "other", "0.1", ("0.2",), "low", "Small thing"),
]


def test_sarif_is_a_minimal_valid_2_1_0_log() -> None:
    log = json.loads(render_sarif(Report(findings=list(FINDINGS)), tool_version="0.1.0"))
    assert log["$schema"] == SARIF_SCHEMA
    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "bastion deps"
    assert driver["version"] == "0.1.0"
    assert [rule["id"] for rule in driver["rules"]] == ["GHSA-1", "PYSEC-2", "PYSEC-3"]
    for rule in driver["rules"]:
        assert set(rule) >= {"id", "shortDescription"}
        assert isinstance(rule["shortDescription"]["text"], str)
    assert [(r["ruleId"], r["level"]) for r in run["results"]] == [
        ("GHSA-1", "error"),
        ("PYSEC-2", "warning"),
        ("PYSEC-3", "note"),
    ]
    rule_ids = {rule["id"] for rule in driver["rules"]}
    for result in run["results"]:
        assert result["ruleId"] in rule_ids
        assert result["level"] in ("none", "note", "warning", "error")
        assert result["message"]["text"]
    assert "fixed in: 1.1" in run["results"][0]["message"]["text"]


def test_sarif_without_findings_still_has_a_run() -> None:
    log = json.loads(render_sarif(Report()))
    assert log["runs"][0]["results"] == []
    assert log["runs"][0]["tool"]["driver"]["rules"] == []


def test_json_and_table_output() -> None:
    report = Report(findings=list(FINDINGS), warnings=["w"], packages_checked=3)
    data = json.loads(render_json(report))
    assert data["findings"][0] == {
        "id": "GHSA-1",
        "aliases": ["CVE-1"],
        "package": "lib",
        "installed_version": "1.0",
        "fixed_versions": ["1.1"],
        "severity": "critical",
        "summary": "Bad thing",
    }
    assert data["warnings"] == ["w"]
    table = render_table(report).splitlines()
    assert table[0].split() == ["PACKAGE", "INSTALLED", "ID", "ALIASES", "SEVERITY", "FIXED", "IN"]
    assert table[1].split() == ["lib", "1.0", "GHSA-1", "CVE-1", "critical", "1.1"]
    assert table[2].split() == ["lib", "1.0", "PYSEC-2", "-", "unknown", "-"]
    assert table[-1] == "3 known vulnerabilities found."
    assert render_table(Report(packages_checked=4)).startswith("No known vulnerabilities in 4")
