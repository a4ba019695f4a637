"""Authentication and authorization: principals, JWT, API keys, passwords, policy.

The names here import no optional dependency. `bastion.auth.jwt` (joserfc),
`bastion.auth.passwords` (argon2-cffi) and `bastion.auth.fastapi` (FastAPI) are
imported from their modules, and need the `auth` extra.
"""

from __future__ import annotations

from bastion.auth.apikeys import APIKeyStore, create_api_key
from bastion.auth.middleware import AuthenticationMiddleware
from bastion.auth.policy import AuthorizationMiddleware, Requirement, requires_bastion
from bastion.auth.principal import (
    AnonymousUser,
    AuthCredentials,
    AuthenticatedUser,
    Principal,
    get_principal,
)
from bastion.auth.settings import (
    APIKeySettings,
    AuthSettings,
    JWTSettings,
    PasswordSettings,
    PolicySettings,
)

__all__ = [
    "APIKeySettings",
    "APIKeyStore",
    "AnonymousUser",
    "AuthCredentials",
    "AuthSettings",
    "AuthenticatedUser",
    "AuthenticationMiddleware",
    "AuthorizationMiddleware",
    "JWTSettings",
    "PasswordSettings",
    "PolicySettings",
    "Principal",
    "Requirement",
    "create_api_key",
    "get_principal",
    "requires_bastion",
]
