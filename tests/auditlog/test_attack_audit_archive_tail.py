"""Cutting the end off the chain when it ends in an archive: the current file and its
checkpoint deleted, the newest archive shortened (its `rotate` record with it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.auditlog import (
    EXIT_OK,
    EXIT_TAMPERED,
    AuditLogSink,
    head_path,
    verify_chain,
    verify_command,
)
from bastion.exceptions import ConfigurationError
from tests.auditlog.support import KEY_A, fixed_clock, lines, log_files, write_lines, write_log


@pytest.fixture
def rotated(tmp_path: Path) -> Path:
    """audit.log.1..3 and audit.log, as `test_audit_rotation_across_three_files_verifies`."""
    path = write_log(tmp_path / "audit.log", 12, max_bytes=1500)
    assert [p.name for p in log_files(path)][-2:] == ["audit.log.3", "audit.log"]
    return path


def _delete_current(path: Path) -> None:
    path.unlink()
    head_path(path).unlink()


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(1, id="audit-archive-rotate-record-cut"),
        pytest.param(2, id="audit-archive-tail-cut"),
    ],
)
def test_archive_tail_cut_with_current_file_deleted(rotated: Path, cut: int) -> None:
    newest = rotated.parent / "audit.log.3"
    content = lines(newest)
    assert json.loads(content[-1])["type"] == "rotate"
    write_lines(newest, content[:-cut])
    _delete_current(rotated)
    paths = [str(p) for p in rotated.parent.iterdir()]  # `bastion log verify audit.log*`
    code, text = verify_command(paths, [KEY_A])
    assert code == EXIT_TAMPERED, text
    report = verify_chain(log_files(rotated), [KEY_A])
    [finding] = report.findings
    assert (finding.reason, finding.file, finding.line) == (
        "tail-truncated",
        str(newest),
        len(content) - cut,
    )


def test_untouched_rotated_log_verifies(rotated: Path) -> None:
    paths = [str(p) for p in rotated.parent.iterdir()]
    code, text = verify_command(paths, [KEY_A])
    assert code == EXIT_OK, text
    assert "anchored by the checkpoint" in text


def test_archive_cut_back_to_an_earlier_archive(rotated: Path) -> None:
    # Deleting the newest archive as well leaves an archive that ends with its
    # rotation record: the file after it is missing.
    (rotated.parent / "audit.log.3").unlink()
    _delete_current(rotated)
    report = verify_chain(log_files(rotated), [KEY_A])
    assert [f.reason for f in report.findings] == ["tail-truncated"]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("audit.1", id="audit-current-named-like-archive"),
        pytest.param("events.2024", id="audit-current-named-like-archive-year"),
    ],
)
def test_current_file_named_like_an_archive_is_refused(tmp_path: Path, name: str) -> None:
    # The verifier would take it for an archive: no checkpoint required, its end cut
    # off unseen. The writer refuses the name at start-up.
    with pytest.raises(ConfigurationError, match="ends like an archive"):
        AuditLogSink(tmp_path / name, [KEY_A], clock=fixed_clock)
    assert not head_path(tmp_path / name).exists()


def test_current_file_with_an_ordinary_name_is_accepted(tmp_path: Path) -> None:
    with AuditLogSink(tmp_path / "audit.log", [KEY_A], clock=fixed_clock) as sink:
        sink.handle({"kind": "authz_fail", "reason": "missing-role"})
    assert verify_chain([tmp_path / "audit.log"], [KEY_A]).ok
