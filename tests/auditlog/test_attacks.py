"""Named tampering attacks on a real audit log: each is found, exactly where it is."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion import auditlog
from bastion.auditlog import (
    AuditLogSink,
    canonical_json,
    head_path,
    records,
    verify_chain,
    verify_command,
)
from bastion.exceptions import ConfigurationError
from tests.auditlog.support import (
    KEY_A,
    KEY_B,
    event,
    fixed_clock,
    lines,
    log_files,
    write_lines,
    write_log,
)

# Six events after the `open` record: line n holds seq n - 1.
EVENTS = 6


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "audit.log", EVENTS)


def flip_after(marker: bytes) -> Callable[[bytes], bytes]:
    """Change the one byte that follows `marker` (to another byte of the same class)."""

    def mutate(line: bytes) -> bytes:
        at = line.index(marker) + len(marker)
        hexdigits = b"0123456789abcdef"
        old = line[at]
        new = hexdigits[(hexdigits.index(old) + 1) % 16] if old in hexdigits else ord("X")
        return line[:at] + bytes([new]) + line[at + 1 :]

    return mutate


def findings(path: Path, keys: tuple[str, ...] = (KEY_A,)) -> list[tuple[str, int, int | None]]:
    report = verify_chain(log_files(path), keys)
    return [(f.reason, f.line, f.seq) for f in report.findings]


def test_untouched_log_verifies(log: Path) -> None:
    report = verify_chain(log_files(log), [KEY_A])
    assert report.ok, report.findings
    assert (report.records, report.first_seq, report.last_seq) == (EVENTS + 1, 0, EVENTS)
    assert report.starts_at_genesis
    assert report.anchored


BYTE_CASES = [
    pytest.param(b'"path":"/admin/', "record-altered", 3, id="audit-tamper-event"),
    pytest.param(b'"seq":', "record-altered", 4, id="audit-tamper-seq"),
    pytest.param(b'"prev":"', "record-altered", 3, id="audit-tamper-prev"),
    pytest.param(b'"mac":"', "record-altered", 3, id="audit-tamper-mac"),
    pytest.param(b'"kid":"', "unknown-key", 3, id="audit-tamper-kid"),
    pytest.param(b'"type":"', "malformed-line", None, id="audit-tamper-type"),
    pytest.param(b'"v":', "malformed-line", None, id="audit-tamper-version"),
    pytest.param(b'"event":', "malformed-line", None, id="audit-tamper-syntax"),
]


@pytest.mark.parametrize(("marker", "reason", "seq"), BYTE_CASES)
def test_one_byte_changed_in_a_field(
    log: Path, marker: bytes, reason: str, seq: int | None
) -> None:
    # Line 4 holds seq 3; `"seq":3` flipped reads `"seq":4` (the claimed, forged seq).
    content = lines(log)
    content[3] = flip_after(marker)(content[3])
    write_lines(log, content)
    assert findings(log) == [(reason, 4, seq)]


def test_audit_record_deleted(log: Path) -> None:
    content = lines(log)
    del content[3]  # seq 3
    write_lines(log, content)
    assert findings(log) == [("records-removed", 4, 4)]


def test_audit_records_reordered(log: Path) -> None:
    content = lines(log)
    content[3], content[4] = content[4], content[3]  # seq 4 now before seq 3
    write_lines(log, content)
    assert findings(log) == [("records-reordered", 5, 3), ("records-reordered", 4, 4)]


def test_audit_record_duplicated(log: Path) -> None:
    content = lines(log)
    content.insert(4, content[3])
    write_lines(log, content)
    assert findings(log) == [("record-duplicated", 5, 3)]


def test_audit_truncated_partial_last_line(log: Path) -> None:
    data = log.read_bytes()
    log.write_bytes(data[:-40])
    assert findings(log) == [("truncated-line", EVENTS + 1, None), ("tail-truncated", 6, 5)]


def test_audit_truncated_whole_last_record(log: Path) -> None:
    # A valid, shorter chain: only the checkpoint shows the cut.
    write_lines(log, lines(log)[:-2])
    assert findings(log) == [("tail-truncated", 5, 4)]


def test_audit_truncated_then_writer_restarted(log: Path) -> None:
    # The writer overwrites the checkpoint when it restarts; its `open` record says
    # the log was shorter than the checkpoint, so the cut stays visible.
    write_lines(log, lines(log)[:-2])
    write_log(log, 1)
    assert findings(log) == [("tail-truncated", 6, 7)]


def test_audit_checkpoint_deleted(log: Path) -> None:
    head_path(log).unlink()
    assert findings(log) == [("checkpoint-missing", 0, None)]


def test_audit_checkpoint_deleted_then_writer_restarted(log: Path) -> None:
    head_path(log).unlink()
    write_log(log, 1)
    assert findings(log) == [("checkpoint-missing", EVENTS + 2, EVENTS + 1)]


def test_audit_checkpoint_rolled_back(log: Path, tmp_path: Path) -> None:
    # An attacker who kept an old checkpoint can cut the log back to it: the limit of
    # a local anchor (documented); an anchor off the host closes it.
    old_head = head_path(log).read_bytes()
    write_log(log, 2)
    head_path(log).write_bytes(old_head)
    write_lines(log, lines(log)[: EVENTS + 1])
    assert findings(log) == []


def test_audit_forged_record_with_unkeyed_hash(log: Path) -> None:
    # The attacker edits a record and recomputes the MAC as a plain SHA-256 of the
    # same input: without the key the chain cannot be recomputed.
    content = lines(log)
    record = json.loads(content[3])
    record["event"]["path"] = "/innocent"
    del record["mac"]
    prev = bytes.fromhex(record["prev"])
    record["mac"] = hashlib.sha256(prev + canonical_json(record)).hexdigest()
    content[3] = canonical_json(record) + b"\n"
    write_lines(log, content)
    assert findings(log) == [("record-altered", 4, 3)]


def test_audit_forged_record_appended_with_another_key(log: Path) -> None:
    # A record MACed under a key the verifier does not trust, linked properly.
    content = lines(log)
    last = json.loads(content[-1])
    forged_key = auditlog.derive_key("attacker-key-0123456789abcdefghijklmn")
    body: dict[str, object] = {
        "v": 1,
        "seq": last["seq"] + 1,
        "type": "event",
        "kid": forged_key.key_id,
        "prev": last["mac"],
        "event": event(99),
    }
    mac = records._record_mac(forged_key.chain_key, bytes.fromhex(last["mac"]), body)
    content.append(canonical_json({**body, "mac": mac.hex()}) + b"\n")
    write_lines(log, content)
    assert findings(log) == [("unknown-key", EVENTS + 2, EVENTS + 1)]


def test_audit_rotation_across_three_files_verifies(tmp_path: Path) -> None:
    path = write_log(tmp_path / "audit.log", 12, max_bytes=1500)
    files = log_files(path)
    assert [p.name for p in files] == ["audit.log.1", "audit.log.2", "audit.log.3", "audit.log"]
    report = verify_chain(reversed(files), [KEY_A])  # given in any order
    assert report.ok, report.findings
    assert report.records == 12 + 1 + 2 * 3  # events, open, a rotate and a start per archive
    # Each archive ends with its rotation record, naming the archive; the next file
    # starts with a record linked to it.
    last = json.loads(lines(files[0])[-1])
    assert (last["type"], last["info"]["archived_as"]) == ("rotate", "audit.log.1")
    first_of_next = json.loads(lines(files[1])[0])
    assert (first_of_next["type"], first_of_next["info"]["previous_file"]) == (
        "start",
        "audit.log.1",
    )
    assert first_of_next["prev"] == last["mac"]


def test_audit_oldest_archive_deleted_is_a_note(tmp_path: Path) -> None:
    # Retention deletes whole old files; that cannot be told from an attack.
    path = write_log(tmp_path / "audit.log", 12, max_bytes=1500)
    (tmp_path / "audit.log.1").unlink()
    report = verify_chain(log_files(path), [KEY_A])
    assert report.ok, report.findings
    assert not report.starts_at_genesis
    assert "older files were not given" in report.notes[0]


def test_audit_records_cut_from_the_front(log: Path) -> None:
    write_lines(log, lines(log)[2:])
    assert findings(log) == [("records-removed", 1, 2)]


def test_audit_rotated_file_missing(tmp_path: Path) -> None:
    path = write_log(tmp_path / "audit.log", 12, max_bytes=1500)
    (tmp_path / "audit.log.2").unlink()
    report = verify_chain(log_files(path), [KEY_A])
    [finding] = report.findings
    assert (finding.reason, finding.file, finding.line) == (
        "records-removed",
        str(tmp_path / "audit.log.3"),
        1,
    )


def test_audit_current_file_missing(tmp_path: Path) -> None:
    path = write_log(tmp_path / "audit.log", 12, max_bytes=1500)
    path.unlink()
    assert [r for r, *_ in findings(path)] == ["tail-truncated"]


def test_audit_key_rotated(tmp_path: Path) -> None:
    path = write_log(tmp_path / "audit.log", 3, (KEY_A,))
    write_log(path, 3, (KEY_B, KEY_A))  # the new key writes; the checkpoint was A's
    assert findings(path, (KEY_B, KEY_A)) == []
    kids = {json.loads(line)["kid"] for line in lines(path)}
    assert len(kids) == 2
    # Without the retired key, its records cannot be authenticated.
    assert {r for r, *_ in findings(path, (KEY_B,))} == {"unknown-key"}


def test_audit_key_regression(tmp_path: Path) -> None:
    # After rotating to B, a record under the retired key A (which may have leaked).
    path = write_log(tmp_path / "audit.log", 2, (KEY_A,))
    write_log(path, 2, (KEY_B, KEY_A))
    write_log(path, 1, (KEY_A,))  # this writer cannot read B's checkpoint either
    assert findings(path, (KEY_B, KEY_A)) == [
        ("key-regression", 7, 6),
        ("checkpoint-altered", 7, 6),
    ]


def test_audit_interrupted_write_is_acknowledged(log: Path) -> None:
    with log.open("ab") as handle:
        handle.write(b'{"event":{"kind":"half-writ')  # a crash in the middle of a write
    write_log(log, 1)
    report = verify_chain(log_files(log), [KEY_A])
    assert report.ok, report.findings
    assert any("interrupted write" in note for note in report.notes)


def test_audit_garbage_appended_is_not_acknowledged(log: Path) -> None:
    with log.open("ab") as handle:
        handle.write(b"garbage\n")
    assert findings(log) == [("malformed-line", EVENTS + 2, None)]


def test_verify_command(log: Path, tmp_path: Path) -> None:
    paths = [str(p) for p in tmp_path.iterdir()]  # like `audit.log*`, checkpoint included
    code, text = verify_command(paths, [KEY_A])
    assert code == 0
    assert text.startswith("OK: 7 authentic record(s) in 1 file(s), seq 0..6, anchored")
    content = lines(log)
    del content[2]
    write_lines(log, content)
    code, text = verify_command(paths, [KEY_A])
    assert code == 1
    assert f"problem: {log}:3 seq 3: records-removed: seq 2..2 are missing" in text
    assert verify_command(paths, [])[0] == 2
    assert verify_command([], [KEY_A])[0] == 2
    code, text = verify_command([str(tmp_path / "nope.log")], [KEY_A])
    assert code == 2
    assert "cannot read" in text


def test_second_writer_is_refused(log: Path) -> None:
    with (
        AuditLogSink(log, [KEY_A], clock=fixed_clock),
        pytest.raises(ConfigurationError, match="another process"),
    ):
        AuditLogSink(log, [KEY_A], clock=fixed_clock)
