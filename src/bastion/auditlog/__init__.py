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
one under a newer key is reported (`key-regression`), and so is a checkpoint under
any key but the first: a retired key that leaked cannot be used to append to the
chain after the rotation, nor to cut it back to before the rotation and append there.

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
checkpoint (`tail-truncated`), a missing checkpoint (`checkpoint-missing`), a
final partial line (`truncated-line`), and a last archive that does not end with its
`rotate` record (`tail-truncated`: the current file was deleted and the archive cut).
The limit: an attacker who holds a copy of an
older checkpoint can cut the log back to it. Only an anchor off the host closes that
(ship the checkpoint to your log store and pass it as `checkpoint=`). A writer that
restarts after a crash during a write acknowledges the partial line in its `open`
record (reported as a note, with the line's SHA-256); a writer that finds the log
shorter than its checkpoint records that too, and the verifier reports it.

The package reads in this order:

* `records`  the record format: derived keys, canonical encoding, a line, the checkpoint;
* `verify`   the pure verifier, its findings and report, and `bastion log verify`;
* `settings` `AuditLogSettings`, and the weakening it reports;
* `sink`     the writer, `AuditLogSink`.

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

from bastion.auditlog.records import (
    FORMAT_VERSION,
    GENESIS_MAC,
    HEAD_BYTES,
    AuditKey,
    Checkpoint,
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
from bastion.auditlog.sink import AuditLogSink
from bastion.auditlog.verify import (
    EXIT_OK,
    EXIT_TAMPERED,
    EXIT_USAGE,
    REASON_ALTERED,
    REASON_CHAIN_BREAK,
    REASON_CHECKPOINT_ALTERED,
    REASON_CHECKPOINT_MISSING,
    REASON_DUPLICATED,
    REASON_EMPTY,
    REASON_KEY_REGRESSION,
    REASON_MALFORMED,
    REASON_REMOVED,
    REASON_REORDERED,
    REASON_ROTATION,
    REASON_TAIL_TRUNCATED,
    REASON_TRUNCATED_LINE,
    REASON_UNKNOWN_KEY,
    Finding,
    LogFile,
    VerifyReport,
    verify_chain,
    verify_command,
    verify_files,
)

__all__ = [
    "DEFAULT_FSYNC_RECORDS",
    "DEFAULT_FSYNC_SECONDS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_RECORD_BYTES",
    "EXIT_OK",
    "EXIT_TAMPERED",
    "EXIT_USAGE",
    "FORMAT_VERSION",
    "GENESIS_MAC",
    "HEAD_BYTES",
    "REASON_ALTERED",
    "REASON_CHAIN_BREAK",
    "REASON_CHECKPOINT_ALTERED",
    "REASON_CHECKPOINT_MISSING",
    "REASON_DUPLICATED",
    "REASON_EMPTY",
    "REASON_KEY_REGRESSION",
    "REASON_MALFORMED",
    "REASON_REMOVED",
    "REASON_REORDERED",
    "REASON_ROTATION",
    "REASON_TAIL_TRUNCATED",
    "REASON_TRUNCATED_LINE",
    "REASON_UNKNOWN_KEY",
    "AuditKey",
    "AuditLogSettings",
    "AuditLogSink",
    "Checkpoint",
    "Finding",
    "FsyncPolicy",
    "LogFile",
    "VerifyReport",
    "archive_index",
    "canonical_json",
    "derive_key",
    "head_path",
    "order_files",
    "parse_checkpoint",
    "verify_chain",
    "verify_command",
    "verify_files",
]
