"""`bastion check`: the deploy checks as a command (the checks: tests/audit/test_deploy.py)."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from tests.support.secret_watch import never_logged

STRONG_KEY = never_logged("ch3ck-" + "abcdefghijklmnopqrstuvwxyz0123456789")


@pytest.fixture(autouse=True)
def _production_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BASTION_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BASTION_SECRET_KEYS", STRONG_KEY)
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bank.example"]')


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["check", *args])
    return result.exit_code, result.output


def test_secure_production_passes_the_default_gate() -> None:
    code, output = invoke()
    assert code == 0, output
    assert "bastion check:" in output
    assert STRONG_KEY not in output


@pytest.mark.parametrize(
    ("args", "env", "check_id"),
    [
        pytest.param(["--mode", "development"], {}, "mode.E001", id="check-development-mode"),
        pytest.param(["--workers", "4"], {}, "store.W001", id="check-memory-store-many-workers"),
        pytest.param(
            [], {"BASTION_CSRF__ENABLED": "false"}, "csrf.E001", id="check-csrf-layer-disabled"
        ),
        pytest.param(
            ["--uvicorn", "--fail-on", "low"],
            {},
            "transport.W009",
            id="check-uvicorn-rewrites-client-from-proxy-headers",
        ),
    ],
)
def test_weak_deployment_fails(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], check_id: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, output = invoke(*args, "--format", "json")
    assert code == 1, output
    ids = [f["id"] for f in json.loads(output)["findings"]]
    assert check_id in ids
    assert STRONG_KEY not in output


def test_ignore_silences_a_check_and_refuses_unknown_ids() -> None:
    code, output = invoke("--workers", "4", "--ignore", "store.W001")
    assert code == 0, output
    assert "store.W001" not in output
    code, output = invoke("--ignore", "store.W999")
    assert code == 2
    assert "store.W999" in output


def test_fail_on_info_fails_on_informational_findings() -> None:
    code, output = invoke("--fail-on", "info")
    assert code == 1, output


def test_unloadable_settings_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_SECRET_KEYS", "short")
    code, _ = invoke()
    assert code == 2
