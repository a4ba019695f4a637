"""Field-level encryption: sensitive values encrypted at rest, each bound to its record.

Threat: a database dump, a backup or a read-only SQL injection discloses sensitive
columns (national ids, tokens of third parties, health data); someone who can write
the database moves an encrypted value from one row to another (their row now shows
the victim's value to them, or the victim's row holds a value they chose).
Defence: AES-256-GCM (an AEAD, from `cryptography`) with a fresh random 96-bit nonce
per value. The associated data binds each ciphertext to its place, `record_aad(table,
column, row_id)`: a value moved to another row, column or table no longer decrypts.
The token is self-describing and base64url (RFC 4648 section 5, no padding):

    version (1 byte) | key id (4 bytes) | nonce (12 bytes) | ciphertext and tag

and the version and key id are authenticated too (they lead the associated data).
Keys rotate as `secret_keys` do: the first key encrypts, every key decrypts;
`reencrypt` and `reencrypt_many` move stored values to the current key, after which
the old key can be removed. Every failure (tampered, truncated, moved, unknown or
retired key, garbage) raises the same `DecryptionError`, as Fernet raises one
`InvalidToken`: a caller has nothing to branch on and an attacker nothing to learn.

Not covered: keys stored beside the data (keep them in a secret store); the length of
the plaintext (it shows through); putting an older value of the same field back in
the same row (rollback: same associated data; add a version column to `row_id` if it
matters); searching encrypted values (store a keyed HMAC "blind index" beside them).
Random nonces are safe for about 2**32 encryptions per key (NIST SP 800-38D section
8.3): rotate keys well before that.

References: NIST SP 800-38D (GCM); RFC 5116 (AEAD interface); RFC 4648 section 5.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import SecretStr, field_validator
from pydantic_settings import NoDecode

from bastion.exceptions import BastionError, ConfigurationError
from bastion.sections import Section, split_keys

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# `cryptography` is imported when a FieldEncryptor is built, not with this module, so
# `Settings` can validate `FieldEncryptionSettings` without the optional dependency.

TOKEN_VERSION: Final = 1
KEY_BYTES: Final = 32  # AES-256
NONCE_BYTES: Final = 12  # 96 bits: GCM's native nonce size (SP 800-38D section 8.2)
TAG_BYTES: Final = 16  # AESGCM's full-length tag
KEY_ID_BYTES: Final = 4  # tells a handful of configured keys apart; checked unique
_HEADER_BYTES: Final = 1 + KEY_ID_BYTES
_MIN_TOKEN_BYTES: Final = _HEADER_BYTES + NONCE_BYTES + TAG_BYTES
# Fields, not files: a bound on what is base64-decoded from untrusted input.
MAX_TOKEN_CHARS: Final = 1024 * 1024
# 32 random bytes have about 30 distinct values; fewer than 16 is a typed or derived
# key (all zeros, a repeated pattern), never a random one (probability below 2**-40).
MIN_KEY_DISTINCT_BYTES: Final = 16
_KEY_ID_LABEL: Final = b"bastion.field-encryption.key-id.v1"
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*\Z")


class DecryptionError(BastionError):
    """The token could not be decrypted. One error for every cause, by design."""

    def __init__(self, index: int | None = None) -> None:
        where = f" (item {index})" if index is not None else ""
        super().__init__(f"invalid encrypted value{where}")
        self.index = index


def new_field_key() -> str:
    """A new random AES-256 key, base64url: what `bastion keys new --kind aes` prints."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes | None:
    """Strict base64url without padding; None for anything else."""
    if not text.isascii() or not _BASE64URL.match(text) or len(text) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode_key(text: str) -> bytes | str:
    """The raw key, or why `text` is not a usable key (never quoting the key).

    Padding is allowed here (keys come from many tools), never in tokens."""
    raw = _b64decode(text.strip().removesuffix("=").removesuffix("="))
    if raw is None:
        return "not base64url (generate keys with `bastion keys new --kind aes`)"
    if len(raw) != KEY_BYTES:
        return f"not {KEY_BYTES} bytes once decoded"
    if len(set(raw)) < MIN_KEY_DISTINCT_BYTES:
        return "not random (too few distinct bytes)"
    return raw


def weak_field_key(text: str) -> str | None:
    """Why `text` is not a usable key, or None. Never mentions the key itself."""
    decoded = _decode_key(text)
    return decoded if isinstance(decoded, str) else None


def parse_field_key(key: str | SecretStr) -> bytes:
    decoded = _decode_key(key.get_secret_value() if isinstance(key, SecretStr) else key)
    if isinstance(decoded, str):
        raise ConfigurationError(f"field_encryption.keys: a key is {decoded}")
    return decoded


def key_id(raw_key: bytes) -> bytes:
    """The public id of a key: a keyed hash of it, so it reveals nothing of the key."""
    return hmac.new(raw_key, _KEY_ID_LABEL, hashlib.sha256).digest()[:KEY_ID_BYTES]


def record_aad(table: str, column: str, row_id: str | int) -> bytes:
    """Associated data naming a value's place, unambiguously (a JSON list, not `a/b/c`,
    so `("a/b", "c")` and `("a", "b/c")` differ)."""
    return json.dumps([table, column, str(row_id)], separators=(",", ":")).encode("ascii")


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


class FieldEncryptor:
    """Encrypt and decrypt field values under a list of keys (the first encrypts)."""

    __slots__ = ("_ciphers", "_current")

    def __init__(self, keys: Sequence[str | SecretStr]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise ConfigurationError("field_encryption.keys: at least one key is required")
        ciphers: dict[bytes, AESGCM] = {}
        for key in keys:
            raw = parse_field_key(key)
            kid = key_id(raw)
            if kid in ciphers:
                raise ConfigurationError("field_encryption.keys: the same key is listed twice")
            ciphers[kid] = AESGCM(raw)
        self._ciphers = ciphers
        self._current = next(iter(ciphers))

    @classmethod
    def from_settings(cls, settings: FieldEncryptionSettings) -> FieldEncryptor:
        return cls(settings.keys)

    def __repr__(self) -> str:
        return f"FieldEncryptor(key_ids={self.key_ids!r})"

    @property
    def key_ids(self) -> list[str]:
        """The configured key ids (hex), the encrypting one first."""
        return [kid.hex() for kid in self._ciphers]

    def encrypt(self, plaintext: bytes | str, aad: bytes | str) -> str:
        """Encrypt under the current key; `aad` names the value's place (`record_aad`)."""
        header = bytes([TOKEN_VERSION]) + self._current
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self._current].encrypt(
            nonce, _as_bytes(plaintext), header + _as_bytes(aad)
        )
        return _b64encode(header + nonce + sealed)

    def decrypt(self, untrusted_token: str, aad: bytes | str) -> bytes:
        """The plaintext, or `DecryptionError` whatever went wrong."""
        raw = (
            _b64decode(untrusted_token)
            if isinstance(untrusted_token, str) and len(untrusted_token) <= MAX_TOKEN_CHARS
            else None
        )
        if raw is None or len(raw) < _MIN_TOKEN_BYTES or raw[0] != TOKEN_VERSION:
            raise DecryptionError
        header, nonce = raw[:_HEADER_BYTES], raw[_HEADER_BYTES : _HEADER_BYTES + NONCE_BYTES]
        cipher = self._ciphers.get(header[1:])
        if cipher is None:
            raise DecryptionError
        from cryptography.exceptions import InvalidTag

        try:
            return cipher.decrypt(
                nonce, raw[_HEADER_BYTES + NONCE_BYTES :], header + _as_bytes(aad)
            )
        except InvalidTag:
            raise DecryptionError from None

    def decrypt_text(self, untrusted_token: str, aad: bytes | str) -> str:
        try:
            return self.decrypt(untrusted_token, aad).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError from None

    def needs_reencryption(self, token: str) -> bool:
        """Whether `token` is under a key other than the current one (not authenticated:
        use it to pick rows to migrate, then `reencrypt` proves each one)."""
        raw = _b64decode(token[:12]) if len(token) >= 12 else None
        return raw is None or raw[1:_HEADER_BYTES] != self._current

    def reencrypt(self, untrusted_token: str, aad: bytes | str) -> str:
        """The same plaintext and place under the current key, with a fresh nonce."""
        return self.encrypt(self.decrypt(untrusted_token, aad), aad)

    def reencrypt_many(self, items: Iterable[tuple[str, bytes | str]]) -> Iterator[str]:
        """`reencrypt` over (token, aad) pairs, lazily, in order, for a migration.

        A token already under the current key is verified and returned unchanged. The
        first failure raises `DecryptionError` with the item's `index`.
        """
        for index, (token, aad) in enumerate(items):
            try:
                plaintext = self.decrypt(token, aad)
            except DecryptionError:
                raise DecryptionError(index) from None
            yield token if not self.needs_reencryption(token) else self.encrypt(plaintext, aad)


class FieldEncryptionSettings(Section):
    """Keys for `FieldEncryptor`; `repr` and logs show stars, never a key."""

    keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """AES-256 keys, base64url (`bastion keys new --kind aes`). The first encrypts,
    every key decrypts: put a new key first, run `reencrypt_many`, then remove the old."""

    @field_validator("keys", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_keys(value)

    @field_validator("keys")
    @classmethod
    def _valid_keys(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        seen: set[bytes] = set()
        for index, key in enumerate(value):
            decoded = _decode_key(key.get_secret_value())
            if isinstance(decoded, str):
                raise ValueError(f"keys[{index}] is {decoded}")
            if decoded in seen:
                raise ValueError(f"keys[{index}] repeats an earlier key")
            seen.add(decoded)
        return value
