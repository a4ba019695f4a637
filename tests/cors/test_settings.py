"""CORSSettings: unsafe or malformed configuration is refused at construction."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion.cors import DEFAULT_MAX_AGE_SECONDS, CORSMiddleware, CORSSettings
from bastion.exceptions import ConfigurationError
from bastion.sections import opt_outs
from bastion.settings import Settings
from tests.support.apps import raw_app

# (settings, the setting the error must name, a fragment of the rule)
REFUSALS = [
    pytest.param(
        {"insecure_allow_any_origin": True, "allow_credentials": True},
        "allow_credentials",
        "cannot be combined",
        id="cors-wildcard-with-credentials",
    ),
    pytest.param(
        {"allow_origins": ["*"], "allow_credentials": True},
        "allow_origins",
        "insecure_allow_any_origin instead",
        id="cors-wildcard-in-allow-origins",
    ),
    pytest.param(
        {"allow_origins": ["https://*.com"]},
        "allow_origins",
        "top-level domain",
        id="cors-pattern-tld-wildcard",
    ),
    pytest.param(
        {"allow_origins": ["https://*example.com"]},
        "allow_origins",
        "whole leftmost label",
        id="cors-pattern-partial-label",
    ),
    pytest.param(
        {"allow_origins": ["https://example.*"]},
        "allow_origins",
        "whole leftmost label",
        id="cors-pattern-wildcard-tld-position",
    ),
    pytest.param(
        {"allow_origins": ["*.com"]},
        "allow_origins",
        "must start with http",
        id="cors-pattern-without-scheme",
    ),
    pytest.param(
        {"allow_origins": ["null"]},
        "allow_origins",
        "never allowed",
        id="cors-null-origin-configured",
    ),
    pytest.param(
        {"allow_origins": ["https://app.example/"]},
        "allow_origins",
        "path",
        id="cors-origin-with-path",
    ),
    pytest.param(
        {"allow_origins": ["https://app.example?next=1"]},
        "allow_origins",
        "query",
        id="cors-origin-with-query",
    ),
    pytest.param(
        {"allow_origins": ["https://admin@app.example"]},
        "allow_origins",
        "userinfo",
        id="cors-origin-with-userinfo",
    ),
    pytest.param(
        {"allow_origins": ["file://app.example"]},
        "allow_origins",
        "must start with http",
        id="cors-origin-not-http",
    ),
    pytest.param(
        {"allow_origins": "https://app.example"},
        "allow_origins",
        "tuple",
        id="cors-origins-not-a-list",
    ),
    pytest.param(
        {"insecure_allow_any_origin": True, "allow_origins": ["https://app.example"]},
        "insecure_allow_any_origin",
        "not both",
        id="cors-any-origin-with-allowlist",
    ),
    pytest.param({"allow_methods": ["*"]}, "allow_methods", "no '*'", id="cors-wildcard-methods"),
    pytest.param(
        {"allow_methods": ["TRACE"]}, "allow_methods", "forbidden", id="cors-forbidden-method"
    ),
    pytest.param(
        {"allow_methods": ["GET POST"]}, "allow_methods", "not an HTTP method", id="cors-bad-method"
    ),
    pytest.param({"allow_headers": ["*"]}, "allow_headers", "no '*'", id="cors-wildcard-headers"),
    pytest.param(
        {"allow_headers": ["x-a: b"]}, "allow_headers", "not a header name", id="cors-bad-header"
    ),
    pytest.param({"expose_headers": ["*"]}, "expose_headers", "no '*'", id="cors-wildcard-expose"),
    pytest.param(
        {"max_age_seconds": 86400}, "max_age_seconds", "less than or equal", id="cors-max-age-cap"
    ),
    pytest.param(
        {"max_age_seconds": -1}, "max_age_seconds", "greater than or equal", id="cors-max-age-neg"
    ),
    pytest.param(
        {"allow_origin_regex": ".*"}, "allow_origin_regex", "Extra inputs", id="cors-no-regex"
    ),
]


@pytest.mark.parametrize(("values", "setting", "rule"), REFUSALS)
def test_refused_at_construction(values: dict[str, Any], setting: str, rule: str) -> None:
    with pytest.raises(ValidationError, match=rule) as caught:
        CORSSettings(**values)
    assert setting in str(caught.value)


@pytest.mark.parametrize(("values", "setting", "rule"), REFUSALS)
def test_refused_through_settings(values: dict[str, Any], setting: str, rule: str) -> None:
    with pytest.raises(ConfigurationError, match=rule) as caught:
        Settings(mode="development", cors=values)
    message = str(caught.value)
    assert "cors" in message
    assert setting in message


def test_defaults_grant_nothing() -> None:
    settings = CORSSettings()
    assert settings.allow_origins == ()
    assert not settings.insecure_allow_any_origin
    assert not settings.allow_credentials
    assert not settings.allow_private_network
    assert settings.max_age_seconds == DEFAULT_MAX_AGE_SECONDS
    assert opt_outs(settings) == []


def test_stored_in_canonical_form() -> None:
    settings = CORSSettings(
        allow_origins=(
            "HTTPS://App.Example:443",
            "https://app.example",
            "https://*.Example.COM.",
            "http://localhost:3000",
            "http://[0:0::1]:8000",
        ),
        allow_methods=("get", "Put", "patch", "GET"),
        allow_headers=("Content-Type", "X-Requested-With", "content-type"),
        expose_headers=("X-Request-Id",),
    )
    assert settings.allow_origins == (
        "https://app.example",
        "https://*.example.com",
        "http://localhost:3000",
        "http://[::1]:8000",
    )
    # Fetch upper-cases only the six standard methods; `patch` is sent as written.
    assert settings.allow_methods == ("GET", "PUT", "patch")
    assert settings.allow_headers == ("content-type", "x-requested-with")
    assert settings.expose_headers == ("x-request-id",)


def test_canonical_form_validates_again() -> None:
    settings = CORSSettings(allow_origins=("https://*.example.com:8443", "https://a.example"))
    assert CORSSettings.model_validate(settings.model_dump()) == settings


def test_settings_are_frozen() -> None:
    settings = CORSSettings()
    with pytest.raises(ValidationError):
        settings.allow_origins = ("https://evil.net",)  # type: ignore[misc]  # testing frozen


def test_any_origin_is_a_reported_opt_out() -> None:
    settings = CORSSettings(insecure_allow_any_origin=True)
    assert opt_outs(settings) == ["insecure_allow_any_origin"]
    assert (
        "cors.insecure_allow_any_origin" in Settings(mode="development", cors=settings).opt_outs()
    )


def test_monitor_only_and_disabled_are_reported() -> None:
    assert opt_outs(CORSSettings(monitor_only=True, enabled=False)) == [
        "enabled=false",
        "monitor_only=true",
    ]


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_CORS__ALLOW_ORIGINS", '["https://App.Example", "https://*.x.dev"]')
    monkeypatch.setenv("BASTION_CORS__ALLOW_CREDENTIALS", "true")
    monkeypatch.setenv("BASTION_CORS__MAX_AGE_SECONDS", "120")
    cors = Settings(mode="development").cors
    assert cors.allow_origins == ("https://app.example", "https://*.x.dev")
    assert cors.allow_credentials
    assert cors.max_age_seconds == 120


def test_environment_refusal_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_CORS__ALLOW_ORIGINS", '["null"]')
    with pytest.raises(ConfigurationError, match=r"cors\.allow_origins"):
        Settings(mode="development")


def test_middleware_defaults_to_secure_settings() -> None:
    middleware = CORSMiddleware(raw_app)
    assert middleware.settings == CORSSettings()
    assert not middleware.policy.exact_origins
    assert not middleware.policy.patterns
    assert not middleware.policy.allow_any_origin
