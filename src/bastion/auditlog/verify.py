"""The audit-log verifier: pure over file contents, it names each change and where it is.

Threat: someone who can write the log files changes a record, deletes, reorders or
inserts records, cuts records off the front or the end, or deletes a file.

Defence: `verify_chain` authenticates each line on its own (MAC, canonical encoding),
then each link (sequence number and `prev`), so it names the exact file, line and
sequence number of a changed, forged, removed, duplicated or reordered record. It is
given every key, so rotation needs no re-writing; a record under an older key after
one under a newer key is reported (`key-regression`), and so is the writer's
checkpoint under any key but the first (keys are given in the writer's order): a
retired key that leaked cannot be used to append to the chain after the rotation,
nor to cut the chain back to before it and append there. A chain must begin at
sequence 0 or with a `start` record on the first line of a file, so records cut from
the front of a file are found too; a `rotate` record must be the last of its file and
be followed by a `start` record that opens the next.

Truncation, honestly: cutting whole records off the end of a hash chain leaves a
valid, shorter chain; no chain can show that alone. The verifier therefore checks the
writer's checkpoint, `<file>.head`, and reports a log shorter than its checkpoint
(`tail-truncated`), a missing checkpoint (`checkpoint-missing`), and a final partial
line (`truncated-line`). Given archives alone (the current file and its checkpoint
deleted), the last archive must end with its `rotate` record (`tail-truncated`
otherwise), so its end cannot be cut off unseen either. A partial line that the
restarted writer acknowledged in its `open` record (with the line's SHA-256) is
reported as a note; a writer that found the log shorter than its checkpoint recorded
that too, and it is reported.

Not covered: an attacker who holds a copy of an older checkpoint can cut the log back
to it (only an anchor off the host closes that: ship the checkpoint to your log store
and pass it as `checkpoint=`); an attacker who holds the secret keys; deleting the
oldest archives (indistinguishable from retention: reported as a chain that does not
start at sequence 0).

References: Schneier and Kelsey, "Secure Audit Logs to Support Computer Forensics"
(1999); RFC 2104 (HMAC).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import SecretStr

from bastion.auditlog.records import (
    GENESIS_MAC,
    AuditKey,
    Checkpoint,
    _parse_line,
    _Record,
    _record_mac,
    archive_index,
    derive_key,
    head_path,
    order_files,
    parse_checkpoint,
)

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


# -- verification (pure over file contents) --------------------------------------------


@dataclass(frozen=True, slots=True)
class LogFile:
    """The name and the bytes of one log file, oldest first in a sequence."""

    name: str
    data: bytes


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


@dataclass(slots=True)
class _Good:
    """The last record that authenticated, and where it is."""

    record: _Record
    file_index: int
    line: int
    key_rank: int


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
    elif (
        not verifier.unauthenticated
        and archive_index(verifier.files[good.file_index].name) is not None
    ):
        # The writer renames a file only after its `rotate` record: an archive that
        # ends otherwise lost its end, and (without the current file and its
        # checkpoint, deleted too) nothing else would show it.
        at = (verifier.files[good.file_index].name, good.line, good.record.seq)
        detail = "an archive ends with its rotation record: the records after this one are gone"
        verifier.finding(REASON_TAIL_TRUNCATED, at, detail)
    anchored = False
    if isinstance(checkpoint, bytes):
        parsed = parse_checkpoint(checkpoint, verifier.keys)
        if isinstance(parsed, str):
            verifier.finding(REASON_CHECKPOINT_ALTERED, (checkpoint_name, 0, None), parsed)
            checkpoint = None
        else:
            checkpoint = parsed
            _check_checkpoint_key(verifier, parsed, derived[0], checkpoint_name)
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


def _check_checkpoint_key(
    verifier: _Verifier, checkpoint: Checkpoint, newest: AuditKey, name: str
) -> None:
    """The writer's checkpoint is under its first key, the first key given.

    A retired key that leaked can still MAC records and a checkpoint: cutting the
    chain back to the last record under that key and appending to it leaves no
    record under a newer key to show a `key-regression`, but the checkpoint of a
    writer that ran with the newer key is always under it. (An anchor kept off the
    host, a `Checkpoint`, may predate a rotation: it is not held to this.)
    """
    if checkpoint.key_id == newest.key_id or any(
        f.reason == REASON_KEY_REGRESSION for f in verifier.findings
    ):
        return  # the writer's key, or the chain itself already shows the regression
    detail = (
        f"under key id {checkpoint.key_id}, not {newest.key_id}, the first key given "
        "(the writer's): a retired key rewrote the end, or the writer never ran with it"
    )
    verifier.finding(REASON_KEY_REGRESSION, (name, 0, checkpoint.seq), detail)


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
