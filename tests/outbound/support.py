"""Real HTTP(S) servers on 127.0.0.1, a test CA, and resolvers the tests control."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.outbound import IPAddress

BIG_BYTES = 4096
DRIP_BYTES = 10  # two seconds of dripping


@dataclass
class Seen:
    hosts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse can be observed

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {"content-length": str(len(body))}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("content-length", str(BIG_BYTES))
        self.end_headers()

    def do_GET(self) -> None:
        seen = self.server.seen
        seen.hosts.append(self.headers.get("host", ""))
        seen.paths.append(self.path)
        url = urlsplit(self.path)
        if url.path == "/redirect":
            target = parse_qs(url.query)["to"][0]
            self._send(302, b"", {"location": target, "content-length": "0"})
        elif url.path == "/loop":
            self._send(302, b"", {"location": "/loop", "content-length": "0"})
        elif url.path == "/big":
            self._send(200, b"x" * BIG_BYTES)
        elif url.path == "/big-undeclared":  # no length: the body ends when the socket closes
            self.close_connection = True
            self._send(200, b"x" * BIG_BYTES, {"connection": "close"})
        elif url.path == "/drip":  # a byte every 0.2 s, each well inside a read timeout
            self.send_response(200)
            self.send_header("content-length", str(DRIP_BYTES))
            self.end_headers()
            for _ in range(DRIP_BYTES):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        elif url.path == "/gzip":
            self._send(200, b"\x1f\x8b", {"content-encoding": "gzip", "content-length": "2"})
        else:
            self._send(200, b"hello")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: Seen


@dataclass(frozen=True)
class Running:
    port: int
    seen: Seen


@contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[Running]:
    """A server on 127.0.0.1 (port 0), stopped and closed when the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.seen = Seen()
    if tls is not None:
        seen = server.seen

        def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            seen.sni.append(name)

        tls.sni_callback = record_sni
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Running(server.server_address[1], server.seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass(frozen=True)
class CertificateAuthority:
    cert_pem: bytes
    key: ec.EllipticCurvePrivateKey

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.cert_pem.decode())

    def server_context(self, directory: Path, names: Sequence[str]) -> ssl.SSLContext:
        """A server context with a leaf certificate for `names`, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = directory / f"{names[0]}.pem", directory / f"{names[0]}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        return context


def make_ca() -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bastion test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert.public_bytes(serialization.Encoding.PEM), key)


class StaticResolver:
    """Answers from a table; counts lookups; unknown names fail like a real resolver."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self.table = {
            host: [ipaddress.ip_address(a) for a in addresses] for host, addresses in table.items()
        }
        self.calls: list[str] = []

    def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


class RebindingResolver:
    """A public address on the first lookup, then loopback: DNS rebinding."""

    def __init__(self) -> None:
        self.calls = 0

    def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        self.calls += 1
        return [ipaddress.ip_address("93.184.215.14" if self.calls == 1 else "127.0.0.1")]
