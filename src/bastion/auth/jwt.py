"""Bearer JSON Web Tokens: verification, key sets, revocation, and own-issued tokens.

Threats and defences:

* Algorithm confusion (`alg: none`, an HS256 token "signed" with the RSA public key,
  CVE-2015-9235 family): the algorithm is never taken from the token. Each key has
  exactly one algorithm, fixed from settings (its JWKS `alg`, or the one its type
  implies, intersected with `JWTSettings.algorithms`); the token's `alg` must equal
  it, and joserfc is told to accept that one algorithm only.
* Key injection: the `jku`, `x5u`, `jwk` and `x5c` headers are never read; keys come
  only from the configured JWKS (file, inline, or an HTTPS URL). `kid` is a lookup in
  a dictionary, validated against a strict character set first, so it is never a
  path, a query or a command (path traversal, SQL injection through `kid`).
* Resource exhaustion: tokens over `max_token_bytes` are refused before any decoding;
  compressed tokens (`zip`, a decompression bomb) and unknown critical extensions
  (`crit`, e.g. unencoded payloads) are refused, and so is a header nested deeper
  than `MAX_HEADER_DEPTH`, before it is parsed. A JWKS answer is read within
  `MAX_JWKS_BYTES` and one overall deadline.
* Token substitution (RFC 8725 section 3.11): an OIDC ID token of the same issuer,
  whose `aud` is the client id, is not an access token even when `audience` is that
  client id. The `typ` header must be `required_typ` (RFC 9068: `at+jwt`, in any
  case, `application/` optional), checked before the signature. With
  `insecure_allow_untyped_tokens`, a token without `typ` or with the generic `JWT`
  is accepted too, unless it carries an ID token's claims (`nonce`, `at_hash`,
  `c_hash`, `s_hash`); any other declared type is refused in every mode.
* Stale or stolen tokens: `exp` is required, `nbf` and `iat` honoured with a small
  leeway, a maximum age by `iat` is enforced, `iss` and `aud` must match exactly, and
  a token's `jti` can be revoked in the store until it would have expired.
* Key rotation without downtime: a JWKS URL is cached with a TTL and refetched, at
  most once per `jwks_min_refresh_seconds`, when a token names an unknown `kid`.
* A withdrawn key kept alive by an outage (or by whoever blocks the JWKS fetch to
  keep a stolen key valid): while refetches fail the last keys keep verifying for
  at most `jwks_max_stale_seconds` after their fetch, then every token is refused
  (`jwt-keys-expired`) until a fetch succeeds.
* Refresh token theft: refresh tokens are opaque, single use and rotate; presenting
  a used one (a thief or the victim, whoever comes second) revokes the whole family
  (OAuth 2.0 Security BCP section 4.14.2). "Used" is recorded with the store's atomic
  `set_if_absent`, so two concurrent uses cannot both succeed on any worker.

* Cost per request: a token whose signature was verified is remembered (its raw
  text, the key object that verified it, its claims as JSON) in a small bounded
  memo, so a client sending the same token again skips the header parse and the
  signature check, which are pure functions of the token and the key. Everything
  that can change is checked again on every use, exactly as for a new token: the
  key set must still hand out that very key object for the token's `kid` (a
  rotated or refetched key set misses), the claims are checked against the clock
  (`exp`, `nbf`, `iat`, issuer, audience), and `jti` against the revocation list.
  A token whose claims fail is forgotten. Each use gets its own claims, parsed
  from the remembered JSON, so an application that edits them edits its copy.

Not covered: encrypted tokens (JWE), token binding (DPoP, mTLS), introspection.
Access tokens of a revoked refresh family stay valid until their (short) expiry.

References: RFC 7519 (JWT) sections 4.1 and 7.2; RFC 7515 sections 4.1.11 (`crit`);
RFC 8725 (JWT BCP) sections 2.1, 3.1, 3.10, 3.11; RFC 9068 sections 2.1 and 4;
RFC 9864 (`Ed25519`);
OAuth 2.0 Security BCP https://datatracker.ietf.org/doc/html/rfc9700#section-4.14
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from bastion.auth.principal import Principal
from bastion.auth.settings import (
    DEFAULT_JWKS_MAX_STALE_SECONDS,
    GENERIC_TYP,
    JWTSettings,
    normalise_typ,
)
from bastion.events import EventEmitter, SecurityEvent, default_emitter
from bastion.limits.json import JSONScanner
from bastion.stores.base import Store

logger = logging.getLogger("bastion.auth")

REASON_JWT_MALFORMED: Final = "jwt-malformed"
REASON_JWT_OVERSIZED: Final = "jwt-oversized"
REASON_JWT_ALGORITHM: Final = "jwt-algorithm-not-allowed"
REASON_JWT_ZIP: Final = "jwt-zip-header"
REASON_JWT_CRIT: Final = "jwt-crit-header"
REASON_JWT_BAD_KID: Final = "jwt-bad-kid"
REASON_JWT_UNKNOWN_KEY: Final = "jwt-unknown-key"
REASON_JWT_BAD_SIGNATURE: Final = "jwt-bad-signature"
REASON_JWT_MISSING_CLAIM: Final = "jwt-missing-claim"
REASON_JWT_BAD_CLAIM: Final = "jwt-bad-claim"
REASON_JWT_EXPIRED: Final = "jwt-expired"
REASON_JWT_NOT_YET_VALID: Final = "jwt-not-yet-valid"
REASON_JWT_TOO_OLD: Final = "jwt-too-old"
REASON_JWT_WRONG_ISSUER: Final = "jwt-wrong-issuer"
REASON_JWT_WRONG_AUDIENCE: Final = "jwt-wrong-audience"
REASON_JWT_REVOKED: Final = "jwt-revoked-jti"
REASON_JWT_TYP_MISSING: Final = "jwt-typ-missing"
REASON_JWT_TYP_WRONG: Final = "jwt-typ-wrong"
REASON_JWT_ID_TOKEN: Final = "jwt-id-token-as-access-token"  # noqa: S105 - a reason code
REASON_JWT_KEYS_EXPIRED: Final = "jwt-keys-expired"
REASON_REFRESH_INVALID: Final = "refresh-token-invalid"
REASON_REFRESH_REUSE: Final = "refresh-token-reuse"
KIND_TOKEN_REUSE: Final = "authn_token_reuse"  # noqa: S105  # OWASP vocabulary, not a secret
KIND_TOKEN_REVOKED: Final = "authn_token_revoked"  # noqa: S105
KIND_TOKEN_CREATED: Final = "authn_token_created"  # noqa: S105

# Verified tokens remembered per verifier (see the docstring): at most this many, each
# at most `max_token_bytes` long plus its claims, the oldest forgotten first.
VERIFIED_MEMO_ENTRIES: Final = 256

# Claims only an OIDC ID token carries (OIDC Core sections 2, 3.1.3.6, 3.3.2.11, and
# Financial-grade API part 2 section 5.1 for `s_hash`); RFC 9068 section 2.2 lists
# none of them for access tokens.
ID_TOKEN_CLAIMS: Final = ("nonce", "at_hash", "c_hash", "s_hash")

# `kid` is an opaque string (RFC 7515 section 4.1.4); real issuers use thumbprints,
# UUIDs or short names. Anything outside this set (slashes, quotes, spaces) is not a
# key id we could have published.
_KID: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_B64URL: Final = re.compile(r"^[A-Za-z0-9_-]*$")
# A JOSE header is one object, and real ones are flat; the deepest registered member
# is a multi-prime RSA `jwk` (its `oth` array of objects: depth 4). 32 leaves room for
# any private parameter. A deeper header is refused by this bound, the same on every
# Python: CPython's `json` gives up at a depth that depends on the version (a header
# 2,500 deep raised RecursionError on 3.11 and 3.12, and parses on 3.13).
MAX_HEADER_DEPTH: Final = 32
_MAX_JTI_CHARS: Final = 256
# A JWKS is a few keys; 1 MiB is far above any real one and bounds a hostile answer.
MAX_JWKS_BYTES: Final = 1024 * 1024
JWKS_FETCH_TIMEOUT_SECONDS: Final = 5.0
_IMPLIED_ALGORITHM: Final = {
    ("RSA", None): "RS256",
    ("EC", "P-256"): "ES256",
    ("EC", "P-384"): "ES384",
    ("EC", "P-521"): "ES512",
    ("OKP", "Ed25519"): "Ed25519",
    ("oct", None): "HS256",
}
REVOKED_PREFIX: Final = "jwt-revoked:"
REFRESH_PREFIX: Final = "refresh:"
REFRESH_USED_PREFIX: Final = "refresh-used:"
FAMILY_REVOKED_PREFIX: Final = "refresh-family:"
# RFC 9700 section 2.2.2 recommends short-lived access tokens; 5 minutes bounds the
# life of a stolen one while costing one refresh per 5 minutes of activity.
DEFAULT_ACCESS_TTL_SECONDS: Final = 300
# A refresh family lives at most 14 days from login (absolute), however often it rotates.
DEFAULT_REFRESH_TTL_SECONDS: Final = 14 * 24 * 3600
_FAMILY_BYTES: Final = 16
_REFRESH_SECRET_BYTES: Final = 32


# --- the core: header inspection, key rings, claims ----------------------------------


@dataclass(frozen=True, slots=True)
class UnverifiedHeader:
    """The header fields we use, read before verification (hence unverified).
    `typ` is as sent (any JSON value, None when absent): `check_typ` judges it."""

    alg: str
    kid: str | None
    typ: object = None


@dataclass(frozen=True, slots=True)
class HeaderVerdict:
    header: UnverifiedHeader | None
    reason: str  # "" when the header may go on to verification


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _parse_header(raw: bytes) -> object:
    """The JSON value of a decoded header, or ValueError (UnicodeDecodeError included).

    RFC 7515 section 4: the header is UTF-8, so it is decoded as UTF-8 alone (never
    as the UTF-16 or UTF-32 that `json.loads` would detect on bytes), which also
    makes a byte-level nesting scan exact. A header of a few thousand nested `[`
    fits in the size limit: its depth is bounded here, before `json.loads` recurses.
    The scan runs only when the header holds more openers than the bound, which an
    ordinary header (one `{`) never does.
    """
    text = raw.decode("utf-8")
    openers = raw.count(b"[") + raw.count(b"{")
    if openers > MAX_HEADER_DEPTH and JSONScanner(
        max_depth=MAX_HEADER_DEPTH, max_bytes=len(raw)
    ).feed(raw):
        raise ValueError("header nested too deep")
    return json.loads(text)


def inspect_token(untrusted_token: str, max_token_bytes: int) -> HeaderVerdict:
    """Check a token's size, shape and header before any key or signature work."""
    if len(untrusted_token) > max_token_bytes:
        return HeaderVerdict(None, REASON_JWT_OVERSIZED)
    parts = untrusted_token.split(".")
    if len(parts) != 3 or not all(_B64URL.match(part) for part in parts) or not parts[0]:
        return HeaderVerdict(None, REASON_JWT_MALFORMED)
    try:
        unverified = _parse_header(_b64decode(parts[0]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return HeaderVerdict(None, REASON_JWT_MALFORMED)
    if not isinstance(unverified, dict):
        return HeaderVerdict(None, REASON_JWT_MALFORMED)
    alg = unverified.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        return HeaderVerdict(None, REASON_JWT_ALGORITHM)
    if "zip" in unverified:
        return HeaderVerdict(None, REASON_JWT_ZIP)
    if "crit" in unverified:
        # RFC 7515 section 4.1.11: a recipient MUST reject critical extensions it
        # does not understand, and we understand none.
        return HeaderVerdict(None, REASON_JWT_CRIT)
    kid = unverified.get("kid")
    if kid is not None and (not isinstance(kid, str) or not _KID.match(kid)):
        return HeaderVerdict(None, REASON_JWT_BAD_KID)
    # `jku`, `x5u`, `jwk` and `x5c` are deliberately not read (RFC 8725 section 3.10).
    return HeaderVerdict(UnverifiedHeader(alg, kid, unverified.get("typ")), "")


def check_typ(untrusted_typ: object, settings: JWTSettings) -> str:
    """The reason a token's `typ` header makes it no access token of ours, or "".

    RFC 9068 section 4: the resource server MUST check that `typ` is `at+jwt` (here
    `required_typ`) and refuse any other. `insecure_allow_untyped_tokens` lets a token
    that declares no kind (no `typ`, or the generic `JWT`) through to the ID token
    claims check; a token that declares another kind (`logout+jwt`, `secevent+jwt`,
    `dpop+jwt`, ...) is never an access token.
    """
    if untrusted_typ is None:
        return "" if settings.insecure_allow_untyped_tokens else REASON_JWT_TYP_MISSING
    if not isinstance(untrusted_typ, str):
        return REASON_JWT_TYP_WRONG
    typ = normalise_typ(untrusted_typ)
    if typ == settings.required_typ:
        return ""
    if typ == GENERIC_TYP and settings.insecure_allow_untyped_tokens:
        return ""
    return REASON_JWT_TYP_WRONG


def is_untyped(untrusted_typ: object) -> bool:
    """No `typ`, or the generic `JWT`: the token does not say which kind it is."""
    return untrusted_typ is None or (
        isinstance(untrusted_typ, str) and normalise_typ(untrusted_typ) == GENERIC_TYP
    )


def has_id_token_claims(claims: Mapping[str, object]) -> bool:
    """Whether verified claims carry what only an OIDC ID token carries."""
    return any(name in claims for name in ID_TOKEN_CLAIMS)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    algorithm: str
    key: Key


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Verification keys by `kid`; `only` is the key used for tokens without a `kid`
    (set only when the ring holds exactly one key, so the choice is unambiguous)."""

    by_kid: Mapping[str, VerificationKey]
    only: VerificationKey | None

    def find(self, kid: str | None) -> VerificationKey | None:
        return self.by_kid.get(kid) if kid is not None else self.only


def key_algorithm(jwk: Mapping[str, Any], allowed: Iterable[str]) -> str | None:
    """The one algorithm a published key may verify, or None if it may verify none."""
    allowed_set = set(allowed)
    if jwk.get("use") not in (None, "sig"):
        return None
    declared = jwk.get("alg")
    kty, crv = str(jwk.get("kty")), jwk.get("crv")
    implied = _IMPLIED_ALGORITHM.get((kty, crv if isinstance(crv, str) else None))
    alg = declared if isinstance(declared, str) else implied
    return alg if alg in allowed_set else None


def build_key_ring(jwks: Mapping[str, Any], allowed_algorithms: Iterable[str]) -> KeyRing:
    """Import a JWKS; keys with no allowed algorithm or an unusable `kid` are skipped."""
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("a JWKS must have a 'keys' list")
    allowed = tuple(allowed_algorithms)
    found: list[VerificationKey] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        alg = key_algorithm(entry, allowed)
        kid = entry.get("kid")
        if alg is None or (kid is not None and not (isinstance(kid, str) and _KID.match(kid))):
            continue
        try:
            key = KeySet.import_key_set({"keys": [entry]}).keys[0]
        except (JoseError, ValueError, TypeError):
            continue
        found.append(VerificationKey(kid, alg, key))
    by_kid = {k.kid: k for k in found if k.kid is not None}
    return KeyRing(by_kid, found[0] if len(found) == 1 else None)


def _number(value: object) -> float | None:
    """A JSON number as a finite float, else None. Python's JSON parser accepts `NaN`
    and `Infinity`, which compare false with everything: an `iat` of NaN would pass
    both the not-yet-valid and the maximum-age checks."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def check_claims(claims: Mapping[str, object], settings: JWTSettings, now: float) -> str:
    """The reason the verified claims are unacceptable at `now`, or ""."""
    leeway = settings.leeway_seconds
    for name in ("exp", "iat", "sub", "iss", "aud"):
        if name not in claims:
            return REASON_JWT_MISSING_CLAIM
    if settings.require_jti and "jti" not in claims:
        return REASON_JWT_MISSING_CLAIM
    exp, iat = _number(claims["exp"]), _number(claims["iat"])
    nbf = _number(claims["nbf"]) if "nbf" in claims else 0.0
    sub, jti = claims["sub"], claims.get("jti")
    if exp is None or iat is None or nbf is None or not isinstance(sub, str) or not sub:
        return REASON_JWT_BAD_CLAIM
    if jti is not None and (not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI_CHARS):
        return REASON_JWT_BAD_CLAIM
    # RFC 7519 section 4.1.4: the current time MUST be before `exp`.
    if now >= exp + leeway:
        return REASON_JWT_EXPIRED
    if nbf > now + leeway or iat > now + leeway:
        return REASON_JWT_NOT_YET_VALID
    if now - iat > settings.max_token_age_seconds + leeway:
        return REASON_JWT_TOO_OLD
    if claims["iss"] != settings.issuer:
        return REASON_JWT_WRONG_ISSUER
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if settings.audience not in audiences:
        return REASON_JWT_WRONG_AUDIENCE
    return ""


def principal_from_claims(claims: Mapping[str, object], roles_claim: str) -> Principal:
    """Roles from `roles_claim`; scopes from `scope` (RFC 8693: space-separated) or `scp`."""
    roles = claims.get(roles_claim)
    scope = claims.get("scope")
    scp = claims.get("scp")
    scopes: list[str] = []
    if isinstance(scope, str):
        # On the space only (RFC 6749 section 3.3: scope-token *( SP scope-token )):
        # `str.split()` also splits on tabs, NBSP and other Unicode spaces, so one
        # scope an issuer granted as `files:read:x\u00a0admin` would become `admin`.
        scopes = [name for name in scope.split(" ") if name]
    elif isinstance(scp, list):
        scopes = [s for s in scp if isinstance(s, str)]
    return Principal(
        identity=str(claims["sub"]),
        source="jwt",
        roles=frozenset(r for r in roles if isinstance(r, str))
        if isinstance(roles, list)
        else frozenset(),
        scopes=frozenset(scopes),
    )


def revoked_key(jti: str) -> str:
    return REVOKED_PREFIX + hashlib.sha256(jti.encode()).hexdigest()


# --- key sources --------------------------------------------------------------------


class KeySource(Protocol):
    async def find(self, kid: str | None) -> VerificationKey | None: ...


class StaticKeys:
    """Keys from an inline JWKS or a file, read once."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    async def find(self, kid: str | None) -> VerificationKey | None:
        return self.ring.find(kid)


Fetch = Callable[[str], Awaitable[bytes]]


class JWKSCache:
    """A JWKS fetched over HTTPS, cached for `ttl_seconds`.

    A lookup of an unknown `kid` refetches at once (the issuer has just rotated), but
    at most once per `min_refresh_seconds`: a flood of random `kid`s costs the
    identity provider one request per interval. A failed fetch keeps the keys we had
    (stale keys are better than none; they are still the issuer's keys) and is logged.

    But only for `max_stale_seconds` after the last successful fetch: past that the
    keys are dropped, every lookup finds nothing (`expired` says why) and the next
    fetch allowed by `min_refresh_seconds` may bring them back. A key the issuer has
    withdrawn is otherwise honoured for as long as the fetches fail, and an attacker
    holding a stolen key only has to block them.

    The lock only merges concurrent refreshes of this process; it guards a cache,
    not shared state.
    """

    def __init__(
        self,
        url: str,
        *,
        allowed_algorithms: Iterable[str],
        ttl_seconds: float,
        min_refresh_seconds: float,
        max_stale_seconds: float = DEFAULT_JWKS_MAX_STALE_SECONDS,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.allowed = tuple(allowed_algorithms)
        self.ttl_seconds = ttl_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.max_stale_seconds = max_stale_seconds
        self._fetch = fetch or _httpx_fetch
        self._clock = clock
        self._ring: KeyRing | None = None
        self.expired = False
        """True while the keys are dropped for age (no fetch succeeded since)."""
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def find(self, kid: str | None) -> VerificationKey | None:
        now = self._clock()
        stale = self._ring is None or now - self._fetched_at >= self.ttl_seconds
        if stale and self._may_fetch(now):
            await self._refresh(now)
        elif self._lock.locked():
            # Another request is fetching right now (the first fetch, or a rotation):
            # wait for its result rather than answer from no keys or stale ones.
            async with self._lock:
                pass
        ring = self._usable_ring(now)
        key = ring.find(kid) if ring else None
        if key is None and self._may_fetch(now):
            await self._refresh(now)
            ring = self._usable_ring(now)
            key = ring.find(kid) if ring else None
        return key

    def _may_fetch(self, now: float) -> bool:
        return now - self._attempted_at >= self.min_refresh_seconds

    def _usable_ring(self, now: float) -> KeyRing | None:
        """The keys, unless their fetch is over `max_stale_seconds` old: then dropped."""
        if self._ring is not None and now - self._fetched_at >= self.max_stale_seconds:
            self._ring, self.expired = None, True
            logger.warning(
                "bastion: JWKS keys dropped, no fetch succeeded for %d s: "
                "bearer tokens are refused until one does",
                int(now - self._fetched_at),
            )
        return self._ring

    async def _refresh(self, now: float) -> None:
        async with self._lock:
            if not self._may_fetch(now):  # another request refreshed while we waited
                return
            self._attempted_at = now
            self.fetches += 1
            try:
                raw = await self._fetch(self.url)
                if len(raw) > MAX_JWKS_BYTES:
                    raise ValueError("JWKS too large")
                ring = build_key_ring(json.loads(raw), self.allowed)
            except Exception as exc:  # any failure keeps the old keys
                logger.warning("bastion: JWKS fetch failed: %s", type(exc).__name__)
                return
            self._ring, self._fetched_at, self.expired = ring, now, False


async def _httpx_fetch(url: str) -> bytes:
    """GET the JWKS, within `MAX_JWKS_BYTES` and `JWKS_FETCH_TIMEOUT_SECONDS` overall.

    httpx's timeout bounds each read, not the response: a server that sends a byte
    every few seconds, or an endless body, would hold the refresh lock (and every
    bearer request waiting on it) for ever and fill memory. So the body is read raw
    (no decompression bomb) in chunks, counted, under one deadline.
    """
    import httpx  # the `auth` extra; imported only when a URL is configured

    headers = {"accept": "application/json", "accept-encoding": "identity"}
    async with (
        asyncio.timeout(JWKS_FETCH_TIMEOUT_SECONDS),
        httpx.AsyncClient(timeout=JWKS_FETCH_TIMEOUT_SECONDS, follow_redirects=False) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        response.raise_for_status()
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError("JWKS too large")
        return bytes(body)


def key_source_from_settings(
    settings: JWTSettings,
    *,
    fetch: Fetch | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> KeySource:
    """`clock` times the JWKS cache (a monotonic clock; never the tokens' wall clock)."""
    if settings.jwks_url is not None:
        return JWKSCache(
            settings.jwks_url,
            allowed_algorithms=settings.algorithms,
            ttl_seconds=settings.jwks_ttl_seconds,
            min_refresh_seconds=settings.jwks_min_refresh_seconds,
            max_stale_seconds=settings.jwks_max_stale_seconds,
            fetch=fetch,
            clock=clock,
        )
    if settings.jwks_file is not None:
        document = json.loads(Path(settings.jwks_file).read_bytes())
    else:
        document = settings.jwks or {}
    return StaticKeys(build_key_ring(document, settings.algorithms))


# --- verification -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenVerdict:
    principal: Principal | None
    reason: str
    claims: Mapping[str, object] | None = None


class JWTVerifier:
    """Verifies bearer tokens: header, key, signature, claims, then revocation.

    The order matters: everything that costs nothing (size, shape, header) comes
    before the key lookup, which comes before the signature, which comes before any
    claim is trusted, which comes before the store is asked about `jti`. The token's
    kind (`typ`, then an untyped token's ID token claims) is part of what the memo
    keeps: it cannot change for a given token, so a remembered token passed it.
    Raises `StoreError` if the revocation store fails (the caller fails closed).
    """

    def __init__(
        self,
        settings: JWTSettings,
        *,
        store: Store,
        keys: KeySource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = keys or key_source_from_settings(settings)
        self.clock = clock
        # Raw token -> (the `kid` it names, the key that verified it, its claims as
        # JSON). Shared by every request on purpose, and bounded (see the docstring).
        self._verified: dict[str, tuple[str | None, VerificationKey, str]] = {}

    async def verify(self, untrusted_token: str) -> TokenVerdict:
        remembered = self._verified.get(untrusted_token)
        if remembered is not None:
            kid, verified_by, claims_json = remembered
            if await self.keys.find(kid) is verified_by:
                # Header, key, algorithm and signature are as they were: only what
                # can change since is checked again.
                return await self._after_signature(untrusted_token, json.loads(claims_json))
            self._verified.pop(untrusted_token, None)  # the key set changed: start over
        inspected = inspect_token(untrusted_token, self.settings.max_token_bytes)
        if inspected.header is None:
            return TokenVerdict(None, inspected.reason)
        key = await self.keys.find(inspected.header.kid)
        if key is None:
            keys = self.keys
            expired = isinstance(keys, JWKSCache) and keys.expired
            return TokenVerdict(
                None, REASON_JWT_KEYS_EXPIRED if expired else REASON_JWT_UNKNOWN_KEY
            )
        if inspected.header.alg != key.algorithm:
            return TokenVerdict(None, REASON_JWT_ALGORITHM)
        reason = check_typ(inspected.header.typ, self.settings)
        if reason:
            return TokenVerdict(None, reason)
        try:
            token = jose_jwt.decode(untrusted_token, key.key, algorithms=[key.algorithm])
        except JoseError:
            return TokenVerdict(None, REASON_JWT_BAD_SIGNATURE)
        if is_untyped(inspected.header.typ) and has_id_token_claims(token.claims):
            # Only with insecure_allow_untyped_tokens does an untyped token get here.
            return TokenVerdict(None, REASON_JWT_ID_TOKEN)
        return await self._after_signature(
            untrusted_token, token.claims, verified=(inspected.header.kid, key)
        )

    async def _after_signature(
        self,
        untrusted_token: str,
        claims: dict[str, Any],
        *,
        verified: tuple[str | None, VerificationKey] | None = None,
    ) -> TokenVerdict:
        """The checks after the signature: claims against the clock, then revocation.
        `verified`: the `kid` and key of a signature just checked, to remember."""
        reason = check_claims(claims, self.settings, self.clock())
        if reason:
            self._verified.pop(untrusted_token, None)
            return TokenVerdict(None, reason, claims)
        if verified is not None:
            self._remember(untrusted_token, *verified, claims)
        jti = claims.get("jti")
        if isinstance(jti, str) and await self.store.get(revoked_key(jti)) is not None:
            return TokenVerdict(None, REASON_JWT_REVOKED, claims)
        return TokenVerdict(principal_from_claims(claims, self.settings.roles_claim), "", claims)

    def _remember(
        self, untrusted_token: str, kid: str | None, key: VerificationKey, claims: dict[str, Any]
    ) -> None:
        try:
            claims_json = json.dumps(claims)
        except (TypeError, ValueError):
            return  # not plain JSON (a custom decoder's values): never remembered
        verified = self._verified
        while len(verified) >= VERIFIED_MEMO_ENTRIES:
            del verified[next(iter(verified))]  # the oldest first
        verified[untrusted_token] = (kid, key, claims_json)


async def revoke_jti(
    store: Store, jti: str, *, expires_at: float, now: float, leeway_seconds: int = 300
) -> None:
    """Revoke one token until it would have expired anyway (then the entry goes)."""
    ttl = max(1.0, expires_at - now + leeway_seconds)
    await store.set(revoked_key(jti), b"revoked", ttl)


# --- tokens the application issues itself -------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str


@dataclass(frozen=True, slots=True)
class RefreshVerdict:
    tokens: TokenPair | None
    reason: str


def _digest(value: str) -> str:
    # `surrogatepass`: a presented token with a lone surrogate (`"\ud800"` from a JSON
    # body) hashes to a key no token of ours has, instead of raising.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class TokenIssuer:
    """Short-lived access tokens and rotating, single-use refresh tokens.

    A refresh token is opaque: `<family>.<secret>`. The store holds, under the
    SHA-256 of the token (never the token), the family, subject, roles, scopes and
    the family's absolute expiry. Refreshing consumes the token with the store's
    atomic `set_if_absent`; if it was already consumed, the token is being replayed
    (by a thief or by the victim after the thief), and the whole family is revoked,
    so the thief's newest token dies too.
    """

    def __init__(
        self,
        *,
        key: Key,
        algorithm: str,
        issuer: str,
        audience: str,
        store: Store,
        kid: str | None = None,
        access_ttl_seconds: int = DEFAULT_ACCESS_TTL_SECONDS,
        refresh_ttl_seconds: int = DEFAULT_REFRESH_TTL_SECONDS,
        events: EventEmitter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.store = store
        self.kid = kid if kid is not None else key.kid
        self.access_ttl_seconds = access_ttl_seconds
        self.refresh_ttl_seconds = refresh_ttl_seconds
        self.events = events or default_emitter()
        self.clock = clock

    def issue_access_token(
        self, subject: str, *, roles: Iterable[str] = (), scopes: Iterable[str] = ()
    ) -> str:
        now = int(self.clock())
        header: dict[str, Any] = {"alg": self.algorithm, "typ": "at+jwt"}
        if self.kid:
            header["kid"] = self.kid
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "exp": now + self.access_ttl_seconds,
            "jti": secrets.token_urlsafe(16),
            "roles": sorted(roles),
            "scope": " ".join(sorted(scopes)),
        }
        return jose_jwt.encode(header, claims, self.key, algorithms=[self.algorithm])

    async def login(
        self, subject: str, *, roles: Iterable[str] = (), scopes: Iterable[str] = ()
    ) -> TokenPair:
        """Start a new refresh family for `subject`."""
        family = secrets.token_urlsafe(_FAMILY_BYTES)
        expires_at = self.clock() + self.refresh_ttl_seconds
        record = {"f": family, "s": subject, "r": sorted(roles), "c": sorted(scopes)}
        refresh = await self._new_refresh(record, expires_at)
        self.events.emit(
            SecurityEvent(
                kind=KIND_TOKEN_CREATED,
                reason="login",
                layer="auth",
                action="allowed",
                principal=subject,
            )
        )
        return TokenPair(self.issue_access_token(subject, roles=roles, scopes=scopes), refresh)

    async def refresh(self, untrusted_refresh_token: str) -> RefreshVerdict:
        """Exchange a refresh token for a new pair; reuse revokes the family."""
        digest = _digest(untrusted_refresh_token)
        raw = await self.store.get(REFRESH_PREFIX + digest)
        if raw is None:
            return RefreshVerdict(None, REASON_REFRESH_INVALID)
        record = json.loads(raw)
        family, expires_at = record["f"], float(record["e"])
        now = self.clock()
        if now >= expires_at or await self.store.get(FAMILY_REVOKED_PREFIX + _digest(family)):
            return RefreshVerdict(None, REASON_REFRESH_INVALID)
        if not await self.store.set_if_absent(
            REFRESH_USED_PREFIX + digest, b"used", max(1.0, expires_at - now)
        ):
            await self.revoke_family(family, expires_at=expires_at, subject=record["s"])
            self.events.emit(
                SecurityEvent(
                    kind=KIND_TOKEN_REUSE,
                    reason=REASON_REFRESH_REUSE,
                    layer="auth",
                    principal=record["s"],
                )
            )
            return RefreshVerdict(None, REASON_REFRESH_REUSE)
        refresh = await self._new_refresh(record, expires_at)
        access = self.issue_access_token(record["s"], roles=record["r"], scopes=record["c"])
        return RefreshVerdict(TokenPair(access, refresh), "")

    async def revoke_family(
        self, family: str, *, expires_at: float | None = None, subject: str | None = None
    ) -> None:
        until = expires_at if expires_at is not None else self.clock() + self.refresh_ttl_seconds
        ttl = max(1.0, until - self.clock())
        await self.store.set(FAMILY_REVOKED_PREFIX + _digest(family), b"revoked", ttl)
        self.events.emit(
            SecurityEvent(
                kind=KIND_TOKEN_REVOKED,
                reason="family-revoked",
                layer="auth",
                action="allowed",
                principal=subject,
            )
        )

    async def _new_refresh(self, record: Mapping[str, Any], expires_at: float) -> str:
        token = f"{record['f']}.{secrets.token_urlsafe(_REFRESH_SECRET_BYTES)}"
        stored = json.dumps({**record, "e": expires_at}, separators=(",", ":")).encode()
        ttl = max(1.0, expires_at - self.clock())
        await self.store.set(REFRESH_PREFIX + _digest(token), stored, ttl)
        return token
