"""Writing real audit logs for the tests, and editing them as an attacker would."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bastion.auditlog import AuditLogSink, LogFile, head_path, order_files

KEY_A = "audit-key-A-0123456789abcdefghijklmnopqrstuvwxyz"
KEY_B = "audit-key-B-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210"


def fixed_clock() -> datetime:
    return datetime(2025, 1, 1, tzinfo=UTC)


def event(index: int) -> dict[str, object]:
    return {
        "timestamp": "2025-01-01T00:00:00.000+00:00",
        "kind": "authz_fail",
        "reason": "missing-role",
        "layer": "authz",
        "action": "blocked",
        "path": f"/admin/{index}",
        "details": {"index": index},
    }


def write_log(
    path: Path, count: int, keys: tuple[str, ...] = (KEY_A,), *, max_bytes: int = 1 << 20
) -> Path:
    with AuditLogSink(
        path, keys, max_bytes=max_bytes, max_record_bytes=1024, clock=fixed_clock
    ) as sink:
        for index in range(count):
            sink.handle(event(index))
    return path


def log_files(path: Path) -> list[Path]:
    return order_files(p for p in path.parent.iterdir() if not p.name.endswith(".head"))


def read_all(path: Path) -> tuple[list[LogFile], bytes]:
    files = [LogFile(str(p), p.read_bytes()) for p in log_files(path)]
    return files, head_path(path).read_bytes()


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, new_lines: list[bytes]) -> None:
    path.write_bytes(b"".join(new_lines))
