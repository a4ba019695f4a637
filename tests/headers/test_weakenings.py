"""Value-based weakenings of the headers layer, as `Settings.opt_outs()` reports them.

The strings are shown at start-up and by `bastion config`, and diffed in CI: each
case asserts the exact list, and each weakening sits beside the legitimate setting
that must stay silent.
"""

from __future__ import annotations

from typing import Any

import pytest

from bastion.headers import DEFAULT_DIRECTIVES, HeadersSettings, RouteHeadersSettings
from bastion.headers.csp import policy_weakenings
from bastion.headers.policy import header_weakenings
from bastion.settings import Settings


def headers_opt_outs(**headers: Any) -> list[str]:
    """What `Settings.opt_outs()` reports for the headers section alone."""
    found = Settings(mode="development", headers=headers).opt_outs()
    return [name for name in found if name.startswith("headers.")]


def test_defaults_weaken_nothing() -> None:
    # The default script-src carries 'unsafe-inline' and https: as fallbacks for
    # browsers too old for nonces; beside a nonce and 'strict-dynamic' they are inert.
    assert headers_opt_outs() == []
    assert HeadersSettings().weakenings() == []
    assert policy_weakenings(DEFAULT_DIRECTIVES) == []
    assert header_weakenings(HeadersSettings()) == []


# (headers settings, the exact headers.* opt-outs)
HEADER_VALUES = [
    # Referrer-Policy: full URLs to other sites.
    pytest.param(
        {"referrer_policy": "unsafe-url"},
        ["headers.referrer_policy=unsafe-url"],
        id="weak-referrer-unsafe-url",
    ),
    pytest.param(
        {"referrer_policy": "no-referrer-when-downgrade"},
        ["headers.referrer_policy=no-referrer-when-downgrade"],
        id="weak-referrer-no-referrer-when-downgrade",
    ),
    pytest.param(
        {"referrer_policy": None}, ["headers.referrer_policy=null"], id="weak-referrer-not-sent"
    ),
    pytest.param({"referrer_policy": "no-referrer"}, [], id="referrer-no-referrer-ok"),
    pytest.param({"referrer_policy": "same-origin"}, [], id="referrer-same-origin-ok"),
    pytest.param({"referrer_policy": "strict-origin"}, [], id="referrer-strict-origin-ok"),
    pytest.param({"referrer_policy": "origin"}, [], id="referrer-origin-only-ok"),
    pytest.param(
        {"referrer_policy": "origin-when-cross-origin"}, [], id="referrer-origin-cross-origin-ok"
    ),
    # COOP and CORP.
    pytest.param(
        {"cross_origin_opener_policy": "unsafe-none"},
        ["headers.cross_origin_opener_policy=unsafe-none"],
        id="weak-coop-unsafe-none",
    ),
    pytest.param(
        {"cross_origin_opener_policy": None},
        ["headers.cross_origin_opener_policy=null"],
        id="weak-coop-not-sent",
    ),
    pytest.param(
        {"cross_origin_opener_policy": "same-origin-allow-popups"}, [], id="coop-popups-ok"
    ),
    pytest.param(
        {"cross_origin_resource_policy": "cross-origin"},
        ["headers.cross_origin_resource_policy=cross-origin"],
        id="weak-corp-cross-origin",
    ),
    pytest.param(
        {"cross_origin_resource_policy": None},
        ["headers.cross_origin_resource_policy=null"],
        id="weak-corp-not-sent",
    ),
    pytest.param({"cross_origin_resource_policy": "same-site"}, [], id="corp-same-site-ok"),
    # extra_headers is judged by what is sent, and named as the setting that did it.
    pytest.param(
        {"extra_headers": {"x-content-type-options": None}},
        ["headers.extra_headers.x-content-type-options=null"],
        id="weak-extra-drops-nosniff",
    ),
    pytest.param(
        {"extra_headers": {"X-Content-Type-Options": "sniff"}},
        ["headers.extra_headers.x-content-type-options=sniff"],
        id="weak-extra-replaces-nosniff",
    ),
    pytest.param(
        {"extra_headers": {"permissions-policy": None}},
        ["headers.extra_headers.permissions-policy=null"],
        id="weak-extra-drops-permissions-policy",
    ),
    pytest.param(
        {"extra_headers": {"referrer-policy": "no-referrer, unsafe-url"}},
        ["headers.extra_headers.referrer-policy=no-referrer, unsafe-url"],
        id="weak-extra-referrer-last-value-wins",
    ),
    pytest.param(
        {"extra_headers": {"referrer-policy": "unsafe-url, strict-origin-when-cross-origin"}},
        [],
        id="extra-referrer-fallback-list-ok",
    ),
    pytest.param(
        {"extra_headers": {"referrer-policy": None}},
        ["headers.extra_headers.referrer-policy=null"],
        id="weak-extra-drops-referrer-policy",
    ),
    pytest.param(
        {"extra_headers": {"cross-origin-opener-policy": None}},
        ["headers.extra_headers.cross-origin-opener-policy=null"],
        id="weak-extra-drops-coop",
    ),
    pytest.param(
        {"extra_headers": {"cross-origin-opener-policy": 'same-origin; report-to="coop"'}},
        [],
        id="extra-coop-with-parameters-ok",
    ),
    pytest.param(
        {"extra_headers": {"cross-origin-resource-policy": "cross-origin"}},
        ["headers.extra_headers.cross-origin-resource-policy=cross-origin"],
        id="weak-extra-corp-cross-origin",
    ),
    pytest.param({"extra_headers": {"x-xss-protection": None}}, [], id="extra-drops-xss-ok"),
    pytest.param({"extra_headers": {"x-team": "blue"}}, [], id="extra-header-added-ok"),
    # Fingerprinting headers.
    pytest.param(
        {"strip_headers": ["x-powered-by"]},
        ["headers.strip_headers (server not stripped)"],
        id="weak-strip-keeps-server",
    ),
    pytest.param(
        {"strip_headers": []},
        [
            "headers.strip_headers (server not stripped)",
            "headers.strip_headers (x-powered-by not stripped)",
        ],
        id="weak-strip-nothing",
    ),
    pytest.param(
        {"strip_headers": ["Server", "x-powered-by", "x-aspnet-version"]}, [], id="strip-more-ok"
    ),
]


@pytest.mark.parametrize(("headers", "expected"), HEADER_VALUES)
def test_header_values(headers: dict[str, Any], expected: list[str]) -> None:
    assert headers_opt_outs(**headers) == expected


FRAMING = [
    pytest.param(
        {"csp_directives": {"frame-ancestors": "*"}},
        ["headers.csp.frame-ancestors=*"],
        id="weak-frame-ancestors-any",
    ),
    pytest.param(
        {"csp_directives": {"frame-ancestors": "https:"}, "x_frame_options": "DENY"},
        ["headers.csp.frame-ancestors=https:"],
        id="weak-frame-ancestors-any-https-overrides-xfo",
    ),
    pytest.param(
        {"csp_directives": {"frame-ancestors": None}},
        ["headers.csp.frame-ancestors=null"],
        id="weak-frame-ancestors-removed",
    ),
    pytest.param(
        {"csp_directives": {"frame-ancestors": None}, "x_frame_options": None},
        ["headers.x_frame_options=null"],
        id="weak-no-framing-defence",
    ),
    pytest.param(
        {"csp_directives": {"frame-ancestors": None}, "extra_headers": {"x-frame-options": "X"}},
        ["headers.extra_headers.x-frame-options=X"],
        id="weak-extra-xfo-unknown-value",
    ),
    pytest.param(
        {"x_frame_options": None, "csp_report_only": True},
        ["headers.x_frame_options=null", "headers.csp_report_only=true"],
        id="weak-xfo-off-under-report-only",
    ),
    pytest.param(
        {"x_frame_options": None, "monitor_only": True},
        ["headers.x_frame_options=null", "headers.monitor_only=true"],
        id="weak-xfo-off-under-monitor-only",
    ),
    pytest.param(
        {"x_frame_options": None, "insecure_disable_csp": True},
        ["headers.x_frame_options=null", "headers.insecure_disable_csp"],
        id="weak-xfo-off-without-csp",
    ),
    pytest.param({"x_frame_options": None}, [], id="xfo-off-frame-ancestors-enforced-ok"),
    pytest.param(
        {"extra_headers": {"x-frame-options": None}}, [], id="extra-drops-xfo-ancestors-ok"
    ),
    pytest.param(
        {"csp_directives": {"frame-ancestors": None}, "x_frame_options": "SAMEORIGIN"},
        [],
        id="xfo-alone-ok",
    ),
    pytest.param(
        {"csp_directives": {"frame-ancestors": "'self' https://partner.example"}},
        [],
        id="frame-ancestors-partner-ok",
    ),
    pytest.param({"csp_report_only": True}, ["headers.csp_report_only=true"], id="report-only"),
]


@pytest.mark.parametrize(("headers", "expected"), FRAMING)
def test_framing(headers: dict[str, Any], expected: list[str]) -> None:
    assert headers_opt_outs(**headers) == expected


SCRIPTS = [
    pytest.param(
        {"csp_extra_sources": {"script-src": ["'unsafe-eval'"]}},
        ["headers.csp.script-src='unsafe-eval'"],
        id="weak-script-unsafe-eval-even-with-nonce",
    ),
    pytest.param(
        {"csp_directives": {"script-src": "'self' 'unsafe-inline'"}},
        ["headers.csp.script-src='unsafe-inline'"],
        id="weak-script-unsafe-inline",
    ),
    pytest.param(
        {"csp_directives": {"script-src": "'nonce-{nonce}' 'unsafe-inline'"}},
        [],
        id="script-unsafe-inline-beside-nonce-ok",
    ),
    pytest.param(
        {"csp_directives": {"script-src": "'sha256-AbC+/9=' 'unsafe-inline'"}},
        [],
        id="script-unsafe-inline-beside-hash-ok",
    ),
    pytest.param(
        {"csp_directives": {"script-src": "* data: http: https://*"}},
        [
            "headers.csp.script-src=*",
            "headers.csp.script-src=data:",
            "headers.csp.script-src=http:",
            "headers.csp.script-src=https://*",
        ],
        id="weak-script-any-site",
    ),
    pytest.param(
        {"csp_directives": {"script-src": "'nonce-{nonce}' https:"}},
        ["headers.csp.script-src=https:"],
        id="weak-script-https-without-strict-dynamic",
    ),
    pytest.param(
        {"csp_directives": {"script-src": "'nonce-{nonce}' 'strict-dynamic' * data:"}},
        [],
        id="script-any-site-under-strict-dynamic-ok",
    ),
    pytest.param(
        {"csp_directives": {"script-src": "'self' https://cdn.example https://*.cdn.example"}},
        [],
        id="script-host-allowlist-ok",
    ),
    pytest.param(
        {"csp_directives": {"script-src": None, "default-src": "'self' 'unsafe-inline'"}},
        ["headers.csp.default-src='unsafe-inline'"],
        id="weak-default-src-governs-scripts",
    ),
    pytest.param(
        {"csp_directives": {"script-src": None, "default-src": None}},
        ["headers.csp.script-src=null"],
        id="weak-no-script-directive",
    ),
    pytest.param(
        {"csp_directives": {"script-src-attr": "'unsafe-inline'"}},
        ["headers.csp.script-src-attr='unsafe-inline'"],
        id="weak-inline-event-handlers",
    ),
    pytest.param(
        {"csp_extra_sources": {"script-src-elem": ["https://cdn.example"]}},
        [],
        id="script-src-elem-extra-host-ok",
    ),
    pytest.param(
        {"csp_directives": {"script-src": "'self' 'unsafe-eval'"}, "insecure_disable_csp": True},
        ["headers.insecure_disable_csp"],
        id="disabled-csp-reported-once",
    ),
    # object-src
    pytest.param(
        {"csp_directives": {"object-src": None}},
        ["headers.csp.object-src=null"],
        id="weak-object-src-removed",
    ),
    pytest.param(
        {"csp_directives": {"object-src": "'self'"}},
        ["headers.csp.object-src='self'"],
        id="weak-object-src-self",
    ),
    pytest.param(
        {"csp_directives": {"object-src": None, "default-src": "'none'"}},
        [],
        id="object-src-from-default-none-ok",
    ),
    # base-uri
    pytest.param(
        {"csp_directives": {"base-uri": None}},
        ["headers.csp.base-uri=null"],
        id="weak-base-uri-removed",
    ),
    pytest.param(
        {"csp_directives": {"base-uri": "'self' https://cdn.example"}},
        ["headers.csp.base-uri='self' https://cdn.example"],
        id="weak-base-uri-other-host",
    ),
    pytest.param({"csp_directives": {"base-uri": "'self'"}}, [], id="base-uri-self-ok"),
    # Everything removed: every rule speaks once.
    pytest.param(
        {"csp_directives": dict.fromkeys(DEFAULT_DIRECTIVES)},
        [
            "headers.csp.script-src=null",
            "headers.csp.object-src=null",
            "headers.csp.base-uri=null",
            "headers.csp.frame-ancestors=null",
        ],
        id="weak-empty-policy",
    ),
]


@pytest.mark.parametrize(("headers", "expected"), SCRIPTS)
def test_csp(headers: dict[str, Any], expected: list[str]) -> None:
    assert headers_opt_outs(**headers) == expected


ROUTES = [
    pytest.param(
        {"routes": {"/embed/*": {"csp_directives": {"frame-ancestors": "*"}}}},
        ["headers.routes[/embed/*].csp.frame-ancestors=*"],
        id="weak-route-framed-by-anyone",
    ),
    pytest.param(
        {"routes": {"/embed/*": {"csp_directives": {"frame-ancestors": "https://p.example"}}}},
        [],
        id="route-framed-by-partner-ok",
    ),
    pytest.param(
        {
            "referrer_policy": "unsafe-url",
            "routes": {"/a/*": {"cross_origin_resource_policy": "cross-origin"}},
        },
        [
            "headers.referrer_policy=unsafe-url",
            "headers.routes[/a/*].cross_origin_resource_policy=cross-origin",
        ],
        id="weak-layer-reported-once-route-adds-its-own",
    ),
    pytest.param(
        {"referrer_policy": "unsafe-url", "routes": {"/a/*": {"referrer_policy": "no-referrer"}}},
        ["headers.referrer_policy=unsafe-url"],
        id="route-fixes-layer-weakening",
    ),
    pytest.param(
        {
            "csp_directives": {"script-src": "'self'"},
            "routes": {"/legacy/*": {"csp_extra_sources": {"script-src": ["'unsafe-inline'"]}}},
        },
        ["headers.routes[/legacy/*].csp.script-src='unsafe-inline'"],
        id="weak-route-merged-with-layer",
    ),
    pytest.param(
        {"routes": {"/legacy/*": {"csp_extra_sources": {"script-src": ["'unsafe-inline'"]}}}},
        [],
        id="route-inline-beside-default-nonce-ok",
    ),
    pytest.param(
        {"monitor_only": True, "routes": {"/a/*": {"x_frame_options": None}}},
        ["headers.routes[/a/*].x_frame_options=null", "headers.monitor_only=true"],
        id="weak-route-xfo-off-under-layer-monitor-only",
    ),
]


@pytest.mark.parametrize(("headers", "expected"), ROUTES)
def test_routes(headers: dict[str, Any], expected: list[str]) -> None:
    assert headers_opt_outs(**headers) == expected


def test_a_route_alone_names_nothing() -> None:
    # Its weakenings depend on the layer it refines; the layer reports them.
    route = RouteHeadersSettings(csp_directives={"frame-ancestors": "*"})
    assert route.weakenings() == []
    layer = HeadersSettings(routes={"/embed/*": route})
    assert layer.weakenings() == ["routes[/embed/*].csp.frame-ancestors=*"]


def test_disabled_layer_reports_only_the_switch() -> None:
    assert headers_opt_outs(enabled=False, referrer_policy="unsafe-url", strip_headers=[]) == [
        "headers.enabled=false"
    ]


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_HEADERS__CSP_EXTRA_SOURCES", '{"script-src": ["\'unsafe-eval\'"]}')
    monkeypatch.setenv("BASTION_HEADERS__STRIP_HEADERS", '["server"]')
    assert [o for o in Settings(mode="development").opt_outs() if o.startswith("headers.")] == [
        "headers.csp.script-src='unsafe-eval'",
        "headers.strip_headers (x-powered-by not stripped)",
    ]
