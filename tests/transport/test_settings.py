"""`TransportSettings`: validation, parsed forms, and the weakenings it reports."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Any

import pytest
from pydantic import ValidationError

from bastion.exceptions import ConfigurationError
from bastion.settings import Settings
from bastion.transport import (
    TransportSettings,
    build_hsts_value,
    parse_trusted_proxy,
)


def test_settings_defaults_are_secure() -> None:
    settings = TransportSettings()
    assert settings.allowed_hosts == ()
    assert settings.trusted_proxies == ()
    assert settings.insecure_allow_http is False
    assert settings.https_redirect_status == 308
    assert settings.hsts_max_age_seconds == 31_536_000
    assert settings.hsts_include_subdomains is True
    assert settings.hsts_preload is False
    assert settings.proxy_headers == ("x-forwarded-for", "x-forwarded-proto")


def test_settings_parse_and_store_parsed_forms() -> None:
    settings = TransportSettings(
        allowed_hosts=("Bank.Example", "bank.example.", "*.API.bank.example"),
        trusted_proxies=("10.0.0.0/8", "192.0.2.1", "2001:db8::/32"),
        proxy_headers=("X-Forwarded-For", "x-forwarded-host"),
    )
    assert settings.allowed_hosts == ("bank.example", "*.api.bank.example")
    assert settings.trusted_proxies == (
        IPv4Network("10.0.0.0/8"),
        IPv4Network("192.0.2.1/32"),
        IPv6Network("2001:db8::/32"),
    )
    assert settings.proxy_headers == ("x-forwarded-for", "x-forwarded-host")


def test_settings_round_trip_through_dump() -> None:
    # settings.py rebuilds the section from model_dump() in development mode.
    settings = TransportSettings(allowed_hosts=("a.example",), trusted_proxies=("10.0.0.1",))
    assert TransportSettings.model_validate(settings.model_dump()) == settings
    as_json = settings.model_dump(mode="json")
    assert as_json["trusted_proxies"] == ["10.0.0.1/32"]
    assert TransportSettings.model_validate(as_json) == settings


def test_trusted_proxies_accept_a_comma_separated_string() -> None:
    settings = TransportSettings(trusted_proxies="10.0.0.1, 10.1.0.0/16")  # uvicorn's form
    assert settings.trusted_proxies == (IPv4Network("10.0.0.1/32"), IPv4Network("10.1.0.0/16"))


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        pytest.param({"allowed_hosts": ("bank.example:443",)}, "allowed_hosts", id="host-port"),
        pytest.param({"allowed_hosts": ("x/health?",)}, "allowed_hosts", id="host-path"),
        pytest.param({"allowed_hosts": ("*.com",)}, "allowed_hosts", id="host-wildcard-tld"),
        pytest.param({"trusted_proxies": ("proxy.internal",)}, "trusted_proxies", id="proxy-name"),
        pytest.param({"trusted_proxies": ("10.0.0.1/8",)}, "trusted_proxies", id="proxy-host-bits"),
        pytest.param({"trusted_proxies": ("*",)}, "trusted_proxies", id="proxy-star"),
        pytest.param({"trusted_proxies": (10,)}, "trusted_proxies", id="proxy-int"),
        pytest.param({"proxy_headers": ("x-real-ip",)}, "proxy_headers", id="proxy-header-unknown"),
        pytest.param(
            {"proxy_headers": ("forwarded", "x-forwarded-for")},
            "proxy_headers",
            id="proxy-headers-two-dialects",
        ),
        pytest.param({"https_redirect_status": 303}, "https_redirect_status", id="redirect-303"),
        pytest.param({"https_port": 0}, "https_port", id="https-port-zero"),
        pytest.param({"hsts_max_age_seconds": -1}, "hsts_max_age_seconds", id="hsts-negative"),
        pytest.param(
            {"hsts_preload": True, "hsts_include_subdomains": False},
            "hsts_preload",
            id="preload-without-subdomains",
        ),
        pytest.param(
            {"hsts_preload": True, "hsts_max_age_seconds": 86400},
            "hsts_preload",
            id="preload-short-max-age",
        ),
        pytest.param({"alowed_hosts": ("a.example",)}, "alowed_hosts", id="misspelt-option"),
    ],
)
def test_settings_refuse_and_name_the_setting(values: dict[str, Any], setting: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TransportSettings(**values)
    error = caught.value.errors()[0]
    assert setting in error["loc"] or setting in error["msg"]


def test_preload_accepted_when_rules_hold() -> None:
    settings = TransportSettings(hsts_preload=True)
    assert build_hsts_value(
        settings.hsts_max_age_seconds,
        include_subdomains=settings.hsts_include_subdomains,
        preload=settings.hsts_preload,
    ) == (b"max-age=31536000; includeSubDomains; preload")


# --- trusted_proxies: nothing that trusts every client ----------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param("10.0.0.0/8", IPv4Network("10.0.0.0/8"), id="proxy-private-slash-8-ok"),
        pytest.param("104.16.0.0/13", IPv4Network("104.16.0.0/13"), id="proxy-cdn-ipv4-ok"),
        pytest.param("2600:9000::/28", IPv6Network("2600:9000::/28"), id="proxy-cdn-ipv6-ok"),
        pytest.param("fc00::/7", IPv6Network("fc00::/7"), id="proxy-unique-local-ipv6-ok"),
        pytest.param("::1", IPv6Network("::1/128"), id="proxy-loopback-ipv6-ok"),
        pytest.param("::ffff:10.0.0.0/104", IPv4Network("10.0.0.0/8"),
                     id="proxy-ipv4-mapped-stored-as-ipv4"),
        pytest.param("0.0.0.0/0", "would trust every client", id="proxy-any-ipv4"),
        pytest.param("::/0", "would trust every client", id="proxy-any-ipv6"),
        pytest.param(IPv4Network("0.0.0.0/0"), "would trust every client",
                     id="proxy-any-network-object"),
        pytest.param("::ffff:0:0/96", "would trust every client", id="proxy-any-ipv4-mapped"),
        pytest.param("*", "would trust every client", id="proxy-star"),
        pytest.param("0.0.0.0/1", "wider than /8", id="proxy-half-of-ipv4"),
        pytest.param("2000::/3", "wider than /24", id="proxy-every-global-ipv6"),
    ],
)  # fmt: skip
def test_trusted_proxy_entries(entry: object, expected: IPv4Network | IPv6Network | str) -> None:
    if not isinstance(expected, str):
        assert parse_trusted_proxy(entry) == expected
        assert TransportSettings(trusted_proxies=(entry,)).trusted_proxies == (expected,)
        return
    with pytest.raises(ValueError, match=f"^trusted_proxies: .*{expected}"):
        parse_trusted_proxy(entry)
    with pytest.raises(ValidationError) as caught:
        TransportSettings(trusted_proxies=(entry,))
    (error,) = caught.value.errors()
    assert error["loc"] == ("trusted_proxies",)
    assert expected in error["msg"]


def test_trusted_proxies_any_network_refused_by_settings() -> None:
    with pytest.raises(ConfigurationError, match=r"transport\.trusted_proxies: .*every client"):
        Settings(mode="development", transport={"trusted_proxies": ["10.0.0.1", "::/0"]})


# --- weakenings: values that weaken the layer --------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({}, [], id="defaults-weaken-nothing"),
        pytest.param({"hsts_max_age_seconds": 63_072_000, "https_redirect_status": 307,
                      "hsts_preload": True}, [], id="stronger-values-ok"),
        pytest.param({"hsts_max_age_seconds": 0}, ["hsts_max_age_seconds=0"],
                     id="hsts-max-age-zero"),
        pytest.param({"hsts_max_age_seconds": 31_535_999}, ["hsts_max_age_seconds=31535999"],
                     id="hsts-max-age-below-one-year"),
        pytest.param({"hsts_include_subdomains": False}, ["hsts_include_subdomains=false"],
                     id="hsts-without-subdomains"),
        pytest.param({"https_redirect_status": 301}, ["https_redirect_status=301"],
                     id="redirect-301-turns-post-into-get"),
        pytest.param({"https_redirect_status": 302}, ["https_redirect_status=302"],
                     id="redirect-302-turns-post-into-get"),
        pytest.param({"allowed_hosts": ("bank.example", "*")}, ["allowed_hosts=*"],
                     id="any-host"),
        pytest.param({"monitor_only": True, "enabled": False, "insecure_allow_http": True}, [],
                     id="switches-left-to-the-generic-walk"),
    ],
)  # fmt: skip
def test_weakenings(values: dict[str, Any], expected: list[str]) -> None:
    assert TransportSettings(**values).weakenings() == expected


def _transport_opt_outs(**transport: Any) -> list[str]:
    settings = Settings(mode="development", transport={"insecure_allow_http": False, **transport})
    return [name for name in settings.opt_outs() if name.startswith("transport.")]


def test_settings_opt_outs_report_transport_weakenings() -> None:
    assert _transport_opt_outs(
        hsts_max_age_seconds=0, hsts_include_subdomains=False, https_redirect_status=302
    ) == [
        "transport.hsts_max_age_seconds=0",
        "transport.hsts_include_subdomains=false",
        "transport.https_redirect_status=302",
    ]
    assert _transport_opt_outs() == []


def test_settings_opt_outs_name_each_switch_once() -> None:
    assert _transport_opt_outs(monitor_only=True, hsts_max_age_seconds=86400) == [
        "transport.hsts_max_age_seconds=86400",
        "transport.monitor_only=true",
    ]
