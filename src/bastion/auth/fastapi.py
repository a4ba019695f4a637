"""FastAPI dependencies that read the principal and appear in the OpenAPI document.

`BastionPrincipal` is a `Security` dependency: it declares the bearer (JWT) and API
key schemes as sub-dependencies, so `/openapi.json` lists them under
`components.securitySchemes` and the interactive docs offer them, but it never
parses a credential itself. It reads the one principal the authentication layer
resolved and applies the same `Requirement` rules as the route policy; scopes come
from `Security(..., scopes=[...])`.

    principal_of = BastionPrincipal()

    @app.get("/reports")
    async def reports(p: Principal = Security(principal_of, scopes=["reports:read"])): ...

Not covered: authentication (done once, by the middleware, before the app runs).
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from bastion.auth.policy import Requirement, challenge_headers, decide_all
from bastion.auth.principal import Principal, get_principal
from bastion.events import KIND_AUTHZ_FAIL, EventEmitter
from bastion.responses import Refuser

BEARER_SCHEME = "BastionBearer"
API_KEY_SCHEME = "BastionApiKey"

_bearer = HTTPBearer(auto_error=False, bearerFormat="JWT", scheme_name=BEARER_SCHEME)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name=API_KEY_SCHEME)


class BastionPrincipal:
    """A dependency returning the `Principal`, or raising 401/403."""

    def __init__(
        self,
        *,
        roles: Iterable[str] = (),
        events: EventEmitter | None = None,
        realm: str = "bastion",
    ) -> None:
        self.roles = frozenset(roles)
        self.realm = realm
        self.refuser = Refuser("authorization", events)

    async def __call__(
        self,
        request: Request,
        security_scopes: SecurityScopes,
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
        api_key: str | None = Depends(_api_key),
    ) -> Principal:
        # `bearer` and `api_key` exist for the OpenAPI document only: the credential
        # was already verified (or refused) by the authentication layer.
        principal = get_principal(request.scope)
        requirements = Requirement.of(roles=self.roles, scopes=security_scopes.scopes)
        decision = decide_all(requirements, principal)
        if decision.status or principal is None:
            status = decision.status or 401
            self.refuser.event(
                request.scope, kind=KIND_AUTHZ_FAIL, reason=decision.reason, status=status
            )
            headers = {
                k.decode(): v.decode()
                for k, v in challenge_headers(decision, principal, self.realm)
            }
            detail = "Not authenticated" if status == 401 else "Forbidden"
            raise HTTPException(status, detail=detail, headers=headers or None)
        return principal
