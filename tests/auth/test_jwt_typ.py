"""The token's kind: `typ` must be `at+jwt` (RFC 9068 section 4), so an ID token of
the same issuer never passes as an access token, even when `audience` is the OIDC
client id its `aud` names.

Each refusal is set beside the legitimate token that must still pass: Bastion's own
`TokenIssuer` tokens, and `at+jwt` in every spelling RFC 7515 section 4.1.9 allows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pydantic import ValidationError
from typer.testing import CliRunner

from bastion.auth import jwt as J
from bastion.auth.jwt import JWTVerifier, TokenIssuer
from bastion.auth.middleware import AuthenticationMiddleware
from bastion.auth.settings import DEFAULT_JWKS_MAX_STALE_SECONDS
from bastion.cli import app
from bastion.events import EventEmitter
from bastion.sections import opt_outs
from bastion.stores.memory import MemoryStore
from tests.auth.apps import call, make_protected_app
from tests.auth.harness import (
    ATTACKER_KEY,
    AUDIENCE,
    EC_KEY,
    ISSUER,
    NOW,
    RSA_KEY,
    auth_settings,
    b64,
    claims,
    clock,
    jwt_settings,
    sign,
)
from tests.conftest import RecordingSink

pytestmark = pytest.mark.anyio


def id_token_claims(**overrides: Any) -> dict[str, Any]:
    """An OIDC ID token's claims (OIDC Core section 2) from the API's own issuer, its
    `aud` the client id, which this deployment also made the API's audience."""
    id_token: dict[str, Any] = {
        "jti": None,
        "roles": None,
        "scope": None,
        "nonce": "n-0S6_WzA2Mj",
        "at_hash": "77QmUPtjPfzWtF2AnpK9RQ",
        "auth_time": int(NOW) - 20,
    }
    return claims(**(id_token | overrides))


def own_issuer_token() -> str:
    issuer = TokenIssuer(
        key=EC_KEY,
        algorithm="ES256",
        issuer=ISSUER,
        audience=AUDIENCE,
        store=MemoryStore(clock=clock),
        clock=clock,
    )
    return issuer.issue_access_token("alice", roles=["admin"])


def signed_by_hand(header: dict[str, Any]) -> str:
    """A token validly signed with the issuer's RSA key, with a header joserfc would
    refuse to write (a `typ` that is not a string)."""
    head = {"alg": "RS256", "kid": RSA_KEY.kid, **header}
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims()).encode())}"
    private = RSA_KEY.private_key
    assert private is not None
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


Make = Callable[[], str]

# Default settings: `required_typ` is `at+jwt`.
TYPED: list[Any] = [
    pytest.param(lambda: sign(claims()), "", id="jwt-at-jwt-ok"),
    pytest.param(own_issuer_token, "", id="jwt-own-issuer-token-ok"),
    pytest.param(lambda: sign(claims(), typ="application/at+jwt"), "", id="jwt-typ-prefix-ok"),
    pytest.param(lambda: sign(claims(), typ="AT+JWT"), "", id="jwt-typ-upper-case-ok"),
    pytest.param(lambda: sign(claims(), typ="Application/At+Jwt"), "", id="jwt-typ-mixed-ok"),
    pytest.param(
        lambda: sign(id_token_claims(), typ="JWT"),
        J.REASON_JWT_TYP_WRONG,
        id="jwt-id-token-as-access-token",
    ),
    pytest.param(
        lambda: sign(id_token_claims(nonce=None, at_hash=None), typ="JWT"),
        J.REASON_JWT_TYP_WRONG,
        id="jwt-id-token-without-nonce-as-access-token",
    ),
    pytest.param(
        lambda: sign(id_token_claims(), typ=None),
        J.REASON_JWT_TYP_MISSING,
        id="jwt-untyped-id-token-as-access-token",
    ),
    pytest.param(lambda: sign(claims(), typ=None), J.REASON_JWT_TYP_MISSING, id="jwt-typ-missing"),
    pytest.param(lambda: sign(claims(), typ="JWT"), J.REASON_JWT_TYP_WRONG, id="jwt-typ-wrong"),
    pytest.param(
        lambda: sign(claims(), typ="application/jwt"),
        J.REASON_JWT_TYP_WRONG,
        id="jwt-typ-generic-with-prefix",
    ),
    pytest.param(
        lambda: sign(claims(), typ="logout+jwt"), J.REASON_JWT_TYP_WRONG, id="jwt-typ-logout-token"
    ),
    pytest.param(
        lambda: sign(claims(), typ="secevent+jwt"),
        J.REASON_JWT_TYP_WRONG,
        id="jwt-typ-security-event-token",
    ),
    pytest.param(
        lambda: sign(claims(), typ="text/at+jwt"),
        J.REASON_JWT_TYP_WRONG,
        id="jwt-typ-other-top-level-type",
    ),
    pytest.param(
        lambda: sign(claims(), typ="application/application/at+jwt"),
        J.REASON_JWT_TYP_WRONG,
        id="jwt-typ-prefix-twice",
    ),
    pytest.param(
        lambda: sign(claims(), typ="at+jwt; charset=utf-8"),
        J.REASON_JWT_TYP_WRONG,
        id="jwt-typ-with-parameter",
    ),
    pytest.param(
        lambda: sign(claims(), typ=" at+jwt"), J.REASON_JWT_TYP_WRONG, id="jwt-typ-padded"
    ),
    pytest.param(
        lambda: sign(claims(), typ="at+jwt\u0131"), J.REASON_JWT_TYP_WRONG, id="jwt-typ-unicode"
    ),
    pytest.param(
        lambda: signed_by_hand({"typ": ["at+jwt"]}),
        J.REASON_JWT_TYP_WRONG,
        id="jwt-typ-not-a-string",
    ),
    pytest.param(
        lambda: signed_by_hand({"typ": None}), J.REASON_JWT_TYP_MISSING, id="jwt-typ-null"
    ),
    pytest.param(
        lambda: sign(claims(), key=ATTACKER_KEY),
        J.REASON_JWT_BAD_SIGNATURE,
        id="jwt-typed-but-forged",
    ),
]


@pytest.mark.parametrize(("make", "reason"), TYPED)
async def test_typ_required_by_default(make: Make, reason: str) -> None:
    verifier = JWTVerifier(jwt_settings(), store=MemoryStore(clock=clock), clock=clock)
    verdict = await verifier.verify(make())
    assert verdict.reason == reason
    assert (verdict.principal is not None) == (reason == "")


# `insecure_allow_untyped_tokens`: no `typ` or `JWT` passes, unless the claims are an
# ID token's; another declared kind is still refused.
UNTYPED: list[Any] = [
    pytest.param(lambda: sign(claims(), typ=None), "", id="jwt-untyped-allowed-ok"),
    pytest.param(lambda: sign(claims(), typ="JWT"), "", id="jwt-typ-jwt-allowed-ok"),
    pytest.param(lambda: sign(claims(), typ="jwt"), "", id="jwt-typ-jwt-lower-case-allowed-ok"),
    pytest.param(lambda: sign(claims()), "", id="jwt-at-jwt-untyped-allowed-ok"),
    pytest.param(
        # An issuer that types its access tokens decides what they carry.
        lambda: sign(claims(nonce="n-1")),
        "",
        id="jwt-at-jwt-with-nonce-ok",
    ),
    pytest.param(
        lambda: sign(id_token_claims(), typ="JWT"),
        J.REASON_JWT_ID_TOKEN,
        id="jwt-id-token-as-access-token-untyped-allowed",
    ),
    pytest.param(
        lambda: sign(id_token_claims(at_hash=None), typ=None),
        J.REASON_JWT_ID_TOKEN,
        id="jwt-id-token-nonce-untyped-allowed",
    ),
    pytest.param(
        lambda: sign(id_token_claims(nonce=None), typ=None),
        J.REASON_JWT_ID_TOKEN,
        id="jwt-id-token-at-hash-untyped-allowed",
    ),
    pytest.param(
        lambda: sign(
            id_token_claims(nonce=None, at_hash=None, c_hash="LDktKdoQak3Pk0cnX"), typ=None
        ),
        J.REASON_JWT_ID_TOKEN,
        id="jwt-id-token-c-hash-untyped-allowed",
    ),
    pytest.param(
        lambda: sign(
            id_token_claims(nonce=None, at_hash=None, s_hash="WZRHGrsBESr8wYFZ9"), typ=None
        ),
        J.REASON_JWT_ID_TOKEN,
        id="jwt-id-token-s-hash-untyped-allowed",
    ),
    pytest.param(
        lambda: sign(claims(), typ="logout+jwt"),
        J.REASON_JWT_TYP_WRONG,
        id="jwt-typ-logout-token-untyped-allowed",
    ),
    pytest.param(
        lambda: sign(claims(), typ="dpop+jwt"),
        J.REASON_JWT_TYP_WRONG,
        id="jwt-typ-dpop-proof-untyped-allowed",
    ),
]


@pytest.mark.parametrize(("make", "reason"), UNTYPED)
async def test_untyped_tokens_allowed(make: Make, reason: str) -> None:
    settings = jwt_settings(insecure_allow_untyped_tokens=True)
    verifier = JWTVerifier(settings, store=MemoryStore(clock=clock), clock=clock)
    verdict = await verifier.verify(make())
    assert verdict.reason == reason
    assert (verdict.principal is not None) == (reason == "")


async def test_required_typ_of_another_issuer() -> None:
    # An issuer with its own access token type: that type, and only it.
    settings = jwt_settings(required_typ="application/vnd.idp.access+jwt")
    verifier = JWTVerifier(settings, store=MemoryStore(clock=clock), clock=clock)
    ok = await verifier.verify(sign(claims(), typ="vnd.idp.access+jwt"))
    assert ok.principal is not None
    assert (await verifier.verify(sign(claims()))).reason == J.REASON_JWT_TYP_WRONG


@pytest.mark.parametrize(
    ("typ", "status", "reason"),
    [
        pytest.param("at+jwt", 200, None, id="jwt-at-jwt-through-middleware-ok"),
        pytest.param(
            "JWT", 401, J.REASON_JWT_TYP_WRONG, id="jwt-id-token-as-access-token-middleware"
        ),
    ],
)
async def test_through_the_middleware(
    typ: str, status: int, reason: str | None, events: EventEmitter, sink: RecordingSink
) -> None:
    hits: list[str] = []
    app = AuthenticationMiddleware(
        make_protected_app("raw", hits), auth_settings(), events=events, clock=clock
    )
    token = sign(id_token_claims() if reason else claims(), typ=typ)
    got, headers, body = await call(app, "/admin", [(b"authorization", f"Bearer {token}".encode())])
    assert got == status
    if reason is None:
        assert (body, hits) == (b"jwt:alice", ["/admin"])
        return
    # One generic answer outside; the precise reason only in the event stream.
    assert headers[b"www-authenticate"] == b'Bearer realm="bastion", error="invalid_token"'
    assert b"typ" not in body
    assert hits == []
    assert sink.reasons() == [reason]
    assert sink.records[0]["kind"] == "authn_login_fail"


# --- the settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        pytest.param("at+jwt", "at+jwt", id="typ-setting-plain-ok"),
        pytest.param("Application/AT+JWT", "at+jwt", id="typ-setting-prefix-and-case-ok"),
        pytest.param("vnd.idp.access+jwt", "vnd.idp.access+jwt", id="typ-setting-vendor-ok"),
    ],
)
def test_required_typ_is_stored_as_compared(given: str, stored: str) -> None:
    assert jwt_settings(required_typ=given).required_typ == stored


@pytest.mark.parametrize(
    "given",
    [
        pytest.param("JWT", id="typ-setting-generic-jwt"),
        pytest.param("application/jwt", id="typ-setting-generic-jwt-prefixed"),
        pytest.param("", id="typ-setting-empty"),
        pytest.param("text/at+jwt", id="typ-setting-other-top-level"),
        pytest.param("at+jwt ", id="typ-setting-space"),
        pytest.param("at+jwt;q=1", id="typ-setting-parameter"),
    ],
)
def test_required_typ_refused(given: str) -> None:
    with pytest.raises(ValidationError, match="required_typ"):
        jwt_settings(required_typ=given)


def test_defaults_and_opt_out_are_visible() -> None:
    settings = jwt_settings()
    assert (settings.required_typ, settings.insecure_allow_untyped_tokens) == ("at+jwt", False)
    assert opt_outs(settings) == []
    weakened = jwt_settings(insecure_allow_untyped_tokens=True)
    assert opt_outs(weakened) == ["insecure_allow_untyped_tokens"]


def test_bastion_config_shows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BASTION_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BASTION_AUTH__JWT__ISSUER", ISSUER)
    monkeypatch.setenv("BASTION_AUTH__JWT__AUDIENCE", AUDIENCE)
    monkeypatch.setenv("BASTION_AUTH__JWT__JWKS_URL", "https://id.example/jwks")
    monkeypatch.setenv("BASTION_AUTH__JWT__INSECURE_ALLOW_UNTYPED_TOKENS", "true")
    result = CliRunner().invoke(app, ["config", "--mode", "development"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    shown = data["settings"]["auth"]["jwt"]
    assert shown["required_typ"] == "at+jwt"
    assert shown["insecure_allow_untyped_tokens"] is True
    assert shown["jwks_max_stale_seconds"] == DEFAULT_JWKS_MAX_STALE_SECONDS
    assert "auth.jwt.insecure_allow_untyped_tokens" in data["opt_outs"]
