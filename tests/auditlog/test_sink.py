"""The writer: records, rotation, fsync policy, bounds, failures, threads, settings."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from bastion.auditlog import AuditLogSettings, AuditLogSink, head_path, verify_chain
from bastion.events import EventEmitter, SecurityEvent
from tests.auditlog.support import KEY_A, event, fixed_clock, lines, log_files, write_log


class FsyncCounter:
    def __init__(self) -> None:
        self.calls = 0
        self.real = os.fsync

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.real(fd)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> FsyncCounter:
    counter = FsyncCounter()
    monkeypatch.setattr(os, "fsync", counter)
    return counter


def test_records_are_chained_json_lines(tmp_path: Path) -> None:
    path = write_log(tmp_path / "audit.log", 2)
    records = [json.loads(line) for line in lines(path)]
    assert [r["type"] for r in records] == ["open", "event", "event"]
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert records[0]["prev"] == "0" * 64
    assert records[1]["prev"] == records[0]["mac"]
    assert records[1]["event"] == event(0)
    assert records[0]["info"]["checkpoint"] == "new"


def test_through_the_emitter(tmp_path: Path) -> None:
    with AuditLogSink(tmp_path / "audit.log", [KEY_A]) as sink:
        EventEmitter([sink]).emit(
            SecurityEvent("authn_login_fail", "bad-password", "auth", details={"password": "x"})
        )
    record = json.loads(lines(tmp_path / "audit.log")[1])
    assert record["event"]["details"] == {"password": "[redacted]"}
    assert verify_chain([tmp_path / "audit.log"], [KEY_A]).ok


def test_files_are_private(tmp_path: Path) -> None:
    path = write_log(tmp_path / "audit.log", 1)
    for file in (path, head_path(path)):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600


def test_symlinked_log_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    (tmp_path / "audit.log").symlink_to(target)
    with pytest.raises(OSError):  # noqa: PT011 - ELOOP from O_NOFOLLOW
        AuditLogSink(tmp_path / "audit.log", [KEY_A])
    assert target.read_bytes() == b""


def test_checkpoint_is_fixed_size(tmp_path: Path) -> None:
    path = write_log(tmp_path / "audit.log", 3)
    data = head_path(path).read_bytes()
    assert len(data) == 512
    assert json.loads(data)["seq"] == 3


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param("always", 2 * 5, id="always"),  # log and checkpoint, every record
        pytest.param("interval", 2 * 2, id="interval-records"),  # every 3rd (open counts)
        pytest.param("never", 0, id="never"),
    ],
)
def test_fsync_policy(tmp_path: Path, fsyncs: FsyncCounter, policy: str, expected: int) -> None:
    sink = AuditLogSink(
        tmp_path / "audit.log",
        [KEY_A],
        fsync=policy,  # type: ignore[arg-type]  # parametrised Literal
        fsync_interval_records=3,
        fsync_interval_seconds=3600,
        monotonic=lambda: 0.0,
    )
    fsyncs.calls = 0
    for index in range(5):
        sink.handle(event(index))
    assert fsyncs.calls == expected
    sink.close()


def test_fsync_interval_seconds(tmp_path: Path, fsyncs: FsyncCounter) -> None:
    now = [0.0]
    sink = AuditLogSink(
        tmp_path / "audit.log",
        [KEY_A],
        fsync_interval_records=1000,
        fsync_interval_seconds=1.0,
        monotonic=lambda: now[0],
    )
    fsyncs.calls = 0
    sink.handle(event(0))
    assert fsyncs.calls == 0
    now[0] = 1.5
    sink.handle(event(1))
    assert fsyncs.calls == 2
    sink.close()


def test_oversized_event_becomes_a_stub(tmp_path: Path) -> None:
    big = event(0) | {"details": {"blob": "x" * 5000}}
    with AuditLogSink(tmp_path / "audit.log", [KEY_A], max_record_bytes=2048) as sink:
        sink.handle(big)
    record = json.loads(lines(tmp_path / "audit.log")[1])
    assert record["event"]["bastion_audit"] == "oversized"
    assert record["event"]["kind"] == "authz_fail"
    assert all(len(line) <= 2048 for line in lines(tmp_path / "audit.log"))


def test_unserializable_event_becomes_a_stub(tmp_path: Path) -> None:
    with AuditLogSink(tmp_path / "audit.log", [KEY_A]) as sink:
        sink.handle({"kind": "x", "value": float("nan")})
    record = json.loads(lines(tmp_path / "audit.log")[1])
    assert record["event"] == {"bastion_audit": "unserializable", "kind": "x", "original_bytes": 0}
    assert verify_chain([tmp_path / "audit.log"], [KEY_A]).ok


def test_a_failed_write_is_counted_and_the_chain_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sink = AuditLogSink(tmp_path / "audit.log", [KEY_A], clock=fixed_clock)
    real_write = os.write

    def half_write(fd: int, data: bytes | memoryview) -> int:
        monkeypatch.setattr(os, "write", real_write)
        real_write(fd, bytes(data[:10]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_write)
    sink.handle(event(0))  # must not raise
    assert sink.dropped_records == 1
    assert "a record was not written" in caplog.text
    sink.handle(event(1))
    sink.close()
    report = verify_chain([tmp_path / "audit.log"], [KEY_A])
    assert report.ok, report.findings
    assert any("interrupted write" in note for note in report.notes)


def test_closed_sink_drops_without_raising(tmp_path: Path) -> None:
    sink = AuditLogSink(tmp_path / "audit.log", [KEY_A])
    sink.close()
    sink.close()
    sink.handle(event(0))
    assert sink.dropped_records == 1


def test_concurrent_threads(tmp_path: Path) -> None:
    sink = AuditLogSink(tmp_path / "audit.log", [KEY_A], max_bytes=20_000, max_record_bytes=1024)

    def work(worker: int) -> None:
        for index in range(50):
            sink.handle(event(worker * 100 + index))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    sink.close()
    report = verify_chain(log_files(tmp_path / "audit.log"), [KEY_A])
    assert report.ok, report.findings
    events = [
        json.loads(line)
        for file in log_files(tmp_path / "audit.log")
        for line in lines(file)
        if b'"type":"event"' in line
    ]
    assert len(events) == report.records - 1 - 2 * (len(report.files) - 1) == 8 * 50
    assert len({e["event"]["path"] for e in events}) == 8 * 50


def test_repr_hides_the_key(tmp_path: Path) -> None:
    with AuditLogSink(tmp_path / "audit.log", [KEY_A]) as sink:
        assert KEY_A not in repr(sink)
        assert KEY_A not in repr(sink._key)


def test_settings_defaults_and_validation(tmp_path: Path) -> None:
    settings = AuditLogSettings()
    assert settings.path is None
    assert settings.fsync == "interval"
    assert settings.weakenings() == []
    assert AuditLogSettings(path=tmp_path / "a.log", fsync="never").weakenings() == ["fsync=never"]
    for bad in (
        {"max_record_bytes": 100},
        {"max_bytes": 2048, "max_record_bytes": 4096},
        {"fsync": "sometimes"},
        {"fsync_interval_seconds": 0},
        {"fsync_interval_records": 0},
        {"path_": "x"},
    ):
        with pytest.raises(ValidationError):
            AuditLogSettings.model_validate(bad)


def test_from_settings(tmp_path: Path) -> None:
    settings = AuditLogSettings(path=tmp_path / "audit.log", max_bytes=4096, max_record_bytes=1024)
    with AuditLogSink.from_settings(settings, [KEY_A]) as sink:
        for index in range(20):
            sink.handle(event(index))
    assert len(log_files(tmp_path / "audit.log")) > 1
    assert verify_chain(log_files(tmp_path / "audit.log"), [KEY_A]).ok
