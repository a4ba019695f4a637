"""A retired key that leaked, used to rewrite the end of the chain after a rotation:
every record under the new key cut off, records and a checkpoint forged under the old."""

from __future__ import annotations

import json
from pathlib import Path

from bastion.auditlog import (
    FORMAT_VERSION,
    HEAD_BYTES,
    Checkpoint,
    LogFile,
    canonical_json,
    derive_key,
    head_path,
    records,
    verify_chain,
    verify_files,
)
from tests.auditlog.support import KEY_A, KEY_B, lines, log_files, write_lines, write_log


def _rotated_to_b(tmp_path: Path) -> Path:
    path = write_log(tmp_path / "audit.log", 3, (KEY_A,))
    return write_log(path, 3, (KEY_B, KEY_A))  # B now writes; A is retired


def _rewrite_under(path: Path, secret: str) -> int:
    """Keep the records under `secret`'s key, append one forged record and a checkpoint
    for it under that key; the forged record's sequence number."""
    key = derive_key(secret)
    kept = [line for line in lines(path) if json.loads(line)["kid"] == key.key_id]
    last = json.loads(kept[-1])
    body: dict[str, object] = {
        "v": FORMAT_VERSION,
        "seq": last["seq"] + 1,
        "type": "event",
        "kid": key.key_id,
        "prev": last["mac"],
        "event": {"kind": "authn_login_success", "reason": "nothing-to-see"},
    }
    mac = records._record_mac(key.chain_key, bytes.fromhex(last["mac"]), body)
    write_lines(path, [*kept, canonical_json({**body, "mac": mac.hex()}) + b"\n"])
    head: dict[str, object] = {"v": FORMAT_VERSION, "seq": body["seq"], "mac": mac.hex()}
    head["kid"] = key.key_id
    head["hmac"] = records._head_mac(key.head_key, head).hex()
    head_path(path).write_bytes(canonical_json(head).ljust(HEAD_BYTES - 1, b" ") + b"\n")
    return int(last["seq"]) + 1


def test_audit_retired_key_rewrites_the_end(tmp_path: Path) -> None:
    path = _rotated_to_b(tmp_path)
    seq = _rewrite_under(path, KEY_A)
    report = verify_chain(log_files(path), [KEY_B, KEY_A])
    assert [(f.reason, f.file, f.seq) for f in report.findings] == [
        ("key-regression", str(head_path(path)), seq)
    ]


def test_audit_rotated_log_with_the_writers_key_verifies(tmp_path: Path) -> None:
    path = _rotated_to_b(tmp_path)
    report = verify_chain(log_files(path), [KEY_B, KEY_A])
    assert report.ok, report.findings
    assert report.anchored


def test_audit_anchor_from_before_the_rotation_is_not_a_regression(tmp_path: Path) -> None:
    # An anchor shipped off the host before the rotation is under the retired key.
    path = write_log(tmp_path / "audit.log", 3, (KEY_A,))
    last = json.loads(lines(path)[-1])
    anchor = Checkpoint(seq=last["seq"], mac=last["mac"], key_id=derive_key(KEY_A).key_id)
    write_log(path, 3, (KEY_B, KEY_A))
    report = verify_files(
        [LogFile(str(path), path.read_bytes())], [KEY_B, KEY_A], checkpoint=anchor
    )
    assert report.ok, report.findings
    assert report.anchored
