"""`bastion keys new --kind jwt`: a JWK set that bastion.auth.jwt accepts."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet
from typer.testing import CliRunner

from bastion.auth.jwt import JWTVerifier
from bastion.auth.settings import JWTSettings
from bastion.cli import app
from bastion.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def new_jwt_key(*args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    result = CliRunner().invoke(app, ["keys", "new", "--kind", "jwt", *args])
    assert result.exit_code == 0, result.output
    _notes, brace, public = result.stderr.partition("{")
    return json.loads(result.stdout), json.loads(brace + public)


def test_jwt_output_says_which_set_is_which() -> None:
    result = CliRunner().invoke(app, ["keys", "new", "--kind", "jwt"])
    notes = result.stderr.partition("{")[0]
    assert "PRIVATE JWK set" in notes
    assert "never put it in auth.jwt.jwks" in notes
    assert "PUBLIC JWK set, for auth.jwt.jwks" in notes


def test_only_the_public_set_goes_in_auth_jwt_jwks() -> None:
    from bastion.exceptions import ConfigurationError

    private_set, public_set = new_jwt_key()
    JWTSettings(issuer="https://id.example", audience="api", jwks=public_set)
    with pytest.raises(ConfigurationError, match="private member 'd'") as caught:
        JWTSettings(issuer="https://id.example", audience="api", jwks=private_set)
    assert private_set["keys"][0]["d"] not in str(caught.value)


@pytest.mark.parametrize(
    ("alg", "kty"),
    [("Ed25519", "OKP"), ("ES256", "EC"), ("RS256", "RSA"), ("PS256", "RSA")],
)
async def test_jwt_key_signs_tokens_the_verifier_accepts(alg: str, kty: str) -> None:
    private_set, public_set = new_jwt_key("--alg", alg)
    (private,) = private_set["keys"]
    (public,) = public_set["keys"]
    assert (private["kty"], private["alg"], private["use"]) == (kty, alg, "sig")
    assert private["kid"] == public["kid"]
    assert not PRIVATE_MEMBERS & set(public)
    assert PRIVATE_MEMBERS & set(private)

    key = KeySet.import_key_set({"keys": [private]}).keys[0]
    now = int(time.time())
    claims = {"iss": "https://id.example", "aud": "api", "sub": "alice", "iat": now}
    token = jose_jwt.encode(
        {"alg": alg, "kid": private["kid"], "typ": "at+jwt"},
        claims | {"exp": now + 60},
        key,
        algorithms=[alg],
    )
    settings = JWTSettings(issuer="https://id.example", audience="api", jwks=public_set)
    verdict = await JWTVerifier(settings, store=MemoryStore()).verify(token)
    assert verdict.reason == ""
    assert verdict.principal is not None
    assert verdict.principal.identity == "alice"


def test_jwt_default_is_ed25519_not_eddsa() -> None:
    private_set, _ = new_jwt_key()
    assert private_set["keys"][0]["alg"] == "Ed25519"
    assert private_set["keys"][0]["crv"] == "Ed25519"


def test_public_flag_prints_only_the_public_set() -> None:
    result = CliRunner().invoke(app, ["keys", "new", "--kind", "jwt", "--public"])
    assert result.exit_code == 0
    assert result.stderr == ""
    (public,) = json.loads(result.stdout)["keys"]
    assert not PRIVATE_MEMBERS & set(public)


def test_each_run_makes_a_new_key() -> None:
    first, _ = new_jwt_key()
    second, _ = new_jwt_key()
    assert first["keys"][0]["kid"] != second["keys"][0]["kid"]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--kind", "jwt", "--alg", "EdDSA"], id="polymorphic-eddsa"),
        pytest.param(["--kind", "jwt", "--alg", "HS256"], id="symmetric"),
        pytest.param(["--kind", "jwt", "--alg", "none"], id="none"),
        pytest.param(["--alg", "ES256"], id="alg-without-jwt"),
        pytest.param(["--kind", "aes", "--public"], id="public-without-jwt"),
        pytest.param(["--kind", "rsa"], id="unknown-kind"),
    ],
)
def test_bad_key_requests_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["keys", "new", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
