"""The demo's TLS certificate: the operator's own, or a development one made on first run.

Threat: the demo served over plain HTTP shows its session cookie and passwords to
anyone on the path; a development key that other local users can read lets them
impersonate the demo; a development certificate that leaks stays useful for years;
a local certificate authority, once trusted, can vouch for any name (mkcert warns of
exactly this about its CA key).
Defence: a self-signed leaf certificate, not a CA: ECDSA P-256, `CA:FALSE`, names
limited to `localhost`, `127.0.0.1`, `::1` (and the configured loopback address), a
validity of days, not years. Even a user who chooses to trust it in a browser trusts
it for those names alone, and no CA key lies on disk to sign others. The key is
written PKCS#8 (the form granian reads) into a file created with mode 0600 (never
wider, not even for a moment) in the data directory, created 0700; a data directory that others
may write to is refused, since they could swap the key. The pair is reused while it
is valid, matches, names the configured host and its key is still private; otherwise
a new key and certificate replace it. The SHA-256 fingerprint is returned so the
operator can compare it with the one the browser shows before accepting the warning.
When `DemoSettings.cert_file` and `key_file` are set, those files are served as they
are and nothing is generated.

Not covered: trust. Browsers warn about a self-signed certificate; installing it in a
trust store is left to the user (deliberately: that is how a CA key becomes a risk).
Two demos starting at the same second in one data directory may write a mismatched
pair; the next start sees the mismatch and makes a new one.

References: RFC 5280 section 4.2.1.6 (subjectAltName), 4.2.1.9 (basicConstraints),
4.2.1.12 (extKeyUsage); RFC 5480 (ECDSA P-256 keys); CA/Browser Forum Baseline
Requirements section 6.3.2 (validity periods, being shortened towards 47 days);
https://github.com/FiloSottile/mkcert#installation (the warning about a local CA).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.demo.settings import DemoSettings
from bastion.exceptions import ConfigurationError

CERT_FILE_NAME: Final = "tls-cert.pem"
KEY_FILE_NAME: Final = "tls-key.pem"

# Days, not the 398 days browsers accept at most: the certificate protects a demo
# that runs for an afternoon, and a new one costs nothing (it is made at start-up).
DEV_CERT_VALIDITY: Final = datetime.timedelta(days=30)
# A demo started on the certificate's last day would stop working mid-session; a
# certificate with less than this left is replaced at start-up.
RENEW_BEFORE: Final = datetime.timedelta(days=1)
# Tolerate a client clock a little behind ours.
BACKDATE: Final = datetime.timedelta(minutes=5)

# The names every development certificate carries: what a browser on this machine
# may be given for the demo.
DEV_DNS_NAMES: Final = ("localhost",)
DEV_IP_ADDRESSES: Final = ("127.0.0.1", "::1")

KEY_FILE_MODE: Final = 0o600
CERT_FILE_MODE: Final = 0o644
DATA_DIR_MODE: Final = 0o700
# Group or others may write to the directory: they could replace the key or the
# certificate between two starts.
_FOREIGN_WRITE: Final = stat.S_IWGRP | stat.S_IWOTH
_FOREIGN_ACCESS: Final = stat.S_IRWXG | stat.S_IRWXO


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """The certificate and key the demo serves, and what to tell the operator."""

    cert_file: Path
    key_file: Path
    fingerprint_sha256: str
    """Colon-separated upper-case hex, as browsers show it."""
    not_valid_after: datetime.datetime
    is_development: bool
    """True when the demo made it (self-signed, in the data directory)."""


# --- the core: pure functions over keys, certificates and time ----------------------


def required_names(
    host: str,
) -> tuple[frozenset[str], frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """The DNS names and IP addresses a development certificate for `host` must carry."""
    addresses = {ipaddress.ip_address(value) for value in DEV_IP_ADDRESSES}
    addresses.add(ipaddress.ip_address(host))
    return frozenset(DEV_DNS_NAMES), frozenset(addresses)


def build_certificate(
    key: ec.EllipticCurvePrivateKey, host: str, now: datetime.datetime
) -> x509.Certificate:
    """A self-signed leaf certificate for the loopback names, valid from `now`.

    `CA:FALSE` (critical) keeps it from ever signing another certificate; key usage
    is `digitalSignature` alone (ECDHE key exchange signs, it never encrypts to the
    key) and the extended key usage is `serverAuth` alone. The serial number is 159
    random bits (RFC 5280 section 4.1.2.2 allows 20 octets, positive).
    """
    dns_names, addresses = required_names(host)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bastion demo (development)")])
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in sorted(dns_names)]
    sans += [x509.IPAddress(address) for address in sorted(addresses, key=str)]
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + DEV_CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def fingerprint_sha256(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint of the DER certificate, as `AB:CD:...`."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def reuse_problem(
    certificate: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    host: str,
    now: datetime.datetime,
) -> str:
    """Why a stored development pair must be replaced; "" when it can be reused."""
    if certificate.public_key() != key.public_key():
        return "the key does not match the certificate"
    if now < certificate.not_valid_before_utc:
        return "the certificate is not valid yet"
    if now + RENEW_BEFORE >= certificate.not_valid_after_utc:
        return "the certificate has expired or expires within a day"
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the certificate names no host"
    dns_names, addresses = required_names(host)
    if not dns_names <= set(names.get_values_for_type(x509.DNSName)) or not addresses <= set(
        names.get_values_for_type(x509.IPAddress)
    ):
        return "the certificate does not name every loopback address"
    return ""


# --- the adapter: files -----------------------------------------------------------


def ensure_certificate(
    settings: DemoSettings, now: datetime.datetime | None = None
) -> ServerCertificate:
    """The certificate to serve: the configured files, or a valid development pair."""
    moment = now or datetime.datetime.now(datetime.UTC)
    if settings.cert_file is not None or settings.key_file is not None:
        return _configured_certificate(settings)
    directory = private_data_dir(settings.data_dir)
    cert_file, key_file = directory / CERT_FILE_NAME, directory / KEY_FILE_NAME
    stored = _load_private_pair(cert_file, key_file)
    if stored is not None and not reuse_problem(*stored, settings.host, moment):
        certificate = stored[0]
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = build_certificate(key, settings.host, moment)
        # The key first: a crash between the two leaves a mismatched pair, which the
        # next start replaces, never a new certificate beside an old, readable key.
        _write_new_file(
            key_file,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            KEY_FILE_MODE,
        )
        _write_new_file(
            cert_file, certificate.public_bytes(serialization.Encoding.PEM), CERT_FILE_MODE
        )
    return ServerCertificate(
        cert_file=cert_file,
        key_file=key_file,
        fingerprint_sha256=fingerprint_sha256(certificate),
        not_valid_after=certificate.not_valid_after_utc,
        is_development=True,
    )


def _configured_certificate(settings: DemoSettings) -> ServerCertificate:
    if settings.cert_file is None or settings.key_file is None:
        raise ConfigurationError(
            "demo.cert_file and demo.key_file: set both (a certificate and its key) or neither"
        )
    try:
        chain = x509.load_pem_x509_certificates(settings.cert_file.read_bytes())
        serialization.load_pem_private_key(settings.key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        # The message names the files and the failure, never the key's content.
        raise ConfigurationError(
            f"demo.cert_file / demo.key_file: cannot load {settings.cert_file} and "
            f"{settings.key_file} as an unencrypted PEM certificate and key "
            f"({type(exc).__name__})"
        ) from None
    leaf = chain[0]
    return ServerCertificate(
        cert_file=settings.cert_file,
        key_file=settings.key_file,
        fingerprint_sha256=fingerprint_sha256(leaf),
        not_valid_after=leaf.not_valid_after_utc,
        is_development=False,
    )


def private_data_dir(directory: Path) -> Path:
    """The demo's data directory, created 0700 if missing. One that exists must
    belong to this user and be writable by it alone: the TLS key, the signing and
    field keys and the JWK set live there, and whoever may write there could
    replace them, or plant their own before the first start."""
    directory.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    info = directory.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"demo.data_dir: {directory} is not a directory")
    if info.st_mode & _FOREIGN_WRITE or info.st_uid != os.getuid():
        raise ConfigurationError(
            f"demo.data_dir: {directory} must belong to this user and be writable by it "
            "alone (others could replace the keys); use a private directory (mode 0700)"
        )
    return directory


def _load_private_pair(
    cert_file: Path, key_file: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The stored pair, or None when it is missing, unreadable or its key not private."""
    try:
        key_info = key_file.stat()
        if key_info.st_mode & _FOREIGN_ACCESS or key_info.st_uid != os.getuid():
            # Others could read it: it may be known, so it is not reused.
            return None
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return certificate, key


def _write_new_file(path: Path, content: bytes, mode: int) -> None:
    """Replace `path` atomically with a file created with `mode` (never wider, even briefly)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        # O_CREAT's mode is filtered by the umask, which may only remove bits; set it
        # exactly so a strict umask does not leave the certificate unreadable.
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
