"""The audit-log record format: derived keys, canonical encoding, one line, the checkpoint.

Threat: someone who can write the log file (an intruder on the host, an insider, a
compromised log shipper) edits a record, or forges one, and recomputes the chain.

Defence: every line is one record carrying a sequence number, a key id, the MAC of
the record before it (`prev`) and its own MAC:

    mac = HMAC-SHA256(key, prev_mac || canonical_json(record without "mac"))

The chain is keyed: an attacker who can write the file but does not hold the key
cannot recompute it (anyone can rebuild an unkeyed hash chain after editing it). The
key is derived from `secret_keys` with a fixed purpose label, so a key that signs
cookies never MACs the log directly; the key id (a second derivation, which reveals
nothing about the key) is in every record. The checkpoint, `<file>.head` (the last
sequence number and MAC), is one fixed-size line under its own MAC key. A line or a
checkpoint is accepted only in its one canonical encoding. Archives are `<file>.<n>`
(n = 1, 2, ...), ordered by number, the current file last.

Not covered: an attacker who holds the secret keys (they can rewrite everything, the
checkpoint included); secrecy (records are redacted, not encrypted).

References: RFC 2104 (HMAC); Schneier and Kelsey, "Secure Audit Logs to Support
Computer Forensics" (1999), hash-chained, keyed log records; RFC 8785 (JSON
canonicalisation; ours is the simpler sorted-key, ASCII-only form of `json.dumps`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pydantic import SecretStr

from bastion.exceptions import ConfigurationError

FORMAT_VERSION: Final = 1
GENESIS_MAC: Final = bytes(32)  # `prev` of the very first record
_KEY_LABEL: Final = b"bastion.auditlog.chain.v1"
_HEAD_KEY_LABEL: Final = b"bastion.auditlog.head.v1"
_KEY_ID_LABEL: Final = b"bastion.auditlog.key-id.v1"
_KEY_ID_HEX_CHARS: Final = 16  # 64 bits: only has to tell a handful of keys apart
# The checkpoint is one fixed-size line rewritten in place with one write, so it is
# never half old, half new, and the writer can hold a lock on it for its lifetime.
HEAD_BYTES: Final = 512
_VERIFY_MAX_LINE_BYTES: Final = 1024 * 1024  # longer lines are refused unparsed
_TYPES: Final = frozenset({"event", "open", "rotate", "start"})
_HEX64: Final = re.compile(r"[0-9a-f]{64}\Z")


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


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The latest sequence number and MAC, as the writer's `.head` file records it."""

    seq: int
    mac: str
    key_id: str


@dataclass(frozen=True, slots=True)
class _Record:
    seq: int
    type: str
    kid: str
    prev: bytes
    mac: bytes
    info: Mapping[str, object]


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
