"""CORSSettings: unsafe or malformed configuration is refused at construction."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion.cors import (
    DEFAULT_MAX_AGE_SECONDS,
    CORSMiddleware,
    CORSSettings,
    OriginPattern,
    parse_origin_rule,
)
from bastion.exceptions import ConfigurationError
from bastion.hosts import Origin
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
    pytest.param(
        {"allow_origins": [Origin("ftp", "app.example", 21)]},
        "allow_origins",
        "must start with http",
        id="cors-hand-built-origin-revalidated",
    ),
    pytest.param(
        {"allow_origins": [Origin("https", "app.example/admin", 443)]},
        "allow_origins",
        "path",
        id="cors-hand-built-origin-with-path",
    ),
    pytest.param(
        {"allow_origins": [{"scheme": "https", "host": "app.example", "port": 443}]},
        "allow_origins",
        "is a string",
        id="cors-origin-as-mapping",
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
        Origin("https", "app.example", 443),
        OriginPattern("https", "example.com", 443),
        Origin("http", "localhost", 3000),
        Origin("http", "[::1]", 8000),
    )
    assert settings.model_dump(mode="json")["allow_origins"] == [
        "https://app.example",
        "https://*.example.com",
        "http://localhost:3000",
        "http://[::1]:8000",
    ]
    # Fetch upper-cases only the six standard methods; `patch` is sent as written.
    assert settings.allow_methods == ("GET", "PUT", "patch")
    assert settings.allow_headers == ("content-type", "x-requested-with")
    assert settings.expose_headers == ("x-request-id",)


def test_canonical_form_validates_again() -> None:
    settings = CORSSettings(allow_origins=("https://*.example.com:8443", "https://a.example"))
    assert settings.model_dump()["allow_origins"] == (
        "https://*.example.com:8443",
        "https://a.example",
    )
    assert CORSSettings.model_validate(settings.model_dump()) == settings
    assert CORSSettings.model_validate(settings.model_dump(mode="json")) == settings
    assert CORSSettings.model_validate_json(settings.model_dump_json()) == settings
    # Parsed rules are accepted as they are stored, and checked again.
    assert CORSSettings(allow_origins=settings.allow_origins) == settings
    hand_built = CORSSettings(allow_origins=[Origin("https", "A.Example", 443)])
    assert hand_built.allow_origins == (Origin("https", "a.example", 443),)


def test_config_output_shows_canonical_strings() -> None:
    settings = Settings(mode="development", cors={"allow_origins": ["HTTPS://App.Example:443"]})
    assert settings.public_dict()["cors"]["allow_origins"] == ["https://app.example"]


def test_policy_is_compiled_from_the_stored_rules() -> None:
    settings = CORSSettings(allow_origins=("https://a.example", "https://*.b.example"))
    policy = CORSMiddleware(raw_app, settings).policy
    assert policy.exact_origins == frozenset({Origin("https", "a.example", 443)})
    assert policy.patterns == (OriginPattern("https", "b.example", 443),)


def test_settings_are_frozen() -> None:
    settings = CORSSettings()
    with pytest.raises(ValidationError):
        settings.allow_origins = (parse_origin_rule("https://evil.net"),)  # type: ignore[misc]  # testing frozen


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
    assert cors.allow_origins == (
        Origin("https", "app.example", 443),
        OriginPattern("https", "x.dev", 443),
    )
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


# (settings, the exact cors.* opt-outs)
WEAKENINGS = [
    pytest.param(
        {"allow_origins": ["http://app.example"], "allow_credentials": True},
        ["cors.allow_origins=http://app.example (with credentials)"],
        id="cors-weak-http-origin-with-credentials",
    ),
    pytest.param(
        {"allow_origins": ["http://*.app.example:8080"], "allow_credentials": True},
        ["cors.allow_origins=http://*.app.example:8080 (with credentials)"],
        id="cors-weak-http-pattern-with-credentials",
    ),
    pytest.param(
        {"allow_origins": ["http://10.0.0.7"], "allow_credentials": True},
        ["cors.allow_origins=http://10.0.0.7 (with credentials)"],
        id="cors-weak-http-private-address-with-credentials",
    ),
    pytest.param(
        {"allow_origins": ["https://app.example"], "allow_credentials": True},
        [],
        id="cors-https-origin-with-credentials-ok",
    ),
    pytest.param(
        {
            "allow_origins": [
                "http://localhost:3000",
                "http://127.0.0.2:8000",
                "http://[::1]:8000",
                "http://*.dev.localhost",
            ],
            "allow_credentials": True,
        },
        [],
        id="cors-loopback-http-with-credentials-ok",
    ),
    pytest.param(
        {"allow_origins": ["http://app.example"]}, [], id="cors-http-origin-without-credentials-ok"
    ),
    pytest.param(
        {"allow_origins": ["https://app.example"], "allow_private_network": True},
        ["cors.allow_private_network=true"],
        id="cors-weak-private-network",
    ),
    pytest.param(
        {
            "enabled": False,
            "allow_origins": ["http://app.example"],
            "allow_credentials": True,
            "allow_private_network": True,
        },
        ["cors.enabled=false"],
        id="cors-disabled-reports-only-the-switch",
    ),
]


@pytest.mark.parametrize(("values", "expected"), WEAKENINGS)
def test_weakenings(values: dict[str, Any], expected: list[str]) -> None:
    found = Settings(mode="development", cors=values).opt_outs()
    assert [name for name in found if name.startswith("cors.")] == expected


def test_weakenings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_CORS__ALLOW_ORIGINS", '["http://App.Example:80"]')
    monkeypatch.setenv("BASTION_CORS__ALLOW_CREDENTIALS", "true")
    assert "cors.allow_origins=http://app.example (with credentials)" in (
        Settings(mode="development").opt_outs()
    )
