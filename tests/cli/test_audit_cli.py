"""`bastion audit` as a command: targets, formats, exit codes, recipes, `--deps`.

The probes themselves are tested in tests/audit; here the weak and hardened apps of
tests/audit/weak_apps.py are audited through the command line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app

WEAK = "tests.audit.weak_apps:create_weak_starlette"
HARDENED = "tests.audit.weak_apps:create_hardened_development"
OSV_FIXTURE = Path(__file__).parents[1] / "deps" / "osv"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BASTION_"):
            monkeypatch.delenv(name)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["audit", *args])
    return result.exit_code, result.stdout, result.stderr


def test_weak_app_fails_the_ci_gate_with_findings_in_json() -> None:
    code, stdout, _ = invoke(WEAK, "--format", "json", "--fail-on", "high")
    assert code == 1
    target = json.loads(stdout)["targets"][0]
    assert target["grade"]["letter"] == "F"
    failed = {f["check"] for f in target["findings"] if not f["passed"]}
    assert {"cors.reflect-origin", "leakage.error-page", "websocket.foreign-origin"} <= failed


def test_hardened_app_passes_the_high_gate() -> None:
    code, stdout, _ = invoke(HARDENED, "--fail-on", "high")
    assert code == 0, stdout
    assert "Bastion audit" in stdout


def test_without_fail_on_findings_do_not_fail_the_command() -> None:
    code, _, _ = invoke(WEAK, "--format", "json")
    assert code == 0


@pytest.mark.parametrize("output_format", ["sarif", "html", "json", "table"])
def test_report_written_to_a_file(tmp_path: Path, output_format: str) -> None:
    out = tmp_path / f"report.{output_format}"
    code, stdout, stderr = invoke(WEAK, "--format", output_format, "--output", str(out))
    assert code == 0
    assert stdout == ""
    assert str(out) in stderr
    text = out.read_text()
    if output_format == "sarif":
        assert json.loads(text)["version"] == "2.1.0"
    elif output_format == "html":
        assert text.lstrip().lower().startswith("<!doctype html>")


def test_in_process_log_lines_are_hidden_unless_verbose(caplog: pytest.LogCaptureFixture) -> None:
    # The hardened app's refusals are logged by Bastion; the audit hides them.
    code, stdout, stderr = invoke(HARDENED)
    assert code == 0
    assert '"kind":' not in stdout + stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("no.such.module:app",), "cannot audit", id="audit-unimportable-target"),
        pytest.param((WEAK, "--format", "xml"), "format", id="audit-unknown-format"),
        pytest.param((WEAK, "--fail-on", "severe"), "must be one of", id="audit-unknown-severity"),
        pytest.param(
            (WEAK, "--login-path", "/login", "--username", "alice"),
            "BASTION_AUDIT_PASSWORD",
            id="audit-login-without-password-env",
        ),
    ],
)
def test_bad_invocations_exit_2(args: tuple[str, ...], message: str) -> None:
    code, stdout, stderr = invoke(*args)
    assert code == 2
    assert message in stdout + stderr


def test_login_recipe_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    password = "correct horse battery staple"  # the weak apps accept any password
    monkeypatch.setenv("BASTION_AUDIT_PASSWORD", password)
    code, stdout, stderr = invoke(
        WEAK, "--login-path", "/login", "--username", "alice", "--format", "json"
    )
    assert code == 0, stderr
    assert password not in stdout + stderr
    failed = {f["check"] for f in json.loads(stdout)["targets"][0]["findings"] if not f["passed"]}
    assert "sessions.fixation" in failed


def test_deps_alias_checks_packages_like_bastion_deps() -> None:
    code, stdout, _ = invoke("--deps", "--osv", str(OSV_FIXTURE), "--format", "json")
    assert code == 0  # audit's exit rule: findings fail only with --fail-on
    assert json.loads(stdout)["findings"]  # the fixture flags the installed starlette
    code, _, _ = invoke("--deps", "--osv", str(OSV_FIXTURE), "--fail-on", "low")
    assert code == 1


def test_deps_alias_writes_the_output_file(tmp_path: Path) -> None:
    out = tmp_path / "deps.json"
    code, stdout, stderr = invoke(
        "--deps", "--osv", str(OSV_FIXTURE), "--format", "json", "-o", str(out)
    )
    assert code == 0
    assert stdout == ""
    assert str(out) in stderr
    assert json.loads(out.read_text(encoding="utf-8"))["findings"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("tests.audit.broken_import:app",),
            "importing 'tests.audit.broken_import' raised KeyError",
            id="audit-import-raises-keyerror",
        ),
        pytest.param(
            ("tests.audit.broken_apps:failing_factory",),
            "raised RuntimeError",
            id="audit-factory-raises-secret-hidden",
        ),
        pytest.param(
            ("http://user:hunter2@127.0.0.1:1/?api_key=hunter2",),
            "cannot audit http://127.0.0.1:1/",
            id="audit-url-credentials-hidden",
        ),
        pytest.param((WEAK, "--deps"), "give no TARGET", id="audit-deps-with-a-target-refused"),
    ],
)
def test_failures_exit_2_in_one_line_without_secrets(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(app, ["audit", *args])
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert message in output
    for secret in ("secret-xyz", "secret-abc", "hunter2"):
        assert secret not in output
    assert "Traceback" not in output
    assert not isinstance(result.exception, (KeyError, RuntimeError))
