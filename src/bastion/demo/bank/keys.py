"""The demo's keys and files in its data directory, created on first use.

Threat: keys read or replaced by another local user, or a key file planted before
the demo first runs (a known `secret-key` forges sessions, a `jwks.json` of the
planter's own signs API tokens).
Defence: the data directory is created 0700, and one that exists is refused unless
it belongs to this user and no one else may write to it (as for the development
certificate, and also when the certificate is configured); every key file is
0600, each created exclusively (`O_CREAT | O_EXCL`), so an existing file is read,
never overwritten, and a new one is never readable by others, not even for a moment.
Not covered: the keys sit beside the data they protect, which is acceptable for a
demo on a laptop only. A deployment gives them through Bastion's settings instead
(`BASTION_SECRET_KEYS`, `BASTION_FIELD_ENCRYPTION__KEYS`, a secrets directory), and
an identity provider's key set (`BASTION_DEMO__JWKS_FILE`), and then no file here is
created or read.

Files: `secret-key` (signing key for sessions and CSRF), `field-key` (AES-256 for
IBANs), `jwt-private.json` and `jwks.json` (an Ed25519 JWK set and its public half,
as `bastion keys new --kind jwt` prints them), and the SQLite databases.

References: RFC 7517 (JWK); RFC 7638 (thumbprint `kid`); RFC 9864 (`Ed25519`).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from joserfc.jwk import Key, KeySet, OKPKey

from bastion.crypto import new_field_key
from bastion.demo.tls import private_data_dir

SECRET_KEY_FILE: Final = "secret-key"  # noqa: S105 - a file name, not a secret
FIELD_KEY_FILE: Final = "field-key"
JWT_PRIVATE_FILE: Final = "jwt-private.json"
JWKS_FILE: Final = "jwks.json"
PROTECTED_DB_FILE: Final = "bank.sqlite3"
UNPROTECTED_DB_FILE: Final = "bank-unprotected.sqlite3"
SECRET_KEY_BYTES: Final = 32  # what `bastion keys new` prints: 256 bits
JWT_ALGORITHM: Final = "Ed25519"
# A JWK set is a few hundred bytes; anything larger in our own file is not ours.
_MAX_KEY_FILE_BYTES: Final = 64 * 1024


def ensure_data_dir(path: Path) -> Path:
    """Create the data directory (0700) if needed, refuse one others may write to;
    return it."""
    return private_data_dir(path)


def read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The file's text; if it does not exist, write `make()` to it first (0600).

    Two processes starting at once both try the exclusive create; the loser reads
    the winner's file.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with path.open("rb") as existing:
            return existing.read(_MAX_KEY_FILE_BYTES).decode("utf-8").strip()
    text = make()
    with os.fdopen(descriptor, "w", encoding="utf-8") as created:
        created.write(text + "\n")
    return text


def secret_key(data_dir: Path) -> str:
    return read_or_create(
        ensure_data_dir(data_dir) / SECRET_KEY_FILE,
        lambda: secrets.token_urlsafe(SECRET_KEY_BYTES),
    )


def field_key(data_dir: Path) -> str:
    return read_or_create(ensure_data_dir(data_dir) / FIELD_KEY_FILE, new_field_key)


@dataclass(frozen=True, slots=True)
class JWTKeys:
    """Where the API's verification keys are, and the key that signs, if ours."""

    jwks_file: Path
    signing_key: Key | None  # None: another issuer's keys, so the demo issues no tokens


def _new_key_set() -> tuple[dict[str, Any], dict[str, Any]]:
    key = OKPKey.generate_key(
        "Ed25519", parameters={"alg": JWT_ALGORITHM, "use": "sig"}, auto_kid=True
    )
    return {"keys": [key.as_dict(private=True)]}, {"keys": [key.as_dict(private=False)]}


def jwt_keys(data_dir: Path, jwks_file: Path | None) -> JWTKeys:
    """The given key set (verify only), or the demo's own, created on first use."""
    if jwks_file is not None:
        return JWTKeys(jwks_file, None)
    directory = ensure_data_dir(data_dir)
    public_path = directory / JWKS_FILE
    pair: list[dict[str, Any]] = []

    def make_private() -> str:
        private_set, public_set = _new_key_set()
        pair.append(public_set)
        return json.dumps(private_set)

    private_set = json.loads(read_or_create(directory / JWT_PRIVATE_FILE, make_private))
    if pair:  # we created the private set just now: publish its public half
        public_path.write_text(json.dumps(pair[0]) + "\n", encoding="utf-8")
    elif not public_path.exists():
        public_key = KeySet.import_key_set(private_set).keys[0]
        public_path.write_text(
            json.dumps({"keys": [public_key.as_dict(private=False)]}) + "\n", encoding="utf-8"
        )
    return JWTKeys(public_path, KeySet.import_key_set(private_set).keys[0])
