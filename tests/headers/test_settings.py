"""The headers section inside `bastion.Settings`: errors, environment, opt-outs."""

from __future__ import annotations

import pytest

from bastion.exceptions import ConfigurationError
from bastion.settings import Settings


def test_settings_error_names_setting_not_value() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings(mode="development", headers={"extra_headers": {"x-a": "b\r\nX-Evil: 1"}})
    message = str(caught.value)
    assert "headers.extra_headers" in message
    assert "X-Evil" not in message


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_HEADERS__REFERRER_POLICY", "no-referrer")
    monkeypatch.setenv(
        "BASTION_HEADERS__CSP_DIRECTIVES", '{"img-src": "\'self\' https://cdn.example"}'
    )
    monkeypatch.setenv(
        "BASTION_HEADERS__ROUTES", '{"/embed/*": {"csp_directives": {"frame-ancestors": "https:"}}}'
    )
    headers = Settings(mode="development").headers
    assert headers.referrer_policy == "no-referrer"
    assert headers.csp_directives == {"img-src": ("'self'", "https://cdn.example")}
    assert headers.routes["/embed/*"].csp_directives == {"frame-ancestors": ("https:",)}


def test_disabling_csp_is_a_reported_opt_out() -> None:
    settings = Settings(mode="development", headers={"insecure_disable_csp": True})
    assert "headers.insecure_disable_csp" in settings.opt_outs()
