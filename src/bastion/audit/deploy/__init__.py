"""Deploy checks (`bastion check`): what the effective settings leave open.

Threat: a deployment that starts, because every setting is legal, but runs with a
protection switched off, in report-only mode, or weakened by a value (a wide proxy
network, a plain-HTTP origin trusted with cookies, a memory store shared by nobody
across four workers), and nobody notices until it is exploited.
Defence: `run_checks` judges the settings, and the facts about the deployment the
caller knows (`DeployContext`), and returns one `DeployFinding` per problem with a
stable id, a severity, a message naming the setting and the risk, and a hint, as
Django's `manage.py check --deploy` does. Every opt-out `Settings.opt_outs()`
reports is a finding, so a new `insecure_*` switch is checked from the day it exists
(`optouts.W001` until it has its own id). `render_text`, `render_json` and
`exit_code` are the CLI's writers and its `--fail-on` status. Users silence checks
by id (`ignore`, like Django's `SILENCED_SYSTEM_CHECKS`).
Production's start-up refusals (`bastion.settings.production_problems`) are findings
too: `settings_for_check` builds the settings without refusing, and each refused rule
has a high E id (secrets.E001/E002, transport.E001/E002/E003/E005, errors.E001/E002,
sessions.E001, mode.E002); the app itself still refuses to start.
Not covered: settings that cannot hold the weak value at all (`null` or `*` CORS origins,
`0.0.0.0/0` proxies, `SameSite=None` sessions, an open WebSocket origin list) are
refused when validated and have no check. Whether the server really runs with the
options the context claims is the caller's word.

References: Django system checks, security ids
https://docs.djangoproject.com/en/stable/ref/checks/#security ; OWASP Session
Management Cheat Sheet (timeouts); RFC 6797 sections 6.1.1 and 14.4 (HSTS);
Fetch standard section 3.2.5 (CORS credentials); CSP3 #allow-all-inline.

Check ids. E: error, W: warning, I: information. An id is never renumbered and never
given another meaning (a retired id stays reserved): users and CI silence checks by
id. New checks take the next free number of their area and letter.

| id | severity | finding |
| --- | --- | --- |
| mode.E001 | high | development mode |
| mode.E002 | high | `debug` on |
| secrets.E001 | high | a weak `secret_keys` entry (production refuses to start) |
| secrets.E002 | high | no `secret_keys` in production (production refuses to start) |
| secrets.W001 | medium | no `secret_keys`: a random key per process (development) |
| secrets.I001 | info | one key only (how to rotate) |
| errors.E001 | high | errors layer disabled |
| errors.W001 | medium | errors layer monitor-only |
| errors.W002 | medium | `insecure_pass_validation_input` |
| errors.E002 | high | errors layer monitor-only in production (refused at start-up) |
| transport.E001 | high | transport layer disabled |
| transport.W001 | medium | transport layer monitor-only |
| transport.E002 | high | `insecure_allow_http` (no HTTPS redirect) |
| transport.E003 | high | `allowed_hosts` empty or `*` |
| transport.W002 | medium | HSTS max-age below one year |
| transport.W003 | low | HSTS without includeSubDomains |
| transport.W004 | low | HTTPS redirect with 301/302 |
| transport.W005 | medium | a trusted proxy network of /8 (IPv6 /32) or wider |
| transport.W006 | low | a public trusted proxy network |
| transport.W007 | low | `proxy_headers` with `x-forwarded-host` or `forwarded` |
| transport.W008 | medium | behind a proxy (context) with no `trusted_proxies` |
| transport.E004 | high | the server believes proxy headers from every peer (context) |
| transport.W009 | low | the server rewrites the client from proxy headers (context) |
| transport.E005 | high | transport layer monitor-only in production (refused at start-up) |
| limits.W001 | medium | limits layer disabled |
| limits.W002 | medium | limits layer monitor-only |
| limits.W003 | low | a very large body limit, global or per route |
| headers.W001 | medium | headers layer disabled |
| headers.W002 | medium | headers layer monitor-only (CSP report-only) |
| headers.W003 | medium | `csp_report_only` |
| headers.W004 | medium | `insecure_disable_csp` |
| headers.W005 | medium | `'unsafe-inline'` or `'unsafe-eval'` in effect in a script list |
| headers.W006 | medium | another CSP weakening (wildcards, object-src, base-uri, frame-ancestors) |
| headers.W007 | low | a weakened non-CSP header (referrer, COOP, CORP, nosniff, framing, strip) |
| headers.W008 | low | `'unsafe-inline'` in effect in a style list |
| cors.W001 | low | cors layer disabled |
| cors.W002 | low | cors layer monitor-only |
| cors.W003 | medium | `insecure_allow_any_origin` |
| cors.E001 | high | a plain-HTTP origin with credentials |
| cors.W004 | medium | a wildcard origin pattern with credentials |
| cors.W005 | low | `allow_private_network` |
| cors.I001 | info | a wildcard origin pattern without credentials |
| ratelimit.W001 | medium | ratelimit layer disabled |
| ratelimit.W002 | medium | ratelimit layer monitor-only |
| ratelimit.W003 | medium | no rate limits (`limits={}`) |
| ratelimit.W004 | low | bans off |
| ratelimit.W005 | low | fail-open with bans off |
| ratelimit.W006 | low | a `never_ban` network wider than /24 (IPv6 /48) |
| sessions.W001 | low | sessions layer disabled |
| sessions.W002 | low | sessions layer monitor-only |
| sessions.E001 | high | `insecure_cookie_over_http` (no Secure, no prefix) |
| sessions.W003 | medium | a session cookie name without `__Host-` |
| sessions.W004 | low | a very long idle timeout |
| sessions.W005 | low | a very long absolute timeout |
| auth.W001 | low | auth layer disabled |
| auth.W002 | medium | auth layer monitor-only |
| auth.E001 | high | `jwt.insecure_jwks_over_http` |
| csrf.E001 | high | csrf layer disabled |
| csrf.W001 | medium | csrf layer monitor-only |
| csrf.W002 | medium | `insecure_allow_same_site` |
| csrf.W003 | low | `insecure_exempt_paths` |
| policy.W001 | medium | policy layer disabled |
| policy.W002 | medium | policy layer monitor-only |
| policy.W003 | low | `deny_by_default` off in production |
| websocket.W001 | medium | websocket layer disabled |
| websocket.W002 | medium | websocket layer monitor-only |
| websocket.W003 | medium | a plain-HTTP origin in `allowed_origins` |
| websocket.W004 | low | `default_access` public |
| websocket.W005 | low | `max_message_bytes` above the server's limit (context) |
| websocket.W006 | low | the server's limit above `max_message_bytes` (context) |
| store.W001 | medium | a memory store with several workers (context) |
| store.W002 | medium | Redis on another host without TLS |
| store.W003 | medium | Redis without a password |
| store.I001 | info | a memory store, worker count unknown |
| audit_log.W001 | low | `fsync=never` |
| audit_log.I001 | info | no audit file in production |
| optouts.W001 | medium | an opt-out no specific check knows yet |
"""

from __future__ import annotations

from bastion.audit.deploy.checks import classify_opt_out, run_checks
from bastion.audit.deploy.loading import settings_for_check
from bastion.audit.deploy.model import (
    CHECKS,
    SERVER_DEFAULT_WS_MAX_SIZE_BYTES,
    Check,
    DeployContext,
    DeployFinding,
)
from bastion.audit.deploy.render import exit_code, render_json, render_text

__all__ = [
    "CHECKS",
    "SERVER_DEFAULT_WS_MAX_SIZE_BYTES",
    "Check",
    "DeployContext",
    "DeployFinding",
    "classify_opt_out",
    "exit_code",
    "render_json",
    "render_text",
    "run_checks",
    "settings_for_check",
]
