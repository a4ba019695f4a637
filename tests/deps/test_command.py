"""`bastion deps` against the local OSV fixture export (a directory and a zip)."""

from __future__ import annotations

import json
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.deps import MAX_ADVISORY_BYTES, Report, installed_distributions, load_export, match

FIXTURE = Path(__file__).parent / "osv"
STARLETTE = version("starlette")  # really installed; the fixture affects every release < 99


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["deps", *args])
    return result.exit_code, result.stdout, result.stderr


def test_fixture_flags_the_installed_starlette_only() -> None:
    report = Report()
    advisories = load_export(FIXTURE, report)
    assert sorted(advisories) == ["BASTION-TEST-0001", "BASTION-TEST-0002"]  # 0003 withdrawn
    assert report.warnings == [
        "skipped malformed advisory malformed-affected.json: "
        "BASTION-TEST-BAD: aliases or affected is not a list"
    ]
    findings = match(installed_distributions(), advisories.values())
    assert [(f.id, f.package, f.installed_version) for f in findings] == [
        ("BASTION-TEST-0001", "starlette", STARLETTE)
    ]
    assert findings[0].fixed_versions == ("99.0",)
    assert findings[0].severity == "high"
    assert findings[0].aliases == ("CVE-0000-0001",)


def zipped(tmp_path: Path) -> Path:
    archive = tmp_path / "PyPI-all.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for member in sorted(FIXTURE.iterdir()):
            out.write(member, member.name)
        out.writestr("README.txt", "not an advisory")
    return archive


def test_zip_export_gives_the_same_findings(tmp_path: Path) -> None:
    report = Report()
    advisories = load_export(zipped(tmp_path), report)
    assert sorted(advisories) == ["BASTION-TEST-0001", "BASTION-TEST-0002"]
    assert len(report.warnings) == 1


def test_oversized_and_bomb_members_are_skipped(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("BOMB.json", b" " * (MAX_ADVISORY_BYTES + 1))  # deflates to a few KiB
        out.write(FIXTURE / "BASTION-TEST-0001.json", "BASTION-TEST-0001.json")
    report = Report()
    assert list(load_export(archive, report)) == ["BASTION-TEST-0001"]
    assert report.warnings == ["skipped oversized advisory BOMB.json"]


@pytest.mark.parametrize(
    ("fail_on", "code"),
    [
        pytest.param("low", 1, id="low"),
        pytest.param("medium", 1, id="medium"),
        pytest.param("high", 1, id="high-at-high"),
        pytest.param("critical", 0, id="critical-above-high"),
    ],
)
def test_fail_on_exit_codes(fail_on: str, code: int) -> None:
    exit_code, stdout, stderr = run("--osv", str(FIXTURE), "--fail-on", fail_on)
    assert exit_code == code, stdout + stderr
    assert f"starlette  {STARLETTE}" in stdout
    assert "BASTION-TEST-0001" in stdout
    assert "BASTION-TEST-0002" not in stdout
    assert "skipped malformed advisory malformed-affected.json" in stderr


def test_unknown_severity_fails_closed(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    document = json.loads((FIXTURE / "BASTION-TEST-0001.json").read_text())
    del document["database_specific"]
    (export / "x.json").write_text(json.dumps(document))
    exit_code, stdout, _ = run("--osv", str(export), "--fail-on", "critical", "--format", "json")
    assert exit_code == 1
    assert json.loads(stdout)["findings"][0]["severity"] == "unknown"


def test_no_findings_exits_zero(tmp_path: Path) -> None:
    exit_code, stdout, _ = run("--osv", str(tmp_path))
    assert exit_code == 0
    assert stdout.startswith("No known vulnerabilities in ")


def test_json_and_sarif_formats() -> None:
    exit_code, stdout, _ = run("--osv", str(FIXTURE), "--format", "json")
    assert exit_code == 1
    data = json.loads(stdout)
    assert [f["id"] for f in data["findings"]] == ["BASTION-TEST-0001"]
    assert data["advisories_loaded"] == 2
    assert data["packages_checked"] > 0
    assert len(data["warnings"]) == 1
    exit_code, stdout, _ = run("--osv", str(FIXTURE), "--format", "sarif")
    assert exit_code == 1
    log = json.loads(stdout)
    assert log["version"] == "2.1.0"
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["BASTION-TEST-0001"]
    assert log["runs"][0]["results"][0]["level"] == "error"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--format", "xml"), id="bad-format"),
        pytest.param(("--fail-on", "severe"), id="bad-threshold"),
        pytest.param(("--osv-api", "http://osv.example"), id="plain-http-api"),
    ],
)
def test_bad_options_exit_2(args: tuple[str, ...]) -> None:
    assert run("--osv", str(FIXTURE), *args)[0] == 2


def test_nothing_to_check_against_exits_2() -> None:
    exit_code, _, stderr = run("--no-online")
    assert exit_code == 2
    assert "nothing to check against" in stderr


@pytest.mark.parametrize("name", ["missing", "not-a-zip.json"])
def test_unreadable_export_exits_2(tmp_path: Path, name: str) -> None:
    (tmp_path / "not-a-zip.json").write_text("{}")
    exit_code, _, stderr = run("--osv", str(tmp_path / name))
    assert exit_code == 2
    assert "cannot read the OSV export" in stderr
