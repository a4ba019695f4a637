"""API keys: `<prefix>_<id>_<secret>`, stored only as a keyed hash.

Threats and defences:

* Theft of the key store (a dump, a backup, a read-only SQL injection): the store
  holds HMAC-SHA256(pepper, secret) and never the secret. The pepper lives in
  settings (a secret file), not beside the hashes, so a dump alone verifies nothing.
  A slow password hash is unnecessary: the secret is 256 random bits, not a guessable
  password.
* Timing attacks on comparison: the record is found by the public `id`, and the
  hashes are compared with `hmac.compare_digest`.
* Leaked keys: the visible prefix lets secret scanners (GitHub push protection,
  gitleaks) recognise a key; keys expire and can be revoked one by one.

Not covered: rate limiting of guesses (the rate-limit layer does that), and key
rotation reminders.

References: OWASP REST Security Cheat Sheet (API keys);
GitHub token format https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from pydantic import SecretStr

from bastion.auth.principal import Principal
from bastion.auth.settings import APIKeySettings
from bastion.stores.base import Store, check_store

REASON_APIKEY_MALFORMED: Final = "apikey-malformed"
REASON_APIKEY_UNKNOWN: Final = "apikey-unknown"
REASON_APIKEY_WRONG_SECRET: Final = "apikey-wrong-secret"  # noqa: S105 - a reason code
REASON_APIKEY_EXPIRED: Final = "apikey-expired"
REASON_APIKEY_REVOKED: Final = "apikey-revoked"

KEY_ID_BYTES: Final = 8  # 64 bits: a lookup id, unique, not secret
KEY_SECRET_BYTES: Final = 32  # 256 bits, as a session id
_KEY_ID: Final = re.compile(r"^[0-9a-f]{16}$")
_SECRET: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
STORE_PREFIX: Final = "apikey:"


@dataclass(frozen=True, slots=True)
class ParsedKey:
    key_id: str
    untrusted_secret: str


def parse_api_key(untrusted_key: str, prefix: str) -> ParsedKey | None:
    """Split `<prefix>_<id>_<secret>`; None unless every part has our exact shape."""
    parts = untrusted_key.split("_", 2)
    if len(parts) != 3 or parts[0] != prefix:
        return None
    key_id, secret = parts[1], parts[2]
    if not _KEY_ID.match(key_id) or not _SECRET.match(secret):
        return None
    return ParsedKey(key_id, secret)


def hash_secret(key_id: str, secret: str, pepper: str) -> str:
    """HMAC-SHA256 over id and secret: a record cannot be moved to another id."""
    message = f"{key_id}:{secret}".encode()
    return hmac.new(pepper.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class APIKeyRecord:
    key_id: str
    owner: str
    hashed_secret: str
    scopes: frozenset[str]
    roles: frozenset[str]
    expires_at: float | None
    revoked: bool = False

    def encode(self) -> bytes:
        doc = {
            "o": self.owner,
            "h": self.hashed_secret,
            "s": sorted(self.scopes),
            "r": sorted(self.roles),
            "e": self.expires_at,
            "x": self.revoked,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, key_id: str, raw: bytes) -> APIKeyRecord:
        doc = json.loads(raw)
        return cls(
            key_id,
            str(doc["o"]),
            str(doc["h"]),
            frozenset(doc["s"]),
            frozenset(doc["r"]),
            None if doc["e"] is None else float(doc["e"]),
            bool(doc["x"]),
        )


def check_api_key(
    parsed: ParsedKey, record: APIKeyRecord | None, peppers: Iterable[str], now: float
) -> str:
    """The reason the presented key is refused, or "" (pure: no store, no clock)."""
    if record is None:
        return REASON_APIKEY_UNKNOWN
    matched = False
    for pepper in peppers:
        candidate = hash_secret(parsed.key_id, parsed.untrusted_secret, pepper)
        matched |= hmac.compare_digest(candidate, record.hashed_secret)
    if not matched:
        return REASON_APIKEY_WRONG_SECRET
    if record.revoked:
        return REASON_APIKEY_REVOKED
    if record.expires_at is not None and now >= record.expires_at:
        return REASON_APIKEY_EXPIRED
    return ""


@dataclass(frozen=True, slots=True)
class APIKeyVerdict:
    principal: Principal | None
    reason: str


class APIKeyStore:
    """API key records over the `Store` protocol (memory, SQLite or Redis)."""

    def __init__(
        self,
        store: Store,
        settings: APIKeySettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_store(store)
        self.store = store
        self.settings = settings
        self._peppers = [_secret(p) for p in settings.peppers]
        self.clock = clock

    async def create(
        self,
        owner: str,
        *,
        scopes: Iterable[str] = (),
        roles: Iterable[str] = (),
        ttl_seconds: float | None = None,
    ) -> str:
        """Create a key and return its plaintext, the only time it exists anywhere."""
        key_id = secrets.token_hex(KEY_ID_BYTES)
        secret = secrets.token_urlsafe(KEY_SECRET_BYTES)
        expires_at = None if ttl_seconds is None else self.clock() + ttl_seconds
        record = APIKeyRecord(
            key_id,
            owner,
            hash_secret(key_id, secret, self._peppers[0]),
            frozenset(scopes),
            frozenset(roles),
            expires_at,
        )
        if not await self.store.set_if_absent(STORE_PREFIX + key_id, record.encode(), None):
            raise RuntimeError("API key id collision")  # pragma: no cover - 2**-64
        return f"{self.settings.prefix}_{key_id}_{secret}"

    async def revoke(self, key_id: str) -> bool:
        """Mark a key revoked (kept, so a later use is reported as such)."""
        record = await self.get(key_id)
        if record is None:
            return False
        revoked = APIKeyRecord(
            record.key_id,
            record.owner,
            record.hashed_secret,
            record.scopes,
            record.roles,
            record.expires_at,
            revoked=True,
        )
        await self.store.set(STORE_PREFIX + key_id, revoked.encode(), None)
        return True

    async def get(self, key_id: str) -> APIKeyRecord | None:
        raw = await self.store.get(STORE_PREFIX + key_id)
        return None if raw is None else APIKeyRecord.decode(key_id, raw)

    async def verify(self, untrusted_key: str) -> APIKeyVerdict:
        """Raises `StoreError` if the store fails (the caller fails closed)."""
        parsed = parse_api_key(untrusted_key, self.settings.prefix)
        if parsed is None:
            return APIKeyVerdict(None, REASON_APIKEY_MALFORMED)
        record = await self.get(parsed.key_id)
        reason = check_api_key(parsed, record, self._peppers, self.clock())
        if reason or record is None:
            return APIKeyVerdict(None, reason or REASON_APIKEY_UNKNOWN)
        return APIKeyVerdict(
            Principal(record.owner, "apikey", roles=record.roles, scopes=record.scopes), ""
        )


def _secret(value: SecretStr | str) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


async def create_api_key(
    store: Store,
    settings: APIKeySettings,
    owner: str,
    *,
    scopes: Iterable[str] = (),
    roles: Iterable[str] = (),
    ttl_seconds: float | None = None,
) -> str:
    """Create a key for `owner`; the plaintext is returned once and never stored."""
    return await APIKeyStore(store, settings).create(
        owner, scopes=scopes, roles=roles, ttl_seconds=ttl_seconds
    )
