"""`CSRFSettings`: validation at construction, canonical forms, reported opt-outs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.csrf import CSRFSettings, compile_policy
from bastion.hosts import Origin
from bastion.sections import opt_outs


def test_defaults_are_secure_and_report_nothing() -> None:
    settings = CSRFSettings()
    assert settings.trusted_origins == ()
    assert settings.insecure_allow_same_site is False
    assert settings.insecure_exempt_paths == ()
    assert settings.exempt_bearer_without_cookies is True
    assert opt_outs(settings) == []


def test_opt_outs_are_reported() -> None:
    settings = CSRFSettings(
        insecure_allow_same_site=True,
        insecure_exempt_paths=("/hook/",),
        enabled=False,
        monitor_only=True,
    )
    assert sorted(opt_outs(settings, "csrf.")) == [
        "csrf.enabled=false",
        "csrf.insecure_allow_same_site",
        "csrf.insecure_exempt_paths",
        "csrf.monitor_only=true",
    ]


def test_trusted_origins_are_canonical_and_compiled() -> None:
    settings = CSRFSettings(
        trusted_origins=("HTTPS://App.Example:443", "https://app.example", "http://localhost:3000")
    )
    assert settings.trusted_origins == ("https://app.example", "http://localhost:3000")
    assert compile_policy(settings).trusted_origins == frozenset(
        {Origin("https", "app.example", 443), Origin("http", "localhost", 3000)}
    )


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param("null", id="null"),
        pytest.param("*", id="star"),
        pytest.param("https://*.example.com", id="wildcard"),
        pytest.param("https://app.example/", id="trailing-slash"),
        pytest.param("https://app.example/path", id="path"),
        pytest.param("app.example", id="no-scheme"),
        pytest.param("ftp://app.example", id="scheme"),
        pytest.param("https://user@app.example", id="userinfo"),
        pytest.param("https://app.example:99999", id="port"),
    ],
)
def test_bad_trusted_origins_are_refused(origin: str) -> None:
    with pytest.raises(ValidationError, match="trusted_origins"):
        CSRFSettings(trusted_origins=(origin,))


@pytest.mark.parametrize(
    "path", ["/hook/", "/hook", "/api/v1/webhooks/stripe", "/", "/a.b/c-d_e~f"]
)
def test_good_exempt_paths(path: str) -> None:
    assert CSRFSettings(insecure_exempt_paths=(path,)).insecure_exempt_paths == (path,)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("hook/", id="relative"),
        pytest.param("", id="empty"),
        pytest.param("/hook?x=1", id="query"),
        pytest.param("/hook#frag", id="fragment"),
        pytest.param("/hook%2f..%2fadmin", id="percent"),
        pytest.param("/hook/../admin", id="dot-dot"),
        pytest.param("/hook/./x", id="dot"),
        pytest.param("/..", id="root-dot-dot"),
        pytest.param("//hook/", id="double-slash"),
        pytest.param("/a//b", id="empty-segment"),
        pytest.param("/hook\\x", id="backslash"),
        pytest.param("/hook x", id="space"),
        pytest.param("/hook\x00", id="nul"),
        pytest.param("/hook\n", id="newline"),
        pytest.param("/hook\x7f", id="del"),
        pytest.param("/api/*", id="no-prefix-patterns"),
        pytest.param("/users/{id}", id="no-parameters"),
    ],
)
def test_bad_exempt_paths_are_refused(path: str) -> None:
    with pytest.raises(ValidationError, match=r"insecure_exempt_paths|exempt path"):
        CSRFSettings(insecure_exempt_paths=(path,))


def test_header_and_field_names() -> None:
    settings = CSRFSettings(token_header="X-XSRF-Token", token_field="_token")
    assert (settings.token_header, settings.token_field) == ("x-xsrf-token", "_token")
    with pytest.raises(ValidationError, match="token_header"):
        CSRFSettings(token_header="x csrf")
    with pytest.raises(ValidationError, match="token_field"):
        CSRFSettings(token_field="a&b")


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"token_max_age_seconds": 59}, id="max-age-too-short"),
        pytest.param({"max_body_bytes": 0}, id="body-zero"),
        pytest.param({"max_form_fields": 0}, id="fields-zero"),
        pytest.param({"allow_same_site": True}, id="unknown-key"),
    ],
)
def test_invalid_values(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CSRFSettings.model_validate(values)


def test_settings_are_frozen() -> None:
    settings = CSRFSettings()
    with pytest.raises(ValidationError):
        settings.insecure_allow_same_site = True  # type: ignore[misc]  # frozen on purpose
