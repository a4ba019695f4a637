"""Named attacks on encrypted fields: every one ends in the same DecryptionError."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from bastion.crypto import DecryptionError, FieldEncryptor, new_field_key, record_aad

KEY_NEW = new_field_key()
KEY_OLD = new_field_key()
ROW_42 = record_aad("users", "ssn", 42)
PLAINTEXT = b"078-05-1120"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def flip(index: int) -> Callable[[bytes], bytes]:
    def mutate(raw: bytes) -> bytes:
        return raw[:index] + bytes([raw[index] ^ 0x01]) + raw[index + 1 :]

    return mutate


@pytest.fixture
def encryptor() -> FieldEncryptor:
    return FieldEncryptor([KEY_NEW, KEY_OLD])


@pytest.fixture
def token(encryptor: FieldEncryptor) -> str:
    return encryptor.encrypt(PLAINTEXT, ROW_42)


def test_round_trip(encryptor: FieldEncryptor, token: str) -> None:
    assert encryptor.decrypt(token, ROW_42) == PLAINTEXT
    assert encryptor.decrypt_text(encryptor.encrypt("naïve ✓", "t/c/1"), "t/c/1") == "naïve ✓"
    assert encryptor.decrypt(encryptor.encrypt(b"", b""), b"") == b""


AAD_CASES = [
    pytest.param(record_aad("users", "ssn", 43), id="crypto-row-swap"),
    pytest.param(record_aad("users", "email", 42), id="crypto-column-swap"),
    pytest.param(record_aad("admins", "ssn", 42), id="crypto-table-swap"),
    pytest.param(b"", id="crypto-aad-dropped"),
]


@pytest.mark.parametrize("other_place", AAD_CASES)
def test_ciphertext_moved_elsewhere(
    encryptor: FieldEncryptor, token: str, other_place: bytes
) -> None:
    with pytest.raises(DecryptionError):
        encryptor.decrypt(token, other_place)


def test_aad_components_are_unambiguous() -> None:
    assert record_aad("a/b", "c", 1) != record_aad("a", "b/c", 1)
    assert record_aad("t", "c", 1) == record_aad("t", "c", "1")


def test_crypto_tampered_any_byte(encryptor: FieldEncryptor, token: str) -> None:
    raw = unb64(token)
    for index in range(len(raw)):  # version, key id, nonce, ciphertext and tag
        with pytest.raises(DecryptionError):
            encryptor.decrypt(b64(flip(index)(raw)), ROW_42)


def test_crypto_truncated(encryptor: FieldEncryptor, token: str) -> None:
    raw = unb64(token)
    for length in range(len(raw)):
        with pytest.raises(DecryptionError):
            encryptor.decrypt(b64(raw[:length]), ROW_42)
    for length in range(len(token)):
        with pytest.raises(DecryptionError):
            encryptor.decrypt(token[:length], ROW_42)


def test_crypto_extended(encryptor: FieldEncryptor, token: str) -> None:
    with pytest.raises(DecryptionError):
        encryptor.decrypt(b64(unb64(token) + b"\x00"), ROW_42)


def test_crypto_wrong_key_id(encryptor: FieldEncryptor, token: str) -> None:
    raw = unb64(token)
    other_id = FieldEncryptor([KEY_OLD]).encrypt(b"x", b"")
    forged = raw[:1] + unb64(other_id)[1:5] + raw[5:]  # claims the other configured key
    with pytest.raises(DecryptionError):
        encryptor.decrypt(b64(forged), ROW_42)
    with pytest.raises(DecryptionError):
        encryptor.decrypt(b64(raw[:1] + b"\x00\x00\x00\x00" + raw[5:]), ROW_42)


def test_crypto_key_rotated_out(token: str) -> None:
    with pytest.raises(DecryptionError):
        FieldEncryptor([new_field_key(), KEY_OLD]).decrypt(token, ROW_42)


def test_crypto_wrong_version(encryptor: FieldEncryptor, token: str) -> None:
    raw = unb64(token)
    with pytest.raises(DecryptionError):
        encryptor.decrypt(b64(b"\x02" + raw[1:]), ROW_42)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param("", id="empty"),
        pytest.param("not base64!", id="not-base64"),
        pytest.param(b64(b"\x01" * 33) + "=", id="padding"),
        pytest.param("A", id="impossible-length"),
        pytest.param("é" * 40, id="non-ascii"),
        pytest.param("A" * 2_000_000, id="oversized"),
    ],
)
def test_crypto_garbage(encryptor: FieldEncryptor, garbage: str) -> None:
    with pytest.raises(DecryptionError) as caught:
        encryptor.decrypt(garbage, ROW_42)
    assert str(caught.value) == "invalid encrypted value"


def test_one_opaque_error(encryptor: FieldEncryptor, token: str) -> None:
    messages = set()
    for bad, aad in ((token, b"x"), (token[:-3], ROW_42), ("zz", ROW_42)):
        with pytest.raises(DecryptionError) as caught:
            encryptor.decrypt(bad, aad)
        messages.add(str(caught.value))
        assert caught.value.__cause__ is None
    assert messages == {"invalid encrypted value"}


def test_decrypt_text_refuses_non_utf8(encryptor: FieldEncryptor) -> None:
    with pytest.raises(DecryptionError):
        encryptor.decrypt_text(encryptor.encrypt(b"\xff\xfe", b""), b"")
