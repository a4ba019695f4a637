"""`bastion check`: the deploy checks of the effective settings.

Each check id has a named failing case and, beside it, a legitimate configuration
that must stay silent; every case asserts the exact list of ids. Cases start from
`QUIET`, a production configuration that produces no finding at all, and change
one thing.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, cast

import pytest

import bastion.audit.deploy as deploy
from bastion.audit.deploy import (
    CHECKS,
    SERVER_DEFAULT_WS_MAX_SIZE_BYTES,
    DeployContext,
    DeployFinding,
    classify_opt_out,
    exit_code,
    render_json,
    render_text,
    run_checks,
)
from bastion.audit.findings import SEVERITIES, Severity, at_least
from bastion.settings import Settings
from tests.support.secret_watch import never_logged

KEY = never_logged("k3Y-" + "abcdefghijklmnopqrstuvwxyz0123456789")
OLD_KEY = never_logged("oLd-" + "abcdefghijklmnopqrstuvwxyz0123456789")
WEAK_KEY = never_logged("weak-Key-9")  # shorter than MIN_SECRET_KEY_CHARS
REDIS_PASSWORD = never_logged("redis-Pa55word-never-shown")
DROP = object()  # removes a key from QUIET

QUIET: dict[str, Any] = {
    "secret_keys": [KEY, OLD_KEY],
    "transport": {"allowed_hosts": ["bank.example"]},
    "policy": {"deny_by_default": True},
    "audit_log": {"path": "/var/log/bastion/audit.log"},
}
ONE_WORKER = DeployContext(workers=1)
# What development mode itself adds: plain HTTP and cookies without Secure.
DEV = ["mode.E001", "sessions.E001", "transport.E002"]
JWT = {"issuer": "https://id.example", "audience": "bank", "jwks_url": "https://id.example/jwks"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BASTION_"):
            monkeypatch.delenv(name)


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, one level into sections; DROP removes."""
    result = dict(base)
    for name, value in overrides.items():
        if value is DROP:
            result.pop(name, None)
        elif isinstance(value, dict) and isinstance(result.get(name), dict):
            result[name] = {**result[name], **value}
        else:
            result[name] = value
    return result


def settings_with(**overrides: Any) -> Settings:
    # Without the production refusal, so what production refuses is judged too.
    return deploy.settings_for_check(**merged(QUIET, overrides))


def dev(**overrides: Any) -> dict[str, Any]:
    return {"mode": "development", **overrides}


def ids(findings: list[DeployFinding]) -> list[str]:
    return sorted(item.id for item in findings)


# (settings overrides of QUIET, context, the exact ids found)
CASES = [
    # --- mode and secrets ---
    pytest.param({}, ONE_WORKER, [], id="quiet-production-ok"),
    pytest.param(dev(), ONE_WORKER, DEV, id="deploy-development-mode"),
    pytest.param(dev(debug=True), ONE_WORKER, [*DEV, "mode.E002"], id="deploy-debug-on"),
    pytest.param(
        dev(
            transport={"insecure_allow_http": False}, sessions={"insecure_cookie_over_http": False}
        ),
        ONE_WORKER,
        ["mode.E001"],
        id="development-over-https-ok",
    ),
    pytest.param(
        dev(secret_keys=[WEAK_KEY, KEY]), ONE_WORKER, [*DEV, "secrets.E001"], id="deploy-weak-key"
    ),
    pytest.param(
        dev(secret_keys=DROP), ONE_WORKER, [*DEV, "secrets.W001"], id="deploy-per-process-key"
    ),
    pytest.param({"secret_keys": [KEY]}, ONE_WORKER, ["secrets.I001"], id="deploy-single-key"),
    # --- what production refuses at start-up, reported instead ---
    pytest.param(
        {"secret_keys": DROP}, ONE_WORKER, ["secrets.E002"], id="deploy-production-no-key"
    ),
    pytest.param(
        {"secret_keys": [WEAK_KEY, KEY]},
        ONE_WORKER,
        ["secrets.E001"],
        id="deploy-production-weak-key",
    ),
    pytest.param(
        {"transport": {"allowed_hosts": []}},
        ONE_WORKER,
        ["transport.E003"],
        id="deploy-production-no-hosts",
    ),
    pytest.param(
        {"transport": {"allowed_hosts": ["*"]}},
        ONE_WORKER,
        ["transport.E003"],
        id="deploy-production-any-host",
    ),
    pytest.param(
        {"transport": {"insecure_allow_http": True}},
        ONE_WORKER,
        ["transport.E002"],
        id="deploy-production-plain-http",
    ),
    pytest.param(
        {"transport": {"monitor_only": True}},
        ONE_WORKER,
        ["transport.E005"],
        id="deploy-production-transport-monitor-only",
    ),
    pytest.param(
        {"errors": {"monitor_only": True}},
        ONE_WORKER,
        ["errors.E002"],
        id="deploy-production-errors-monitor-only",
    ),
    pytest.param(
        {"transport": {"enabled": False}},
        ONE_WORKER,
        ["transport.E001"],
        id="deploy-production-transport-off",
    ),
    pytest.param({"debug": True}, ONE_WORKER, ["mode.E002"], id="deploy-production-debug"),
    # --- errors ---
    pytest.param(
        dev(errors={"enabled": False}), ONE_WORKER, [*DEV, "errors.E001"], id="deploy-errors-off"
    ),
    pytest.param(
        dev(errors={"monitor_only": True}),
        ONE_WORKER,
        [*DEV, "errors.W001"],
        id="deploy-errors-monitor-only",
    ),
    pytest.param(
        {"errors": {"insecure_pass_validation_input": True}},
        ONE_WORKER,
        ["errors.W002"],
        id="deploy-errors-echo-validation-input",
    ),
    # --- transport ---
    pytest.param(
        dev(transport={"enabled": False}),
        ONE_WORKER,
        ["mode.E001", "sessions.E001", "transport.E001"],  # its insecure_allow_http is moot
        id="deploy-transport-off",
    ),
    pytest.param(
        dev(transport={"monitor_only": True}),
        ONE_WORKER,
        [*DEV, "transport.W001"],
        id="deploy-transport-monitor-only",
    ),
    pytest.param(
        dev(transport={"allowed_hosts": ["*"]}),
        ONE_WORKER,
        [*DEV, "transport.E003"],
        id="deploy-any-host",
    ),
    pytest.param(
        {"transport": {"hsts_max_age_seconds": 86400}},
        ONE_WORKER,
        ["transport.W002"],
        id="deploy-hsts-one-day",
    ),
    pytest.param(
        {"transport": {"hsts_max_age_seconds": 2 * 31_536_000}},
        ONE_WORKER,
        [],
        id="hsts-two-years-ok",
    ),
    pytest.param(
        {"transport": {"hsts_include_subdomains": False}},
        ONE_WORKER,
        ["transport.W003"],
        id="deploy-hsts-without-subdomains",
    ),
    pytest.param(
        {"transport": {"https_redirect_status": 301}},
        ONE_WORKER,
        ["transport.W004"],
        id="deploy-redirect-turns-post-into-get",
    ),
    pytest.param(
        {"transport": {"https_redirect_status": 307}}, ONE_WORKER, [], id="redirect-307-ok"
    ),
    pytest.param(
        {"transport": {"trusted_proxies": ["10.0.0.0/8"]}},
        ONE_WORKER,
        ["transport.W005"],
        id="deploy-proxies-slash-8",
    ),
    pytest.param(
        {"transport": {"trusted_proxies": ["fc00::/7"]}},
        ONE_WORKER,
        ["transport.W005"],
        id="deploy-proxies-all-unique-local-ipv6",
    ),
    pytest.param(
        {"transport": {"trusted_proxies": ["10.1.0.0/16", "fd00:1::/64", "127.0.0.1"]}},
        ONE_WORKER,
        [],
        id="proxies-own-subnets-ok",
    ),
    pytest.param(
        {"transport": {"trusted_proxies": ["104.16.0.0/13"]}},
        ONE_WORKER,
        ["transport.W006"],
        id="deploy-proxies-public-network",
    ),
    pytest.param(
        {
            "transport": {
                "trusted_proxies": ["10.0.0.5"],
                "proxy_headers": ["x-forwarded-for", "x-forwarded-host"],
            }
        },
        ONE_WORKER,
        ["transport.W007"],
        id="deploy-proxy-headers-forwarded-host",
    ),
    pytest.param(
        {"transport": {"trusted_proxies": ["10.0.0.5"], "proxy_headers": ["forwarded"]}},
        ONE_WORKER,
        ["transport.W007"],
        id="deploy-proxy-headers-forwarded",
    ),
    pytest.param(
        {"transport": {"proxy_headers": ["x-forwarded-for", "x-forwarded-host"]}},
        ONE_WORKER,
        [],
        id="proxy-headers-without-proxies-never-read-ok",
    ),
    pytest.param(
        {"transport": {"trusted_proxies": ["10.0.0.5"]}},
        ONE_WORKER,
        [],
        id="proxy-headers-default-ok",
    ),
    pytest.param(
        {},
        DeployContext(workers=1, behind_proxy=True),
        ["transport.W008"],
        id="deploy-behind-proxy-without-trusted-proxies",
    ),
    pytest.param(
        {"transport": {"trusted_proxies": ["10.0.0.5"]}},
        DeployContext(workers=1, behind_proxy=True),
        [],
        id="behind-listed-proxy-ok",
    ),
    pytest.param(
        {},
        DeployContext(workers=1, server_proxy_headers=True, server_forwarded_allow_ips=("*",)),
        ["transport.E004"],
        id="deploy-server-trusts-every-peer",
    ),
    pytest.param(
        {},
        DeployContext(
            workers=1, server_proxy_headers=True, server_forwarded_allow_ips=("127.0.0.1",)
        ),
        ["transport.W009"],
        id="deploy-server-rewrites-client",
    ),
    pytest.param(
        {},
        DeployContext(workers=1, server_proxy_headers=False),
        [],
        id="server-no-proxy-headers-ok",
    ),
    # --- limits ---
    pytest.param(
        {"limits": {"enabled": False}}, ONE_WORKER, ["limits.W001"], id="deploy-limits-off"
    ),
    pytest.param(
        {"limits": {"monitor_only": True}},
        ONE_WORKER,
        ["limits.W002"],
        id="deploy-limits-monitor-only",
    ),
    pytest.param(
        {"limits": {"max_body_bytes": 100 * 1024 * 1024}},
        ONE_WORKER,
        ["limits.W003"],
        id="deploy-large-global-body",
    ),
    pytest.param(
        {"limits": {"routes": {"POST /upload": {"max_body_bytes": 2 * 1024**3}}}},
        ONE_WORKER,
        ["limits.W003"],
        id="deploy-huge-route-body",
    ),
    pytest.param(
        {
            "limits": {
                "max_body_bytes": 10 * 1024 * 1024,
                "routes": {"POST /upload": {"max_body_bytes": 500 * 1024 * 1024}},
            }
        },
        ONE_WORKER,
        [],
        id="upload-route-body-ok",
    ),
    # --- headers ---
    pytest.param(
        {"headers": {"enabled": False}}, ONE_WORKER, ["headers.W001"], id="deploy-headers-off"
    ),
    pytest.param(
        {"headers": {"monitor_only": True}},
        ONE_WORKER,
        ["headers.W002"],
        id="deploy-headers-monitor-only",
    ),
    pytest.param(
        {"headers": {"csp_report_only": True}},
        ONE_WORKER,
        ["headers.W003"],
        id="deploy-csp-report-only",
    ),
    pytest.param(
        {"headers": {"routes": {"/embed/*": {"csp_report_only": True}}}},
        ONE_WORKER,
        ["headers.W003"],
        id="deploy-csp-report-only-on-a-route",
    ),
    pytest.param(
        {"headers": {"insecure_disable_csp": True}},
        ONE_WORKER,
        ["headers.W004"],
        id="deploy-csp-disabled",
    ),
    pytest.param(
        {"headers": {"csp_directives": {"script-src": "'self' 'unsafe-inline'"}}},
        ONE_WORKER,
        ["headers.W005"],
        id="deploy-csp-unsafe-inline",
    ),
    pytest.param(
        {"headers": {"csp_directives": {"script-src": "'self' 'unsafe-eval'"}}},
        ONE_WORKER,
        ["headers.W005"],
        id="deploy-csp-unsafe-eval",
    ),
    pytest.param(
        {"headers": {"csp_directives": {"script-src": "'self' 'nonce-{nonce}' 'unsafe-inline'"}}},
        ONE_WORKER,
        [],
        id="csp-unsafe-inline-beside-nonce-ok",
    ),
    pytest.param(
        {"headers": {"csp_directives": {"object-src": "*"}}},
        ONE_WORKER,
        ["headers.W006"],
        id="deploy-csp-object-src-any",
    ),
    pytest.param(
        {"headers": {"csp_extra_sources": {"img-src": ["https://cdn.example"]}}},
        ONE_WORKER,
        [],
        id="csp-extra-image-source-ok",
    ),
    pytest.param(
        {"headers": {"referrer_policy": "unsafe-url"}},
        ONE_WORKER,
        ["headers.W007"],
        id="deploy-referrer-unsafe-url",
    ),
    pytest.param(
        {"headers": {"strip_headers": ["x-powered-by"]}},
        ONE_WORKER,
        ["headers.W007"],
        id="deploy-server-header-kept",
    ),
    pytest.param(
        {"headers": {"referrer_policy": "no-referrer"}}, ONE_WORKER, [], id="referrer-none-ok"
    ),
    pytest.param(
        {"headers": {"csp_directives": {"style-src": "'self' 'unsafe-inline'"}}},
        ONE_WORKER,
        ["headers.W008"],
        id="deploy-csp-style-unsafe-inline",
    ),
    pytest.param(
        {
            "headers": {
                "routes": {"/legacy/*": {"csp_directives": {"style-src": "'unsafe-inline'"}}}
            }
        },
        ONE_WORKER,
        ["headers.W008"],
        id="deploy-csp-style-unsafe-inline-on-a-route",
    ),
    pytest.param(
        {"headers": {"csp_directives": {"style-src": "'self' 'nonce-{nonce}' 'unsafe-inline'"}}},
        ONE_WORKER,
        [],
        id="csp-style-unsafe-inline-beside-nonce-ok",
    ),
    # --- cors ---
    pytest.param({"cors": {"enabled": False}}, ONE_WORKER, ["cors.W001"], id="deploy-cors-off"),
    pytest.param(
        {"cors": {"monitor_only": True}}, ONE_WORKER, ["cors.W002"], id="deploy-cors-monitor-only"
    ),
    pytest.param(
        {"cors": {"insecure_allow_any_origin": True}},
        ONE_WORKER,
        ["cors.W003"],
        id="deploy-cors-any-origin",
    ),
    pytest.param(
        {"cors": {"allow_origins": ["http://app.example"], "allow_credentials": True}},
        ONE_WORKER,
        ["cors.E001"],
        id="deploy-cors-http-origin-with-credentials",
    ),
    pytest.param(
        {
            "cors": {
                "allow_origins": ["https://app.example", "http://localhost:3000"],
                "allow_credentials": True,
            }
        },
        ONE_WORKER,
        [],
        id="cors-https-and-loopback-with-credentials-ok",
    ),
    pytest.param(
        {"cors": {"allow_origins": ["https://*.example.com"], "allow_credentials": True}},
        ONE_WORKER,
        ["cors.W004"],
        id="deploy-cors-wildcard-with-credentials",
    ),
    pytest.param(
        {"cors": {"allow_origins": ["https://*.example.com"]}},
        ONE_WORKER,
        ["cors.I001"],
        id="deploy-cors-wildcard-without-credentials",
    ),
    pytest.param(
        {"cors": {"allow_origins": ["https://app.example"], "allow_private_network": True}},
        ONE_WORKER,
        ["cors.W005"],
        id="deploy-cors-private-network",
    ),
    # --- ratelimit ---
    pytest.param(
        {"ratelimit": {"enabled": False}}, ONE_WORKER, ["ratelimit.W001"], id="deploy-ratelimit-off"
    ),
    pytest.param(
        {"ratelimit": {"monitor_only": True}},
        ONE_WORKER,
        ["ratelimit.W002"],
        id="deploy-ratelimit-monitor-only",
    ),
    pytest.param(
        {"ratelimit": {"limits": {}}}, ONE_WORKER, ["ratelimit.W003"], id="deploy-no-rate-limits"
    ),
    pytest.param(
        {"ratelimit": {"ban_enabled": False, "fail_open": False}},
        ONE_WORKER,
        ["ratelimit.W004"],
        id="deploy-bans-off",
    ),
    pytest.param(
        {"ratelimit": {"ban_enabled": False}},
        ONE_WORKER,
        ["ratelimit.W004", "ratelimit.W005"],
        id="deploy-fail-open-without-bans",
    ),
    pytest.param({"ratelimit": {"fail_open": True}}, ONE_WORKER, [], id="fail-open-with-bans-ok"),
    pytest.param(
        {"ratelimit": {"never_ban": ["10.0.0.0/16", "2001:db8::/40"]}},
        ONE_WORKER,
        ["ratelimit.W006", "ratelimit.W006"],
        id="deploy-never-ban-wide-network",
    ),
    pytest.param(
        {"ratelimit": {"never_ban": ["10.0.0.0/24", "192.0.2.7", "2001:db8:1::/48"]}},
        ONE_WORKER,
        [],
        id="never-ban-narrow-networks-ok",
    ),
    pytest.param(
        {"ratelimit": {"never_ban": ["10.0.0.0/16"], "ban_enabled": False, "fail_open": False}},
        ONE_WORKER,
        ["ratelimit.W004"],
        id="never-ban-with-bans-off-only-w004",
    ),
    # --- sessions ---
    pytest.param(
        {"sessions": {"enabled": False}}, ONE_WORKER, ["sessions.W001"], id="deploy-sessions-off"
    ),
    pytest.param(
        {"sessions": {"monitor_only": True}},
        ONE_WORKER,
        ["sessions.W002"],
        id="deploy-sessions-monitor-only",
    ),
    pytest.param(
        dev(transport={"insecure_allow_http": False}, sessions={"insecure_cookie_over_http": True}),
        ONE_WORKER,
        ["mode.E001", "sessions.E001"],
        id="deploy-session-cookie-not-secure",
    ),
    pytest.param(
        {"sessions": {"cookie_name": "session"}},
        ONE_WORKER,
        ["sessions.W003"],
        id="deploy-session-cookie-without-host-prefix",
    ),
    pytest.param(
        {"sessions": {"cookie_name": "__Secure-session"}},
        ONE_WORKER,
        ["sessions.W003"],
        id="deploy-session-cookie-secure-prefix-only",
    ),
    pytest.param(
        {"sessions": {"cookie_name": "__Host-sid"}}, ONE_WORKER, [], id="session-host-prefix-ok"
    ),
    pytest.param(
        {"sessions": {"idle_timeout_seconds": 86400, "absolute_timeout_seconds": 86400}},
        ONE_WORKER,
        ["sessions.W004"],
        id="deploy-session-idle-a-day",
    ),
    pytest.param(
        {"sessions": {"absolute_timeout_seconds": 30 * 86400}},
        ONE_WORKER,
        ["sessions.W005"],
        id="deploy-session-absolute-a-month",
    ),
    pytest.param(
        {"sessions": {"idle_timeout_seconds": 3600, "absolute_timeout_seconds": 86400}},
        ONE_WORKER,
        [],
        id="session-hour-idle-day-absolute-ok",
    ),
    # --- auth, csrf, policy ---
    pytest.param({"auth": {"enabled": False}}, ONE_WORKER, ["auth.W001"], id="deploy-auth-off"),
    pytest.param(
        {"auth": {"monitor_only": True}}, ONE_WORKER, ["auth.W002"], id="deploy-auth-monitor-only"
    ),
    pytest.param(
        {
            "auth": {
                "jwt": JWT | {"jwks_url": "http://id.example/jwks", "insecure_jwks_over_http": True}
            }
        },
        ONE_WORKER,
        ["auth.E001"],
        id="deploy-jwks-over-http",
    ),
    pytest.param({"auth": {"jwt": JWT}}, ONE_WORKER, [], id="jwks-over-https-ok"),
    pytest.param({"csrf": {"enabled": False}}, ONE_WORKER, ["csrf.E001"], id="deploy-csrf-off"),
    pytest.param(
        {"csrf": {"enabled": False, "insecure_exempt_paths": ["/hooks/stripe"]}},
        ONE_WORKER,
        ["csrf.E001"],  # the exemptions of a layer that is off are moot
        id="deploy-csrf-off-reported-once",
    ),
    pytest.param(
        {"csrf": {"monitor_only": True}}, ONE_WORKER, ["csrf.W001"], id="deploy-csrf-monitor-only"
    ),
    pytest.param(
        {"csrf": {"insecure_allow_same_site": True}},
        ONE_WORKER,
        ["csrf.W002"],
        id="deploy-csrf-same-site",
    ),
    pytest.param(
        {"csrf": {"insecure_exempt_paths": ["/hooks/stripe"]}},
        ONE_WORKER,
        ["csrf.W003"],
        id="deploy-csrf-exempt-paths",
    ),
    pytest.param(
        {"csrf": {"trusted_origins": ["https://app.example"]}},
        ONE_WORKER,
        [],
        id="csrf-trusted-origin-ok",
    ),
    pytest.param(
        {"policy": {"enabled": False}}, ONE_WORKER, ["policy.W001"], id="deploy-policy-off"
    ),
    pytest.param(
        {"policy": {"monitor_only": True}},
        ONE_WORKER,
        ["policy.W002"],
        id="deploy-policy-monitor-only",
    ),
    pytest.param(
        {"policy": {"deny_by_default": False}},
        ONE_WORKER,
        ["policy.W003"],
        id="deploy-policy-open-by-default",
    ),
    pytest.param(
        dev(policy={"deny_by_default": False}),
        ONE_WORKER,
        DEV,
        id="policy-open-by-default-in-development-ok",
    ),
    # --- websocket ---
    pytest.param(
        {"websocket": {"enabled": False}}, ONE_WORKER, ["websocket.W001"], id="deploy-websocket-off"
    ),
    pytest.param(
        {"websocket": {"monitor_only": True}},
        ONE_WORKER,
        ["websocket.W002"],
        id="deploy-websocket-monitor-only",
    ),
    pytest.param(
        {"websocket": {"allowed_origins": ["http://chat.example"]}},
        ONE_WORKER,
        ["websocket.W003"],
        id="deploy-websocket-http-origin",
    ),
    pytest.param(
        {"websocket": {"allowed_origins": ["https://chat.example", "http://localhost:3000"]}},
        ONE_WORKER,
        [],
        id="websocket-https-and-loopback-origins-ok",
    ),
    pytest.param(
        {"websocket": {"default_access": "public"}},
        ONE_WORKER,
        ["websocket.W004"],
        id="deploy-websocket-public-by-default",
    ),
    pytest.param(
        {"websocket": {"routes": {"/ws/public": "public"}}},
        ONE_WORKER,
        [],
        id="websocket-one-public-route-ok",
    ),
    pytest.param(
        {},
        DeployContext(workers=1, server_ws_max_size_bytes=32 * 1024),
        ["websocket.W005"],
        id="deploy-websocket-server-limit-smaller",
    ),
    pytest.param(
        {},
        DeployContext(workers=1, server_ws_max_size_bytes=SERVER_DEFAULT_WS_MAX_SIZE_BYTES),
        ["websocket.W006"],
        id="deploy-websocket-server-buffers-16-mib",
    ),
    pytest.param(
        {"websocket": {"max_message_bytes": 1 << 20}},
        DeployContext(workers=1, server_ws_max_size_bytes=1 << 20),
        [],
        id="websocket-limits-match-ok",
    ),
    # --- store ---
    pytest.param({}, DeployContext(workers=4), ["store.W001"], id="deploy-memory-store-4-workers"),
    pytest.param({}, DeployContext(), ["store.I001"], id="deploy-memory-store-workers-unknown"),
    pytest.param(
        {"store": {"url": "sqlite:////var/lib/bastion/store.db"}},
        DeployContext(workers=4),
        [],
        id="sqlite-store-4-workers-ok",
    ),
    pytest.param(
        {"store": {"url": f"redis://:{REDIS_PASSWORD}@redis.internal:6379/0"}},
        DeployContext(workers=4),
        ["store.W002"],
        id="deploy-redis-without-tls",
    ),
    pytest.param(
        {"store": {"url": f"redis+cluster://:{REDIS_PASSWORD}@node1.internal:7000"}},
        ONE_WORKER,
        ["store.W002"],
        id="deploy-redis-cluster-without-tls",
    ),
    pytest.param(
        {"store": {"url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"}},
        DeployContext(workers=4),
        [],
        id="redis-on-loopback-without-tls-ok",
    ),
    pytest.param(
        {"store": {"url": "rediss://redis.internal:6380/0"}},
        ONE_WORKER,
        ["store.W003"],
        id="deploy-redis-without-password",
    ),
    pytest.param(
        {"store": {"url": f"rediss://:{REDIS_PASSWORD}@redis.internal:6380/0"}},
        DeployContext(workers=8),
        [],
        id="redis-tls-with-password-ok",
    ),
    pytest.param(
        {"store": {"url": f"rediss://redis.internal:6380/0?password={REDIS_PASSWORD}"}},
        ONE_WORKER,
        [],
        id="redis-password-as-query-ok",
    ),
    # --- audit_log ---
    pytest.param(
        {"audit_log": {"fsync": "never"}},
        ONE_WORKER,
        ["audit_log.W001"],
        id="deploy-audit-no-fsync",
    ),
    pytest.param({"audit_log": {"fsync": "always"}}, ONE_WORKER, [], id="audit-fsync-always-ok"),
    pytest.param(
        {"audit_log": DROP}, ONE_WORKER, ["audit_log.I001"], id="deploy-no-audit-file-in-production"
    ),
    pytest.param(dev(audit_log=DROP), ONE_WORKER, DEV, id="no-audit-file-in-development-ok"),
]


@pytest.mark.parametrize(("overrides", "context", "expected"), CASES)
def test_check_ids(overrides: dict[str, Any], context: DeployContext, expected: list[str]) -> None:
    assert ids(run_checks(settings_with(**overrides), context=context)) == sorted(expected)


def test_every_check_id_has_a_failing_case() -> None:
    covered = {check_id for case in CASES for check_id in cast(list[str], case.values[2])}
    # optouts.W001 is reached only by an opt-out no rule knows (none exists today).
    assert set(CHECKS) - covered == {"optouts.W001"}


def test_unknown_opt_out_is_still_reported() -> None:
    assert classify_opt_out("newlayer.insecure_skip_everything") == "optouts.W001"
    assert classify_opt_out("transport.insecure_allow_http") == "transport.E002"
    assert classify_opt_out("headers.routes[/a]b/*].insecure_disable_csp") == "headers.W004"


def test_every_headers_weakening_has_its_own_check() -> None:
    # The headers section's tests list every weakening string it can produce.
    from tests.headers.test_weakenings import FRAMING, HEADER_VALUES, ROUTES, SCRIPTS

    names = {
        name
        for table in (HEADER_VALUES, FRAMING, SCRIPTS, ROUTES)
        for case in table
        for name in cast(list[str], case.values[1])
    }
    assert len(names) > 20
    for name in names:
        assert classify_opt_out(name).startswith("headers."), name


def test_secure_production_default_warns_below_medium_only() -> None:
    settings = Settings(secret_keys=[KEY], transport={"allowed_hosts": ["bank.example"]})
    for context in (None, DeployContext.uvicorn_defaults(workers=1)):
        findings = run_checks(settings, context=context)
        assert not [f.id for f in findings if at_least(f.severity, "medium")]
    assert ids(run_checks(settings)) == [
        "audit_log.I001",
        "policy.W003",
        "secrets.I001",
        "store.I001",
    ]


def test_findings_are_sorted_by_severity_then_id() -> None:
    findings = run_checks(settings_with(**dev(debug=True, ratelimit={"ban_enabled": False})))
    ranks = [(SEVERITIES.index(f.severity), f.id) for f in findings]
    assert ranks == sorted(ranks)
    assert findings[0].severity == "high"


def test_findings_name_the_setting() -> None:
    findings = run_checks(
        settings_with(
            headers={"routes": {"/embed/*": {"insecure_disable_csp": True}}},
            cors={"allow_origins": ["http://app.example"], "allow_credentials": True},
        ),
        context=ONE_WORKER,
    )
    assert [(f.id, f.setting) for f in findings] == [
        ("cors.E001", "cors.allow_origins"),
        ("headers.W004", "headers.routes[/embed/*].insecure_disable_csp"),
    ]
    assert "http://app.example" in findings[0].message


def test_every_message_and_hint_is_filled() -> None:
    settings = settings_with(
        **dev(
            debug=True,
            secret_keys=[WEAK_KEY],
            limits={"max_body_bytes": 1 << 30},
            sessions={"idle_timeout_seconds": 86400, "absolute_timeout_seconds": 30 * 86400},
        )
    )
    context = DeployContext(
        workers=3,
        behind_proxy=True,
        server_proxy_headers=True,
        server_forwarded_allow_ips=("*",),
        server_ws_max_size_bytes=1024,
    )
    for item in run_checks(settings, context=context):
        assert item.message
        assert item.hint
        assert item.setting
        assert not re.search(r"\{[a-z_]+\}", item.message), item.message


# --- silencing ---


def test_ignore_silences_by_id() -> None:
    settings = settings_with(ratelimit={"ban_enabled": False})
    found = run_checks(settings, context=ONE_WORKER, ignore=["ratelimit.W005"])
    assert ids(found) == ["ratelimit.W004"]
    # One id given as a string is that id, not its characters.
    assert run_checks(settings, context=ONE_WORKER, ignore="ratelimit.W005") == found


def test_ignore_refuses_an_unknown_id() -> None:
    with pytest.raises(ValueError, match=r"ratelimit\.W999"):
        run_checks(settings_with(), ignore=["ratelimit.W999"])


# --- the catalogue and its documentation ---


def test_docstring_table_lists_every_check_with_its_severity() -> None:
    rows = re.findall(r"^\| ([a-z_]+\.[EWI]\d{3}) \| ([a-z]+) \|", deploy.__doc__ or "", re.M)
    assert rows == [(check.id, check.severity) for check in CHECKS.values()]


@pytest.mark.parametrize("check", list(CHECKS.values()), ids=list(CHECKS))
def test_id_letter_matches_severity(check: deploy.Check) -> None:
    letter = check.id.split(".")[1][0]
    expected: dict[str, tuple[Severity, ...]] = {
        "E": ("critical", "high"),
        "W": ("medium", "low"),
        "I": ("info",),
    }
    assert check.severity in expected[letter]


# --- writers ---


FINDINGS = [
    DeployFinding("store.I001", "info", "memory store", "use redis", "store.url"),
    DeployFinding(
        "csrf.W003", "low", "exempt paths", "keep it short", "csrf.insecure_exempt_paths"
    ),
    DeployFinding("transport.E002", "high", "plain http", "serve https", "transport.x"),
    DeployFinding("cors.E001", "high", "http origin", "use https", "cors.allow_origins"),
]


def test_render_text_lines_sorted_with_hints_and_summary() -> None:
    lines = render_text(FINDINGS).splitlines()
    assert [line.split()[0] for line in lines[0:8:2]] == [
        "cors.E001",
        "transport.E002",
        "csrf.W003",
        "store.I001",
    ]
    assert lines[0].split(maxsplit=2) == ["cors.E001", "high", "http origin"]
    assert lines[1] == "    HINT: use https"
    assert lines[-1] == "bastion check: 4 findings (2 high, 1 low, 1 info)"


def test_render_text_without_findings() -> None:
    assert render_text([]) == "bastion check: no findings\n"


def test_render_json() -> None:
    document = json.loads(render_json(FINDINGS))
    assert [item["id"] for item in document["findings"]] == [
        "cors.E001",
        "transport.E002",
        "csrf.W003",
        "store.I001",
    ]
    assert document["findings"][0] == {
        "id": "cors.E001",
        "severity": "high",
        "setting": "cors.allow_origins",
        "message": "http origin",
        "hint": "use https",
    }
    assert document["summary"] == {
        "total": 4,
        "critical": 0,
        "high": 2,
        "medium": 0,
        "low": 1,
        "info": 1,
    }


@pytest.mark.parametrize(
    ("findings", "fail_on", "code"),
    [
        pytest.param(FINDINGS, "high", 1, id="exit-high-fails-on-high"),
        pytest.param(FINDINGS, "critical", 0, id="exit-no-critical-passes"),
        pytest.param(FINDINGS[:2], "medium", 0, id="exit-low-and-info-pass-medium"),
        pytest.param(FINDINGS[:2], "info", 1, id="exit-info-fails-on-info"),
        pytest.param([], "info", 0, id="exit-nothing-passes"),
    ],
)
def test_exit_code(findings: list[DeployFinding], fail_on: Severity, code: int) -> None:
    assert exit_code(findings, fail_on) == code


# --- secrets ---


def test_no_secret_in_any_output() -> None:
    settings = Settings(
        mode="development",
        secret_keys=[WEAK_KEY, KEY],
        store={"url": f"redis://user:{REDIS_PASSWORD}@redis.internal:6379/0"},
    )
    findings = run_checks(settings, context=DeployContext(workers=2))
    assert {"secrets.E001", "store.W002"} <= {f.id for f in findings}
    outputs = [render_text(findings), render_json(findings), repr(findings)]
    for secret in (WEAK_KEY, KEY, REDIS_PASSWORD):
        for output in outputs:
            assert secret not in output


def test_settings_for_check_keeps_the_start_up_refusal() -> None:
    from bastion.exceptions import ConfigurationError

    assert ids(run_checks(deploy.settings_for_check())) == [
        "audit_log.I001",
        "policy.W003",
        "secrets.E002",
        "store.I001",
        "transport.E003",
    ]
    with pytest.raises(ConfigurationError, match="refusing to start"):
        Settings()
    # Development still fills what it fills.
    filled = deploy.settings_for_check(mode="development")
    assert filled.transport.allowed_hosts
    assert filled.secret_keys
