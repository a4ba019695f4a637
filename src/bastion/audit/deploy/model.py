"""The deploy checks' data: the catalogue of check ids, findings and the context.

`CHECKS` is the one source of every id, its severity, its message and its hint; the
table in the package docstring mirrors it (a test keeps the two equal). The message
names the setting, the risk and when the setting is right as it is; the hint says
what to set instead.

Ids are `area.<letter><number>`: `E` an error (`high`: an attack works as soon as
someone tries), `W` a warning (`medium` or `low`: a protection is weaker than it
should be, or depends on something Bastion cannot see), `I` information.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from bastion.audit.findings import Severity

# uvicorn's `--ws-max-size` and hypercorn's `websocket_max_message_size` default.
SERVER_DEFAULT_WS_MAX_SIZE_BYTES: Final = 16 * 1024 * 1024
# uvicorn's `--forwarded-allow-ips` default (its FORWARDED_ALLOW_IPS variable unset).
UVICORN_DEFAULT_FORWARDED_ALLOW_IPS: Final = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class Check:
    """One check id: what it means, how bad it is, and what to do about it.

    `message` and `hint` are `str.format` templates; `{setting}` is the dotted
    setting the finding is about, other fields are named by the check that fills
    them. No field ever receives a secret.
    """

    id: str
    severity: Severity
    message: str
    hint: str


@dataclass(frozen=True, slots=True)
class DeployFinding:
    """One problem in the effective settings."""

    id: str
    """Stable check id (`transport.E002`); silence it with `ignore`."""
    severity: Severity
    message: str
    hint: str
    setting: str
    """The dotted setting the finding is about (`transport.insecure_allow_http`,
    `headers.routes[/embed/*].csp.script-src`), or `""` for the deployment itself."""


@dataclass(frozen=True, slots=True)
class DeployContext:
    """Facts about the deployment that the settings cannot know; None is unknown.

    A check that needs a fact it is not given stays silent (or, for the store, says
    what it would need to know).
    """

    workers: int | None = None
    """Worker processes serving the app (`uvicorn --workers`, gunicorn `-w`)."""
    behind_proxy: bool | None = None
    """Whether requests reach the server through a reverse proxy or load balancer."""
    server_proxy_headers: bool | None = None
    """Whether the server itself rewrites the client from proxy headers (uvicorn's
    `--proxy-headers`, on by default)."""
    server_forwarded_allow_ips: tuple[str, ...] = ()
    """The peers the server believes proxy headers from (uvicorn's
    `--forwarded-allow-ips`); `*` is every peer."""
    server_ws_max_size_bytes: int | None = None
    """The server's own WebSocket message limit (`--ws-max-size`)."""

    @classmethod
    def uvicorn_defaults(cls, *, workers: int | None = None) -> DeployContext:
        """The context of `uvicorn app:app` run with no options."""
        return cls(
            workers=workers,
            server_proxy_headers=True,
            server_forwarded_allow_ips=UVICORN_DEFAULT_FORWARDED_ALLOW_IPS,
            server_ws_max_size_bytes=SERVER_DEFAULT_WS_MAX_SIZE_BYTES,
        )


_LAYER_OFF = "{setting}: the {layer} layer is not in the stack, so {risk}."
_LAYER_OFF_HINT = "Remove the setting (default: true); to try the layer out, use monitor_only."
_LAYER_MONITOR = (
    "{setting}: the {layer} layer reports what it would refuse and lets it "
    "through, so {risk}. Right only while rolling the layer out."
)
_LAYER_MONITOR_HINT = "Set monitor_only to false once the events show no false refusals."

_RISKS: Final = {
    "errors": "tracebacks and debug pages reach clients",
    "transport": "forged Host headers reach the app and plain HTTP is served",
    "limits": "oversized bodies and headers reach the app",
    "headers": "pages go out without CSP, nosniff or framing protection",
    "cors": "the app's own Access-Control-* headers go out unchecked",
    "ratelimit": "brute force and floods are not slowed down",
    "sessions": "no server-side sessions are provided",
    "auth": "no principal is authenticated",
    "csrf": "other sites can make the user's browser send state-changing requests",
    "policy": "route rules (roles, scopes, deny by default) are not enforced",
    "websocket": "any site can open sockets with the user's cookies (cross-site "
    "WebSocket hijacking) and messages are unbounded",
}


def _layer_checks(
    layer: str,
    off: str,
    monitor: str,
    off_severity: Severity,
    monitor_severity: Severity = "medium",
) -> list[Check]:
    risk = _RISKS[layer]
    return [
        Check(
            off,
            off_severity,
            _LAYER_OFF.format(setting="{setting}", layer=layer, risk=risk),
            _LAYER_OFF_HINT,
        ),
        Check(
            monitor,
            monitor_severity,
            _LAYER_MONITOR.format(setting="{setting}", layer=layer, risk=risk),
            _LAYER_MONITOR_HINT,
        ),
    ]


# Ids are never renumbered and never reused for another meaning: users silence them
# by id and CI configurations name them. A retired check keeps its id reserved;
# a new check takes the next free number of its area and letter.
_CATALOGUE: Final[list[Check]] = [
    # --- mode and secrets ------------------------------------------------------------
    Check(
        "mode.E001",
        "high",
        "{setting} is development: plain HTTP, loopback hosts and a per-process key are "
        "filled in and the production refusals are off. Right only on a developer's machine.",
        "Set BASTION_MODE=production (the default) for any deployment.",
    ),
    Check(
        "mode.E002",
        "high",
        "{setting} is on: 500 pages carry exception details (source paths, settings, "
        "values) for anyone who can trigger an error.",
        "Set debug to false (the default); read tracebacks in the bastion.errors log.",
    ),
    Check(
        "secrets.E001",
        "high",
        "{setting} is weak ({weakness}): a guessable key lets anyone forge sessions, CSRF "
        "tokens and WebSocket tickets. Production refuses it.",
        "Generate a key with `bastion keys new` (43 random URL-safe characters).",
    ),
    Check(
        "secrets.E002",
        "high",
        "{setting} is empty in production: nothing can sign sessions, CSRF tokens or "
        "tickets, so Bastion refuses to start.",
        "Set BASTION_SECRET_KEYS (or the secrets file bastion_secret_keys) to a key from "
        "`bastion keys new`.",
    ),
    Check(
        "secrets.W001",
        "medium",
        "{setting} is not set, so development draws a random key per process: every "
        "restart signs users out, and each worker rejects the others' signatures.",
        "Set BASTION_SECRET_KEYS to a key from `bastion keys new`.",
    ),
    Check(
        "secrets.I001",
        "info",
        "{setting} holds one key. Fine; to rotate, put a new key first and keep this one "
        "after it until what it signed has expired.",
        'BASTION_SECRET_KEYS="<new>,<old>" (`bastion keys rotate` prints it).',
    ),
    # --- errors -----------------------------------------------------------------------
    *_layer_checks("errors", "errors.E001", "errors.W001", "high"),
    Check(
        "errors.W002",
        "medium",
        "{setting} is set: validation errors (422) echo the submitted values, so a "
        "password or token sent in a malformed request comes back in the response.",
        "Remove the setting (default: false).",
    ),
    Check(
        "errors.E002",
        "high",
        "{setting} in production: tracebacks and debug pages would reach clients, so "
        "Bastion refuses to start.",
        _LAYER_MONITOR_HINT,
    ),
    # --- transport --------------------------------------------------------------------
    *_layer_checks("transport", "transport.E001", "transport.W001", "high"),
    Check(
        "transport.E002",
        "high",
        "{setting} is set: plain HTTP and ws are served, not redirected or refused, so "
        "cookies and tokens cross the network readable and alterable.",
        "Remove the setting (default: false); terminate TLS at the server or the proxy.",
    ),
    Check(
        "transport.E003",
        "high",
        "{setting}: any host is served, so a forged Host header reaches the app, which builds "
        "password-reset links and redirects from it (cache poisoning, DNS rebinding).",
        'List the host names you serve: ["bank.example", "*.bank.example"].',
    ),
    Check(
        "transport.W002",
        "medium",
        "{setting} is below one year: browsers forget to insist on HTTPS sooner, and 0 "
        "tells them to forget now. Right only while testing HTTPS on a new host.",
        "Use 31536000 (one year, the default) or more.",
    ),
    Check(
        "transport.W003",
        "low",
        "{setting}: a subdomain served over plain HTTP can set cookies for this domain "
        "(RFC 6797 section 14.4). Right only if some subdomain cannot serve HTTPS.",
        "Set hsts_include_subdomains to true (the default).",
    ),
    Check(
        "transport.W004",
        "low",
        "{setting}: browsers replay a redirected POST as a GET without its body.",
        "Use 308 (the default) or 307.",
    ),
    Check(
        "transport.W005",
        "medium",
        "{setting} is a /{prefixlen} network: every machine in it may claim any client "
        "address and scheme through proxy headers (dodging rate limits and bans).",
        "List your proxies' own addresses or their subnet (a /24 or narrower).",
    ),
    Check(
        "transport.W006",
        "low",
        "{setting} is a public network: proxy headers are believed from machines on the "
        "Internet. Right for a CDN's published edge ranges; silence it then.",
        "List only your proxies' or your CDN's published addresses.",
    ),
    Check(
        "transport.W007",
        "low",
        "{setting} includes {header}: a proxy that passes the client's own header through "
        "lets the client choose the host the app builds URLs from (among allowed_hosts).",
        "List x-forwarded-host or forwarded only if your proxy sets or overwrites it.",
    ),
    Check(
        "transport.W008",
        "medium",
        "{setting} is empty but the app is behind a proxy: every client looks like the "
        "proxy, so one client's rate limit or ban hits everyone, and HTTPS is not seen.",
        'List your proxies: trusted_proxies=["10.0.0.5"] (addresses or networks).',
    ),
    Check(
        "transport.E004",
        "high",
        "The server believes proxy headers from every peer ({server_option}): any client "
        "sets its own address before Bastion runs, dodging rate limits and bans; "
        "{setting} is where that trust belongs.",
        "Run uvicorn with --no-proxy-headers and list proxies in transport.trusted_proxies.",
    ),
    Check(
        "transport.W009",
        "low",
        "The server rewrites the client from proxy headers before Bastion runs "
        "({server_option}), so two components decide who the client is; {setting} is "
        "where that trust belongs.",
        "Run uvicorn with --no-proxy-headers and list proxies in transport.trusted_proxies.",
    ),
    Check(
        "transport.E005",
        "high",
        "{setting} in production: forged Host headers and plain HTTP would be let through, "
        "so Bastion refuses to start.",
        _LAYER_MONITOR_HINT,
    ),
    # --- limits -----------------------------------------------------------------------
    *_layer_checks("limits", "limits.W001", "limits.W002", "medium"),
    Check(
        "limits.W003",
        "low",
        "{setting} is {size}: every request {scope} may send that much, so a few clients "
        "can fill disks or memory. Right for an upload route that needs it.",
        "Keep the global limit small (default 1 MiB) and raise it per route in limits.routes.",
    ),
    # --- headers ----------------------------------------------------------------------
    *_layer_checks("headers", "headers.W001", "headers.W002", "medium"),
    Check(
        "headers.W003",
        "medium",
        "{setting}: the CSP only reports, so injected script runs. Right only "
        "while collecting violations before enforcing.",
        "Set csp_report_only to false once the reports are clean.",
    ),
    Check(
        "headers.W004",
        "medium",
        "{setting} is set: no Content-Security-Policy is sent, so nothing limits injected script.",
        "Remove the setting; adjust directives with csp_directives / csp_extra_sources.",
    ),
    Check(
        "headers.W005",
        "medium",
        "{setting}: the CSP lets injected inline script run (no nonce, hash or "
        "'strict-dynamic' beside it) or strings run as code (eval).",
        "Use 'nonce-{{nonce}}' (install_csp_nonce in templates) instead of the source.",
    ),
    Check(
        "headers.W006",
        "medium",
        "{setting}: the CSP lets script load from any site, plugins run, <base> re-point "
        "URLs, or any site frame the page.",
        "Name exact sources; object-src 'none'; base-uri 'none'; frame-ancestors 'none'.",
    ),
    Check(
        "headers.W007",
        "low",
        "{setting}: a security header is weakened or dropped (referrer leaks, "
        "cross-origin isolation, MIME sniffing, framing or fingerprinting).",
        "Remove the override to get the default; see the headers settings reference.",
    ),
    Check(
        "headers.W008",
        "low",
        "{setting} allows 'unsafe-inline' without a nonce or hash: injected markup can "
        "add styles (CSS can exfiltrate page data through attribute selectors).",
        "Use 'nonce-{{nonce}}' for <style> elements, or move styles to files.",
    ),
    # --- cors -------------------------------------------------------------------------
    Check(
        "cors.W001",
        "low",
        _LAYER_OFF.format(setting="{setting}", layer="cors", risk=_RISKS["cors"]),
        _LAYER_OFF_HINT,
    ),
    Check(
        "cors.W002",
        "low",
        _LAYER_MONITOR.format(setting="{setting}", layer="cors", risk=_RISKS["cors"]),
        _LAYER_MONITOR_HINT,
    ),
    Check(
        "cors.W003",
        "medium",
        "{setting} is set: every site may read every response (without cookies). Right "
        "only for a public API that needs no credential at all.",
        'List the origins instead: allow_origins=["https://app.example"].',
    ),
    Check(
        "cors.E001",
        "high",
        "{setting}: a plain-HTTP origin may read responses with the user's cookies; "
        "anyone on its network path can inject script into it and read them.",
        "Use the https:// origin, or drop allow_credentials.",
    ),
    Check(
        "cors.W004",
        "medium",
        "{setting} is a wildcard with allow_credentials: any subdomain, including one "
        "taken over or serving user content, reads responses with the user's cookies.",
        "List the exact origins that need credentialed reads.",
    ),
    Check(
        "cors.W005",
        "low",
        "{setting}: allowed public sites may reach this server on a private network, so "
        "a compromise of any of them reaches it too.",
        "Remove the setting (default: false) unless the app serves a local network.",
    ),
    Check(
        "cors.I001",
        "info",
        "{setting} is a wildcard: every subdomain may read responses (without cookies).",
        "List exact origins if not every subdomain is yours.",
    ),
    # --- ratelimit --------------------------------------------------------------------
    *_layer_checks("ratelimit", "ratelimit.W001", "ratelimit.W002", "medium"),
    Check(
        "ratelimit.W003",
        "medium",
        "{setting}: no route is rate limited, so brute force and floods go unslowed.",
        'Keep at least the default: {{"*": ["600/minute"]}}.',
    ),
    Check(
        "ratelimit.W004",
        "low",
        "{setting}: a client that piles up refusals is never banned.",
        "Set ban_enabled to true (the default).",
    ),
    Check(
        "ratelimit.W005",
        "low",
        "{setting} is true and bans are off: while the store is down, nothing slows a "
        "brute-force attack.",
        "Set ratelimit.fail_open to false (503 while the store is down) or enable bans.",
    ),
    Check(
        "ratelimit.W006",
        "low",
        "{setting} is a /{prefixlen}: every client in it is exempt from bans, so one of "
        "them can probe without end (its rate limits still apply). Right for a private "
        "subnet that holds only your own monitors or load generators; silence it then.",
        "List the exact addresses of your monitors, health checkers and audit host.",
    ),
    # --- sessions ---------------------------------------------------------------------
    *_layer_checks("sessions", "sessions.W001", "sessions.W002", "low", "low"),
    Check(
        "sessions.E001",
        "high",
        "{setting} is set: the session cookie has no Secure flag and no __Host- prefix, "
        "so it crosses plain HTTP and sibling subdomains can set it.",
        "Remove the setting (default: false); serve HTTPS.",
    ),
    Check(
        "sessions.W003",
        "medium",
        "{setting} has no __Host- prefix: a sibling subdomain can set or shadow the "
        "session cookie (cookie tossing).",
        'Use a __Host- name, e.g. "__Host-session" (the default).',
    ),
    Check(
        "sessions.W004",
        "low",
        "{setting} is {duration}: an unattended session stays usable that long, and so "
        "does a stolen cookie.",
        "OWASP suggests 15 to 30 minutes idle (default 1800 s).",
    ),
    Check(
        "sessions.W005",
        "low",
        "{setting} is {duration}: a session, and a stolen cookie, lives that long however "
        "often the user signs in again.",
        "OWASP suggests 4 to 8 hours (default 43200 s).",
    ),
    # --- auth and policy --------------------------------------------------------------
    *_layer_checks("auth", "auth.W001", "auth.W002", "low"),
    Check(
        "auth.E001",
        "high",
        "{setting} is set: the JWKS is fetched over plain HTTP, so anyone on the path "
        "can substitute keys and forge tokens.",
        "Serve the JWKS over https:// and remove the setting.",
    ),
    *_layer_checks("csrf", "csrf.E001", "csrf.W001", "high"),
    Check(
        "csrf.W002",
        "medium",
        "{setting} is set: sibling subdomains may send unsafe requests; one taken over "
        "(a forgotten CNAME, user content) forges them.",
        "Remove the setting; list the origins that need it in csrf.trusted_origins.",
    ),
    Check(
        "csrf.W003",
        "low",
        "{setting} lists paths never checked for CSRF. Right for webhooks that "
        "authenticate by signature; wrong for anything a browser session reaches.",
        "Keep the list to signature-authenticated endpoints.",
    ),
    *_layer_checks("policy", "policy.W001", "policy.W002", "medium"),
    Check(
        "policy.W003",
        "low",
        "{setting} is false: a route no pattern names is open to anyone, so a new route "
        "is public until someone adds a rule.",
        'Set deny_by_default to true and mark open routes: {{"/health": "public"}}.',
    ),
    # --- websocket --------------------------------------------------------------------
    *_layer_checks("websocket", "websocket.W001", "websocket.W002", "medium"),
    Check(
        "websocket.W003",
        "medium",
        "{setting} allows a plain-HTTP origin: anyone on its network path can inject "
        "script into it and open sockets with the user's cookies.",
        "Use the https:// origin.",
    ),
    Check(
        "websocket.W004",
        "low",
        "{setting}: a socket route no pattern names accepts anonymous clients.",
        'Use "authenticated" (the default) and list public routes in websocket.routes.',
    ),
    Check(
        "websocket.W005",
        "low",
        "{setting} is {bastion_size} but the server closes messages above {server_size}: "
        "the server's limit applies and Bastion never sees or reports those messages.",
        "Set the server's limit (uvicorn --ws-max-size) to websocket.max_message_bytes.",
    ),
    Check(
        "websocket.W006",
        "low",
        "{setting} is {bastion_size} but the server accepts {server_size}: it buffers "
        "each message whole before Bastion refuses it, so memory per socket is the "
        "server's limit.",
        "Set the server's limit (uvicorn --ws-max-size) to websocket.max_message_bytes.",
    ),
    # --- store ------------------------------------------------------------------------
    Check(
        "store.W001",
        "medium",
        "{setting} is a memory store with {workers} workers: each worker keeps its own "
        "sessions, rate limits, bans and revocations, so limits multiply and a "
        "revoked session lives on in the other workers.",
        "Use sqlite:////var/lib/bastion/store.db (one host) or a redis:// URL (a fleet).",
    ),
    Check(
        "store.W002",
        "medium",
        "{setting} reaches Redis on another host without TLS: session ids, rate-limit "
        "state and the Redis password cross the network readable.",
        "Use rediss:// (or rediss+cluster://).",
    ),
    Check(
        "store.W003",
        "medium",
        "{setting} has no Redis password: anyone who reaches Redis can read sessions, "
        "forge them and lift bans.",
        "Add a password (redis://:password@host/0) or an ACL user, from a secrets file.",
    ),
    Check(
        "store.I001",
        "info",
        "{setting} is a memory store: fine for one worker process; with several, each "
        "keeps its own state (pass the worker count to check it).",
        "Several workers need sqlite:/// (one host) or redis:// (a fleet).",
    ),
    # --- audit_log --------------------------------------------------------------------
    Check(
        "audit_log.W001",
        "low",
        "{setting}: records are synced when the OS decides, so a crash or power cut can "
        "lose the last ones (the verifier then reports the truncation).",
        'Use fsync="interval" (the default) or "always".',
    ),
    Check(
        "audit_log.I001",
        "info",
        "{setting} is unset: security events go to the logger only, with no "
        "tamper-evident file to prove what happened.",
        "Set audit_log.path (one file per worker) and verify with `bastion log verify`.",
    ),
    # --- anything else ----------------------------------------------------------------
    Check(
        "optouts.W001",
        "medium",
        "{setting}: a protection is weakened by configuration (a switch no specific "
        "check knows yet).",
        "See the settings reference for this setting's default.",
    ),
]

CHECKS: Final = MappingProxyType({check.id: check for check in _CATALOGUE})
"""Every check id, by id."""
