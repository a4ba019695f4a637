"""Tamper-evident audit trail: security events as a keyed hash chain of JSON lines.

Threat: someone who can write the log file (an intruder on the host, an insider, a
compromised log shipper) edits the security record to hide what happened: changes a
record, deletes, reorders or inserts records, or cuts off the end.

Defence: every line is one record carrying a sequence number, a key id, the MAC of
the record before it (`prev`) and its own MAC:

    mac = HMAC-SHA256(key, prev_mac || canonical_json(record without "mac"))

The chain is keyed: an attacker who can write the file but does not hold the key
cannot recompute it (anyone can rebuild an unkeyed hash chain after editing it). The
key is derived from `secret_keys` with a fixed purpose label, so a key that signs
cookies never MACs the log directly; the key id (a second derivation, which reveals
nothing about the key) is in every record. `secret_keys[0]` writes; the verifier is
given every key, so rotation needs no re-writing. A record under an older key after
one under a newer key is reported (`key-regression`): a retired key that leaked
cannot be used to append to the chain after the rotation.

`verify_chain` authenticates each line on its own (MAC, canonical encoding), then
each link (sequence number and `prev`), so it names the exact file, line and
sequence number of a changed, forged, removed, duplicated or reordered record.

Rotation: past `max_bytes` the writer appends a `rotate` record, renames the file to
`<file>.<n>` (n = 1, 2, ...; an archive never changes name, so shippers and WORM
storage can take it as it is) and starts a new file with a `start` record linked to
the `rotate` record. A chain must begin at sequence 0 or with a `start` record on the
first line of a file, so records cut from the front of a file are found too. Every
start of the writer appends an `open` record.

Truncation, honestly: cutting whole records off the end of a hash chain leaves a
valid, shorter chain; no chain can show that alone. The writer therefore keeps a
checkpoint, `<file>.head` (the last sequence number and MAC, under its own MAC key),
rewritten in place after each record. The verifier reports a log shorter than its
checkpoint (`tail-truncated`), a missing checkpoint (`checkpoint-missing`), and a
final partial line (`truncated-line`). The limit: an attacker who holds a copy of an
older checkpoint can cut the log back to it. Only an anchor off the host closes that
(ship the checkpoint to your log store and pass it as `checkpoint=`). A writer that
restarts after a crash during a write acknowledges the partial line in its `open`
record (reported as a note, with the line's SHA-256); a writer that finds the log
shorter than its checkpoint records that too, and the verifier reports it.

Not covered: an attacker who holds the secret keys (they can rewrite everything, the
checkpoint included); deleting the oldest archives (indistinguishable from retention:
reported as a chain that does not start at sequence 0); several processes writing one
file (refused with an exclusive lock on the checkpoint: give each worker its own
path); secrecy (records are redacted, not encrypted).

References: RFC 2104 (HMAC); Schneier and Kelsey, "Secure Audit Logs to Support
Computer Forensics" (1999), hash-chained, keyed log records; RFC 8785 (JSON
canonicalisation; ours is the simpler sorted-key, ASCII-only form of `json.dumps`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from pydantic import SecretStr, field_validator, model_validator

from bastion.exceptions import ConfigurationError
from bastion.sections import Section

logger = logging.getLogger("bastion")

FsyncPolicy = Literal["always", "interval", "never"]

FORMAT_VERSION: Final = 1
GENESIS_MAC: Final = bytes(32)  # `prev` of the very first record
_KEY_LABEL: Final = b"bastion.auditlog.chain.v1"
_HEAD_KEY_LABEL: Final = b"bastion.auditlog.head.v1"
_KEY_ID_LABEL: Final = b"bastion.auditlog.key-id.v1"
_KEY_ID_HEX_CHARS: Final = 16  # 64 bits: only has to tell a handful of keys apart
# The checkpoint is one fixed-size line rewritten in place with one write, so it is
# never half old, half new, and the writer can hold a lock on it for its lifetime.
HEAD_BYTES: Final = 512
# A redacted event is small (strings are cut at 512 characters, nesting at depth 4);
# 16 KiB leaves room for a large `details` while bounding each line.
DEFAULT_MAX_RECORD_BYTES: Final = 16 * 1024
# 64 MiB per file: the verifier reads a file at once, and smaller archives ship sooner.
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
# fsync costs milliseconds on a disk, on the event loop: per record it would let an
# attack flood of refused requests slow everyone. At most 100 records or 1 s at risk.
DEFAULT_FSYNC_RECORDS: Final = 100
DEFAULT_FSYNC_SECONDS: Final = 1.0
_VERIFY_MAX_LINE_BYTES: Final = 1024 * 1024  # longer lines are refused unparsed
_TYPES: Final = frozenset({"event", "open", "rotate", "start"})
_HEX64: Final = re.compile(r"[0-9a-f]{64}\Z")

# Verification findings (stable codes, the ids of the tests that trigger them).
REASON_MALFORMED: Final = "malformed-line"
REASON_ALTERED: Final = "record-altered"
REASON_UNKNOWN_KEY: Final = "unknown-key"
REASON_REMOVED: Final = "records-removed"
REASON_REORDERED: Final = "records-reordered"
REASON_DUPLICATED: Final = "record-duplicated"
REASON_CHAIN_BREAK: Final = "chain-break"
REASON_KEY_REGRESSION: Final = "key-regression"
REASON_ROTATION: Final = "rotation-mismatch"
REASON_TRUNCATED_LINE: Final = "truncated-line"
REASON_TAIL_TRUNCATED: Final = "tail-truncated"
REASON_CHECKPOINT_MISSING: Final = "checkpoint-missing"
REASON_CHECKPOINT_ALTERED: Final = "checkpoint-altered"
REASON_EMPTY: Final = "no-records"


# -- keys and encoding ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditKey:
    """One secret, derived for the audit log: the chain key, the checkpoint key, the id."""

    key_id: str
    chain_key: bytes = field(repr=False)
    head_key: bytes = field(repr=False)


def derive_key(secret: str | SecretStr) -> AuditKey:
    """Derive the audit-log keys from one of `secret_keys`.

    HMAC-SHA256 keyed with the secret over a fixed label is a PRF output (the
    `hmac` key derivation of itsdangerous); one label per use keeps the chain key,
    the checkpoint key and the public key id independent of each other and of every
    other use of the same secret.
    """
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not raw:
        raise ConfigurationError("secret_keys: the audit log needs a non-empty key")
    material = raw.encode("utf-8")
    return AuditKey(
        key_id=hmac.new(material, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:_KEY_ID_HEX_CHARS],
        chain_key=hmac.new(material, _KEY_LABEL, hashlib.sha256).digest(),
        head_key=hmac.new(material, _HEAD_KEY_LABEL, hashlib.sha256).digest(),
    )


def canonical_json(value: object) -> bytes:
    """The one byte encoding of a record: sorted keys, no spaces, ASCII only."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _record_mac(key: bytes, prev: bytes, body: Mapping[str, object]) -> bytes:
    return hmac.new(key, prev + canonical_json(body), hashlib.sha256).digest()


def _head_mac(key: bytes, body: Mapping[str, object]) -> bytes:
    return hmac.new(key, canonical_json(body), hashlib.sha256).digest()


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


# -- verification (pure over file contents) --------------------------------------------


@dataclass(frozen=True, slots=True)
class LogFile:
    """The name and the bytes of one log file, oldest first in a sequence."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The latest sequence number and MAC, as the writer's `.head` file records it."""

    seq: int
    mac: str
    key_id: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One proof of tampering (or loss): what, and exactly where."""

    reason: str  # one of the REASON_* constants
    file: str
    line: int  # 1-based; 0 when the finding is about the file or checkpoint as a whole
    seq: int | None
    detail: str

    def describe(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        seq = f" seq {self.seq}" if self.seq is not None else ""
        return f"{where}{seq}: {self.reason}: {self.detail}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    files: tuple[str, ...]
    records: int  # authenticated records
    first_seq: int | None
    last_seq: int | None
    starts_at_genesis: bool
    anchored: bool  # a checkpoint was checked against the end of the chain
    findings: tuple[Finding, ...]
    notes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass(frozen=True, slots=True)
class _Record:
    seq: int
    type: str
    kid: str
    prev: bytes
    mac: bytes
    info: Mapping[str, object]


@dataclass(slots=True)
class _Good:
    """The last record that authenticated, and where it is."""

    record: _Record
    file_index: int
    line: int
    key_rank: int


def _parse_line(raw: bytes) -> tuple[_Record, dict[str, object]] | None:
    """A structurally valid record in canonical encoding, or None."""
    if len(raw) > _VERIFY_MAX_LINE_BYTES:
        return None
    try:
        value = json.loads(raw)
        if not isinstance(value, dict) or canonical_json(value) != raw:
            return None
    except (ValueError, RecursionError):
        return None
    payload_key = "event" if value.get("type") == "event" else "info"
    if set(value) != {"v", "seq", "type", "kid", "prev", "mac", payload_key}:
        return None
    seq, kind, kid, prev, mac = (value[k] for k in ("seq", "type", "kid", "prev", "mac"))
    payload = value[payload_key]
    if (
        value["v"] != FORMAT_VERSION
        or type(seq) is not int
        or seq < 0
        or kind not in _TYPES
        or not isinstance(kid, str)
        or not isinstance(prev, str)
        or not isinstance(mac, str)
        or not _HEX64.match(prev)
        or not _HEX64.match(mac)
        or not isinstance(payload, dict)
    ):
        return None
    body = {k: v for k, v in value.items() if k != "mac"}
    record = _Record(seq, kind, kid, bytes.fromhex(prev), bytes.fromhex(mac), payload)
    return record, body


def parse_checkpoint(data: bytes, keys: Mapping[str, AuditKey]) -> Checkpoint | str:
    """The authenticated checkpoint in a `.head` file, or why it is not one."""
    body_bytes = data[:-1].rstrip(b" ")
    if len(data) != HEAD_BYTES or data != body_bytes.ljust(HEAD_BYTES - 1, b" ") + b"\n":
        return "not a checkpoint record"
    try:
        value = json.loads(body_bytes)
    except ValueError:
        return "not a checkpoint record"
    if not isinstance(value, dict) or canonical_json(value) != body_bytes:
        return "not a checkpoint record"
    if set(value) != {"v", "seq", "mac", "kid", "hmac"}:
        return "not a checkpoint record"
    seq, mac, kid, tag = value["seq"], value["mac"], value["kid"], value["hmac"]
    if (
        type(seq) is not int
        or not isinstance(mac, str)
        or not isinstance(kid, str)
        or not isinstance(tag, str)
    ):
        return "not a checkpoint record"
    key = keys.get(kid)
    if key is None:
        return f"written under key id {kid}, which is not among the keys given"
    expected = _head_mac(key.head_key, {k: v for k, v in value.items() if k != "hmac"})
    if not hmac.compare_digest(expected.hex(), tag):
        return "its MAC does not match its content"
    return Checkpoint(seq=seq, mac=mac, key_id=kid)


_Where = tuple[str, int, "int | None"]  # file, line, seq


class _Verifier:
    """One pass over the chain, collecting findings; see `verify_files`."""

    def __init__(self, files: Sequence[LogFile], keys: Sequence[AuditKey]) -> None:
        self.files = files
        self.keys = {key.key_id: key for key in keys}
        self.rank = {key.key_id: index for index, key in enumerate(keys)}
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.good: _Good | None = None
        self.first: _Record | None = None
        self.count = 0
        self.unauthenticated = 0  # lines since `good` that did not authenticate
        self.pending_malformed: list[tuple[str, int, bytes]] = []
        self.seen: dict[int, tuple[bytes, str, int]] = {}  # seq -> (mac, file, line)
        self.gaps: list[tuple[_Where, int, int]] = []  # where, first and last missing seq

    def finding(self, reason: str, at: _Where, detail: str) -> None:
        self.findings.append(Finding(reason, at[0], at[1], at[2], detail))

    def run(self) -> None:
        for file_index, log in enumerate(self.files):
            lines = log.data.split(b"\n")
            partial = lines.pop()  # b"" when the file ends with a newline
            if not lines and not partial:
                self.finding(REASON_EMPTY, (log.name, 0, None), "an empty file (it had a record)")
            for line_index, raw in enumerate(lines):
                self.line(file_index, line_index + 1, raw)
            if partial:
                self.flush_malformed()
                at = (log.name, len(lines) + 1, None)
                self.finding(REASON_TRUNCATED_LINE, at, f"{len(partial)} bytes without a newline")
                self.unauthenticated += 1
        self.flush_malformed()

    def line(self, file_index: int, line: int, raw: bytes) -> None:
        name = self.files[file_index].name
        parsed = _parse_line(raw)
        if parsed is None:
            self.pending_malformed.append((name, line, raw))
            self.unauthenticated += 1
            return
        record, body = parsed
        at = (name, line, record.seq)
        key = self.keys.get(record.kid)
        if key is None or not hmac.compare_digest(
            _record_mac(key.chain_key, record.prev, body), record.mac
        ):
            self.flush_malformed()
            if key is None:
                detail = (
                    f"key id {record.kid} is not among the keys given (forged, or a key left out)"
                )
                self.finding(REASON_UNKNOWN_KEY, at, detail)
            else:
                self.finding(REASON_ALTERED, at, "the MAC does not match: changed or forged")
            self.unauthenticated += 1
            return
        self.acknowledge_partial(record, name, line)
        self.flush_malformed()
        self.link(record, file_index, line)
        state = record.info.get("checkpoint") if record.type == "open" else None
        if state == "missing":
            self.finding(REASON_CHECKPOINT_MISSING, at, "the writer restarted without it")
        elif state == "unreadable":
            self.finding(
                REASON_CHECKPOINT_ALTERED, at, "the writer restarted and could not read it"
            )

    def acknowledge_partial(self, record: _Record, name: str, line: int) -> None:
        """An `open` record that names the malformed line before it turns it into a note."""
        if record.type != "open" or not self.pending_malformed:
            return
        last_name, last_line, raw = self.pending_malformed[-1]
        digest = record.info.get("discarded_sha256")
        if (
            (last_name, last_line) == (name, line - 1)
            and record.info.get("discarded_bytes") == len(raw)
            and isinstance(digest, str)
            and hmac.compare_digest(hashlib.sha256(raw).hexdigest(), digest)
        ):
            self.pending_malformed.pop()
            self.unauthenticated -= 1
            self.notes.append(
                f"{name}:{last_line}: a partial record from an interrupted write, "
                f"acknowledged by the writer when it restarted (seq {record.seq})"
            )

    def flush_malformed(self) -> None:
        for name, line, _raw in self.pending_malformed:
            detail = "not a record in canonical form: changed, inserted or split"
            self.finding(REASON_MALFORMED, (name, line, None), detail)
        self.pending_malformed.clear()

    def link(self, record: _Record, file_index: int, line: int) -> None:
        name = self.files[file_index].name
        at = (name, line, record.seq)
        rank, good = self.rank[record.kid], self.good
        previous = self.seen.get(record.seq)
        if previous is not None:
            kind = REASON_DUPLICATED if previous[0] == record.mac else REASON_REORDERED
            self.finding(kind, at, f"sequence number already at {previous[1]}:{previous[2]}")
            return
        self.count += 1
        self.seen[record.seq] = (record.mac, name, line)
        if good is None:
            self.first = record
            if record.seq == 0 and record.prev == GENESIS_MAC:
                pass
            elif record.type == "start" and line == 1:
                self.notes.append(
                    f"the chain starts at seq {record.seq} in {name}: "
                    "older files were not given (or were deleted)"
                )
            elif not self.unauthenticated:
                detail = "the chain starts inside a file: the records before it were removed"
                self.finding(REASON_REMOVED, at, detail)
        else:
            self.check_link(good, record, at)
            if rank > good.key_rank:
                detail = f"key id {record.kid} is older than key id {good.record.kid} before it"
                self.finding(REASON_KEY_REGRESSION, at, detail)
            self.check_rotation(good, file_index, line, record, at)
            if record.seq < good.record.seq:
                return  # a record from the past: reported; the chain keeps its place
        self.good = _Good(record, file_index, line, rank)
        self.unauthenticated = 0

    def check_link(self, good: _Good, record: _Record, at: _Where) -> None:
        expected = good.record.seq + 1
        skipped = self.unauthenticated
        if skipped and expected <= record.seq <= expected + skipped:
            return  # the lines in between were reported; nothing more is provable here
        if record.seq == expected and record.prev != good.record.mac:
            self.finding(REASON_CHAIN_BREAK, at, "authentic, but not the successor of the last")
        elif record.seq > expected and record.info.get("checkpoint") == "ahead":
            detail = f"the writer restarted with seq {expected}..{record.seq - 1} missing"
            self.finding(REASON_TAIL_TRUNCATED, at, detail)
        elif record.seq > expected:
            self.gaps.append((at, expected, record.seq - 1))
        elif record.seq < expected:
            self.finding(REASON_REORDERED, at, f"comes after seq {good.record.seq}")

    def check_rotation(
        self, good: _Good, file_index: int, line: int, record: _Record, at: _Where
    ) -> None:
        if self.unauthenticated:
            return  # the lines in between were reported; the boundary may be among them
        starts_file = record.type == "start" and line == 1
        if good.record.type == "rotate":
            if not starts_file or file_index != good.file_index + 1:
                self.finding(REASON_ROTATION, at, "the record after a rotation must start a file")
        elif starts_file or file_index != good.file_index:
            detail = f"{self.files[good.file_index].name} does not end with a rotation record"
            self.finding(REASON_ROTATION, at, detail)

    def resolve_gaps(self) -> None:
        """A missing record that turns up later was moved, not removed."""
        for at, lo, hi in self.gaps:
            moved = next((s for s in range(lo, min(hi, lo + 1000) + 1) if s in self.seen), None)
            if moved is None:
                self.finding(REASON_REMOVED, at, f"seq {lo}..{hi} are missing before it")
            else:
                _mac, file, line = self.seen[moved]
                self.finding(REASON_REORDERED, at, f"seq {moved} belongs here, is at {file}:{line}")


def verify_files(
    files: Sequence[LogFile],
    keys: Sequence[str | SecretStr],
    *,
    checkpoint: bytes | Checkpoint | None = None,
    checkpoint_name: str = "checkpoint",
    require_checkpoint: bool = False,
) -> VerifyReport:
    """Verify the chain across `files` (oldest first) with every key in `keys`.

    `checkpoint` is the writer's `.head` file content, or a `Checkpoint` taken from an
    anchor off the host; with `require_checkpoint`, its absence is a finding.
    """
    derived = [derive_key(key) for key in keys]
    verifier = _Verifier(files, derived)
    verifier.run()
    verifier.resolve_gaps()
    good = verifier.good
    last_name = files[-1].name if files else ""
    if good is None:
        verifier.finding(REASON_EMPTY, (last_name, 0, None), "no authentic record")
    elif good.record.type == "rotate":
        at = (verifier.files[good.file_index].name, good.line, good.record.seq)
        verifier.finding(REASON_TAIL_TRUNCATED, at, "the file after this rotation is missing")
    anchored = False
    if isinstance(checkpoint, bytes):
        parsed = parse_checkpoint(checkpoint, verifier.keys)
        if isinstance(parsed, str):
            verifier.finding(REASON_CHECKPOINT_ALTERED, (checkpoint_name, 0, None), parsed)
            checkpoint = None
        else:
            checkpoint = parsed
    if checkpoint is None:
        if require_checkpoint and not any(
            f.reason == REASON_CHECKPOINT_ALTERED for f in verifier.findings
        ):
            detail = "records cut off the end cannot be detected without it"
            verifier.finding(REASON_CHECKPOINT_MISSING, (checkpoint_name, 0, None), detail)
        else:
            verifier.notes.append("no checkpoint given: whole records cut off the end go unseen")
    elif good is not None:
        anchored = True
        _check_anchor(verifier, good, checkpoint, checkpoint_name)
    first = verifier.first
    return VerifyReport(
        files=tuple(f.name for f in files),
        records=verifier.count,
        first_seq=first.seq if first else None,
        last_seq=good.record.seq if good else None,
        starts_at_genesis=bool(first and first.seq == 0 and first.prev == GENESIS_MAC),
        anchored=anchored,
        findings=tuple(verifier.findings),
        notes=tuple(verifier.notes),
    )


def _check_anchor(verifier: _Verifier, good: _Good, checkpoint: Checkpoint, name: str) -> None:
    seen = verifier.seen.get(checkpoint.seq)
    if good.record.seq < checkpoint.seq:
        at = (verifier.files[good.file_index].name, good.line, good.record.seq)
        detail = f"the chain ends here; the checkpoint records seq {checkpoint.seq}"
        verifier.finding(REASON_TAIL_TRUNCATED, at, detail)
    elif seen is None or seen[0].hex() != checkpoint.mac:
        detail = "the record it names is not in the chain as recorded"
        verifier.finding(REASON_CHECKPOINT_ALTERED, (name, 0, checkpoint.seq), detail)
    elif good.record.seq > checkpoint.seq:
        verifier.notes.append(
            f"{good.record.seq - checkpoint.seq} record(s) after the checkpoint "
            "(the writer stopped between a record and its checkpoint)"
        )


# -- files ------------------------------------------------------------------------------


def archive_index(path: str | Path) -> int | None:
    """n for an archive `<file>.<n>`; None for the current file."""
    suffix = Path(path).suffix
    return int(suffix[1:]) if suffix[1:].isdigit() and suffix[1:].isascii() else None


def head_path(path: str | Path) -> Path:
    return Path(f"{path}.head")


def order_files(paths: Iterable[str | Path]) -> list[Path]:
    """Oldest first: archives by number, then the current file (shell globs sort 10 < 2)."""
    unique = {Path(p) for p in paths}
    return sorted(unique, key=lambda p: (archive_index(p) is None, archive_index(p) or 0, str(p)))


def verify_chain(paths: Iterable[str | Path], keys: Sequence[str | SecretStr]) -> VerifyReport:
    """Read the files (and the current file's `.head`) and verify the chain.

    When the current file (a name without a numeric suffix) is among `paths`, its
    checkpoint is required. Raises OSError when a file cannot be read.
    """
    ordered = order_files(paths)
    files = [LogFile(str(p), p.read_bytes()) for p in ordered]
    current = [p for p in ordered if archive_index(p) is None]
    checkpoint: bytes | None = None
    checkpoint_name = "checkpoint"
    if current:
        head = head_path(current[-1])
        checkpoint_name = str(head)
        checkpoint = head.read_bytes() if head.exists() else None
    return verify_files(
        files,
        keys,
        checkpoint=checkpoint,
        checkpoint_name=checkpoint_name,
        require_checkpoint=bool(current),
    )


EXIT_OK: Final = 0
EXIT_TAMPERED: Final = 1
EXIT_USAGE: Final = 2


def verify_command(paths: list[str], keys: list[str]) -> tuple[int, str]:
    """`bastion log verify FILE...`: exit code and report text.

    0: the chain verifies; 1: tampering or loss found; 2: could not verify.
    """
    if not paths:
        return EXIT_USAGE, "bastion log verify: give the log files (e.g. audit.log*)"
    if not [key for key in keys if key]:
        return EXIT_USAGE, "bastion log verify: no keys (set BASTION_SECRET_KEYS)"
    candidates = [p for p in paths if not p.endswith(".head")]
    try:
        report = verify_chain(candidates, [key for key in keys if key])
    except OSError as exc:
        return EXIT_USAGE, f"bastion log verify: cannot read {exc.filename}: {exc.strerror}"
    lines: list[str] = []
    span = f"seq {report.first_seq}..{report.last_seq}" if report.last_seq is not None else "empty"
    status = "OK" if report.ok else "FAILED"
    lines.append(
        f"{status}: {report.records} authentic record(s) in {len(report.files)} file(s), {span}"
        + (", anchored by the checkpoint" if report.anchored else ", not anchored")
    )
    lines.extend(f"  problem: {finding.describe()}" for finding in report.findings)
    lines.extend(f"  note: {note}" for note in report.notes)
    return (EXIT_OK if report.ok else EXIT_TAMPERED), "\n".join(lines)


# -- settings ---------------------------------------------------------------------------


class AuditLogSettings(Section):
    """The hash-chained audit file; off until `path` is set.

    Keys: derived from `secret_keys` (the first writes). Keep retired keys to verify
    old files: `bastion log verify` takes them all from BASTION_SECRET_KEYS.
    """

    path: Path | None = None
    """The current file; archives are `<path>.1`, `<path>.2`...; checkpoint `<path>.head`.
    One writer per path: give each worker process its own."""

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


# -- the sink ---------------------------------------------------------------------------

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, documented above
    _fcntl = None  # type: ignore[assignment]  # the module is absent off POSIX

_O_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)  # refuse a planted symlink


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
