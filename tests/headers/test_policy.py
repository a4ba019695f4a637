"""Settings and compiled header sets: defaults, routes, merging with the app's headers."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from pydantic import ValidationError

from bastion.headers import HeadersSettings, RouteHeadersSettings, build_response_headers
from bastion.headers.policy import build_header_set, compile_header_sets, merge_headers

PERMISSIONS = (
    "accelerometer=(), browsing-topics=(), camera=(), display-capture=(), geolocation=(), "
    "gyroscope=(), hid=(), idle-detection=(), magnetometer=(), microphone=(), midi=(), "
    "payment=(), screen-wake-lock=(), serial=(), usb=(), xr-spatial-tracking=()"
)
DEFAULT_HEADERS = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    ("permissions-policy", PERMISSIONS),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("x-frame-options", "DENY"),
    ("origin-agent-cluster", "?1"),
    ("x-xss-protection", "0"),
    (
        "content-security-policy",
        "default-src 'self'; "
        "script-src 'nonce-{nonce}' 'strict-dynamic' 'unsafe-inline' https:; "
        "style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'; "
        "report-uri /.bastion/csp-report; report-to bastion-csp",
    ),
    ("reporting-endpoints", 'bastion-csp="/.bastion/csp-report"'),
]


def _names(headers: list[tuple[str, str]]) -> dict[str, str]:
    return dict(headers)


def test_default_headers_exact() -> None:
    assert build_response_headers() == DEFAULT_HEADERS


def test_disabled_layer_adds_nothing() -> None:
    assert build_response_headers(HeadersSettings(enabled=False)) == []


HEADER_OPTIONS = [
    pytest.param(
        {"referrer_policy": "no-referrer"}, "referrer-policy", "no-referrer", id="referrer"
    ),
    pytest.param({"referrer_policy": None}, "referrer-policy", None, id="referrer-off"),
    pytest.param(
        {"permissions_policy": {"geolocation": ["self", "https://Maps.Example:443"]}},
        "permissions-policy",
        PERMISSIONS.replace("geolocation=()", 'geolocation=(self "https://maps.example")'),
        id="permissions-merge-origin-normalised",
    ),
    pytest.param(
        {"permissions_policy": {"camera": None, "fullscreen": "*"}},
        "permissions-policy",
        PERMISSIONS.replace("camera=(), ", "") + ", fullscreen=(*)",
        id="permissions-drop-and-add",
    ),
    pytest.param(
        {"cross_origin_opener_policy": "same-origin-allow-popups"},
        "cross-origin-opener-policy",
        "same-origin-allow-popups",
        id="coop-popups",
    ),
    pytest.param(
        {"cross_origin_resource_policy": "cross-origin"},
        "cross-origin-resource-policy",
        "cross-origin",
        id="corp-cross-origin",
    ),
    pytest.param(
        {"csp_directives": {"frame-ancestors": "'self'"}},
        "x-frame-options",
        "SAMEORIGIN",
        id="xfo-follows-frame-ancestors-self",
    ),
    pytest.param(
        {"csp_directives": {"frame-ancestors": "https://p.example"}},
        "x-frame-options",
        None,
        id="xfo-omitted-for-allowlist",
    ),
    pytest.param(
        {"insecure_disable_csp": True},
        "x-frame-options",
        "DENY",
        id="xfo-kept-without-csp",
    ),
    pytest.param({"x_frame_options": "SAMEORIGIN"}, "x-frame-options", "SAMEORIGIN", id="xfo"),
    pytest.param({"origin_agent_cluster": False}, "origin-agent-cluster", None, id="oac-off"),
    pytest.param(
        {"extra_headers": {"X-XSS-Protection": None}}, "x-xss-protection", None, id="drop-default"
    ),
    pytest.param(
        {"extra_headers": {"Cross-Origin-Embedder-Policy": "require-corp"}},
        "cross-origin-embedder-policy",
        "require-corp",
        id="extra-header",
    ),
    pytest.param({"insecure_disable_csp": True}, "content-security-policy", None, id="csp-off"),
    pytest.param({"insecure_disable_csp": True}, "reporting-endpoints", None, id="no-endpoints"),
    pytest.param({"csp_report_path": None}, "reporting-endpoints", None, id="no-report-path"),
    pytest.param(
        {"csp_report_only": True},
        "content-security-policy-report-only",
        DEFAULT_HEADERS[-2][1],
        id="report-only",
    ),
    pytest.param(
        {"monitor_only": True},
        "content-security-policy-report-only",
        DEFAULT_HEADERS[-2][1],
        id="monitor-only-is-report-only",
    ),
    pytest.param(
        {"csp_report_path": "/csp/reports"},
        "reporting-endpoints",
        'bastion-csp="/csp/reports"',
        id="report-path",
    ),
]


@pytest.mark.parametrize(("options", "name", "expected"), HEADER_OPTIONS)
def test_header_options(options: Mapping[str, object], name: str, expected: str | None) -> None:
    headers = _names(build_response_headers(HeadersSettings.model_validate(options)))
    assert headers.get(name) == expected


def test_report_only_sends_no_enforced_policy() -> None:
    headers = _names(build_response_headers(HeadersSettings(csp_report_only=True)))
    assert "content-security-policy" not in headers


INVALID_SETTINGS = [
    pytest.param({"extra_headers": {"x-evil": "a\r\nSet-Cookie: s=1"}}, id="header-value-crlf"),
    pytest.param({"extra_headers": {"x-evil": "a\nb"}}, id="header-value-newline"),
    pytest.param({"extra_headers": {"x-evil": " padded"}}, id="header-value-padded"),
    pytest.param({"extra_headers": {"x-evil": ""}}, id="header-value-empty"),
    pytest.param({"extra_headers": {"x evil": "1"}}, id="header-name-space"),
    pytest.param({"extra_headers": {"x-evil:": "1"}}, id="header-name-colon"),
    pytest.param({"extra_headers": {"set-cookie": "s=1"}}, id="header-reserved-set-cookie"),
    pytest.param(
        {"extra_headers": {"content-security-policy": "default-src *"}}, id="header-reserved-csp"
    ),
    pytest.param({"permissions_policy": {"camera": ["http://[bad"]}}, id="permissions-bad-origin"),
    pytest.param({"permissions_policy": {"camera": ["ftp://x.example"]}}, id="permissions-scheme"),
    pytest.param({"permissions_policy": {"camera=(*)": []}}, id="permissions-feature-injection"),
    pytest.param({"referrer_policy": "always"}, id="referrer-unknown"),
    pytest.param({"csp_report_path": "csp-report"}, id="report-path-relative"),
    pytest.param({"csp_report_path": '/a"b'}, id="report-path-quote"),
    pytest.param({"csp_report_path": "/a;b"}, id="report-path-semicolon"),
    pytest.param({"csp_report_max_bytes": 10}, id="report-max-bytes-tiny"),
    pytest.param({"routes": {"embed/*": {}}}, id="route-pattern-relative"),
    pytest.param({"routes": {"/a": {"strip_headers": ["server"]}}}, id="route-layer-only-key"),
    pytest.param({"strip_headers": ["bad header"]}, id="strip-name"),
    pytest.param({"x_frame_options": "ALLOW-FROM https://a.example"}, id="xfo-allow-from"),
    pytest.param({"unknown_option": True}, id="misspelt-option"),
]


@pytest.mark.parametrize("options", INVALID_SETTINGS)
def test_invalid_settings_rejected(options: Mapping[str, object]) -> None:
    with pytest.raises(ValidationError):
        HeadersSettings.model_validate(options)


def test_route_inherits_what_it_does_not_set() -> None:
    settings = HeadersSettings(
        referrer_policy="no-referrer",
        csp_extra_sources={"img-src": ("https://cdn.example",)},
        extra_headers={"x-layer": "1"},
        routes={
            "/embed/*": RouteHeadersSettings(
                csp_directives={"frame-ancestors": ("https://partner.example",)},
                csp_extra_sources={"img-src": ("https://partner.example",)},
                extra_headers={"x-route": "2"},
                cross_origin_resource_policy="cross-origin",
            )
        },
    )
    route = _names(build_response_headers(settings, "/embed/*"))
    assert route["referrer-policy"] == "no-referrer"
    assert route["cross-origin-resource-policy"] == "cross-origin"
    assert route["x-layer"] == "1"
    assert route["x-route"] == "2"
    assert "x-frame-options" not in route
    csp = route["content-security-policy"]
    assert "frame-ancestors https://partner.example;" in csp
    assert "img-src 'self' data: https://cdn.example https://partner.example;" in csp
    default = _names(build_response_headers(settings))
    assert default["cross-origin-resource-policy"] == "same-origin"
    assert "frame-ancestors 'none'" in default["content-security-policy"]


def test_unknown_route_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="/nope"):
        build_response_headers(HeadersSettings(), "/nope")


def test_routes_survive_a_dump_and_reload() -> None:
    settings = HeadersSettings(
        referrer_policy="no-referrer",
        routes={"/a": RouteHeadersSettings(x_frame_options=None)},
    )
    reloaded = HeadersSettings.model_validate(settings.model_dump())
    assert reloaded == settings
    assert _names(build_response_headers(reloaded, "/a"))["referrer-policy"] == "no-referrer"
    assert settings.model_dump(mode="json")["routes"] == {"/a": {"x_frame_options": None}}


# merge_headers: the per-response step.

DEFAULT_SET, _ = compile_header_sets(HeadersSettings())


def _merged(app_headers: list[tuple[bytes, bytes]], **options: object) -> list[tuple[bytes, bytes]]:
    header_set = build_header_set(
        HeadersSettings.model_validate(options), strip=("server", "x-powered-by")
    )
    return merge_headers(app_headers, header_set, "N0NCE")


def test_merge_strips_server_and_powered_by_in_any_case() -> None:
    merged = _merged(
        [(b"Server", b"gunicorn/1"), (b"x-powered-by", b"PHP/5"), (b"content-type", b"text/html")]
    )
    names = [name.lower() for name, _ in merged]
    assert b"server" not in names
    assert b"x-powered-by" not in names
    assert merged[0] == (b"content-type", b"text/html")


def test_merge_adds_every_header_with_the_nonce() -> None:
    merged = dict(_merged([]))
    assert merged[b"content-security-policy"].count(b"'nonce-N0NCE'") == 2
    assert merged[b"x-content-type-options"] == b"nosniff"


def test_merge_keeps_what_the_app_set() -> None:
    merged = _merged(
        [(b"Content-Security-Policy", b"default-src 'none'"), (b"x-frame-options", b"SAMEORIGIN")]
    )
    assert [v for k, v in merged if k.lower() == b"content-security-policy"] == [
        b"default-src 'none'"
    ]
    assert [v for k, v in merged if k.lower() == b"x-frame-options"] == [b"SAMEORIGIN"]
    assert (b"referrer-policy", b"strict-origin-when-cross-origin") in merged


def test_merge_enforce_replaces_what_the_app_set() -> None:
    merged = _merged(
        [(b"Content-Security-Policy", b"default-src *"), (b"X-Frame-Options", b"ALLOWALL")],
        enforce=True,
    )
    assert b"default-src *" not in [v for _, v in merged]
    assert [v for k, v in merged if k.lower() == b"x-frame-options"] == [b"DENY"]


def test_merge_report_only_does_not_hide_the_apps_enforced_policy() -> None:
    merged = _merged([(b"content-security-policy", b"default-src 'self'")], csp_report_only=True)
    names = [name for name, _ in merged]
    assert names.count(b"content-security-policy") == 1
    assert names.count(b"content-security-policy-report-only") == 1


def test_merge_appends_reporting_endpoints_beside_the_apps() -> None:
    merged = _merged([(b"reporting-endpoints", b'default="/r"')], enforce=True)
    assert [v for k, v in merged if k == b"reporting-endpoints"] == [
        b'default="/r"',
        b'bastion-csp="/.bastion/csp-report"',
    ]


def test_merge_accepts_list_pairs() -> None:
    merged = merge_headers([[b"server", b"x"], [b"a", b"b"]], DEFAULT_SET, "N")
    assert merged[0] == (b"a", b"b")
