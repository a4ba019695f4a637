from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bastion.exceptions import ConfigurationError
from bastion.settings import Settings, log_opt_outs
from bastion.transport import LOCAL_HOSTS
from tests.support.secret_watch import never_logged

STRONG_KEY = never_logged("k3Y-" + "abcdefghijklmnopqrstuvwxyz0123456789")
PRODUCTION = {"secret_keys": [STRONG_KEY], "transport": {"allowed_hosts": ["bank.example"]}}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("BASTION_"):
            monkeypatch.delenv(name)


def test_production_is_the_default_and_accepts_a_sound_configuration() -> None:
    settings = Settings(**PRODUCTION)
    assert settings.mode == "production"
    assert settings.opt_outs() == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"secret_keys": []}, "secret_keys is empty", id="prod-no-secret-key"),
        pytest.param(
            {"secret_keys": ["short-key"]},
            r"secret_keys\[0\] is shorter",
            id="prod-short-secret-key",
        ),
        pytest.param(
            {"secret_keys": ["a" * 40]}, "distinct characters", id="prod-low-entropy-secret-key"
        ),
        pytest.param(
            {"secret_keys": [STRONG_KEY, "weak"]}, r"secret_keys\[1\]", id="prod-second-key-weak"
        ),
        pytest.param(
            {"transport": {"allowed_hosts": []}},
            "allowed_hosts is empty",
            id="prod-no-allowed-hosts",
        ),
        pytest.param(
            {"transport": {"allowed_hosts": ["*"]}}, "contains '\\*'", id="prod-wildcard-host"
        ),
        pytest.param(
            {"transport": {"allowed_hosts": ["bank.example"], "insecure_allow_http": True}},
            "requires HTTPS",
            id="prod-http-allowed",
        ),
        pytest.param({"debug": True}, "debug is on", id="prod-debug"),
        pytest.param(
            {"sessions": {"insecure_cookie_over_http": True}},
            "insecure_cookie_over_http",
            id="prod-session-cookie-over-http",
        ),
    ],
)
def test_production_refuses_unsafe_settings(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings(**(PRODUCTION | overrides))


def test_refusal_never_shows_the_secret() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings(**(PRODUCTION | {"secret_keys": ["tiny-secret-value"]}))
    assert "tiny-secret-value" not in str(info.value)


def test_validation_errors_never_show_the_input() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings(mode="development", secret_keys=[{"nested": "leaky-value"}])
    assert "leaky-value" not in str(info.value)
    assert "secret_keys" in str(info.value)


def test_unknown_settings_are_errors() -> None:
    with pytest.raises(ConfigurationError, match="allowed_host"):
        Settings(mode="development", allowed_host=["typo.example"])


def test_development_fills_laptop_defaults_in_the_open() -> None:
    settings = Settings(mode="development")
    assert settings.transport.allowed_hosts == LOCAL_HOSTS
    assert settings.transport.insecure_allow_http is True
    assert len(settings.secret_keys) == 1
    assert "transport.insecure_allow_http" in settings.opt_outs()


def test_development_keeps_explicit_choices() -> None:
    settings = Settings(
        mode="development",
        transport={"allowed_hosts": ["dev.example"], "insecure_allow_http": False},
    )
    assert settings.transport.allowed_hosts == ("dev.example",)
    assert settings.transport.insecure_allow_http is False


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_SECRET_KEYS", f"{STRONG_KEY},{STRONG_KEY[::-1]}")
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bank.example", "*.bank.example"]')
    settings = Settings()
    assert [k.get_secret_value() for k in settings.secret_keys] == [STRONG_KEY, STRONG_KEY[::-1]]
    assert "bank.example" in settings.transport.allowed_hosts


def test_secret_keys_as_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_SECRET_KEYS", f'["{STRONG_KEY}"]')
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bank.example"]')
    assert Settings().secret_keys[0].get_secret_value() == STRONG_KEY


def test_secrets_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "bastion_secret_keys").write_text(STRONG_KEY + "\n")
    monkeypatch.setenv("BASTION_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bank.example"]')
    assert Settings().secret_keys[0].get_secret_value() == STRONG_KEY


def test_code_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_MODE", "production")
    assert Settings(mode="development").mode == "development"


def test_secrets_are_masked_everywhere() -> None:
    settings = Settings(**PRODUCTION)
    assert STRONG_KEY not in repr(settings)
    assert STRONG_KEY not in str(settings.public_dict())
    assert STRONG_KEY not in settings.model_dump_json()


def test_opt_outs_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(mode="development", cors={"enabled": False}, headers={"monitor_only": True})
    with caplog.at_level(logging.WARNING, logger="bastion"):
        found = log_opt_outs(settings)
    assert found == [
        "transport.insecure_allow_http",
        "headers.monitor_only=true",
        "cors.enabled=false",
        "sessions.insecure_cookie_over_http",
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cors.enabled=false" in m for m in messages) == 1
    assert any("development mode" in m for m in messages)


def test_settings_are_frozen() -> None:
    settings = Settings(mode="development")
    with pytest.raises(ValueError, match="frozen"):
        settings.debug = True  # type: ignore[misc]


def test_opt_outs_inside_route_tables_and_report_only_are_found() -> None:
    settings = Settings(
        mode="development",
        headers={
            "csp_report_only": True,
            "routes": {"/embed/*": {"insecure_disable_csp": True}},
        },
    )
    assert settings.opt_outs() == [
        "transport.insecure_allow_http",
        "headers.csp_report_only=true",
        "headers.routes[/embed/*].insecure_disable_csp",
        "sessions.insecure_cookie_over_http",
    ]


@pytest.mark.parametrize(
    "section",
    [
        pytest.param(
            {"transport": {"allowed_hosts": ["bank.example"], "enabled": False}},
            id="prod-transport-disabled",
        ),
        pytest.param(
            {"transport": {"allowed_hosts": ["bank.example"], "monitor_only": True}},
            id="prod-transport-monitor-only",
        ),
        pytest.param({"errors": {"monitor_only": True}}, id="prod-errors-monitor-only"),
        pytest.param({"errors": {"enabled": False}}, id="prod-errors-disabled"),
    ],
)
def test_production_refuses_switching_the_perimeter_off(section: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="production requires"):
        Settings(**(PRODUCTION | section))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("BASTION_ALLOWED_HOSTS", id="env-misspelt-top-level"),
        pytest.param("BASTION_DEBUGG", id="env-typo"),
        pytest.param("BASTION_TRANSPORT_ALLOWED_HOSTS", id="env-single-underscore-section"),
    ],
)
def test_unknown_environment_variables_are_errors(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, '["bank.example"]')
    with pytest.raises(ConfigurationError, match=f"unknown Bastion environment variable {name}"):
        Settings(mode="development")


def test_misspelt_nested_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOST", '["bank.example"]')
    with pytest.raises(ConfigurationError, match="allowed_host"):
        Settings(mode="development")


def test_broken_json_in_a_variable_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bad')
    with pytest.raises(ConfigurationError, match=r"BASTION|transport"):
        Settings(mode="development")


def test_a_section_from_a_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "bastion_secret_keys").write_text(STRONG_KEY)
    (tmp_path / "bastion_transport").write_text('{"allowed_hosts": ["bank.example"]}')
    monkeypatch.setenv("BASTION_SECRETS_DIR", str(tmp_path))
    assert Settings().transport.allowed_hosts == ("bank.example",)


def test_opt_outs_are_logged_once_per_shield_not_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import anyio
    import httpx

    from bastion.shield import Shield
    from tests.support.apps import raw_app

    async def serve_requests() -> None:
        app = Shield(raw_app, mode="development", cors={"enabled": False})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            for _ in range(3):
                assert (await c.get("/")).status_code == 200

    with caplog.at_level(logging.WARNING, logger="bastion"):
        anyio.run(serve_requests)
    messages = [r.getMessage() for r in caplog.records if r.name == "bastion"]
    assert sum("cors.enabled=false" in m for m in messages) == 1


# --- auth.jwt.jwks: public keys only ---------------------------------------------------

JWT_ISSUER = {"issuer": "https://id.example", "audience": "api"}
PRIVATE_VALUE = never_logged("pr1vate-" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def ec_key_pair() -> tuple[dict[str, object], dict[str, object]]:
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", {"alg": "ES256", "use": "sig"}, auto_kid=True)
    private: dict[str, object] = dict(key.as_dict(private=True))
    never_logged(str(private["d"]))
    public: dict[str, object] = dict(key.as_dict(private=False))
    return private, public


def jwt_env(monkeypatch: pytest.MonkeyPatch, jwt: dict[str, object]) -> None:
    import json

    monkeypatch.setenv("BASTION_SECRET_KEYS", STRONG_KEY)
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bank.example"]')
    monkeypatch.setenv("BASTION_AUTH__JWT", json.dumps(jwt))


@pytest.mark.parametrize(
    "member",
    [
        pytest.param(member, id=f"jwt-private-key-in-verifier-{member}")
        for member in ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
    ],
)
def test_a_private_jwk_member_is_refused_by_name_never_by_value(member: str) -> None:
    _, public = ec_key_pair()
    jwks = {"keys": [{**public, member: PRIVATE_VALUE}]}
    with pytest.raises(ConfigurationError, match=f"private member '{member}'") as caught:
        Settings(**PRODUCTION, auth={"jwt": {**JWT_ISSUER, "jwks": jwks}})
    assert PRIVATE_VALUE not in str(caught.value)
    assert PRIVATE_VALUE not in repr(caught.value)


def test_jwt_private_key_in_verifier_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from bastion.cli import app

    private, _ = ec_key_pair()
    jwt_env(monkeypatch, {**JWT_ISSUER, "jwks": {"keys": [private]}})
    with pytest.raises(ConfigurationError, match="private member 'd'") as caught:
        Settings()
    assert str(private["d"]) not in str(caught.value)
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert "private member 'd'" in result.output
    assert str(private["d"]) not in result.output


def test_the_public_jwk_set_is_accepted_and_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bastion.cli import app

    _, public = ec_key_pair()
    jwt_env(monkeypatch, {**JWT_ISSUER, "jwks": {"keys": [public]}})
    jwt = Settings().auth.jwt
    assert jwt is not None
    assert jwt.jwks == {"keys": [public]}
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert str(public["x"]) in result.output


def test_an_hmac_key_needs_an_hs_algorithm_and_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bastion.cli import app

    oct_key = {"kty": "oct", "kid": "own-1", "k": PRIVATE_VALUE}
    with pytest.raises(ConfigurationError, match="private member 'k'"):
        Settings(**PRODUCTION, auth={"jwt": {**JWT_ISSUER, "jwks": {"keys": [oct_key]}}})
    jwt_env(monkeypatch, {**JWT_ISSUER, "jwks": {"keys": [oct_key]}, "algorithms": ["HS256"]})
    settings = Settings()
    assert settings.auth.jwt is not None
    assert settings.auth.jwt.jwks == {"keys": [oct_key]}
    assert PRIVATE_VALUE not in repr(settings.auth.jwt)
    assert PRIVATE_VALUE not in repr(settings)
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert PRIVATE_VALUE not in result.output
    assert '"kid": "own-1"' in result.output
