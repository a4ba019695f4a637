"""OpenID Connect login: a relying party for the authorization code flow with PKCE.

Threats and defences:

* Login CSRF and injected authorization responses (an attacker makes the victim's
  browser complete the attacker's login, or feeds a stolen code to our callback):
  `state` is a 256-bit random value stored in the server-side session, compared with
  `hmac.compare_digest`, and single use: the pending login is removed from the
  session before anything else is checked (RFC 9700 section 4.7).
* Code interception and injection: PKCE with S256 only (RFC 7636 section 4.2); the
  verifier never leaves the server until the back-channel code exchange.
* ID token forgery and substitution: the signature is checked with the provider's
  JWKS (found through its discovery document, keys cached by `JWKSCache`), the
  algorithm is fixed per key and never taken from the token (`inspect_token` refuses
  `none`, `crit`, `zip`); `iss` must equal the configured issuer, `aud` must contain
  the client id, `azp` must equal it when present or when there are several
  audiences, `exp` and `iat` are checked with a small leeway, and `nonce` must equal
  the stored one (OIDC Core section 3.1.3.7). The provider's keys stop verifying
  once no JWKS fetch has succeeded for `DEFAULT_JWKS_MAX_STALE_SECONDS`, so a key
  it withdrew is not honoured while its JWKS endpoint is down or blocked.
* ID token replay: a nonce is recorded as used in a store with the atomic
  `set_if_absent`, so two concurrent callbacks carrying the same pending login (the
  session is read by both before either saves it) cannot both log in.
* Session fixation: a successful login calls `session.login(user_id)`, which issues
  a new session id. A session bound to another user is emptied first
  (`Session.login`), so that user's data (their session roles) never carries over
  to the one logging in.
* Open redirect: the return path is kept only if it is a same-origin path (`/x`, not
  `//evil`, `/\\evil`, `https://evil`), checked at login and again before use.
* SSRF through the discovery document: every server-to-server request goes through
  `bastion.outbound.safe_async_client`, and the discovery document must name the
  configured issuer (OIDC Discovery section 4.3).

Not covered: the implicit and hybrid flows, front- and back-channel logout
notifications, `private_key_jwt` client authentication, RFC 9207 `iss` in the
authorization response, and several logins in progress in one session (the newest
one wins; the older tab's callback is refused).

References: OpenID Connect Core 1.0 https://openid.net/specs/openid-connect-core-1_0.html
sections 3.1.2 and 3.1.3.7; OpenID Connect Discovery 1.0 section 4; RP-Initiated
Logout 1.0 section 2; RFC 7636 (PKCE); RFC 9700 (OAuth 2.0 Security BCP) sections
2.1 and 4.1.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from pydantic import Field, SecretStr, field_validator, model_validator

from bastion.auth.jwt import JWKSCache, inspect_token
from bastion.auth.settings import (
    DEFAULT_ALGORITHMS,
    DEFAULT_JWKS_MAX_STALE_SECONDS,
    DEFAULT_JWKS_MIN_REFRESH_SECONDS,
    DEFAULT_JWKS_TTL_SECONDS,
    MAX_LEEWAY_SECONDS,
    SUPPORTED_ALGORITHMS,
)
from bastion.events import KIND_AUTHN_FAIL, EventEmitter
from bastion.exceptions import ConfigurationError
from bastion.outbound import OutboundBlocked, OutboundSettings, safe_async_client
from bastion.responses import Refuser, send_response
from bastion.sections import Section
from bastion.sessions import Session
from bastion.stores.base import Store, check_store
from bastion.stores.memory import MemoryStore
from bastion.types import Receive, Scope, Send

# --- constants ----------------------------------------------------------------------

REASON_STATE_MISSING: Final = "oidc-missing-state"
REASON_STATE_MISMATCH: Final = "oidc-state-mismatch"
REASON_NO_PENDING_LOGIN: Final = "oidc-no-pending-login"
REASON_LOGIN_EXPIRED: Final = "oidc-login-expired"
REASON_PROVIDER_ERROR: Final = "oidc-provider-error"
REASON_CODE_MISSING: Final = "oidc-missing-code"
REASON_CODE_EXCHANGE: Final = "oidc-code-exchange-failed"
REASON_ID_TOKEN_INVALID: Final = "oidc-id-token-invalid"  # noqa: S105 - a reason code
REASON_NONCE_MISMATCH: Final = "oidc-nonce-mismatch"
REASON_NONCE_REPLAYED: Final = "oidc-nonce-replayed"
REASON_USER_REFUSED: Final = "oidc-user-refused"
REASON_PROVIDER_UNAVAILABLE: Final = "oidc-provider-unavailable"

SESSION_PENDING_KEY: Final = "bastion.oidc.pending"
SESSION_ID_TOKEN_KEY: Final = "bastion.oidc.id_token"  # noqa: S105 - a key name
NONCE_PREFIX: Final = "oidc-nonce:"

# 32 random bytes (256 bits) for state and nonce; RFC 7636 section 4.1 asks for a
# verifier of 43-128 characters with 256 bits of entropy: token_urlsafe(32) is 43.
_RANDOM_BYTES: Final = 32
# A user takes seconds to a few minutes at the provider (a password, a second
# factor); 10 minutes is the usual bound for an authorization code's own life
# (RFC 6749 section 4.1.2 recommends at most 10 minutes).
DEFAULT_LOGIN_TIMEOUT_SECONDS: Final = 600
# OIDC Core 3.1.3.7 item 10: `iat` "can be used to reject tokens that were issued too
# far away from the current time". An ID token is minted seconds before it reaches us.
DEFAULT_MAX_ID_TOKEN_AGE_SECONDS: Final = 300
# A browser's URL limit is far larger, but a return path is a path in this app; 2 KiB
# keeps an attacker-chosen value out of session records of unbounded size.
MAX_RETURN_PATH_CHARS: Final = 2048
# A callback query carries code, state, maybe iss and session_state: small. Bound it
# before parsing.
MAX_QUERY_BYTES: Final = 8192
# `sub` is "at most 255 ASCII characters" (OIDC Core section 2).
MAX_SUB_CHARS: Final = 255
DEFAULT_RETURN_PATH: Final = "/"
# ID tokens are 1-2 KiB; one with many claims stays far under 16 KiB. Bounds the
# work spent on a hostile token endpoint's answer before the signature is checked.
MAX_ID_TOKEN_BYTES: Final = 16384

UserMapper = Callable[[Mapping[str, object]], Awaitable[str | None]]


# --- settings -----------------------------------------------------------------------


def _is_http_url(value: str, *, allow_http: bool) -> bool:
    parts = urlsplit(value)
    schemes = ("https", "http") if allow_http else ("https",)
    return parts.scheme in schemes and bool(parts.hostname) and not parts.fragment


class OIDCSettings(Section):
    """One OpenID provider, for browser login."""

    issuer: str = Field(min_length=1)
    """The provider's issuer URL, exactly as its ID tokens and discovery name it."""

    client_id: str = Field(min_length=1, max_length=255)
    client_secret: SecretStr | None = None
    """Sent with HTTP Basic (`client_secret_basic`); None for a public client."""

    redirect_uri: str = Field(min_length=1)
    """This app's callback URL, absolute, as registered at the provider."""

    scopes: tuple[str, ...] = ("openid", "email", "profile")
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    """Algorithms a provider key may be used with (never `none`, and HS* is refused:
    a client secret shared with the provider must not mint ID tokens)."""

    leeway_seconds: int = Field(default=30, ge=0, le=MAX_LEEWAY_SECONDS)
    """Allowed clock skew for `exp` and `iat`."""

    max_id_token_age_seconds: int = Field(default=DEFAULT_MAX_ID_TOKEN_AGE_SECONDS, ge=30)
    login_timeout_seconds: int = Field(default=DEFAULT_LOGIN_TIMEOUT_SECONDS, ge=30, le=3600)
    post_logout_redirect_uri: str | None = None
    """Where the provider sends the user after logout; None: logout stays local
    unless the provider has no such parameter registered (then `/`)."""

    provider_logout: bool = True
    """Redirect to the provider's `end_session_endpoint` at logout, when it has one."""

    insecure_allow_http: bool = False
    """Allow `http://` issuer and endpoints (tests and local development only)."""

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value:
            raise ValueError("scopes must include 'openid'")
        for scope in value:
            if not scope or any(c in scope for c in ' "\\') or not scope.isprintable():
                raise ValueError("each scope is a non-empty token without spaces or quotes")
        return value

    @field_validator("algorithms")
    @classmethod
    def _check_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one algorithm is required")
        for alg in value:
            if alg not in SUPPORTED_ALGORITHMS or alg.startswith("HS"):
                raise ValueError(f"algorithm {alg!r} is not allowed for ID tokens")
        return value

    @model_validator(mode="after")
    def _check_urls(self) -> OIDCSettings:
        allow_http = self.insecure_allow_http
        if not _is_http_url(self.issuer, allow_http=allow_http) or urlsplit(self.issuer).query:
            raise ValueError("issuer must be an https:// URL without query or fragment")
        if not _is_http_url(self.redirect_uri, allow_http=allow_http):
            raise ValueError("redirect_uri must be an absolute https:// URL")
        post = self.post_logout_redirect_uri
        if post is not None and not _is_http_url(post, allow_http=allow_http):
            raise ValueError("post_logout_redirect_uri must be an absolute https:// URL")
        return self


# --- the core: plain data and pure decisions ----------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of the discovery document we use, validated."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None


def parse_metadata(document: object, settings: OIDCSettings) -> ProviderMetadata:
    """Validate a discovery document; raises ValueError naming the broken field."""
    if not isinstance(document, dict):
        raise ValueError("discovery document is not a JSON object")
    # OIDC Discovery 4.3: the issuer "MUST be identical to the issuer value ... used
    # to retrieve the configuration information", else it MUST NOT be used.
    if document.get("issuer") != settings.issuer:
        raise ValueError("discovery issuer differs from the configured issuer")
    urls: dict[str, str | None] = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint"):
        value = document.get(name)
        if value is None and name == "end_session_endpoint":
            urls[name] = None
            continue
        if not isinstance(value, str) or not _is_http_url(
            value, allow_http=settings.insecure_allow_http
        ):
            raise ValueError(f"discovery {name} is missing or not an https:// URL")
        urls[name] = value
    methods = document.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise ValueError("the provider does not support PKCE S256")
    return ProviderMetadata(
        issuer=settings.issuer,
        authorization_endpoint=str(urls["authorization_endpoint"]),
        token_endpoint=str(urls["token_endpoint"]),
        jwks_uri=str(urls["jwks_uri"]),
        end_session_endpoint=urls["end_session_endpoint"],
    )


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """What the session keeps between `login` and `callback`."""

    state: str
    nonce: str
    code_verifier: str
    return_path: str
    created: float

    @classmethod
    def start(cls, return_path: str, now: float) -> PendingLogin:
        return cls(
            state=secrets.token_urlsafe(_RANDOM_BYTES),
            nonce=secrets.token_urlsafe(_RANDOM_BYTES),
            code_verifier=secrets.token_urlsafe(_RANDOM_BYTES),
            return_path=safe_return_path(return_path),
            created=now,
        )

    def to_session(self) -> dict[str, object]:
        return {
            "state": self.state,
            "nonce": self.nonce,
            "verifier": self.code_verifier,
            "return": self.return_path,
            "created": self.created,
        }

    @classmethod
    def from_session(cls, value: object) -> PendingLogin | None:
        if not isinstance(value, dict):
            return None
        try:
            fields = (value["state"], value["nonce"], value["verifier"], value["return"])
            created = float(value["created"])
        except (KeyError, TypeError, ValueError):
            return None
        if not all(isinstance(f, str) and f for f in fields):
            return None
        return cls(*fields, created=created)


def s256_challenge(code_verifier: str) -> str:
    """RFC 7636 section 4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def safe_return_path(untrusted_path: str | None) -> str:
    """`untrusted_path` if it is a path on this origin, else `/` (open redirect).

    Browsers read `//evil.example` and `/\\evil.example` as another host, and strip
    tabs and newlines from URLs (WHATWG URL), so `/\\t/evil.example` is one too:
    only a plain path starting with one `/` and holding no backslash or control
    character is kept.
    """
    if not untrusted_path or len(untrusted_path) > MAX_RETURN_PATH_CHARS:
        return DEFAULT_RETURN_PATH
    if not untrusted_path.startswith("/") or untrusted_path.startswith("//"):
        return DEFAULT_RETURN_PATH
    if "\\" in untrusted_path or not (untrusted_path.isascii() and untrusted_path.isprintable()):
        return DEFAULT_RETURN_PATH
    parts = urlsplit(untrusted_path)
    if parts.scheme or parts.netloc:
        return DEFAULT_RETURN_PATH
    return untrusted_path


def build_authorization_url(
    metadata: ProviderMetadata, settings: OIDCSettings, pending: PendingLogin
) -> str:
    """OIDC Core section 3.1.2.1 authentication request, with PKCE (RFC 7636 4.3)."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.client_id,
            "redirect_uri": settings.redirect_uri,
            "scope": " ".join(settings.scopes),
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": s256_challenge(pending.code_verifier),
            "code_challenge_method": "S256",
        }
    )
    separator = "&" if urlsplit(metadata.authorization_endpoint).query else "?"
    return f"{metadata.authorization_endpoint}{separator}{query}"


def check_state(
    pending: PendingLogin | None, untrusted_state: str | None, now: float, settings: OIDCSettings
) -> str:
    """The reason the callback's `state` is unacceptable, or ""."""
    if not untrusted_state:
        return REASON_STATE_MISSING
    if pending is None:
        return REASON_NO_PENDING_LOGIN
    if not hmac.compare_digest(pending.state.encode(), untrusted_state.encode()):
        return REASON_STATE_MISMATCH
    if now - pending.created > settings.login_timeout_seconds:
        return REASON_LOGIN_EXPIRED
    return ""


def _number(value: object) -> float | None:
    # Finite only: an `iat` of NaN (Python's JSON parser accepts it) compares false
    # with everything, and would pass the age checks below.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def check_id_token_claims(
    claims: Mapping[str, object], settings: OIDCSettings, expected_nonce: str, now: float
) -> str:
    """OIDC Core section 3.1.3.7 on verified claims: the reason to refuse, or ""."""
    leeway = settings.leeway_seconds
    if claims.get("iss") != settings.issuer:
        return REASON_ID_TOKEN_INVALID
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or settings.client_id not in audiences:
        return REASON_ID_TOKEN_INVALID
    # Items 4-5: with several audiences `azp` SHOULD be present; we require it, and
    # whenever it is present it must be us (a token issued to another client).
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != settings.client_id:
        return REASON_ID_TOKEN_INVALID
    exp, iat = _number(claims.get("exp")), _number(claims.get("iat"))
    if exp is None or iat is None or now >= exp + leeway:
        return REASON_ID_TOKEN_INVALID
    if iat > now + leeway or now - iat > settings.max_id_token_age_seconds + leeway:
        return REASON_ID_TOKEN_INVALID
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_CHARS:
        return REASON_ID_TOKEN_INVALID
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(
        nonce.encode(), expected_nonce.encode()
    ):
        return REASON_NONCE_MISMATCH
    return ""


def build_logout_url(
    metadata: ProviderMetadata | None, settings: OIDCSettings, id_token_hint: str | None
) -> str:
    """RP-Initiated Logout 1.0 section 2, or the local `/` when the provider has none."""
    if metadata is None or metadata.end_session_endpoint is None or not settings.provider_logout:
        return DEFAULT_RETURN_PATH
    params = {"client_id": settings.client_id}
    if id_token_hint:
        params["id_token_hint"] = id_token_hint
    if settings.post_logout_redirect_uri:
        params["post_logout_redirect_uri"] = settings.post_logout_redirect_uri
    endpoint = metadata.end_session_endpoint
    separator = "&" if urlsplit(endpoint).query else "?"
    return f"{endpoint}{separator}{urlencode(params)}"


def nonce_key(nonce: str) -> str:
    return NONCE_PREFIX + hashlib.sha256(nonce.encode()).hexdigest()


def _single_query_value(query: Mapping[str, list[str]], name: str) -> str | None:
    # A parameter sent twice is ambiguous (parameter pollution): treat it as absent.
    values = query.get(name)
    return values[0] if values is not None and len(values) == 1 else None


# --- the adapter ----------------------------------------------------------------------


class _ExchangeError(Exception):
    """The code exchange failed (any cause: network, status, body)."""


class _Endpoint:
    """One ASGI endpoint (an instance, so Starlette's `Route` does not wrap it)."""

    __slots__ = ("_handler",)

    def __init__(self, handler: Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]):
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


async def _default_user_mapper(claims: Mapping[str, object]) -> str | None:
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else None


class OIDCLogin:
    """The relying party's three endpoints, `login`, `callback` and `logout`.

    Each is an ASGI app (`Route("/auth/login", oidc.login)`); the instance is also an
    ASGI app that dispatches on the last path segment, for `Mount("/auth", oidc)`.
    Needs `SessionMiddleware` outside it (`scope["session"]`). State kept here is a
    cache (the discovery document, the JWKS); per-request state stays in the calls.

    `user_mapper` turns verified claims into the user id given to `session.login`
    (default: `sub`); returning None refuses the login (an unknown user).
    Used nonces go to `store` (share it across workers: a Redis or SQLite store).
    """

    def __init__(
        self,
        settings: OIDCSettings,
        *,
        outbound: OutboundSettings | None = None,
        store: Store | None = None,
        events: EventEmitter | None = None,
        user_mapper: UserMapper | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.outbound = outbound or OutboundSettings(
            insecure_allow_http=settings.insecure_allow_http
        )
        self.store = store if store is not None else MemoryStore()
        check_store(self.store)
        self.refuse = Refuser("oidc", events)
        self.user_mapper = user_mapper or _default_user_mapper
        self.clock = clock
        self._transport = transport
        self._metadata: ProviderMetadata | None = None
        self._jwks: JWKSCache | None = None
        self._metadata_lock = asyncio.Lock()
        self.login = _Endpoint(self._login)
        self.callback = _Endpoint(self._callback)
        self.logout = _Endpoint(self._logout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ConfigurationError("OIDCLogin serves HTTP only")
        last = str(scope["path"]).rstrip("/").rsplit("/", 1)[-1]
        endpoint = {"login": self.login, "callback": self.callback, "logout": self.logout}
        target = endpoint.get(last)
        if target is None:
            await send_response(send, 404, b"", [(b"cache-control", b"no-store")])
            return
        await target(scope, receive, send)

    # -- server-to-server -------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._transport is not None:
            return httpx.AsyncClient(transport=self._transport, follow_redirects=False)
        # No redirects: an endpoint the discovery document names is used as named.
        return safe_async_client(self.outbound, follow_redirects=False)

    async def _fetch(self, url: str) -> bytes:
        async with self._client() as client:
            response = await client.get(url, headers={"accept": "application/json"})
            response.raise_for_status()
            return response.content

    async def metadata(self) -> ProviderMetadata:
        """The provider's metadata, fetched once (raises on failure; retried next call)."""
        if self._metadata is not None:
            return self._metadata
        # The lock merges concurrent first requests: without it each would build its
        # own JWKS cache, and a lookup racing a cold cache's first fetch finds no key.
        async with self._metadata_lock:
            if self._metadata is None:
                url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
                metadata = parse_metadata(json.loads(await self._fetch(url)), self.settings)
                jwks = JWKSCache(
                    metadata.jwks_uri,
                    allowed_algorithms=self.settings.algorithms,
                    ttl_seconds=DEFAULT_JWKS_TTL_SECONDS,
                    min_refresh_seconds=DEFAULT_JWKS_MIN_REFRESH_SECONDS,
                    # Past this without a successful fetch, no ID token verifies.
                    max_stale_seconds=DEFAULT_JWKS_MAX_STALE_SECONDS,
                    fetch=self._fetch,
                )
                await jwks.find(None)  # warm it while holding the lock
                self._jwks, self._metadata = jwks, metadata
            return self._metadata

    async def _exchange_code(self, metadata: ProviderMetadata, code: str, verifier: str) -> str:
        """RFC 6749 section 4.1.3 with the PKCE verifier; the ID token, unverified."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.redirect_uri,
            "code_verifier": verifier,
        }
        auth: httpx.BasicAuth | None = None
        if self.settings.client_secret is None:
            form["client_id"] = self.settings.client_id
        else:
            # client_secret_basic (RFC 6749 section 2.3.1).
            secret = self.settings.client_secret.get_secret_value()
            auth = httpx.BasicAuth(self.settings.client_id, secret)
        try:
            async with self._client() as client:
                response = await client.post(
                    metadata.token_endpoint,
                    data=form,
                    auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                    headers={"accept": "application/json"},
                )
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, OutboundBlocked, ValueError) as exc:
            raise _ExchangeError from exc
        token = body.get("id_token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise _ExchangeError
        return token

    async def _verify_id_token(self, untrusted_token: str) -> Mapping[str, object] | None:
        """The claims of a validly signed token, or None; claims are checked after."""
        verdict = inspect_token(untrusted_token, MAX_ID_TOKEN_BYTES)
        if verdict.header is None or self._jwks is None:
            return None
        key = await self._jwks.find(verdict.header.kid)
        if key is None or key.algorithm != verdict.header.alg:
            return None
        try:
            token = jose_jwt.decode(untrusted_token, key.key, algorithms=[key.algorithm])
        except (JoseError, ValueError):
            return None
        claims: Mapping[str, object] = token.claims
        return claims

    # -- endpoints ---------------------------------------------------------------------

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = _session(scope)
        query = _query(scope)
        try:
            metadata = await self.metadata()
        except (httpx.HTTPError, OutboundBlocked, ValueError):
            await self.refuse(
                scope, send, status=503, kind=KIND_AUTHN_FAIL, reason=REASON_PROVIDER_UNAVAILABLE
            )
            return
        pending = PendingLogin.start(
            _single_query_value(query, "next") or DEFAULT_RETURN_PATH, self.clock()
        )
        session[SESSION_PENDING_KEY] = pending.to_session()
        await _redirect(send, build_authorization_url(metadata, self.settings, pending))

    async def _callback(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = _session(scope)
        query = _query(scope)
        # Single use: the pending login leaves the session before it is looked at, so
        # whatever happens next, this state, nonce and verifier are never used again.
        pending = PendingLogin.from_session(session.pop(SESSION_PENDING_KEY, None))
        now = self.clock()

        async def refuse(reason: str, status: int = 403) -> None:
            await self.refuse(scope, send, status=status, kind=KIND_AUTHN_FAIL, reason=reason)

        if _single_query_value(query, "error") is not None:
            await refuse(REASON_PROVIDER_ERROR)
            return
        reason = check_state(pending, _single_query_value(query, "state"), now, self.settings)
        if reason or pending is None:
            status = 400 if reason in (REASON_STATE_MISSING, REASON_NO_PENDING_LOGIN) else 403
            await refuse(reason or REASON_NO_PENDING_LOGIN, status)
            return
        code = _single_query_value(query, "code")
        if not code:
            await refuse(REASON_CODE_MISSING, 400)
            return
        try:
            metadata = await self.metadata()
            untrusted_token = await self._exchange_code(metadata, code, pending.code_verifier)
        except (_ExchangeError, httpx.HTTPError, OutboundBlocked, ValueError):
            await refuse(REASON_CODE_EXCHANGE, 400)
            return
        claims = await self._verify_id_token(untrusted_token)
        reason = (
            check_id_token_claims(claims, self.settings, pending.nonce, now)
            if claims is not None
            else REASON_ID_TOKEN_INVALID
        )
        if reason or claims is None:
            await refuse(reason or REASON_ID_TOKEN_INVALID)
            return
        ttl = self.settings.max_id_token_age_seconds + 2 * self.settings.leeway_seconds
        if not await self.store.set_if_absent(nonce_key(pending.nonce), b"1", ttl):
            await refuse(REASON_NONCE_REPLAYED)
            return
        user_id = await self.user_mapper(claims)
        if not user_id:
            await refuse(REASON_USER_REFUSED)
            return
        session.login(user_id)  # empties a session bound to another user first
        session[SESSION_ID_TOKEN_KEY] = untrusted_token  # verified now; kept as logout hint
        await _redirect(send, safe_return_path(pending.return_path), status=303)

    async def _logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        # POST only: a GET logout lets any page log the user out (logout CSRF); the
        # CSRF layer covers POST.
        if scope.get("method") != "POST":
            await send_response(send, 405, b"", [(b"allow", b"POST")])
            return
        session = _session(scope)
        hint = session.get(SESSION_ID_TOKEN_KEY)
        session.logout()
        try:
            metadata: ProviderMetadata | None = await self.metadata()
        except (httpx.HTTPError, OutboundBlocked, ValueError):
            metadata = None  # the local logout has happened; the provider's is best effort
        target = build_logout_url(metadata, self.settings, hint if isinstance(hint, str) else None)
        await _redirect(send, target, status=303)


def _session(scope: Scope) -> Session:
    session = scope.get("session")
    if not isinstance(session, Session):
        raise ConfigurationError("OIDCLogin needs bastion's SessionMiddleware outside it")
    return session


def _query(scope: Scope) -> dict[str, list[str]]:
    raw = scope.get("query_string", b"")
    if len(raw) > MAX_QUERY_BYTES:
        return {}
    try:
        return parse_qs(raw.decode("latin-1"), max_num_fields=32)
    except ValueError:  # too many fields
        return {}


async def _redirect(send: Send, location: str, *, status: int = 302) -> None:
    await send_response(
        send,
        status,
        b"",
        [
            (b"location", location.encode("latin-1")),
            (b"cache-control", b"no-store"),
            (b"referrer-policy", b"no-referrer"),
        ],
    )
