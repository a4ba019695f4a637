"""The two Bastion Banks: `create_app()` behind Bastion, `create_unprotected_app()` bare.

Both are the same FastAPI application (`app.build_bank`); they differ only in the
`Variant` adapter and in what wraps them. The protected bank's Bastion settings
are production-grade, from three sources, highest priority first:

1. what the code passes (`create_app(settings, **overrides)`; a section given as a
   dict is merged key by key over the lower sources, a section model replaces);
2. Bastion's own sources: `BASTION_*` variables and the secrets directory;
3. the demo's defaults below (`bank_defaults`), built from `DemoSettings`.

The defaults, and the threat each answers:

* a signing key generated into the data directory (sessions, CSRF tokens), and an
  AES key for the IBANs unless `field_encryption.keys` is configured;
* `transport`: the loopback host names only (Host header attacks, DNS rebinding),
  HTTPS required with HSTS, redirects to the demo's HTTPS port;
* `ratelimit`: login brute force (`POST /login` is a login route: backoff and
  lockout per account and client) and a tight rate on it (credential stuffing);
* `auth`: bearer JWTs from the demo's issuer and audience, keys from its JWK set
  (or another provider's, `DemoSettings.jwks_file`), so a forged, `alg: none`,
  expired or foreign token is refused before the app;
* `policy`: deny by default, each route listed with who may call it (`ROUTE_POLICY`);
* `websocket`: `/ws/feed` needs an authenticated session and this site's origin
  (cross-site WebSocket hijacking);
* `events`: e-mail addresses and card numbers redacted from every event and log
  line (the demo's login failures carry the submitted user name).

Headers (the nonce CSP with its report endpoint, nosniff, framing, COOP/CORP),
secure `__Host-` session cookies, CSRF and the error shield are Bastion's defaults.

Not covered: TLS itself and the HTTP-to-HTTPS listener (the demo's server).
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI

from bastion.auth.jwt import TokenIssuer
from bastion.auth.passwords import PasswordHasher
from bastion.crypto import FieldEncryptor
from bastion.demo.bank.app import build_bank, utc_now
from bastion.demo.bank.db import BankDatabase, FieldCipher, StoredInClear
from bastion.demo.bank.keys import (
    JWT_ALGORITHM,
    PROTECTED_DB_FILE,
    UNPROTECTED_DB_FILE,
    JWTKeys,
    ensure_data_dir,
    field_key,
    jwt_keys,
    secret_key,
)
from bastion.demo.bank.live import EventRing
from bastion.demo.bank.naive import NaiveSessionMiddleware, SignatureOnlyBearer
from bastion.demo.bank.variants import ProtectedVariant, UnprotectedVariant, Variant
from bastion.demo.settings import DemoSettings
from bastion.settings import Settings, with_defaults
from bastion.shield import Shield, build_emitter
from bastion.stores.memory import MemoryStore

# The host names a browser on this machine uses for the demo (no `testserver`).
DEMO_HOSTS: Final = ("localhost", "127.0.0.1", "[::1]")
PUBLIC: Final = "public"
SIGNED_IN: Final = "authenticated"
ADMIN: Final = "roles:admin"
# Every route of the bank, with who may call it; anything else is refused
# (`deny_by_default`). A test checks that this table and the app's routes agree.
ROUTE_POLICY: Final = {
    "GET /": PUBLIC,
    "GET /login": PUBLIC,
    "POST /login": PUBLIC,
    "GET /health": PUBLIC,
    "GET /boom": PUBLIC,
    "GET /openapi.json": PUBLIC,
    "GET /static/*": PUBLIC,
    "POST /logout": SIGNED_IN,
    "GET /accounts": SIGNED_IN,
    "POST /transfer": SIGNED_IN,
    "GET /search": SIGNED_IN,
    "GET /notes": SIGNED_IN,
    "POST /notes": SIGNED_IN,
    "POST /api/token": SIGNED_IN,
    "GET /api/accounts": SIGNED_IN,
    "WEBSOCKET /ws/feed": SIGNED_IN,
    "GET /admin": ADMIN,
    "GET /events": ADMIN,
    "GET /events.json": ADMIN,
}
# A person logs in a few times a day; ten a minute per client network leaves room
# for typos, while the login guard's per-account backoff does the rest.
LOGIN_RATE: Final = "10/minute"


def bank_defaults(demo: DemoSettings, jwt: JWTKeys) -> dict[str, Any]:
    """The demo's defaults for Bastion's settings (the lowest-priority source)."""
    transport: dict[str, Any] = {"allowed_hosts": list(DEMO_HOSTS)}
    if demo.https_port:  # 0 means "a free port", known only once the server runs
        transport["https_port"] = demo.https_port
    return {
        "secret_keys": [secret_key(demo.data_dir)],
        "transport": transport,
        "ratelimit": {
            "limits": {"*": ["600/minute"], "POST /login": [LOGIN_RATE]},
            "login_routes": ["POST /login"],
        },
        "auth": {
            "jwt": {
                "issuer": demo.jwt_issuer,
                "audience": demo.jwt_audience,
                "jwks_file": str(jwt.jwks_file),
            }
        },
        "policy": {"deny_by_default": True, "routes": dict(ROUTE_POLICY)},
        "websocket": {"routes": {"/ws/feed": "authenticated"}, "default_access": "authenticated"},
        "events": {"redact_pii": ["email", "card"]},
    }


def bank_settings(
    demo: DemoSettings,
    jwt: JWTKeys,
    settings: Settings | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Bastion's settings for the protected bank (see the module docstring)."""
    settings_class = with_defaults(bank_defaults(demo, jwt))
    given = (
        {name: getattr(settings, name) for name in settings.model_fields_set} if settings else {}
    )
    return settings_class(**(given | (overrides or {})))


def _database(demo: DemoSettings, name: str, cipher: FieldCipher) -> BankDatabase:
    return BankDatabase(ensure_data_dir(demo.data_dir) / name, cipher)


def _build(
    demo: DemoSettings, jwt: JWTKeys, variant: Variant, database: BankDatabase, ring: EventRing
) -> FastAPI:
    hasher = PasswordHasher()
    database.initialise(seed=demo.seed, hasher=hasher, now=utc_now())
    issuer = None
    if jwt.signing_key is not None:
        issuer = TokenIssuer(
            key=jwt.signing_key,
            algorithm=JWT_ALGORITHM,
            issuer=demo.jwt_issuer,
            audience=demo.jwt_audience,
            store=MemoryStore(),  # refresh tokens are not used: access tokens only
        )
    return build_bank(
        variant=variant,
        database=database,
        hasher=hasher,
        issuer=issuer,
        ring=ring,
        debug=not variant.protected,
    )


def create_app(
    settings: Settings | None = None, *, demo: DemoSettings | None = None, **overrides: Any
) -> Shield:
    """Bastion Bank behind Bastion's full stack.

    `overrides` are top-level `Settings` fields (`mode="development"`,
    `transport={"allowed_hosts": [...]}`); `demo` defaults to `DemoSettings()`, read
    from `BASTION_DEMO__*`. The FastAPI application is `create_app().app`, its shared
    state `create_app().app.state.bank`.
    """
    demo = demo if demo is not None else DemoSettings()
    jwt = jwt_keys(demo.data_dir, demo.jwks_file)
    resolved = bank_settings(demo, jwt, settings, overrides)
    ring = EventRing()
    events = build_emitter(resolved)
    # The events page is one more sink of the stack's one emitter, so it sees every
    # layer's records already redacted (as `Shield` adds its ban list's sink).
    events.sinks = (*events.sinks, ring)
    keys = resolved.field_encryption.keys or (field_key(demo.data_dir),)
    database = _database(demo, PROTECTED_DB_FILE, FieldEncryptor(keys))
    variant = ProtectedVariant(events, roles_key=resolved.auth.session_roles_key)
    return Shield(_build(demo, jwt, variant, database, ring), resolved, events=events)


def create_unprotected_app(demo: DemoSettings | None = None) -> FastAPI:
    """The same bank with no Bastion at all: debug page on, naive session, no CSRF,
    no security headers, IBANs in the clear. For `bastion audit` to take apart."""
    demo = demo if demo is not None else DemoSettings()
    jwt = jwt_keys(demo.data_dir, demo.jwks_file)
    database = _database(demo, UNPROTECTED_DB_FILE, StoredInClear())
    variant = UnprotectedVariant(SignatureOnlyBearer(jwt.jwks_file))
    app = _build(demo, jwt, variant, database, EventRing())
    app.add_middleware(NaiveSessionMiddleware)
    return app
