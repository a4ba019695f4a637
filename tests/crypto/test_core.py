"""Keys, rotation, re-encryption, nonces, settings and secrecy of the keys."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from pydantic import SecretStr, ValidationError

from bastion.crypto import (
    NONCE_BYTES,
    DecryptionError,
    FieldEncryptionSettings,
    FieldEncryptor,
    new_field_key,
    record_aad,
    weak_field_key,
)
from bastion.exceptions import ConfigurationError
from bastion.settings import Settings
from tests.support.secret_watch import never_logged

KEY_NEW = never_logged(new_field_key())
KEY_OLD = new_field_key()


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_token_format() -> None:
    encryptor = FieldEncryptor([KEY_NEW])
    token = encryptor.encrypt(b"secret", b"aad")
    assert token.isascii()
    assert "=" not in token
    raw = unb64(token)
    assert raw[0] == 1
    assert raw[1:5].hex() == encryptor.key_ids[0]
    assert len(raw) == 1 + 4 + NONCE_BYTES + len(b"secret") + 16


def test_first_key_encrypts_every_key_decrypts() -> None:
    old = FieldEncryptor([KEY_OLD]).encrypt(b"v", b"a")
    rotated = FieldEncryptor([KEY_NEW, KEY_OLD])
    assert rotated.decrypt(old, b"a") == b"v"
    new = rotated.encrypt(b"v", b"a")
    assert unb64(new)[1:5].hex() == rotated.key_ids[0]
    with pytest.raises(DecryptionError):
        FieldEncryptor([KEY_OLD]).decrypt(new, b"a")


def test_reencryption_moves_to_the_new_key() -> None:
    aad = record_aad("users", "ssn", 7)
    old = FieldEncryptor([KEY_OLD]).encrypt(b"v", aad)
    rotated = FieldEncryptor([KEY_NEW, KEY_OLD])
    assert rotated.needs_reencryption(old)
    moved = rotated.reencrypt(old, aad)
    assert not rotated.needs_reencryption(moved)
    assert FieldEncryptor([KEY_NEW]).decrypt(moved, aad) == b"v"  # the old key can go
    with pytest.raises(DecryptionError):
        rotated.reencrypt(old, record_aad("users", "ssn", 8))


def test_bulk_reencryption() -> None:
    old = FieldEncryptor([KEY_OLD])
    rotated = FieldEncryptor([KEY_NEW, KEY_OLD])
    rows = [
        (old.encrypt(f"v{i}", record_aad("t", "c", i)), record_aad("t", "c", i)) for i in range(5)
    ]
    current = rotated.encrypt("v5", record_aad("t", "c", 5))
    rows.append((current, record_aad("t", "c", 5)))
    moved = list(rotated.reencrypt_many(rows))
    assert moved[-1] == current  # already current: verified, unchanged
    only_new = FieldEncryptor([KEY_NEW])
    assert [only_new.decrypt_text(t, record_aad("t", "c", i)) for i, t in enumerate(moved)] == [
        f"v{i}" for i in range(6)
    ]
    rows[3] = (rows[3][0], record_aad("t", "c", 99))  # a value moved to another row
    with pytest.raises(DecryptionError) as caught:
        list(rotated.reencrypt_many(rows))
    assert caught.value.index == 3


def test_nonces_are_unique() -> None:
    encryptor = FieldEncryptor([KEY_NEW])
    nonces = {unb64(encryptor.encrypt(b"same", b"same"))[5:17] for _ in range(10_000)}
    assert len(nonces) == 10_000


def test_repr_hides_keys() -> None:
    settings = FieldEncryptionSettings(keys=(SecretStr(KEY_NEW), SecretStr(KEY_OLD)))
    encryptor = FieldEncryptor.from_settings(settings)
    for text in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        json.dumps(settings.model_dump(mode="json")),
        repr(encryptor),
    ):
        assert KEY_NEW not in text
        assert KEY_OLD not in text
    assert repr(encryptor) == f"FieldEncryptor(key_ids={encryptor.key_ids!r})"


def test_settings_accept_a_list_or_a_string() -> None:
    as_list = FieldEncryptionSettings.model_validate({"keys": [KEY_NEW, KEY_OLD]})
    as_text = FieldEncryptionSettings.model_validate({"keys": f"{KEY_NEW}, {KEY_OLD}"})
    as_json = FieldEncryptionSettings.model_validate({"keys": json.dumps([KEY_NEW, KEY_OLD])})
    for settings in (as_list, as_text, as_json):
        assert [k.get_secret_value() for k in settings.keys] == [KEY_NEW, KEY_OLD]
    assert FieldEncryptionSettings().keys == ()


WEAK = [
    pytest.param("not base64 !!", "not base64url", id="not-base64"),
    pytest.param(base64.urlsafe_b64encode(bytes(range(16))).decode(), "not 32 bytes", id="short"),
    pytest.param(
        base64.urlsafe_b64encode(bytes(32)).decode().rstrip("="), "not random", id="zeros"
    ),
]


@pytest.mark.parametrize(("key", "rule"), WEAK)
def test_settings_refuse_bad_keys(key: str, rule: str) -> None:
    assert rule in (weak_field_key(key) or "")
    with pytest.raises(ValidationError) as caught:
        FieldEncryptionSettings.model_validate({"keys": [KEY_NEW, key]})
    message = str(caught.value)
    assert "keys[1]" in message
    assert rule in message
    with pytest.raises(ConfigurationError, match=rule):
        FieldEncryptor([key])


def test_settings_refuse_a_repeated_key() -> None:
    with pytest.raises(ValidationError, match="repeats"):
        FieldEncryptionSettings.model_validate({"keys": [KEY_NEW, KEY_NEW]})
    with pytest.raises(ConfigurationError, match="twice"):
        FieldEncryptor([KEY_NEW, KEY_NEW])


def test_encryptor_needs_a_key() -> None:
    with pytest.raises(ConfigurationError):
        FieldEncryptor([])


def test_new_keys_are_valid_and_distinct() -> None:
    keys = {new_field_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == 43 and weak_field_key(k) is None for k in keys)


def test_settings_need_no_cryptography_import() -> None:
    # Settings validates FieldEncryptionSettings; the core import stays light.
    code = (
        "import sys, bastion.crypto as c; "
        "c.FieldEncryptionSettings(keys=[c.new_field_key()]); "
        "assert 'cryptography' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(f"{KEY_NEW},{KEY_OLD}", id="env-field-keys-comma-list"),
        pytest.param(f"{KEY_NEW} {KEY_OLD}", id="env-field-keys-space-list"),
        pytest.param(json.dumps([KEY_NEW, KEY_OLD]), id="env-field-keys-json-ok"),
    ],
)
def test_keys_parse_from_a_variable_as_secret_keys_do(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`BASTION_FIELD_ENCRYPTION__KEYS` parses as `BASTION_SECRET_KEYS` does (the
    docs say so): a comma or space separated list failed to start ("error parsing
    value"), as did a single key."""
    monkeypatch.setenv("BASTION_FIELD_ENCRYPTION__KEYS", value)
    keys = Settings(mode="development").field_encryption.keys
    assert [k.get_secret_value() for k in keys] == [KEY_NEW, KEY_OLD]


def test_a_single_key_parses_from_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_FIELD_ENCRYPTION__KEYS", KEY_NEW)
    keys = Settings(mode="development").field_encryption.keys
    assert [k.get_secret_value() for k in keys] == [KEY_NEW]
