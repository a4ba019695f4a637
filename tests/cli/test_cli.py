from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bastion.cli import app
from tests.support.secret_watch import never_logged

STRONG_KEY = never_logged("k3Y-" + "abcdefghijklmnopqrstuvwxyz0123456789")
BASTION = str(Path(sys.executable).with_name("bastion"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BASTION_"):
            monkeypatch.delenv(name)


def test_config_prints_resolved_posture() -> None:
    result = CliRunner().invoke(app, ["config", "--mode", "development"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["settings"]["mode"] == "development"
    assert data["layers"] == [
        "errors",
        "transport",
        "limits",
        "headers",
        "cors",
        "ratelimit",
        "sessions",
        "auth",
        "csrf",
        "policy",
        "websocket",
    ]
    assert data["opt_outs"] == [
        "transport.insecure_allow_http",
        "sessions.insecure_cookie_over_http",
    ]
    headers = data["response_headers"]
    assert "{nonce}" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_config_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_SECRET_KEYS", STRONG_KEY)
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bank.example"]')
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert STRONG_KEY not in result.output
    data = json.loads(result.output)
    assert data["settings"]["secret_keys"] == ["********** (key 1)"]
    assert data["opt_outs"] == []
    assert data["https_response_headers"] == {
        "strict-transport-security": "max-age=31536000; includeSubDomains"
    }
    assert "vary" not in data["response_headers"]  # the default CORS policy grants nothing


def test_config_shows_vary_when_cors_can_grant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_SECRET_KEYS", STRONG_KEY)
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bank.example"]')
    monkeypatch.setenv("BASTION_CORS__ALLOW_ORIGINS", '["https://app.example"]')
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["response_headers"]["vary"] == "Origin"


def test_config_refuses_unsafe_production_without_leaking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BASTION_SECRET_KEYS", "short-but-secret")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert "secret_keys[0] is shorter" in result.output
    assert "short-but-secret" not in result.output


def test_config_rejects_unknown_mode() -> None:
    result = CliRunner().invoke(app, ["config", "--mode", "staging"])
    assert result.exit_code != 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.server
def test_demo_serves_the_bank_over_https(tmp_path: Path) -> None:
    """`bastion demo` as a user runs it: the bank behind Bastion, HTTPS with a fresh
    development certificate, and a plain-HTTP port that only redirects."""
    https_port, http_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [BASTION, "demo", "--https-port", str(https_port), "--http-port", str(http_port)],
        env={**os.environ, "BASTION_DEMO__DATA_DIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"https://localhost:{https_port}"
    try:
        deadline = time.monotonic() + 20
        response = None
        while time.monotonic() < deadline and response is None:
            try:
                verify = ssl.create_default_context(cafile=str(tmp_path / "tls-cert.pem"))
                response = httpx.get(f"{base}/login", timeout=2, verify=verify)
            except (httpx.TransportError, OSError):
                time.sleep(0.2)
        assert response is not None, "demo did not start"
        assert response.status_code == 200
        assert "'nonce-" in response.headers["content-security-policy"]
        assert response.headers["strict-transport-security"].startswith("max-age=")
        assert response.headers["set-cookie"].startswith("__Host-session=")
        with httpx.Client(verify=verify, timeout=5) as client:
            boom = client.get(f"{base}/boom")
            assert boom.status_code == 500
            assert "Traceback" not in boom.text
            assert "incident" in boom.text.lower()
            evil = client.get(f"{base}/login", headers={"host": "evil.example"})
            assert evil.status_code == 400
        redirect = httpx.get(
            f"http://127.0.0.1:{http_port}/login", headers={"host": "evil.example"}, timeout=5
        )
        assert redirect.status_code == 308
        assert redirect.headers["location"].startswith(f"https://127.0.0.1:{https_port}/")
    finally:
        os.kill(process.pid, signal.SIGINT)
        process.wait(timeout=15)


def test_demo_refuses_non_loopback_bind() -> None:
    result = CliRunner().invoke(app, ["demo", "--host", "0.0.0.0"])
    assert result.exit_code != 0


def test_keys_new_prints_a_strong_distinct_key() -> None:
    from bastion.settings import weak_secret_key

    first = CliRunner().invoke(app, ["keys", "new"]).output.strip()
    second = CliRunner().invoke(app, ["keys", "new"]).output.strip()
    assert weak_secret_key(first) is None
    assert first != second


def give_secret_keys(
    source: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Put `secret_keys` where the app reads them: the environment or the secrets dir."""
    if source == "env":
        monkeypatch.setenv("BASTION_SECRET_KEYS", value)
        return
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    (secrets_dir / "bastion_secret_keys").write_text(value)
    monkeypatch.setenv("BASTION_SECRETS_DIR", str(secrets_dir))


@pytest.mark.parametrize("source", ["env", "secrets-dir"])
def test_shield_audit_log_verifies_and_tampering_is_found(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    from bastion.shield import Shield
    from tests.conftest import asgi_client
    from tests.support.apps import raw_app

    log = tmp_path / "audit.log"

    async def refuse_some_requests() -> None:
        app = Shield(
            raw_app, mode="development", secret_keys=[STRONG_KEY], audit_log={"path": str(log)}
        )
        async with asgi_client(app) as client:
            for _ in range(3):
                assert (await client.get("/", headers={"host": "evil.example"})).status_code == 400

    anyio.run(refuse_some_requests)
    give_secret_keys(source, STRONG_KEY, tmp_path, monkeypatch)
    intact = CliRunner().invoke(app, ["log", "verify", str(log)])
    assert intact.exit_code == 0, intact.output
    lines = log.read_bytes().splitlines(keepends=True)
    assert any(b"host-not-allowed" in line for line in lines)
    tampered = [line.replace(b"evil.example", b"good.example") for line in lines]
    log.write_bytes(b"".join(tampered))
    broken = CliRunner().invoke(app, ["log", "verify", str(log)])
    assert broken.exit_code == 1
    assert "record-altered" in broken.output


def test_keys_new_aes() -> None:
    import base64

    key = CliRunner().invoke(app, ["keys", "new", "--kind", "aes"]).output.strip()
    assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) == 32


@pytest.mark.parametrize(
    "source",
    [
        "env",
        # With the keys in the secrets directory, reading only BASTION_SECRET_KEYS
        # printed a single new key, and applying it logged everyone out.
        pytest.param("secrets-dir", id="rotate-keys-from-secrets-dir"),
    ],
)
def test_keys_rotate_puts_a_new_key_in_front(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    give_secret_keys(source, STRONG_KEY, tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["keys", "rotate"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    output = result.stdout.strip()
    name, _, value = output.partition("=")
    new, old = value.split(",")
    assert name == "BASTION_SECRET_KEYS"
    assert old == STRONG_KEY
    assert new != STRONG_KEY
    # The rotated list is accepted by production settings.
    monkeypatch.delenv("BASTION_SECRETS_DIR", raising=False)
    monkeypatch.setenv("BASTION_SECRET_KEYS", value)
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bank.example"]')
    from bastion.settings import Settings

    assert len(Settings().secret_keys) == 2


def test_keys_rotate_and_log_verify_say_when_no_keys_are_found(tmp_path: Path) -> None:
    rotated = CliRunner().invoke(app, ["keys", "rotate"])
    assert rotated.exit_code == 0
    assert "no secret_keys found" in rotated.stderr
    assert rotated.stdout.count(",") == 0  # the new key alone
    log = tmp_path / "audit.log"
    log.write_text("")
    verified = CliRunner().invoke(app, ["log", "verify", str(log)])
    assert "no secret_keys found" in verified.stderr


def test_keys_rotate_keeps_a_weak_production_key_it_must_not_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Production would refuse this key at start-up; rotation must still keep it so
    # what it signed keeps verifying while the strong key takes over.
    weak = never_logged("weak-rotated-key")
    give_secret_keys("secrets-dir", weak, tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["keys", "rotate"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(f",{weak}")
