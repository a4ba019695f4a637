"""Attacks on configuration: keys anyone can read, settings that are silently not read.

Each refusal has its legitimate configuration beside it, which must still start.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from bastion.exceptions import ConfigurationError
from bastion.settings import Settings
from tests.support.secret_watch import never_logged

STRONG_KEY = never_logged(secrets.token_urlsafe(32))
HOSTS = {"allowed_hosts": ["bank.example"]}
# The README's quick start, pasted as it is: 75 characters, 40 distinct, and public.
README_PLACEHOLDER = "<output of: python -c 'import secrets; print(secrets.token_urlsafe(32))'>"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("BASTION_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(README_PLACEHOLDER, id="key-readme-placeholder"),
        pytest.param("<" + STRONG_KEY + ">", id="key-angle-bracket-placeholder"),
        pytest.param("correct horse battery staple 2024 xyz", id="key-phrase-with-spaces"),
        pytest.param(f"{STRONG_KEY},{STRONG_KEY[::-1]}x", id="key-with-comma-in-code"),
    ],
)
def test_production_refuses_a_key_no_generator_prints(key: str) -> None:
    with pytest.raises(
        ConfigurationError, match=r"secret_keys\[0\] is not a generated key"
    ) as info:
        Settings(secret_keys=[key], transport=HOSTS)
    assert key not in str(info.value)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(STRONG_KEY, id="key-token-urlsafe"),
        pytest.param(secrets.token_hex(32), id="key-hex"),
        pytest.param("q+/Zx9" + secrets.token_urlsafe(30) + "==", id="key-standard-base64"),
    ],
)
def test_production_accepts_generated_keys(key: str) -> None:
    assert Settings(secret_keys=[key], transport=HOSTS).secret_keys[0].get_secret_value() == key


def test_development_still_takes_any_key() -> None:
    # Only production refuses; a laptop may sign with whatever it was given.
    assert Settings(mode="development", secret_keys=[README_PLACEHOLDER]).secret_keys


def _production_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_SECRET_KEYS", STRONG_KEY)
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bank.example"]')


@pytest.mark.parametrize(
    ("explicit", "stale"),
    [
        pytest.param("BASTION_MODE", "bastion_mode", id="env-case-duplicate-mode"),
        pytest.param("BASTION_DEBUG", "Bastion_Debug", id="env-case-duplicate-debug"),
    ],
)
def test_variables_differing_only_in_case_are_refused(
    monkeypatch: pytest.MonkeyPatch, explicit: str, stale: str
) -> None:
    # The operator's explicit production value must not lose, silently, to a
    # forgotten lower-case one (pydantic-settings keeps whichever comes last).
    _production_env(monkeypatch)
    monkeypatch.setenv(explicit, "production" if explicit.endswith("MODE") else "false")
    monkeypatch.setenv(stale, "development" if explicit.endswith("MODE") else "true")
    with pytest.raises(ConfigurationError, match="differ only in case"):
        Settings()


def test_one_variable_in_either_case_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    _production_env(monkeypatch)
    monkeypatch.setenv("bastion_debug", "false")
    assert Settings().debug is False


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param(
            "bastion_policy__deny_by_default", "true", id="secrets-file-nested-setting-ignored"
        ),
        pytest.param("bastion_secret_key", STRONG_KEY, id="secrets-file-misspelt"),
        pytest.param("BASTION_RATE_LIMIT", "{}", id="secrets-file-misspelt-upper-case"),
    ],
)
def test_secrets_files_that_name_no_setting_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, content: str
) -> None:
    _production_env(monkeypatch)
    monkeypatch.setenv("BASTION_SECRETS_DIR", str(tmp_path))
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigurationError, match="unknown Bastion secrets file") as info:
        Settings()
    assert STRONG_KEY not in str(info.value)


def test_secrets_files_differing_only_in_case_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`bastion_mode` and `BASTION_MODE` both name `mode`; which one was read
    depended on the directory's listing order (id secrets-file-case-duplicate-mode)."""
    _production_env(monkeypatch)
    monkeypatch.setenv("BASTION_SECRETS_DIR", str(tmp_path))
    (tmp_path / "bastion_mode").write_text("production")
    (tmp_path / "BASTION_MODE").write_text("development")
    with pytest.raises(ConfigurationError, match=r"secrets files .* differ only in case"):
        Settings()


def test_secrets_files_of_settings_and_of_others_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BASTION_SECRETS_DIR", str(tmp_path))
    (tmp_path / "bastion_secret_keys").write_text(STRONG_KEY + "\n")
    (tmp_path / "BASTION_POLICY").write_text('{"deny_by_default": true}')
    (tmp_path / "bastion_transport").write_text('{"allowed_hosts": ["bank.example"]}')
    (tmp_path / "bastion_demo__jwt_issuer").write_text("https://idp.example")  # the demo's
    (tmp_path / "db_password").write_text("not ours")
    settings = Settings()
    assert settings.policy.deny_by_default is True
    assert settings.transport.allowed_hosts == ("bank.example",)
    assert settings.secret_keys[0].get_secret_value() == STRONG_KEY


# --- secrets in dumps and variables --------------------------------------------------

HS_KEY = "hs256-shared-secret-never-dumped-0123456789abcdef"


@pytest.mark.parametrize(
    "mode",
    [pytest.param("python", id="dump-python-jwt-k"), pytest.param("json", id="dump-json-jwt-k")],
)
def test_a_dump_never_carries_the_symmetric_jwt_key(mode: str) -> None:
    """Code that logs `settings.model_dump()` (Python mode) must not leak an HS* key;
    the public members of the key stay readable in both modes."""
    jwk = {"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": HS_KEY}
    settings = Settings(
        mode="development",
        auth={
            "jwt": {
                "issuer": "https://id.example",
                "audience": "api",
                "algorithms": ["HS256"],
                "jwks": {"keys": [jwk]},
            }
        },
    )
    dumped = settings.model_dump(mode=mode)
    assert HS_KEY not in repr(dumped)
    assert dumped["auth"]["jwt"]["jwks"]["keys"][0]["kid"] == "hs-1"
    jwt = settings.auth.jwt
    assert jwt is not None
    assert jwt.jwks is not None
    assert jwt.jwks["keys"][0]["k"] == HS_KEY  # the layer still has it


def test_a_dumped_key_mask_is_refused_not_skipped() -> None:
    """Settings dumped (the JWT `k` masked) and loaded again: the mask must not pass
    for a key, or the key ring is empty and every token refused without a word
    (id jwks-masked-k-reloaded)."""
    jwk = {"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": HS_KEY}
    jwt_section = {
        "issuer": "https://id.example",
        "audience": "api",
        "algorithms": ["HS256"],
        "jwks": {"keys": [jwk]},
    }
    dumped = Settings(mode="development", auth={"jwt": jwt_section}).model_dump()
    with pytest.raises(ConfigurationError, match="the mask a settings dump prints"):
        Settings(mode="development", auth={"jwt": dumped["auth"]["jwt"]})
