"""Audit-log settings: where the chain is written, how large it grows, when it syncs.

Threat: a configuration that silently weakens the trail (files that grow without
bound, records too large to bound a line, a power cut that takes unsynced records).

Defence: the audit file is off until `path` is set; sizes and intervals are
validated at start-up (a stub must fit in `max_record_bytes`, a record in
`max_bytes`); `fsync=never` is reported as a weakening. Keys come from
`secret_keys` (the first writes); retired keys stay in the list to verify old files.

Not covered: several processes writing one file (refused by the writer: give each
worker its own path).

References: fsync(2), https://man7.org/linux/man-pages/man2/fsync.2.html .
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import field_validator, model_validator

from bastion.sections import Section

FsyncPolicy = Literal["always", "interval", "never"]

# A redacted event is small (strings are cut at 512 characters, nesting at depth 4);
# 16 KiB leaves room for a large `details` while bounding each line.
DEFAULT_MAX_RECORD_BYTES: Final = 16 * 1024
# 64 MiB per file: the verifier reads a file at once, and smaller archives ship sooner.
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
# fsync costs milliseconds on a disk, on the event loop: per record it would let an
# attack flood of refused requests slow everyone. At most 100 records or 1 s at risk.
DEFAULT_FSYNC_RECORDS: Final = 100
DEFAULT_FSYNC_SECONDS: Final = 1.0


class AuditLogSettings(Section):
    """The hash-chained audit file; off until `path` is set.

    Keys: derived from `secret_keys` (the first writes). Keep retired keys to verify
    old files: `bastion log verify` takes them all from BASTION_SECRET_KEYS.
    """

    path: Path | None = None
    """The current file; archives are `<path>.1`, `<path>.2`...; checkpoint `<path>.head`.
    One writer per path: give each worker process its own. A name ending like an
    archive (`audit.1`) is refused: the verifier would take it for one."""

    max_bytes: int = DEFAULT_MAX_BYTES
    """Rotate the file when the next record would take it past this size."""

    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    """A larger event is replaced by a stub naming its kind, reason and size."""

    fsync: FsyncPolicy = "interval"
    """`always` (each record; slow), `interval` (see below) or `never` (the OS decides:
    a power cut can lose records, which the verifier then reports)."""

    fsync_interval_records: int = DEFAULT_FSYNC_RECORDS
    fsync_interval_seconds: float = DEFAULT_FSYNC_SECONDS
    """With `interval`: sync after this many records or seconds, checked at each record."""

    @field_validator("max_record_bytes", "max_bytes", "fsync_interval_records")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("fsync_interval_seconds")
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be more than 0")
        return value

    @model_validator(mode="after")
    def _sizes(self) -> AuditLogSettings:
        if self.max_record_bytes < 1024:
            raise ValueError("max_record_bytes must be at least 1024 (a stub must fit)")
        if self.max_bytes < self.max_record_bytes:
            raise ValueError("max_bytes must be at least max_record_bytes")
        return self

    def weakenings(self) -> list[str]:
        return ["fsync=never"] if self.path is not None and self.fsync == "never" else []
