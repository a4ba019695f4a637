"""Keys, token minting (honest and forged) and settings shared by the auth tests."""

from __future__ import annotations

import base64
import json
from typing import Any

from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, RSAKey
from pydantic import SecretStr

from bastion.auth.settings import APIKeySettings, AuthSettings, JWTSettings
from tests.support.secret_watch import never_logged

NOW = 1_700_000_000.0
ISSUER = "https://id.example"
AUDIENCE = "api://bank"
PEPPER = SecretStr(never_logged("p" * 8 + "e" * 8 + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"))

RSA_KEY = RSAKey.generate_key(2048, {"kid": "rsa-1"}, private=True)
EC_KEY = ECKey.generate_key("P-256", {"kid": "ec-1"}, private=True)
ATTACKER_KEY = RSAKey.generate_key(2048, {"kid": "rsa-1"}, private=True)
# The private scalars of the signing keys must never reach a log line.
for _key in (RSA_KEY, EC_KEY):
    never_logged(str(_key.as_dict(private=True)["d"]))


def public_jwks(*keys: Any) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def clock() -> float:
    return NOW


def jwt_settings(**overrides: Any) -> JWTSettings:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks": public_jwks(RSA_KEY, EC_KEY),
    }
    return JWTSettings(**(values | overrides))


def auth_settings(**overrides: Any) -> AuthSettings:
    values: dict[str, Any] = {
        "jwt": jwt_settings(),
        "api_keys": APIKeySettings(peppers=(PEPPER,)),
    }
    return AuthSettings(**(values | overrides))


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 300,
        "jti": "token-1",
        "roles": ["admin"],
        "scope": "read:x write:x",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], *, key: Any = RSA_KEY, alg: str = "RS256", **header: Any) -> str:
    """An honest access token (`typ: at+jwt`, RFC 9068); a header member given as
    None is left out (`typ=None`: an untyped token)."""
    head: dict[str, Any] = {"alg": alg, "kid": key.kid, "typ": "at+jwt", **header}
    head = {name: value for name, value in head.items() if value is not None}
    return jose_jwt.encode(head, payload, key, algorithms=[alg], default_type=None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, as an attacker would."""
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
    )
