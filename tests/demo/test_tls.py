"""The demo's TLS certificate: made once, reused while valid and private, replaced otherwise.

Time is passed in (`now`), never slept; the files are real, in a temporary directory.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.demo.settings import DemoSettings
from bastion.demo.tls import (
    CERT_FILE_NAME,
    DEV_CERT_VALIDITY,
    KEY_FILE_NAME,
    build_certificate,
    ensure_certificate,
    fingerprint_sha256,
)
from bastion.exceptions import ConfigurationError

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)


def settings_in(directory: Path, **values: object) -> DemoSettings:
    return DemoSettings(data_dir=directory, **values)


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_run_makes_a_private_p256_certificate_for_the_loopback_names(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "demo"
    served = ensure_certificate(settings_in(data_dir), now=NOW)

    assert served.is_development
    assert (served.cert_file, served.key_file) == (
        data_dir / CERT_FILE_NAME,
        data_dir / KEY_FILE_NAME,
    )
    assert mode_of(data_dir) == 0o700
    assert mode_of(served.key_file) == 0o600
    certificate = load_certificate(served.cert_file)
    key = serialization.load_pem_private_key(served.key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert b"BEGIN PRIVATE KEY" in served.key_file.read_bytes()  # PKCS#8, what granian reads
    assert certificate.public_key() == key.public_key()
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    assert certificate.not_valid_after_utc - NOW == DEV_CERT_VALIDITY
    assert served.not_valid_after == certificate.not_valid_after_utc
    assert served.fingerprint_sha256 == certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    assert len(served.fingerprint_sha256.split(":")) == 32


def test_another_loopback_host_is_named_too(tmp_path: Path) -> None:
    served = ensure_certificate(settings_in(tmp_path / "d", host="127.0.0.2"), now=NOW)
    names = load_certificate(served.cert_file).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert ipaddress.ip_address("127.0.0.2") in names.value.get_values_for_type(x509.IPAddress)


def test_a_valid_certificate_is_reused(tmp_path: Path) -> None:
    settings = settings_in(tmp_path / "d")
    first = ensure_certificate(settings, now=NOW)
    key_before = first.key_file.read_bytes()
    second = ensure_certificate(settings, now=NOW + datetime.timedelta(days=20))
    assert second.fingerprint_sha256 == first.fingerprint_sha256
    assert second.key_file.read_bytes() == key_before


REPLACED = [
    pytest.param(DEV_CERT_VALIDITY + datetime.timedelta(days=1), id="demo-tls-expired"),
    pytest.param(DEV_CERT_VALIDITY - datetime.timedelta(hours=12), id="demo-tls-expires-today"),
    pytest.param(-datetime.timedelta(days=1), id="demo-tls-not-yet-valid"),
]


@pytest.mark.parametrize("later", REPLACED)
def test_a_certificate_out_of_its_validity_is_replaced(
    tmp_path: Path, later: datetime.timedelta
) -> None:
    settings = settings_in(tmp_path / "d")
    first = ensure_certificate(settings, now=NOW)
    old_key = first.key_file.read_bytes()
    second = ensure_certificate(settings, now=NOW + later)
    assert second.fingerprint_sha256 != first.fingerprint_sha256
    assert second.key_file.read_bytes() != old_key
    assert mode_of(second.key_file) == 0o600
    assert second.not_valid_after == NOW + later + DEV_CERT_VALIDITY


def test_a_key_others_could_read_is_not_reused(tmp_path: Path) -> None:
    # demo-tls-key-readable-by-others: the key may be known; a new one replaces it.
    settings = settings_in(tmp_path / "d")
    first = ensure_certificate(settings, now=NOW)
    old_key = first.key_file.read_bytes()
    os.chmod(first.key_file, 0o644)
    second = ensure_certificate(settings, now=NOW)
    assert second.key_file.read_bytes() != old_key
    assert mode_of(second.key_file) == 0o600


def test_a_mismatched_pair_is_replaced(tmp_path: Path) -> None:
    settings = settings_in(tmp_path / "d")
    first = ensure_certificate(settings, now=NOW)
    stranger = ec.generate_private_key(ec.SECP256R1())
    first.cert_file.write_bytes(
        build_certificate(stranger, "127.0.0.1", NOW).public_bytes(serialization.Encoding.PEM)
    )
    second = ensure_certificate(settings, now=NOW)
    certificate = load_certificate(second.cert_file)
    key = serialization.load_pem_private_key(second.key_file.read_bytes(), password=None)
    assert certificate.public_key() == key.public_key()


def test_garbage_files_are_replaced(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o700)
    (data_dir / CERT_FILE_NAME).write_text("not a certificate")
    (data_dir / KEY_FILE_NAME).write_text("not a key")
    os.chmod(data_dir / KEY_FILE_NAME, 0o600)
    served = ensure_certificate(settings_in(data_dir), now=NOW)
    assert load_certificate(served.cert_file).not_valid_after_utc > NOW


def test_a_data_directory_others_may_write_to_is_refused(tmp_path: Path) -> None:
    # demo-tls-data-dir-writable-by-others: they could swap the key between two starts.
    data_dir = tmp_path / "shared"
    data_dir.mkdir()
    os.chmod(data_dir, 0o770)  # noqa: S103  # the unsafe directory under test
    with pytest.raises(ConfigurationError, match=r"demo\.data_dir"):
        ensure_certificate(settings_in(data_dir), now=NOW)


def test_configured_files_are_served_as_they_are(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    certificate = build_certificate(key, "127.0.0.1", NOW)  # any valid pair will do
    cert_file, key_file = tmp_path / "bank.pem", tmp_path / "bank.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    data_dir = tmp_path / "data"
    served = ensure_certificate(
        settings_in(data_dir, cert_file=cert_file, key_file=key_file), now=NOW
    )
    assert (served.cert_file, served.key_file, served.is_development) == (
        cert_file,
        key_file,
        False,
    )
    assert served.fingerprint_sha256 == fingerprint_sha256(certificate)
    assert not data_dir.exists()


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"cert_file": Path("bank.pem")}, id="cert-without-key"),
        pytest.param({"key_file": Path("bank.key")}, id="key-without-cert"),
    ],
)
def test_half_a_configured_pair_is_refused(tmp_path: Path, values: dict[str, Path]) -> None:
    with pytest.raises(ConfigurationError, match="set both"):
        ensure_certificate(settings_in(tmp_path, **values), now=NOW)


def test_unreadable_configured_files_are_refused_without_their_content(tmp_path: Path) -> None:
    cert_file, key_file = tmp_path / "bank.pem", tmp_path / "bank.key"
    cert_file.write_text(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    )
    key_file.write_text("secret-key-material")
    with pytest.raises(ConfigurationError) as caught:
        ensure_certificate(settings_in(tmp_path, cert_file=cert_file, key_file=key_file))
    assert "secret-key-material" not in str(caught.value)
    assert str(key_file) in str(caught.value)
