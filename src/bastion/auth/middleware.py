"""The authentication layer: who is calling, never whether they may.

Threat: a request that claims an identity it cannot prove (a forged, expired,
revoked or tampered token, a guessed API key), or a layer that silently falls back
to a weaker credential when a stronger one fails.
Defence: the sources are tried in a fixed order, bearer JWT, then API key header,
then the session user set by `SessionMiddleware` (which sits outside). The first
credential *presented* decides: if it is invalid the request is refused with 401
and a `WWW-Authenticate` challenge, never passed on as anonymous or as the session
user, so a bad token cannot be "rescued" by a cookie. No credential at all is not an
error: the request goes on anonymous, and authorization decides.

The 401 says only what RFC 6750 allows (`error="invalid_token"`); the precise reason
(`jwt-expired`, `apikey-revoked`, ...) goes to the event stream as
`authn_login_fail` (OWASP Logging Vocabulary: a presented credential that failed to
authenticate). A store failure (revocation list, API keys) fails closed with 503.

Not covered: whether the caller may do what they ask (`bastion.auth.policy`);
`Authorization` schemes other than Bearer (Basic, Digest) are left to the app.

References: RFC 6750 sections 2.1 and 3.1; RFC 9110 section 11.6.1 (401 carries
`WWW-Authenticate`); OWASP Logging Vocabulary (authn_*).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bastion.auth.apikeys import APIKeyStore
from bastion.auth.principal import ANONYMOUS as ANONYMOUS_USER
from bastion.auth.principal import AuthCredentials, Principal, set_principal
from bastion.auth.settings import AuthSettings
from bastion.context import SCOPE_KEY, get_context
from bastion.events import KIND_AUTHN_FAIL, KIND_SYS_AVAILABILITY, EventEmitter
from bastion.exceptions import StoreError
from bastion.responses import Refuser, send_generic
from bastion.sessions import Session
from bastion.stages import Flow, run_stages
from bastion.stores.base import Store, check_store
from bastion.stores.memory import MemoryStore
from bastion.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from bastion.auth.jwt import JWTVerifier, KeySource

REASON_AUTHORIZATION_MALFORMED: Final = "authorization-malformed"
REASON_STORE_DOWN: Final = "store-unavailable"
_BEARER: Final = b"bearer"


@dataclass(frozen=True, slots=True)
class Authentication:
    """What the sources concluded: a principal, or a refusal with its challenge."""

    principal: Principal | None
    reason: str = ""
    challenge: bytes = b""
    source: str = ""


ANONYMOUS: Final = Authentication(None)


def bearer_challenge(realm: str, error: str | None = None) -> bytes:
    """A `WWW-Authenticate` value (RFC 6750 section 3): no error when none was sent."""
    value = f'Bearer realm="{realm}"'
    if error:
        value += f', error="{error}"'
    return value.encode("ascii")


def session_principal(session: object, roles_key: str) -> Principal | None:
    """The session's user, as bound by `session.login(user_id)`."""
    user_id = getattr(session, "user_id", None)
    if not isinstance(user_id, str) or not user_id:
        return None
    roles = session.get(roles_key) if isinstance(session, dict) else None
    names = frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else None
    return Principal(user_id, "session", roles=names or frozenset())


class AuthenticationMiddleware:
    """Resolves the principal and records it in `scope["bastion"]`, `user`, `auth`."""

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: AuthSettings | None = None,
        *,
        store: Store | None = None,
        events: EventEmitter | None = None,
        clock: Callable[[], float] = time.time,
        key_source: KeySource | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or AuthSettings()
        self.store = store if store is not None else MemoryStore(clock=clock)
        check_store(self.store)
        self.refuse = Refuser("authentication", events, monitor_only=self.settings.monitor_only)
        self.jwt: JWTVerifier | None = None
        if self.settings.jwt is not None:
            from bastion.auth.jwt import JWTVerifier  # joserfc: the `auth` extra

            self.jwt = JWTVerifier(
                self.settings.jwt, store=self.store, keys=key_source, clock=clock
            )
        self.api_keys: APIKeyStore | None = None
        self._api_key_header = b""
        if self.settings.api_keys is not None:
            self.api_keys = APIKeyStore(self.store, self.settings.api_keys, clock=clock)
            self._api_key_header = self.settings.api_keys.header_name.encode("ascii")
        # The header names that carry a credential of a configured source: a request
        # with none of them is decided without awaiting (`enter`).
        self._credential_headers = frozenset(
            ([b"authorization"] if self.jwt is not None else [])
            + ([self._api_key_header] if self.api_keys is not None else [])
        )
        self._session_roles_key = self.settings.session_roles_key if self.settings.session else None
        realm = self.settings.realm
        self._invalid_token = bearer_challenge(realm, "invalid_token")
        self._invalid_request = bearer_challenge(realm, "invalid_request")
        self._invalid_api_key = f'ApiKey realm="{realm}"'.encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.settings.enabled:
            await self.app(scope, receive, send)
            return
        await run_stages((self,), self.app, scope, receive, send)

    def enter(self, flow: Flow) -> Awaitable[bool] | None:
        """The request phase (`bastion.stages`): None when the request goes on, else
        the awaitable of `_enter_checking` (True when the request was refused).

        A request that presents no credential (no `Authorization` line when JWTs
        are on, no API key line when keys are on) is decided here, as `authenticate`
        would decide it, without awaiting: the session's user, or anonymous.
        """
        headers = flow.headers
        if not (flow.headers_lowercase and self._credential_headers.isdisjoint(headers)):
            # A credential to verify, or names matched exactly, as sent.
            return self._enter_checking(flow)
        scope = flow.scope
        roles_key = self._session_roles_key  # None when the session is no source
        if roles_key is not None:
            session = scope.get("session")
            # `getattr(session, "user_id", None)`, a plain read on Bastion's own session.
            if (
                session.user_id
                if session.__class__ is Session
                else getattr(session, "user_id", None)
            ) is not None:  # `session.login` was called
                set_principal(scope, session_principal(session, roles_key))
                return None
        # `set_principal(scope, None)`, inlined: anonymous is the common case.
        (scope.get(SCOPE_KEY) or get_context(scope)).principal = None
        scope["user"] = ANONYMOUS_USER
        scope["auth"] = AuthCredentials()
        return None

    async def _enter_checking(self, flow: Flow) -> bool:
        """`enter` with a credential to verify: True when the request was refused."""
        scope = flow.scope
        try:
            result = await self.authenticate(
                scope, flow.headers if flow.headers_lowercase else None
            )
        except StoreError:
            # Fail closed: a revocation list we cannot read cannot vouch for anyone.
            self.refuse.event(
                scope, kind=KIND_SYS_AVAILABILITY, reason=REASON_STORE_DOWN, status=503
            )
            await send_generic(scope, flow.send, 503)
            return True
        if result.reason and await self.refuse(
            scope,
            flow.send,
            status=401,
            kind=KIND_AUTHN_FAIL,
            reason=result.reason,
            headers=[(b"www-authenticate", result.challenge)],
            details={"source": result.source},
        ):
            return True
        set_principal(scope, result.principal)
        return False

    async def authenticate(
        self, scope: Scope, lines: Mapping[bytes, list[bytes]] | None = None
    ) -> Authentication:
        """Try each configured source in order; the first credential presented decides.

        `lines` is the request's header lines by name (`Flow.headers`), when every
        name came lower-cased: the same lines the scans of `scope["headers"]` find.
        """
        if lines is None:
            authorization = [v for k, v in scope["headers"] if k == b"authorization"]
        else:
            authorization = lines.get(b"authorization", [])
        if self.jwt is not None and authorization:
            if len(authorization) > 1:
                # Two Authorization lines: which one a proxy or framework reads is
                # anyone's guess; trust neither.
                return Authentication(
                    None, REASON_AUTHORIZATION_MALFORMED, self._invalid_request, "jwt"
                )
            scheme, _, credentials = authorization[0].strip().partition(b" ")
            if scheme.lower() == _BEARER:
                return await self._verify_jwt(self.jwt, credentials.strip())
        if self.api_keys is not None:
            if lines is None:
                values = [v for k, v in scope["headers"] if k == self._api_key_header]
            else:
                values = lines.get(self._api_key_header, [])
            if values:
                return await self._verify_api_key(self.api_keys, values)
        if self.settings.session:
            session = scope.get("session")
            principal = session_principal(session, self.settings.session_roles_key)
            if principal is not None:
                return Authentication(principal, source="session")
        return ANONYMOUS

    async def _verify_jwt(self, verifier: JWTVerifier, raw: bytes) -> Authentication:
        from bastion.auth.jwt import REASON_JWT_MALFORMED, REASON_JWT_OVERSIZED

        if len(raw) > verifier.settings.max_token_bytes:  # before decoding anything
            return Authentication(None, REASON_JWT_OVERSIZED, self._invalid_token, "jwt")
        try:
            token = raw.decode("ascii")
        except UnicodeDecodeError:
            return Authentication(None, REASON_JWT_MALFORMED, self._invalid_token, "jwt")
        verdict = await verifier.verify(token)
        if verdict.principal is None:
            return Authentication(None, verdict.reason, self._invalid_token, "jwt")
        return Authentication(verdict.principal, source="jwt")

    async def _verify_api_key(self, api_keys: APIKeyStore, values: list[bytes]) -> Authentication:
        from bastion.auth.apikeys import REASON_APIKEY_MALFORMED

        if len(values) != 1:
            return Authentication(None, REASON_APIKEY_MALFORMED, self._invalid_api_key, "apikey")
        try:
            key = values[0].decode("ascii").strip()
        except UnicodeDecodeError:
            return Authentication(None, REASON_APIKEY_MALFORMED, self._invalid_api_key, "apikey")
        verdict = await api_keys.verify(key)
        if verdict.principal is None:
            return Authentication(None, verdict.reason, self._invalid_api_key, "apikey")
        return Authentication(verdict.principal, source="apikey")
