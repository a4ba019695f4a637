"""The audit-log writer: an `EventSink` that appends each event to the keyed hash chain.

Threat: someone who can write the log file cuts records off the end, or a crash,
full disk or power cut loses records, and nobody can tell afterwards.

Defence: `secret_keys[0]` writes. Each record is written with one `write` call to a
file opened with O_APPEND (and O_NOFOLLOW: a planted symlink is refused), then the
checkpoint `<file>.head` (the last sequence number and MAC, under its own MAC key) is
rewritten in place after each record, with one write of a fixed-size line, so it is
never half old, half new. Rotation: past `max_bytes` the writer appends a `rotate`
record, renames the file to `<file>.<n>` (n = 1, 2, ...; an archive never changes
name, so shippers and WORM storage can take it as it is) and starts a new file with a
`start` record linked to the `rotate` record. Every start of the writer appends an
`open` record. A writer that restarts after a crash during a write acknowledges the
partial line in its `open` record (with the line's SHA-256); a writer that finds the
log shorter than its checkpoint records that too and skips the lost sequence numbers,
so the verifier reports it. An event too large or not serialisable is replaced by a
stub naming its kind, reason and size: it is never dropped.

Not covered: several processes writing one file (refused with an exclusive lock on
the checkpoint: give each worker its own path; there is no lock off POSIX); records
not yet synced when the power goes (see `fsync`; the verifier reports the loss);
secrecy (records are redacted, not encrypted).

References: RFC 2104 (HMAC); open(2) O_APPEND and O_NOFOLLOW, flock(2), fsync(2)
https://man7.org/linux/man-pages/man2/open.2.html .
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pydantic import SecretStr

from bastion.auditlog.records import (
    FORMAT_VERSION,
    GENESIS_MAC,
    HEAD_BYTES,
    Checkpoint,
    _head_mac,
    _parse_line,
    _record_mac,
    archive_index,
    canonical_json,
    derive_key,
    head_path,
    order_files,
    parse_checkpoint,
)
from bastion.auditlog.settings import (
    DEFAULT_FSYNC_RECORDS,
    DEFAULT_FSYNC_SECONDS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    AuditLogSettings,
    FsyncPolicy,
)
from bastion.exceptions import ConfigurationError

logger = logging.getLogger("bastion")

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, documented above
    _fcntl = None  # type: ignore[assignment]  # the module is absent off POSIX

_O_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)  # refuse a planted symlink


def _json_ready(record: Mapping[str, object]) -> dict[str, object] | None:
    """`record` exactly as a JSON reader will see it (tuples as lists...), or None."""
    try:
        value = json.loads(canonical_json(record))
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _stub(record: Mapping[str, object], reason: str, size: int) -> dict[str, object]:
    """What is kept of an event that cannot be written whole: it is never dropped."""
    stub: dict[str, object] = {"bastion_audit": reason, "original_bytes": size}
    for name in ("timestamp", "kind", "reason", "layer", "action", "request_id"):
        value = record.get(name)
        if isinstance(value, str):
            stub[name] = value[:128]
    return stub


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_tail(path: Path, window: int) -> bytes:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - window))
            return handle.read()
    except FileNotFoundError:
        return b""


class AuditLogSink:
    """An `EventSink` appending each record to the hash chain in `path`.

    Called synchronously from the event loop (and possibly from threads): a lock
    serialises appends. Each record is written with one `write` call to a file opened
    with O_APPEND and then the checkpoint is rewritten, so nothing sits in a user-space
    buffer; `fsync` follows the policy. The sink never raises from `handle`: a failed
    write is logged on the `bastion` logger, counted in `dropped_records`, and the file
    is reopened at the next record (which records the interruption).
    """

    def __init__(
        self,
        path: str | Path,
        secret_keys: Sequence[str | SecretStr],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        fsync: FsyncPolicy = "interval",
        fsync_interval_records: int = DEFAULT_FSYNC_RECORDS,
        fsync_interval_seconds: float = DEFAULT_FSYNC_SECONDS,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not secret_keys:
            raise ConfigurationError("secret_keys: the audit log needs at least one key")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigurationError(f"audit_log.path: directory {self.path.parent} not found")
        if archive_index(self.path) is not None:
            # The verifier would take the current file for an archive, and so neither
            # require its checkpoint nor see its end cut off.
            raise ConfigurationError(
                f"audit_log.path: {self.path.name} ends like an archive (.<n>); use another name"
            )
        derived = [derive_key(key) for key in secret_keys]
        self._key = derived[0]
        self._keys = {key.key_id: key for key in derived}  # to read an older checkpoint
        self._max_bytes = max_bytes
        self._max_record_bytes = max_record_bytes
        self._fsync = fsync
        self._fsync_records = fsync_interval_records
        self._fsync_seconds = fsync_interval_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._seq = 0
        self._prev = GENESIS_MAC
        self._unsynced = 0
        self._last_sync = monotonic()
        self._closed = False
        self.dropped_records = 0
        self._head_fd = self._lock_head()
        try:
            with self._lock:
                self._open_chain()
        except BaseException:
            os.close(self._head_fd)
            raise

    @classmethod
    def from_settings(
        cls, settings: AuditLogSettings, secret_keys: Sequence[str | SecretStr]
    ) -> AuditLogSink:
        if settings.path is None:
            raise ConfigurationError("audit_log.path: not set")
        return cls(
            settings.path,
            secret_keys,
            max_bytes=settings.max_bytes,
            max_record_bytes=settings.max_record_bytes,
            fsync=settings.fsync,
            fsync_interval_records=settings.fsync_interval_records,
            fsync_interval_seconds=settings.fsync_interval_seconds,
        )

    def __repr__(self) -> str:
        return f"AuditLogSink({str(self.path)!r}, key_id={self._key.key_id!r})"

    # -- opening --

    def _lock_head(self) -> int:
        fd = os.open(head_path(self.path), os.O_RDWR | os.O_CREAT | _O_NOFOLLOW, 0o600)
        if _fcntl is not None:
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise ConfigurationError(
                    f"audit_log.path: another process writes {self.path} "
                    "(give each worker its own path)"
                ) from None
        return fd

    def _archives(self) -> list[Path]:
        pattern = re.compile(re.escape(self.path.name) + r"\.(\d+)\Z")
        found = [p for p in self.path.parent.iterdir() if pattern.match(p.name)]
        return order_files(found)

    def _open_chain(self) -> None:
        """Find where the chain ends, reopen the file, and append an `open` record."""
        window = 2 * self._max_record_bytes + 2
        tail = _read_tail(self.path, window)
        complete, _, partial = tail.rpartition(b"\n")
        if partial and not complete and len(tail) >= window:
            raise ConfigurationError(f"audit_log.path: {self.path} does not end with a record")
        last, source = complete.rpartition(b"\n")[2], self.path
        if not last:
            archives = self._archives()
            if archives:
                source = archives[-1]
                archive_complete, _, archive_partial = _read_tail(source, window).rpartition(b"\n")
                if archive_partial:
                    raise ConfigurationError(f"audit_log.path: {source} ends inside a record")
                last = archive_complete.rpartition(b"\n")[2]
        self._seq, self._prev = 0, GENESIS_MAC
        if last:
            parsed = _parse_line(last)
            if parsed is None:
                raise ConfigurationError(
                    f"audit_log.path: the last record of {source} does not parse; run "
                    "`bastion log verify` on it, then move the files aside"
                )
            self._seq, self._prev = parsed[0].seq + 1, parsed[0].mac
        checkpoint_state = self._compare_checkpoint(has_records=bool(last))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_NOFOLLOW, 0o600)
        self._size = os.fstat(self._fd).st_size
        info: dict[str, object] = {
            "time": self._clock().isoformat(timespec="milliseconds"),
            "checkpoint": checkpoint_state,
            "discarded_bytes": 0,
            "discarded_sha256": "",
        }
        if partial:
            # A write was interrupted (crash, full disk). End the partial line and say
            # so, authenticated, with its digest: the verifier can then tell it from
            # an edit. The partial record's sequence number is not reused.
            _write_all(self._fd, b"\n")
            self._size += 1
            info["discarded_bytes"] = len(partial)
            info["discarded_sha256"] = hashlib.sha256(partial).hexdigest()
        self._append("open", info)

    def _compare_checkpoint(self, *, has_records: bool) -> str:
        data = os.pread(self._head_fd, HEAD_BYTES + 1, 0)
        if not data:
            return "missing" if has_records else "new"
        parsed = parse_checkpoint(data, self._keys)
        if isinstance(parsed, Checkpoint) and parsed.seq >= self._seq:
            # The log holds less than the checkpoint says was written: skip the lost
            # sequence numbers so the gap stays visible.
            self._seq = parsed.seq + 1
            return "ahead"
        return "ok" if isinstance(parsed, Checkpoint) else "unreadable"

    # -- appending --

    def handle(self, record: Mapping[str, object]) -> None:
        try:
            with self._lock:
                if self._closed:
                    raise ValueError("the audit log is closed")
                if self._fd is None:
                    self._open_chain()
                self._append("event", self._bounded(record))
        except Exception:  # a sink must not raise: the request goes on, the loss is logged
            self.dropped_records += 1
            logger.exception("bastion: audit log %s: a record was not written", self.path)
            self._abandon_fd()

    def _bounded(self, record: Mapping[str, object]) -> dict[str, object]:
        ready = _json_ready(record)
        if ready is None:
            return _stub(record, "unserializable", 0)
        size = len(canonical_json(ready))
        if size + 400 > self._max_record_bytes:  # 400: the chain fields around the event
            return _stub(ready, "oversized", size)
        return ready

    def _build(self, kind: str, payload: dict[str, object]) -> tuple[bytes, bytes]:
        body: dict[str, object] = {
            "v": FORMAT_VERSION,
            "seq": self._seq,
            "type": kind,
            "kid": self._key.key_id,
            "prev": self._prev.hex(),
            "event" if kind == "event" else "info": payload,
        }
        mac = _record_mac(self._key.chain_key, self._prev, body)
        return canonical_json({**body, "mac": mac.hex()}) + b"\n", mac

    def _append(self, kind: str, payload: dict[str, object]) -> None:
        line, mac = self._build(kind, payload)
        if kind == "event" and self._size and self._size + len(line) > self._max_bytes:
            self._rotate()
            line, mac = self._build(kind, payload)
        self._write(line, mac)
        self._after_write(force_sync=self._fsync == "always")

    def _write(self, line: bytes, mac: bytes) -> None:
        if self._fd is None:
            raise ValueError("the audit log file is not open")
        _write_all(self._fd, line)
        self._size += len(line)
        self._write_checkpoint(self._seq, mac.hex())
        self._seq, self._prev = self._seq + 1, mac

    def _write_checkpoint(self, seq: int, mac: str) -> None:
        body: dict[str, object] = {"v": FORMAT_VERSION, "seq": seq, "mac": mac}
        body["kid"] = self._key.key_id
        body["hmac"] = _head_mac(self._key.head_key, body).hex()
        data = canonical_json(body).ljust(HEAD_BYTES - 1, b" ") + b"\n"
        os.pwrite(self._head_fd, data, 0)

    def _after_write(self, *, force_sync: bool) -> None:
        self._unsynced += 1
        due = self._fsync == "interval" and (
            self._unsynced >= self._fsync_records
            or self._monotonic() - self._last_sync >= self._fsync_seconds
        )
        if force_sync or due:
            self._sync()

    def _sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
        os.fsync(self._head_fd)
        self._unsynced = 0
        self._last_sync = self._monotonic()

    def _rotate(self) -> None:
        archives = self._archives()
        index = (archive_index(archives[-1]) or 0) + 1 if archives else 1
        archive = self.path.with_name(f"{self.path.name}.{index}")
        info: dict[str, object] = {
            "time": self._clock().isoformat(timespec="milliseconds"),
            "archived_as": archive.name,
        }
        self._write(*self._build("rotate", info))
        if self._fd is None:
            raise ValueError("the audit log file is not open")
        os.fsync(self._fd)  # an archive is complete on disk before it is renamed
        os.close(self._fd)
        self._fd = None
        os.rename(self.path, archive)
        self._fd = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600
        )
        self._size = 0
        info["previous_file"] = info.pop("archived_as")
        self._write(*self._build("start", info))
        if self._fsync != "never":
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def _abandon_fd(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None

    # -- closing --

    def flush(self) -> None:
        """fsync the log and its checkpoint now, whatever the policy."""
        with self._lock:
            if not self._closed:
                self._sync()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._sync()
            finally:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                os.close(self._head_fd)  # releases the lock

    def __enter__(self) -> AuditLogSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
