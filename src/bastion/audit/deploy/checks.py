"""The deploy checks: pure functions from the effective settings to findings.

Two kinds of check feed `run_checks`:

1. Every opt-out `Settings.opt_outs()` reports (the `insecure_*` switches,
   `enabled=false`, `monitor_only`, `*report_only` and the values each section names
   in `Section.weakenings`) is classified by `_OPT_OUT_RULES` into its check id. An
   opt-out no rule knows becomes `optouts.W001`, so a new switch is reported from the
   day it exists, before anyone writes its specific check.
2. Value checks (`_VALUE_CHECKS`) judge settings that are legal and not opt-outs but
   still weaken a deployment (a wide trusted-proxy network, a long session, a Redis
   URL without TLS), some of them against the `DeployContext` the caller knows.

A layer that is off contributes only its `enabled=false` finding: its other settings
do nothing, so reporting them would be noise. Nothing here reads a secret's value
except to judge it; no finding quotes one (the store URL is named, never shown).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import Final
from urllib.parse import parse_qs, urlsplit

from bastion.audit.deploy.model import (
    CHECKS,
    UVICORN_DEFAULT_FORWARDED_ALLOW_IPS,
    DeployContext,
    DeployFinding,
)
from bastion.audit.findings import SEVERITIES
from bastion.cors import OriginPattern
from bastion.headers.csp import FALLBACKS, NONCE_SOURCE, resolve_directives
from bastion.headers.policy import HeaderPolicy, merge_route
from bastion.hosts import is_loopback_host, parse_origin
from bastion.settings import Settings, weak_secret_key

# A trusted-proxy network this wide or wider holds far more than a proxy fleet:
# an IPv4 /8 is 16.7 million addresses (the widest CDN edge range is a /13), and an
# IPv6 /32 is the minimum a regional registry allocates to a whole ISP (RIPE IPv6
# address allocation policy, "minimum allocation size").
WIDE_PROXY_PREFIXLEN: Final = {4: 8, 6: 32}
# The limits layer's default is 1 MiB (nginx's `client_max_body_size`); a global
# limit ten times Django's 2.5 MB upload default belongs on upload routes only.
LARGE_BODY_BYTES: Final = 25 * 1024 * 1024
# Per route, an upload of a few GiB (video) is plausible; past 1 GiB a handful of
# concurrent requests fill a typical container's disk or memory.
LARGE_ROUTE_BODY_BYTES: Final = 1024 * 1024 * 1024
# OWASP Session Management Cheat Sheet: idle 2-5 minutes (high value) to 15-30 minutes
# (low risk), absolute 4-8 hours. We warn at a working day idle and a week absolute,
# where a stolen cookie stays useful through an unattended day or a whole week.
LONG_IDLE_TIMEOUT_SECONDS: Final = 8 * 3600
LONG_ABSOLUTE_TIMEOUT_SECONDS: Final = 7 * 86400
# A never-ban network wider than this holds more than a rack of monitors: an IPv4 /24
# is the smallest prefix routed on the Internet, an IPv6 /48 one site's allocation
# (RFC 6177). Networks wider than /8 (IPv6 /32) are refused by the setting itself.
WIDE_NEVER_BAN_PREFIXLEN: Final = {4: 24, 6: 48}

# (enabled=false id, monitor_only id) per layer; the texts are in `model.CHECKS`.
_LAYER_IDS: Final = {
    layer: (f"{layer}.{off}", f"{layer}.{monitor}")
    for layer, off, monitor in (
        ("errors", "E001", "W001"),
        ("transport", "E001", "W001"),
        ("limits", "W001", "W002"),
        ("headers", "W001", "W002"),
        ("cors", "W001", "W002"),
        ("ratelimit", "W001", "W002"),
        ("sessions", "W001", "W002"),
        ("auth", "W001", "W002"),
        ("csrf", "E001", "W001"),
        ("policy", "W001", "W002"),
        ("websocket", "W001", "W002"),
    )
}
_LAYERS: Final = tuple(_LAYER_IDS)
_HEADER_SETTINGS: Final = (
    "referrer_policy|cross_origin_opener_policy|cross_origin_resource_policy"
    "|x_frame_options|extra_headers\\.[a-z0-9-]+|strip_headers"
)
# First match wins, on the opt-out with its `routes[pattern].` parts removed.
_OPT_OUT_RULES: Final[tuple[tuple[re.Pattern[str], str], ...]] = tuple(
    (re.compile(pattern, re.IGNORECASE), check_id)
    for pattern, check_id in (
        (r"debug", "mode.E002"),
        *(
            rule
            for layer, (off, monitor) in _LAYER_IDS.items()
            for rule in (
                (rf"{layer}\.enabled=false", off),
                (rf"{layer}\.monitor_only=true", monitor),
            )
        ),
        (r"errors\.insecure_pass_validation_input", "errors.W002"),
        (r"transport\.insecure_allow_http", "transport.E002"),
        (r"transport\.allowed_hosts=\*", "transport.E003"),
        (r"transport\.hsts_max_age_seconds=\d+", "transport.W002"),
        (r"transport\.hsts_include_subdomains=false", "transport.W003"),
        (r"transport\.https_redirect_status=\d+", "transport.W004"),
        (r"headers\.csp_report_only=true", "headers.W003"),
        (r"headers\.insecure_disable_csp", "headers.W004"),
        (r"headers\.csp\.[a-z-]+='unsafe-(?:inline|eval)'", "headers.W005"),
        (r"headers\.csp\.[a-z-]+=.*", "headers.W006"),
        (rf"headers\.(?:{_HEADER_SETTINGS})(?:=.*| \(.*\))", "headers.W007"),
        (r"cors\.insecure_allow_any_origin", "cors.W003"),
        (r"cors\.allow_origins=http://.* \(with credentials\)", "cors.E001"),
        (r"cors\.allow_private_network=true", "cors.W005"),
        (r"ratelimit\.limits=\{\}", "ratelimit.W003"),
        (r"ratelimit\.ban_enabled=false", "ratelimit.W004"),
        (r"sessions\.insecure_cookie_over_http", "sessions.E001"),
        (r"auth\.jwt\.insecure_jwks_over_http", "auth.E001"),
        (r"csrf\.insecure_allow_same_site", "csrf.W002"),
        (r"csrf\.insecure_exempt_paths", "csrf.W003"),
        (r"audit_log\.fsync=never", "audit_log.W001"),
    )
)
# Monitor-only errors or transport is a warning in development and a start-up refusal
# in production (`bastion.settings.production_problems`), reported as such.
_REFUSED_IN_PRODUCTION: Final = {"errors.W001": "errors.E002", "transport.W001": "transport.E005"}
_ROUTE_PART: Final = re.compile(r"routes\[.*?\]\.")
_HASH_SOURCE: Final = re.compile(r"'(?:sha256|sha384|sha512)-", re.IGNORECASE)
_STYLE_DIRECTIVES: Final = ("style-src-elem", "style-src-attr")
_SEVERITY_ORDER: Final = {name: rank for rank, name in enumerate(SEVERITIES)}

ValueCheck = Callable[[Settings, DeployContext], Iterator[DeployFinding]]


def finding(
    check_id: str, setting: str, shown: str | None = None, **fields: object
) -> DeployFinding:
    """The finding of `check_id` about `setting`, its texts filled in.

    `shown` is how the message names the setting (`name=value` for an opt-out);
    `fields` fill the check's other placeholders and must never hold a secret.
    """
    check = CHECKS[check_id]
    values = {"setting": setting if shown is None else shown, **fields}
    return DeployFinding(
        id=check.id,
        severity=check.severity,
        message=check.message.format(**values),
        hint=check.hint.format(**values),
        setting=setting,
    )


def classify_opt_out(name: str) -> str:
    """The check id of one `Settings.opt_outs()` entry (`optouts.W001` if unknown)."""
    plain = _ROUTE_PART.sub("", name)
    for pattern, check_id in _OPT_OUT_RULES:
        if pattern.fullmatch(plain):
            return check_id
    return "optouts.W001"


def _setting_of(opt_out: str) -> str:
    """The dotted setting an opt-out names: `cors.allow_origins=http://a (with
    credentials)` -> `cors.allow_origins`."""
    return opt_out.split("=", 1)[0].split(" (", 1)[0]


def _opt_out_findings(settings: Settings) -> Iterator[DeployFinding]:
    disabled = {layer for layer in _LAYERS if not getattr(settings, layer).enabled}
    for name in settings.opt_outs():
        section = name.split(".", 1)[0].split("[", 1)[0]
        if section in disabled and name != f"{section}.enabled=false":
            continue  # the layer is off: only that is worth saying
        check_id = classify_opt_out(name)
        if settings.mode == "production":
            check_id = _REFUSED_IN_PRODUCTION.get(check_id, check_id)
        yield finding(check_id, _setting_of(name), name)


# --- value checks --------------------------------------------------------------------


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n} bytes ({n / factor:.3g} {unit})"
    return f"{n} bytes"


def _duration(seconds: int) -> str:
    if seconds >= 86400:
        return f"{seconds} s ({seconds / 86400:.3g} days)"
    return f"{seconds} s ({seconds / 3600:.3g} hours)"


def check_mode(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    if settings.mode == "development":
        yield finding("mode.E001", "mode")


def check_secret_keys(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    keys = settings.secret_keys
    if settings.mode == "development" and "secret_keys" not in settings.model_fields_set:
        # Filled with a random per-process key by development mode.
        yield finding("secrets.W001", "secret_keys")
        return
    if not keys and settings.mode == "production":
        yield finding("secrets.E002", "secret_keys")
    for index, key in enumerate(keys):
        weakness = weak_secret_key(key.get_secret_value())
        if weakness:
            yield finding("secrets.E001", f"secret_keys[{index}]", weakness=weakness)
    if len(keys) == 1:
        yield finding("secrets.I001", "secret_keys")


def check_transport(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    transport = settings.transport
    if transport.enabled and not transport.allowed_hosts:
        yield finding("transport.E003", "transport.allowed_hosts", "transport.allowed_hosts=[]")
    if transport.enabled:
        yield from _trusted_proxy_findings(transport.trusted_proxies)
        if transport.trusted_proxies:
            for header in ("x-forwarded-host", "forwarded"):
                if header in transport.proxy_headers:
                    yield finding("transport.W007", "transport.proxy_headers", header=header)
        if context.behind_proxy and not transport.trusted_proxies:
            yield finding("transport.W008", "transport.trusted_proxies")
    if context.server_proxy_headers:
        # The server's rewrite happens before any middleware, whatever Bastion's settings.
        allowed = ",".join(
            context.server_forwarded_allow_ips or UVICORN_DEFAULT_FORWARDED_ALLOW_IPS
        )
        option = f"--proxy-headers --forwarded-allow-ips={allowed}"
        check_id = (
            "transport.E004" if "*" in context.server_forwarded_allow_ips else "transport.W009"
        )
        yield finding(check_id, "transport.trusted_proxies", server_option=option)


def _trusted_proxy_findings(
    networks: Sequence[IPv4Network | IPv6Network],
) -> Iterator[DeployFinding]:
    # `0.0.0.0/0`, `::/0` and public networks wider than /8 never get here: the
    # setting refuses them (`bastion.transport.proxies.parse_trusted_proxy`).
    for network in networks:
        shown = f"transport.trusted_proxies={network}"
        if network.prefixlen <= WIDE_PROXY_PREFIXLEN[network.version]:
            yield finding(
                "transport.W005", "transport.trusted_proxies", shown, prefixlen=network.prefixlen
            )
        elif network.is_global:
            yield finding("transport.W006", "transport.trusted_proxies", shown)


def check_cors(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    cors = settings.cors
    if not cors.enabled:
        return
    # `null` and `*` cannot be listed (refused when the settings are validated), and
    # `http://` origins with credentials are a weakening the section reports itself.
    for rule in cors.allow_origins:
        if isinstance(rule, OriginPattern):
            check_id = "cors.W004" if cors.allow_credentials else "cors.I001"
            yield finding(check_id, "cors.allow_origins", f"cors.allow_origins={rule.serialise()}")


def check_sessions(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    sessions = settings.sessions
    if not sessions.enabled:
        return
    # Over plain HTTP the prefix is dropped on purpose; sessions.E001 reports that.
    if not sessions.insecure_cookie_over_http and not sessions.cookie_name.startswith("__Host-"):
        shown = f"sessions.cookie_name={sessions.cookie_name}"
        yield finding("sessions.W003", "sessions.cookie_name", shown)
    if sessions.idle_timeout_seconds > LONG_IDLE_TIMEOUT_SECONDS:
        duration = _duration(sessions.idle_timeout_seconds)
        yield finding("sessions.W004", "sessions.idle_timeout_seconds", duration=duration)
    if sessions.absolute_timeout_seconds > LONG_ABSOLUTE_TIMEOUT_SECONDS:
        duration = _duration(sessions.absolute_timeout_seconds)
        yield finding("sessions.W005", "sessions.absolute_timeout_seconds", duration=duration)


def check_store(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    # The URL may hold a password: it is parsed here and never shown.
    parts = urlsplit(settings.store.url.get_secret_value())
    scheme = parts.scheme.lower()
    if scheme == "memory":
        if context.workers is None:
            yield finding("store.I001", "store.url")
        elif context.workers > 1:
            yield finding("store.W001", "store.url", workers=context.workers)
        return
    if not scheme.startswith("redis"):
        return  # SQLite: one file on one host, shared by its workers
    if not scheme.startswith("rediss") and not is_loopback_host(parts.hostname or ""):
        yield finding("store.W002", "store.url")
    # redis-py also takes the password as a query parameter (`?password=`).
    if not parts.password and "password" not in parse_qs(parts.query):
        yield finding("store.W003", "store.url")


def check_ratelimit(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    ratelimit = settings.ratelimit
    if ratelimit.enabled and ratelimit.fail_open and not ratelimit.ban_enabled:
        yield finding("ratelimit.W005", "ratelimit.fail_open")
    if ratelimit.enabled and ratelimit.ban_enabled:
        for network in ratelimit.never_ban:
            if network.prefixlen < WIDE_NEVER_BAN_PREFIXLEN[network.version]:
                shown = f"ratelimit.never_ban={network}"
                yield finding(
                    "ratelimit.W006", "ratelimit.never_ban", shown, prefixlen=network.prefixlen
                )


def check_policy(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    policy = settings.policy
    if settings.mode == "production" and policy.enabled and not policy.deny_by_default:
        yield finding("policy.W003", "policy.deny_by_default")


def check_websocket(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    websocket = settings.websocket
    if not websocket.enabled:
        return
    # The allowlist cannot be opened to everyone (`*` and `null` are refused), so
    # only its plain-HTTP entries are judged.
    for text in websocket.allowed_origins:
        origin = parse_origin(text)
        if origin is not None and origin.scheme == "http" and not is_loopback_host(origin.host):
            shown = f"websocket.allowed_origins={text}"
            yield finding("websocket.W003", "websocket.allowed_origins", shown)
    if websocket.default_access == "public":
        shown = "websocket.default_access=public"
        yield finding("websocket.W004", "websocket.default_access", shown)
    server = context.server_ws_max_size_bytes
    ours = websocket.max_message_bytes
    if server is not None and server != ours:
        check_id = "websocket.W005" if ours > server else "websocket.W006"
        sizes = {"bastion_size": _size(ours), "server_size": _size(server)}
        yield finding(check_id, "websocket.max_message_bytes", **sizes)


def check_limits(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    limits = settings.limits
    if not limits.enabled:
        return
    if limits.max_body_bytes > LARGE_BODY_BYTES:
        size = _size(limits.max_body_bytes)
        yield finding("limits.W003", "limits.max_body_bytes", size=size, scope="on every route")
    for pattern, route in limits.routes.items():
        if route.max_body_bytes is not None and route.max_body_bytes > LARGE_ROUTE_BODY_BYTES:
            setting = f"limits.routes[{pattern}].max_body_bytes"
            size = _size(route.max_body_bytes)
            yield finding("limits.W003", setting, size=size, scope=f"to {pattern}")


def check_csp_styles(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    """'unsafe-inline' in a style list without a nonce or hash (CSP3 #allow-all-inline:
    either makes browsers ignore it). Script lists are judged by the headers section
    itself (`bastion.headers.csp.policy_weakenings`), reported as headers.W005."""
    headers = settings.headers
    if not headers.enabled:
        return
    layer = set(_inline_style_lists(headers))
    for directive in sorted(layer):
        yield finding("headers.W008", f"headers.csp.{directive}")
    for pattern, route in headers.routes.items():
        for directive in sorted(set(_inline_style_lists(merge_route(headers, route))) - layer):
            yield finding("headers.W008", f"headers.routes[{pattern}].csp.{directive}")


def _inline_style_lists(policy: HeaderPolicy) -> Iterator[str]:
    if policy.insecure_disable_csp:
        return
    directives = resolve_directives(policy.csp_directives, policy.csp_extra_sources)
    for name in _STYLE_DIRECTIVES:
        governing = next((d for d in (name, *FALLBACKS[name]) if d in directives), None)
        if governing is None:
            continue
        sources = directives[governing]
        inline = any(source.lower() == "'unsafe-inline'" for source in sources)
        ignored = any(source == NONCE_SOURCE or _HASH_SOURCE.match(source) for source in sources)
        if inline and not ignored:
            yield governing


def check_audit_log(settings: Settings, context: DeployContext) -> Iterator[DeployFinding]:
    if settings.mode == "production" and settings.audit_log.path is None:
        yield finding("audit_log.I001", "audit_log.path")


_VALUE_CHECKS: Final[tuple[ValueCheck, ...]] = (
    check_mode,
    check_secret_keys,
    check_transport,
    check_cors,
    check_sessions,
    check_store,
    check_ratelimit,
    check_policy,
    check_websocket,
    check_limits,
    check_csp_styles,
    check_audit_log,
)


# --- entry point ---------------------------------------------------------------------


def sort_key(item: DeployFinding) -> tuple[int, str, str]:
    """Most severe first, then by id and setting."""
    return _SEVERITY_ORDER[item.severity], item.id, item.setting


def run_checks(
    settings: Settings,
    *,
    context: DeployContext | None = None,
    ignore: Iterable[str] = (),
) -> list[DeployFinding]:
    """Every deploy finding of `settings`, most severe first, without `ignore`d ids.

    An id in `ignore` that no check has is a ValueError (a misspelt silence would
    silence nothing), as the settings refuse misspelt options.
    """
    silenced = frozenset((ignore,) if isinstance(ignore, str) else ignore)
    unknown = sorted(silenced - CHECKS.keys())
    if unknown:
        raise ValueError(f"unknown deploy check id {unknown[0]!r} in ignore")
    context = context or DeployContext()
    found: list[DeployFinding] = []
    for check in _VALUE_CHECKS:
        found.extend(check(settings, context))
    found.extend(_opt_out_findings(settings))
    kept = [item for item in dict.fromkeys(found) if item.id not in silenced]
    return sorted(kept, key=sort_key)
