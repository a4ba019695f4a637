"""Settings sections of the authentication and authorization layers.

Kept apart from the code that uses them so that `bastion.settings` can import them
without importing joserfc, httpx or argon2 (the core import stays light; those are
the `auth` optional group).

Every number below is justified where it is defined; every section is frozen,
forbids unknown keys and validates its defaults.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator

from bastion.exceptions import ConfigurationError
from bastion.routes import parse_route_pattern
from bastion.sections import LayerSettings, Section

# RFC 7519 section 4.1.4: "implementers MAY provide for some small leeway, usually no
# more than a few minutes, to account for clock skew". 30 s covers NTP-synced hosts;
# the cap keeps a typo from turning expiry off.
DEFAULT_LEEWAY_SECONDS: Final = 30
MAX_LEEWAY_SECONDS: Final = 300
# A token older than this (by `iat`) is refused whatever its `exp` says: a bound on
# the damage of an issuer that mints long-lived tokens. One working day.
DEFAULT_MAX_TOKEN_AGE_SECONDS: Final = 24 * 3600
# Typical access tokens are 0.5-2 KiB; 8 KiB is the common server limit for one header
# line (nginx `large_client_header_buffers`), so nothing legitimate is larger.
DEFAULT_MAX_TOKEN_BYTES: Final = 8192
# JWKS caching: refetch every 5 minutes (keys rotate on a scale of days, and a new key
# is published before use), and on an unknown `kid` at most once a minute, so a flood
# of tokens with random `kid`s costs the identity provider one request a minute.
DEFAULT_JWKS_TTL_SECONDS: Final = 300
DEFAULT_JWKS_MIN_REFRESH_SECONDS: Final = 60
# While refetches fail, the keys last fetched keep verifying for at most this long
# (counted from that fetch), then are dropped and every token is refused. Without a
# bound, a key the issuer withdrew (rotated out, or revoked after a compromise) stays
# valid for as long as the JWKS endpoint is down, or blocked by whoever holds the
# key. One day, like the maximum token age: an outage of the key endpoint is survived
# for a working day (each failed fetch logs a warning), and a withdrawn key is
# refused within a day. Stricter peers exist (Microsoft.IdentityModel keeps its
# last known good keys one hour by default, `LastKnownGoodLifetime`).
DEFAULT_JWKS_MAX_STALE_SECONDS: Final = 24 * 3600
# RFC 9068 section 2.1: a JWT access token declares itself with `typ: at+jwt`, and a
# resource server MUST refuse any other type (section 4), so that an ID token (typ
# `JWT` or none) signed by the same issuer is never taken for an access token.
DEFAULT_REQUIRED_TYP: Final = "at+jwt"
# RFC 7515 section 4.1.9: "application/" is RECOMMENDED to be omitted from `typ`, and
# a recipient MUST treat a value without "/" as if "application/" were prepended;
# media type names compare case-insensitively (RFC 2045 section 5.1).
MEDIA_TYPE_PREFIX: Final = "application/"
# RFC 6838 section 4.2 restricted-name, lower-cased: the subtype of `application/`.
_MEDIA_SUBTYPE: Final = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
# `JWT` only says "this is a JWT" (RFC 7519 section 5.1), not which kind.
GENERIC_TYP: Final = "jwt"
# Algorithms accepted by default: asymmetric only. A symmetric key (HS256) shared with
# an identity provider lets anyone holding it mint tokens; list HS* explicitly to use
# one for tokens the application issues itself. `EdDSA` is deprecated by RFC 9864
# in favour of the fully specified `Ed25519`, and is not accepted.
DEFAULT_ALGORITHMS: Final = ("RS256", "PS256", "ES256", "Ed25519")
SUPPORTED_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "Ed25519"}
    | {"HS256", "HS384", "HS512"}
)
_API_KEY_PREFIX: Final = r"^[a-z][a-z0-9]{1,15}$"
# An HMAC pepper needs the entropy of a key: 32 characters of token_urlsafe = 192 bits.
MIN_PEPPER_CHARS: Final = 32
# RFC 7518 section 6.3.2 (RSA: d, p, q, dp, dq, qi, oth), 6.2.2 (EC: d), RFC 8037
# section 2 (OKP: d) and RFC 7518 section 6.4.1 (oct: k). A verifier needs none of
# them; whoever holds one can mint tokens. `k` is allowed only when HS* is listed.
PRIVATE_JWK_MEMBERS: Final = ("d", "p", "q", "dp", "dq", "qi", "oth")
SYMMETRIC_JWK_MEMBER: Final = "k"
_HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
_MASK: Final = "**********"
POLICY_PUBLIC: Final = "public"
POLICY_AUTHENTICATED: Final = "authenticated"
_NAME: Final = re.compile(r"^[A-Za-z0-9:._/-]{1,128}$")


class JWTSettings(Section):
    """Bearer JWTs (RFC 9068 style access tokens) from one issuer."""

    issuer: str = Field(min_length=1)
    """The exact `iss` accepted."""

    audience: str = Field(min_length=1)
    """This service's identifier; `aud` must be or contain it."""

    jwks_url: str | None = None
    """Where the issuer publishes its keys (HTTPS). Fetched, cached and refreshed."""

    jwks_file: Path | None = None
    """A JWKS JSON file, read once at start-up."""

    jwks: dict[str, Any] | None = Field(default=None, repr=False)
    """A JWKS given inline: public keys only (`bastion keys new --kind jwt --public`);
    the private set stays with whatever issues the tokens. An `oct` key (`k`) only
    with an HS* algorithm listed, for tokens the application issues itself; it is
    masked in `bastion config`."""

    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    """Algorithms a key may be used with. Each key gets exactly one (its JWKS `alg`,
    or the one its type implies); the token's `alg` must equal it."""

    leeway_seconds: int = Field(default=DEFAULT_LEEWAY_SECONDS, ge=0, le=MAX_LEEWAY_SECONDS)
    max_token_age_seconds: int = Field(default=DEFAULT_MAX_TOKEN_AGE_SECONDS, ge=60)
    max_token_bytes: int = Field(default=DEFAULT_MAX_TOKEN_BYTES, ge=512, le=65536)
    jwks_ttl_seconds: int = Field(default=DEFAULT_JWKS_TTL_SECONDS, ge=10)
    jwks_min_refresh_seconds: int = Field(default=DEFAULT_JWKS_MIN_REFRESH_SECONDS, ge=1)
    jwks_max_stale_seconds: int = Field(default=DEFAULT_JWKS_MAX_STALE_SECONDS, ge=60)
    """How long the keys of the last successful `jwks_url` fetch keep verifying while
    refetches fail; after that they are dropped and every token is refused (401)
    until the JWKS endpoint answers again. At least `jwks_ttl_seconds` and
    `jwks_min_refresh_seconds`: a refetch waits for both, so a shorter bound dropped
    the keys before one was even tried, with the endpoint answering."""

    required_typ: str = DEFAULT_REQUIRED_TYP
    """The `typ` header an access token must carry (RFC 9068: `at+jwt`; compared
    case-insensitively, `application/at+jwt` is the same). Stops an ID token of the
    same issuer, whose `aud` may equal `audience`, from passing as an access token."""

    roles_claim: str = "roles"
    require_jti: bool = False
    """Refuse tokens without `jti` (needed to revoke a single token)."""

    insecure_jwks_over_http: bool = False
    """Allow an `http://` JWKS URL (a network attacker could swap the keys)."""

    insecure_allow_untyped_tokens: bool = False
    """Also accept tokens that do not declare their kind (no `typ`, or `JWT`), for
    issuers that do not type their access tokens. Such a token is still refused if it
    carries an ID token's claims (`nonce`, `at_hash`, `c_hash`, `s_hash`), but an ID
    token without them passes if its `aud` is `audience`: give the API an audience of
    its own, never the OIDC client id. Tokens of another declared type are refused."""

    @field_validator("required_typ")
    @classmethod
    def _check_required_typ(cls, value: str) -> str:
        typ = normalise_typ(value)
        if not _MEDIA_SUBTYPE.match(typ):
            raise ValueError("required_typ must be a media type such as 'at+jwt'")
        if typ == GENERIC_TYP:
            raise ValueError(
                "required_typ 'JWT' names no kind of token (an ID token has it too): keep "
                "'at+jwt', or set insecure_allow_untyped_tokens for an issuer that sends 'JWT'"
            )
        return typ

    @field_validator("algorithms")
    @classmethod
    def _check_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one algorithm is required")
        for alg in value:
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"unsupported algorithm {alg!r} (never 'none')")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> JWTSettings:
        sources = [s for s in (self.jwks_url, self.jwks_file, self.jwks) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of jwks_url, jwks_file, jwks")
        if self.jwks_url is not None:
            if not self.jwks_url.startswith(("https://", "http://")):
                raise ValueError("jwks_url must be an https:// URL")
            if self.jwks_url.startswith("http://") and not self.insecure_jwks_over_http:
                raise ValueError("jwks_url must be https:// (or set insecure_jwks_over_http)")
        # The cache refetches once the keys are `jwks_ttl_seconds` old and no sooner
        # than `jwks_min_refresh_seconds` after the last try: keys dropped before both
        # have passed refuse every token while the endpoint is up and waiting.
        if self.jwks_max_stale_seconds < max(self.jwks_ttl_seconds, self.jwks_min_refresh_seconds):
            raise ValueError(
                "jwks_max_stale_seconds must be at least jwks_ttl_seconds and "
                "jwks_min_refresh_seconds (keys are refetched only after both)"
            )
        if self.jwks is not None:
            try:
                json.dumps(self.jwks)
            except (TypeError, ValueError):
                raise ValueError("jwks must be a JSON object") from None
            check_public_jwks(
                self.jwks, allow_symmetric=bool(_HMAC_ALGORITHMS & set(self.algorithms))
            )
        return self

    @field_serializer("jwks", when_used="always")
    def _mask_symmetric_keys(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Every dump (`bastion config`, a log of `model_dump()`): an HS* key is a
        # secret; public members are not.
        if value is None or not isinstance(value.get("keys"), list):
            return value
        keys = [
            {
                name: _MASK if name == SYMMETRIC_JWK_MEMBER else member
                for name, member in key.items()
            }
            if isinstance(key, dict)
            else key
            for key in value["keys"]
        ]
        return {**value, "keys": keys}


def normalise_typ(value: str) -> str:
    """A `typ` value as compared: lower-case, without the `application/` prefix
    (RFC 7515 section 4.1.9). A value with another top-level type keeps its `/`, so
    it never equals a bare subtype."""
    lowered = value.lower()
    return lowered[len(MEDIA_TYPE_PREFIX) :] if lowered.startswith(MEDIA_TYPE_PREFIX) else lowered


def check_public_jwks(jwks: dict[str, Any], *, allow_symmetric: bool) -> None:
    """Refuse a JWK set holding private key material, naming the member, never its value.

    Raised as ConfigurationError rather than ValueError on purpose: pydantic's error
    text quotes the input, which here is the private key.
    """
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        return  # the verifier reports a malformed set when it imports it
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        members = [m for m in PRIVATE_JWK_MEMBERS if m in entry]
        if SYMMETRIC_JWK_MEMBER in entry and not allow_symmetric:
            members.append(SYMMETRIC_JWK_MEMBER)
        if entry.get(SYMMETRIC_JWK_MEMBER) == _MASK:
            # Settings dumped (which masks the key) and loaded again: the key would be
            # skipped, and every token refused without a word.
            raise ConfigurationError(
                f"invalid Bastion settings: auth.jwt.jwks keys[{index}].k is the mask a "
                "settings dump prints, not a key: load the key from its source"
            )
        if members:
            raise ConfigurationError(
                f"invalid Bastion settings: auth.jwt.jwks keys[{index}] holds the private "
                f"member {members[0]!r}: a verifier needs the public JWK set only (`bastion "
                f"keys new --kind jwt --public`); keep the private set with the token issuer"
                + ("" if members[0] != SYMMETRIC_JWK_MEMBER else " (or list an HS* algorithm)")
            )


class APIKeySettings(Section):
    """API keys of the form `<prefix>_<id>_<secret>` (see `bastion.auth.apikeys`)."""

    header_name: str = Field(default="x-api-key", pattern=r"^[a-z0-9-]{1,64}$")
    prefix: str = Field(default="bst", pattern=_API_KEY_PREFIX)
    """The visible prefix: lets secret scanners recognise a leaked key."""

    peppers: tuple[SecretStr, ...] = Field(min_length=1)
    """HMAC keys for the stored hashes: the first hashes new keys, every one verifies."""

    @field_validator("peppers")
    @classmethod
    def _check_peppers(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for index, pepper in enumerate(value):
            if len(pepper.get_secret_value()) < MIN_PEPPER_CHARS:
                raise ValueError(f"peppers[{index}] is shorter than {MIN_PEPPER_CHARS} characters")
        return value


class AuthSettings(LayerSettings):
    """The authentication layer: who is calling (never whether they may)."""

    realm: str = Field(default="bastion", pattern=r'^[^"\\\x00-\x1f]{1,64}$')
    """The `realm` of `WWW-Authenticate` challenges."""

    jwt: JWTSettings | None = None
    """Accept `Authorization: Bearer <JWT>`; None: bearer tokens are not accepted."""

    api_keys: APIKeySettings | None = None
    """Accept API keys in a header; None: not accepted."""

    session: bool = True
    """Accept the user bound to the session (`session.login(user_id)`)."""

    session_roles_key: str = "roles"
    """Session key where the application stores the user's roles at login."""


class PolicySettings(LayerSettings):
    """Route policy: which callers may reach which routes.

    `routes` maps a route pattern (`bastion.routes` syntax, methods allowed) to one
    rule: `public`, `authenticated`, `roles:admin,ops` (any of the roles) or
    `scopes:read:x,write:x` (all of the scopes).
    """

    routes: dict[str, str] = Field(default_factory=dict)
    deny_by_default: bool = False
    """Refuse routes no pattern matches (401 anonymous, 403 authenticated)."""

    @field_validator("routes")
    @classmethod
    def _check_routes(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern, rule in value.items():
            parse_route_pattern(pattern)
            check_rule(rule)
        return value


def check_rule(rule: str) -> tuple[str, frozenset[str]]:
    """Parse one policy rule into (kind, names); raises ValueError naming the rule."""
    text = rule.strip()
    if text in (POLICY_PUBLIC, POLICY_AUTHENTICATED):
        return text, frozenset()
    kind, sep, names = text.partition(":")
    if sep and kind in ("roles", "scopes"):
        parsed = frozenset(n.strip() for n in names.split(",") if n.strip())
        if parsed and all(_NAME.match(n) for n in parsed):
            return kind, parsed
    raise ValueError(
        f"policy rule {rule!r}: expected public, authenticated, roles:a,b or scopes:x,y"
    )


class PasswordSettings(Section):
    """Argon2id parameters (see `bastion.auth.passwords` for the choice)."""

    # OWASP Password Storage Cheat Sheet, first listed argon2id configuration:
    # m=19 MiB, t=2, p=1. Lower is refused.
    memory_cost_kib: int = Field(default=19 * 1024, ge=19 * 1024)
    time_cost: int = Field(default=2, ge=2)
    parallelism: int = Field(default=1, ge=1, le=16)
