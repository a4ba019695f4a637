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
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", "[not json")
    code, _ = invoke()
    assert code == 2


WEAK_KEY = never_logged("weak-Key-9")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {"BASTION_SECRET_KEYS": None, "BASTION_TRANSPORT__ALLOWED_HOSTS": None},
            {"secrets.E002", "transport.E003"},
            id="check-production-defaults-refused",
        ),
        pytest.param({"BASTION_SECRET_KEYS": WEAK_KEY}, {"secrets.E001"}, id="check-weak-key"),
        pytest.param(
            {"BASTION_TRANSPORT__ALLOWED_HOSTS": '["*"]'}, {"transport.E003"}, id="check-any-host"
        ),
        pytest.param(
            {"BASTION_TRANSPORT__INSECURE_ALLOW_HTTP": "true"},
            {"transport.E002"},
            id="check-plain-http",
        ),
        pytest.param(
            {"BASTION_SESSIONS__INSECURE_COOKIE_OVER_HTTP": "true"},
            {"sessions.E001"},
            id="check-cookie-over-http",
        ),
        pytest.param(
            {"BASTION_TRANSPORT__MONITOR_ONLY": "true"},
            {"transport.E005"},
            id="check-transport-monitor-only",
        ),
        pytest.param(
            {"BASTION_ERRORS__MONITOR_ONLY": "true"},
            {"errors.E002"},
            id="check-errors-monitor-only",
        ),
        pytest.param({"BASTION_DEBUG": "true"}, {"mode.E002"}, id="check-debug"),
    ],
)
def test_production_refusals_are_high_findings_not_a_refusal(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None], expected: set[str]
) -> None:
    # Production refuses each of these at start-up; `bastion check` must still report
    # them, one stable id each, with exit 1 and JSON on standard output.
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["check", "--format", "json"])
    assert result.exit_code == 1, result.output
    assert "refusing to start" not in result.output
    findings = json.loads(result.stdout)["findings"]
    high = {f["id"] for f in findings if f["severity"] == "high"}
    assert high == expected
    assert WEAK_KEY not in result.output
    code, text = invoke()
    assert code == 1
    assert all(check_id in text for check_id in expected)


def test_the_app_still_refuses_what_check_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.exceptions import ConfigurationError
    from bastion.settings import Settings

    monkeypatch.setenv("BASTION_SECRET_KEYS", WEAK_KEY)
    with pytest.raises(ConfigurationError, match="refusing to start"):
        Settings()
