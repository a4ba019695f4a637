"""Secrets and floods that reach the audit file through an event's free text or its
shape, not under a sensitive key: the emitter redacts them before any sink."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.auditlog import AuditLogSink, verify_chain
from bastion.events import EventEmitter, SecurityEvent
from tests.auditlog.support import KEY_A, lines

SECRET = "hunter2-s3cr3t"


def _written(tmp_path: Path, event: SecurityEvent) -> tuple[bytes, dict[str, object]]:
    path = tmp_path / "audit.log"
    with AuditLogSink(path, [KEY_A], max_record_bytes=64 * 1024) as sink:
        EventEmitter([sink]).emit(event)
    assert verify_chain([path], [KEY_A]).ok
    raw = lines(path)[1]
    return raw, json.loads(raw)["event"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(
            "details", {"url": f"https://bob:{SECRET}@api.example/x"}, id="redact-url-userinfo"
        ),
        pytest.param("details", {"dsn": f"postgresql://app:{SECRET}@db/app"}, id="redact-dsn"),
        pytest.param(
            "details", {"note": f"retry with password={SECRET}"}, id="redact-password-in-text"
        ),
        pytest.param(
            "details", {"upstream": f"/cb?access_token={SECRET}"}, id="redact-prefixed-token"
        ),
        pytest.param(
            "details", {"seen": f"Authorization: Bearer {SECRET}"}, id="redact-bearer-in-text"
        ),
        pytest.param("details", {"list": [{"why": f"api_key: {SECRET}"}]}, id="redact-nested-text"),
        pytest.param("path", f"/login;jsessionid={SECRET}", id="redact-session-id-in-path"),
        pytest.param("principal", f"svc token={SECRET}", id="redact-token-in-principal"),
    ],
)
def test_secret_in_free_text_never_reaches_the_file(
    tmp_path: Path, field: str, value: object
) -> None:
    event = SecurityEvent("authn_login_fail", "bad-password", "auth", **{field: value})  # type: ignore[arg-type]
    raw, _ = _written(tmp_path, event)
    assert SECRET.encode() not in raw
    assert b"[redacted]" in raw


def test_ordinary_text_is_kept(tmp_path: Path) -> None:
    details = {"url": "https://api.example/v1/users@2", "limit": "max_tokens=100", "n": [1, 2]}
    _, written = _written(
        tmp_path, SecurityEvent("authz_fail", "missing-role", "authz", path="/a", details=details)
    )
    assert written["details"] == details
    assert written["path"] == "/a"


@pytest.mark.parametrize(
    "details",
    [
        pytest.param({"items": list(range(100_000))}, id="flood-long-list"),
        pytest.param({f"k{i}": i for i in range(100_000)}, id="flood-many-keys"),
        pytest.param({"x" * 100_000: 1}, id="flood-long-key"),
        pytest.param({"headers": [("cookie-" + "x" * 100_000, "v")]}, id="flood-long-pair-name"),
    ],
)
def test_event_shape_is_bounded(tmp_path: Path, details: dict[str, object]) -> None:
    # Each would be a stub (the record too large), or with a larger record cap a line
    # of megabytes; bounded, the event is written whole and small.
    raw, written = _written(
        tmp_path, SecurityEvent("input_validation_fail", "r", "t", details=details)
    )
    assert len(raw) < 8 * 1024
    assert "bastion_audit" not in written  # not a stub
