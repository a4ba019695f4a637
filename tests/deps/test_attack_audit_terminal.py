"""Attacks on the terminal through `bastion deps`: an OSV export (or a mirror) writes
what the table and the warnings print.

The table printed each advisory's id and aliases as the export wrote them, and the
warnings each file or zip member name: an escape sequence there (`ESC ] 0 ;` sets the
window title; `ESC [ 2 J` clears the screen, hiding the findings above it) reached
the terminal of whoever ran the check, or the CI log that replays it.
"""

from __future__ import annotations

import json
import zipfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.deps import Report, load_export

FIXTURE = Path(__file__).parent / "osv"
STARLETTE = version("starlette")
ESC = "\x1b"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["deps", *args])
    return result.exit_code, result.stdout, result.stderr


def _advisory(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURE / "BASTION-TEST-0001.json").read_text())
    document.update(changes)
    return document


def _export(tmp_path: Path, document: dict[str, Any]) -> Path:
    export = tmp_path / "export"
    export.mkdir()
    (export / "advisory.json").write_text(json.dumps(document))
    return export


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(_advisory(id="GHSA-\x1b]0;owned\x07"), id="deps-id-osc-title"),
        pytest.param(_advisory(id="PYSEC-1\x1b[2J"), id="deps-id-clear-screen"),
        pytest.param(_advisory(id="PYSEC-1\u202e"), id="deps-id-bidi-override"),
    ],
)
def test_an_id_that_is_not_an_osv_id_is_skipped_not_printed(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    code, stdout, stderr = run("--osv", str(_export(tmp_path, document)))
    assert ESC not in stdout + stderr
    assert "\u202e" not in stdout + stderr
    assert "skipped malformed advisory advisory.json: an advisory id is not an OSV id" in stderr
    assert code == 0


def test_an_alias_that_is_not_an_osv_id_is_dropped(tmp_path: Path) -> None:
    document = _advisory(aliases=["CVE-0000-0001", "CVE-1\x1b]8;;https://evil.example\x1b\\x"])
    code, stdout, stderr = run("--osv", str(_export(tmp_path, document)))
    assert code == 1
    assert ESC not in stdout + stderr
    assert f"starlette  {STARLETTE}" in stdout
    assert "BASTION-TEST-0001  CVE-0000-0001 " in stdout


@pytest.mark.parametrize(
    ("member", "content", "warning"),
    [
        pytest.param(
            "x\x1b[2J.json",
            b"{not json",
            "skipped malformed advisory x\\x1b[2J.json: not valid JSON",
            id="deps-zip-member-name-malformed",
        ),
        pytest.param(
            "y\x1b]0;owned\x07.json",
            b" " * (4 * 1024 * 1024 + 1),
            "skipped oversized advisory y\\x1b]0;owned\\x07.json",
            id="deps-zip-member-name-oversized",
        ),
    ],
)
def test_a_zip_member_name_is_escaped_in_warnings(
    tmp_path: Path, member: str, content: bytes, warning: str
) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr(member, content)
        out.write(FIXTURE / "BASTION-TEST-0001.json", "BASTION-TEST-0001.json")
    report = Report()
    assert list(load_export(archive, report)) == ["BASTION-TEST-0001"]
    assert report.warnings == [warning]
    _, stdout, stderr = run("--osv", str(archive))
    assert ESC not in stdout + stderr
    assert f"bastion: warning: {warning}" in stderr


def test_the_real_fixture_still_reads_as_before() -> None:
    code, stdout, stderr = run("--osv", str(FIXTURE))
    assert code == 1
    assert "BASTION-TEST-0001  CVE-0000-0001" in stdout
    assert "skipped malformed advisory malformed-affected.json" in stderr
