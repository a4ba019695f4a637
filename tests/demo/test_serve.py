"""Serving the demo on real sockets: TLS profile, HTTP redirect, slow clients, Ctrl+C.

Each server (granian, hypercorn, uvicorn) runs the demo's own `run_demo` in a child
process on 127.0.0.1, with ports 0 (the banner it prints says which ports it got),
a data directory of its own and a header timeout of two seconds; it is stopped by
its process id with SIGINT, as Ctrl+C would.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bastion.demo.serve import (
    CUTS_HEADER_TRICKLE,
    REDIRECT_STATUS,
    DemoEndpoints,
    DemoLogin,
    build_tls_context,
    describe_endpoints,
    load_app_factory,
    origin,
    parse_request_target,
    redirect_location,
    redirect_response,
)
from bastion.demo.settings import DemoSettings
from bastion.demo.tls import ensure_certificate
from bastion.exceptions import ConfigurationError
from bastion.shield import Shield
from bastion.types import ASGIApp
from tests.support.apps import raw_app

pytestmark = pytest.mark.server

SERVERS = ("granian", "hypercorn", "uvicorn")
HEADER_TIMEOUT_SECONDS = 2.0
# Scheduling, the TLS handshake and one trickle interval on a busy CI machine.
CUT_MARGIN_SECONDS = 2.5
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_DEMO = (
    "import sys\n"
    "from bastion.demo.serve import DemoLogin, run_demo\n"
    "from bastion.demo.settings import DemoSettings\n"
    "run_demo(DemoSettings(), sys.argv[1], logins=[DemoLogin('alice', 'demo-password')])\n"
)
_URL = re.compile(r"(https?)://127\.0\.0\.1:(\d+)/")


# --- application factories the child process imports ---------------------------------


def hello_factory(settings: DemoSettings) -> ASGIApp:
    """The shared raw test app: GET / answers "hello"."""
    return raw_app


def shielded_factory(settings: DemoSettings) -> ASGIApp:
    """The raw app behind Bastion, with a short slow-body timeout."""
    return Shield(
        raw_app,
        mode="development",
        limits={"body_idle_timeout_seconds": 1.0, "body_timeout_seconds": 2.0},
    )


# --- the running demo ---------------------------------------------------------------


@dataclass(frozen=True)
class RunningDemo:
    process: subprocess.Popen[bytes]
    https_port: int
    http_port: int
    cert_file: Path
    banner: str
    output: _Output

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def tls_client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_file))


class _Output:
    """The child's output, read line by line on a thread (so its pipe never fills)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self._stdout = process.stdout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in iter(self._stdout.readline, b""):
            self._lines.put(line.decode(errors="replace"))
        self._lines.put(None)

    def banner(self) -> str:
        seen: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise RuntimeError(f"the demo exited before serving: {seen}")
            seen.append(line)
            if line.startswith("Ctrl+C stops."):
                return "".join(seen)
        raise RuntimeError(f"the demo did not start in time: {seen}")

    def rest(self) -> str:
        """What the child printed after its banner (for failure messages)."""
        lines: list[str] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return "".join(lines)
            if line is not None:
                lines.append(line)

    def close(self) -> None:
        self._thread.join(timeout=STOP_TIMEOUT_SECONDS)
        self._stdout.close()


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGINT)
        try:
            return process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
            return -signal.SIGKILL
    return process.returncode


@contextmanager
def running_demo(
    data_dir: Path, server: str, factory: str = "tests.demo.test_serve:hello_factory"
) -> Iterator[RunningDemo]:
    env = {
        **{name: value for name, value in os.environ.items() if "BASTION" not in name.upper()},
        "BASTION_DEMO__SERVER": server,
        "BASTION_DEMO__HTTPS_PORT": "0",
        "BASTION_DEMO__HTTP_PORT": "0",
        "BASTION_DEMO__HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS),
        "BASTION_DEMO__DATA_DIR": str(data_dir),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_DEMO, factory],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = _Output(process)
    try:
        banner = output.banner()
        ports = {scheme: int(port) for scheme, port in _URL.findall(banner)}
        yield RunningDemo(
            process, ports["https"], ports["http"], data_dir / "tls-cert.pem", banner, output
        )
    finally:
        _stop(process)
        output.close()


@pytest.fixture(scope="module", params=SERVERS)
def demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDemo]:
    server: str = request.param
    with running_demo(tmp_path_factory.mktemp(f"demo-{server}"), server) as running:
        yield running


# --- HTTPS --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_https_is_served_with_the_development_certificate(demo: RunningDemo, host: str) -> None:
    with httpx.Client(verify=demo.tls_client()) as client:
        response = client.get(f"https://{host}:{demo.https_port}/")
    assert (response.status_code, response.text) == (200, "hello")
    assert response.http_version == "HTTP/1.1"


def test_the_banner_names_the_urls_fingerprint_and_logins(demo: RunningDemo) -> None:
    fingerprint = ensure_certificate(
        DemoSettings(data_dir=demo.cert_file.parent)
    ).fingerprint_sha256
    assert f"{demo.https_url}/" in demo.banner
    assert f"http://127.0.0.1:{demo.http_port}/ redirects there" in demo.banner
    assert fingerprint in demo.banner
    assert "alice / demo-password" in demo.banner


# Errors a client raises before it sends anything: a refusal must come from the server.
_CLIENT_SIDE_REASONS = {"NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE", "NO_CIPHER_MATCH"}

TLS12 = ssl.TLSVersion.TLSv1_2
TLS_CASES = [
    pytest.param(TLS12, TLS12, "ECDHE-ECDSA-AES128-GCM-SHA256", None, True, id="demo-tls12-gcm-ok"),
    pytest.param(
        TLS12, TLS12, "ECDHE-ECDSA-CHACHA20-POLY1305", None, True, id="demo-tls12-chacha-ok"
    ),
    pytest.param(ssl.TLSVersion.TLSv1_3, None, None, None, True, id="demo-tls13-ok"),
    pytest.param(TLS12, None, None, "prime256v1", True, id="demo-tls-p256-ok"),
    pytest.param("TLSv1", "TLSv1", "DEFAULT:@SECLEVEL=0", None, False, id="demo-tls10"),
    pytest.param("TLSv1_1", "TLSv1_1", "DEFAULT:@SECLEVEL=0", None, False, id="demo-tls11"),
    pytest.param(
        TLS12, TLS12, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0", None, False, id="demo-tls-cbc-sha1"
    ),
    pytest.param(TLS12, TLS12, "ECDHE-ECDSA-AES256-SHA384", None, False, id="demo-tls-cbc-sha384"),
    pytest.param(TLS12, TLS12, "AES128-GCM-SHA256", None, False, id="demo-tls-rsa-key-exchange"),
    pytest.param(TLS12, TLS12, "DHE-RSA-AES128-GCM-SHA256", None, False, id="demo-tls-dhe"),
    pytest.param(TLS12, None, None, "ffdhe2048", False, id="demo-tls-ffdhe-group"),
    pytest.param(TLS12, None, None, "secp521r1", False, id="demo-tls-p521-group"),
]


def _client_context(
    cafile: Path,
    minimum: ssl.TLSVersion | str,
    maximum: ssl.TLSVersion | str | None,
    ciphers: str | None,
    group: str | None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    with warnings.catch_warnings():
        # TLS 1.0 and 1.1 are deprecated in Python: offering them is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = (
            getattr(ssl.TLSVersion, minimum) if isinstance(minimum, str) else minimum
        )
        if maximum is not None:
            context.maximum_version = (
                getattr(ssl.TLSVersion, maximum) if isinstance(maximum, str) else maximum
            )
    if ciphers:
        context.set_ciphers(ciphers)
    if group:
        context.set_ecdh_curve(group)
    return context


@pytest.mark.parametrize(("minimum", "maximum", "ciphers", "group", "accepted"), TLS_CASES)
def test_tls_profile(
    demo: RunningDemo,
    minimum: ssl.TLSVersion | str,
    maximum: ssl.TLSVersion | str | None,
    ciphers: str | None,
    group: str | None,
    accepted: bool,
) -> None:
    context = _client_context(demo.cert_file, minimum, maximum, ciphers, group)
    with socket.create_connection(("127.0.0.1", demo.https_port), timeout=10) as raw:
        if accepted:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
            return
        with pytest.raises(ssl.SSLError) as refused:
            context.wrap_socket(raw, server_hostname="localhost")
    assert refused.value.reason not in _CLIENT_SIDE_REASONS


def test_build_tls_context_sets_the_profile(tmp_path: Path) -> None:
    served = ensure_certificate(DemoSettings(data_dir=tmp_path / "d"))
    context = build_tls_context(served.cert_file, served.key_file)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    for suite in context.get_ciphers():
        assert suite["aead"], suite["name"]
        assert suite["kea"] in ("kx-ecdhe", "kx-any"), suite["name"]


# --- the HTTP port ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host_header", "target"),
    [
        pytest.param(None, "/accounts?page=2", id="demo-redirect-ok"),
        pytest.param("evil.example", "/accounts?page=2", id="demo-redirect-host-poisoning"),
        pytest.param("evil.example:8443", "//evil.example/x", id="demo-redirect-protocol-relative"),
    ],
)
def test_the_http_port_redirects_to_the_configured_https_origin(
    demo: RunningDemo, host_header: str | None, target: str
) -> None:
    headers = {"host": host_header} if host_header else {}
    with httpx.Client(follow_redirects=False) as client:
        response = client.get(f"http://127.0.0.1:{demo.http_port}{target}", headers=headers)
    assert response.status_code == REDIRECT_STATUS
    assert response.headers["location"] == f"{demo.https_url}{target}"
    assert response.headers["cache-control"] == "no-store"


def _raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(request)
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
            if len(answer) > 65536:
                break
        return answer


@pytest.mark.parametrize(
    ("request_bytes", "expected_head"),
    [
        pytest.param(
            b"GET http://evil.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n",
            "HTTP/1.1 308",
            id="demo-redirect-absolute-form",
        ),
        pytest.param(b"GET /a\r\n\r\n", "HTTP/1.1 400", id="demo-redirect-malformed"),
        pytest.param(
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", "", id="demo-redirect-oversized-head"
        ),
    ],
)
def test_the_http_port_answers_odd_requests_safely(
    demo: RunningDemo, request_bytes: bytes, expected_head: str
) -> None:
    answer = _raw_exchange(demo.http_port, request_bytes).decode("latin-1")
    assert answer.startswith(expected_head)
    location = re.search(r"(?im)^location: (\S+)", answer)
    if location is not None:
        assert location.group(1) == f"{demo.https_url}/"


# --- slow clients -------------------------------------------------------------------


def _trickle_headers(port: int, context: ssl.SSLContext | None) -> float | None:
    """Send a request line, then a header byte a second; seconds until cut, or None."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = context.wrap_socket(raw, server_hostname="localhost") if context else raw
    with conn:
        started = time.monotonic()
        conn.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        conn.settimeout(1.0)
        trickle = b"X-Slow: " + b"a" * 64
        for byte in trickle:
            if time.monotonic() - started > HEADER_TIMEOUT_SECONDS + CUT_MARGIN_SECONDS:
                return None
            try:
                conn.sendall(bytes([byte]))
                if conn.recv(1024) == b"":
                    return time.monotonic() - started
                return time.monotonic() - started  # an answer (408/400) also ends it
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                return time.monotonic() - started
    return None


@pytest.mark.parametrize("port_name", ["https", "http"])
def test_demo_slowloris_headers(demo: RunningDemo, port_name: str) -> None:
    """demo-slowloris-headers: a request head trickled a byte a second is cut off."""
    context = demo.tls_client() if port_name == "https" else None
    port = demo.https_port if port_name == "https" else demo.http_port
    server = demo.banner.split("(served by ")[1].split(")")[0]
    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(_trickle_headers, port, context)
        # The legitimate request next to it: answered at once.
        if port_name == "https":
            with httpx.Client(verify=demo.tls_client()) as client:
                assert client.get(f"{demo.https_url}/").status_code == 200
        else:
            with httpx.Client() as client:
                assert client.get(f"http://127.0.0.1:{demo.http_port}/").status_code == 308
        cut_after = slow.result(timeout=30)
    # The HTTP port is Bastion's own asyncio listener, whatever the HTTPS server.
    if port_name == "http" or CUTS_HEADER_TRICKLE[server]:  # type: ignore[index]
        assert cut_after is not None, f"{server} kept a trickling client"
        assert cut_after <= HEADER_TIMEOUT_SECONDS + CUT_MARGIN_SECONDS
    else:
        # uvicorn has no request-head timeout: documented, and checked to stay true.
        assert cut_after is None


def test_demo_slow_body_is_cut_by_bastion(tmp_path: Path) -> None:
    """demo-slow-body: a body that stops arriving gets 408 from the limits layer."""
    with running_demo(tmp_path, "hypercorn", "tests.demo.test_serve:shielded_factory") as running:
        context = running.tls_client()
        with httpx.Client(verify=context) as client:
            legit = client.post(
                f"{running.https_url}/submit",
                content=b"x" * 10,
                headers={"sec-fetch-site": "same-origin"},  # CSRF is not what is tested
            )
        assert (legit.status_code, legit.text) == (200, "10")
        raw = socket.create_connection(("127.0.0.1", running.https_port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(
                b"POST /submit HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
                b"Sec-Fetch-Site: same-origin\r\n"
                b"Content-Length: 100\r\n\r\n" + b"x" * 10
            )
            started = time.monotonic()
            head = conn.recv(4096)
            assert head.startswith(b"HTTP/1.1 408"), head[:40]
            assert time.monotonic() - started < 1.0 + CUT_MARGIN_SECONDS


# --- Ctrl+C ------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_ctrl_c_stops_both_listeners(tmp_path: Path, server: str) -> None:
    with running_demo(tmp_path, server) as running:
        with httpx.Client(verify=running.tls_client()) as client:
            assert client.get(f"{running.https_url}/").status_code == 200
        exit_code = _stop(running.process)
        running.output.close()
        assert exit_code == 0, running.output.rest()
        for port in (running.https_port, running.http_port):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()


# --- the pure parts ---------------------------------------------------------------


ORIGIN = "https://127.0.0.1:8443"
LOCATIONS = [
    pytest.param(b"/", b"", f"{ORIGIN}/", id="demo-redirect-root-ok"),
    pytest.param(b"/a/b", b"x=1&y=%20", f"{ORIGIN}/a/b?x=1&y=%20", id="demo-redirect-path-ok"),
    pytest.param(b"/%41", b"", f"{ORIGIN}/%41", id="demo-redirect-encoded-kept"),
    pytest.param(
        b"//evil.example/", b"", f"{ORIGIN}//evil.example/", id="demo-redirect-double-slash"
    ),
    pytest.param(b"http://evil.example/x", b"", f"{ORIGIN}/", id="demo-redirect-absolute-path"),
    pytest.param(b"*", b"", f"{ORIGIN}/", id="demo-redirect-asterisk"),
    pytest.param(
        b"/a\r\nSet-Cookie: x=1", b"", f"{ORIGIN}/a%0D%0ASet-Cookie:%20x=1", id="demo-redirect-crlf"
    ),
    pytest.param(
        b"/\\evil.example", b"", f"{ORIGIN}/%5Cevil.example", id="demo-redirect-backslash"
    ),
    pytest.param(
        b"/a", b"q=<script>", f"{ORIGIN}/a?q=%3Cscript%3E", id="demo-redirect-query-markup"
    ),
    pytest.param("/ü".encode(), b"", f"{ORIGIN}/%C3%BC", id="demo-redirect-non-ascii"),
]


@pytest.mark.parametrize(("path", "query", "expected"), LOCATIONS)
def test_redirect_location(path: bytes, query: bytes, expected: str) -> None:
    assert redirect_location(ORIGIN, path, query) == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", (b"/a", b"b=1"), id="ok"),
        pytest.param(b"POST / HTTP/1.0\r\n\r\n", (b"/", b""), id="http10-ok"),
        pytest.param(b"GET /a\r\n\r\n", None, id="no-version"),
        pytest.param(b"GET  /a HTTP/1.1\r\n\r\n", None, id="double-space"),
        pytest.param(b"GET /a HTTP/2\r\n\r\n", None, id="not-http1"),
        pytest.param(b"G3T /a HTTP/1.1\r\n\r\n", None, id="bad-method"),
    ],
)
def test_parse_request_target(head: bytes, expected: tuple[bytes, bytes] | None) -> None:
    assert parse_request_target(head) == expected


def test_redirect_response() -> None:
    assert redirect_response("https://127.0.0.1:8443/a") == (
        b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://127.0.0.1:8443/a\r\n"
        b"Content-Length: 0\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("scheme", "host", "port", "expected"),
    [
        ("https", "127.0.0.1", 8443, "https://127.0.0.1:8443"),
        ("https", "127.0.0.1", 443, "https://127.0.0.1"),
        ("http", "127.0.0.1", 80, "http://127.0.0.1"),
        ("https", "::1", 8443, "https://[::1]:8443"),
    ],
)
def test_origin(scheme: str, host: str, port: int, expected: str) -> None:
    assert origin(scheme, host, port) == expected


@pytest.mark.parametrize("target", ["no-colon", ":factory", "bastion.demo.serve:nothing_here"])
def test_a_bad_app_factory_is_refused(target: str) -> None:
    with pytest.raises(ConfigurationError, match="app factory"):
        load_app_factory(target)


def test_the_banner_warns_about_uvicorn(tmp_path: Path) -> None:
    certificate = ensure_certificate(DemoSettings(data_dir=tmp_path / "d"))
    lines = describe_endpoints(
        DemoEndpoints("https://127.0.0.1:8443/", None, certificate, "uvicorn"),
        [DemoLogin("bob", "pw", "admin")],
    )
    text = "\n".join(lines)
    assert "uvicorn does not cut clients" in text
    assert "bob / pw  (admin)" in text
    assert "redirects" not in text
