"""The named JWT attack table, against the verifier core and through the middleware."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable

import pytest

from bastion.auth import jwt as J
from bastion.auth.jwt import JWTVerifier, inspect_token, revoke_jti
from bastion.stores.memory import MemoryStore
from tests.auth.harness import (
    ATTACKER_KEY,
    EC_KEY,
    NOW,
    RSA_KEY,
    b64,
    claims,
    clock,
    jwt_settings,
    raw_token,
    sign,
)

pytestmark = pytest.mark.anyio


def _hs256_with_public_key() -> str:
    # The classic confusion: HMAC keyed with the server's *public* RSA key.
    header = {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
    public_pem = RSA_KEY.as_pem(private=False)
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _tampered() -> str:
    head, _, sig = sign(claims()).split(".")
    return f"{head}.{b64(json.dumps(claims(sub='mallory', roles=['admin'])).encode())}.{sig}"


def _stripped() -> str:
    head, payload, _ = sign(claims()).split(".")
    return f"{head}.{payload}."


CASES: list[tuple[str, Callable[[], str], str]] = [
    ("jwt-valid-rs256-ok", lambda: sign(claims()), ""),
    ("jwt-valid-es256-ok", lambda: sign(claims(), key=EC_KEY, alg="ES256"), ""),
    ("jwt-leeway-ok", lambda: sign(claims(exp=int(NOW) - 5)), ""),
    (
        "jwt-alg-none",
        lambda: raw_token({"alg": "none", "kid": "rsa-1"}, claims()),
        J.REASON_JWT_ALGORITHM,
    ),
    ("jwt-alg-none-case", lambda: raw_token({"alg": "nOnE"}, claims()), J.REASON_JWT_ALGORITHM),
    ("jwt-hs256-with-rsa-public-key", _hs256_with_public_key, J.REASON_JWT_ALGORITHM),
    (
        "jwt-kid-path-traversal",
        lambda: sign(claims(), kid="../../../../dev/null"),
        J.REASON_JWT_BAD_KID,
    ),
    (
        "jwt-kid-injection",
        lambda: sign(claims(), kid="x' UNION SELECT 'k'--"),
        J.REASON_JWT_BAD_KID,
    ),
    ("jwt-kid-unknown", lambda: sign(claims(), kid="rsa-9"), J.REASON_JWT_UNKNOWN_KEY),
    (
        "jwt-jku-elsewhere",
        lambda: sign(claims(), key=ATTACKER_KEY, jku="https://evil.example/jwks.json"),
        J.REASON_JWT_BAD_SIGNATURE,
    ),
    (
        "jwt-x5u-elsewhere",
        lambda: sign(claims(), key=ATTACKER_KEY, x5u="https://evil.example/cert.pem"),
        J.REASON_JWT_BAD_SIGNATURE,
    ),
    (
        "jwt-embedded-jwk",
        lambda: sign(claims(), key=ATTACKER_KEY, jwk=ATTACKER_KEY.as_dict(private=False)),
        J.REASON_JWT_BAD_SIGNATURE,
    ),
    ("jwt-expired", lambda: sign(claims(exp=int(NOW) - 120)), J.REASON_JWT_EXPIRED),
    ("jwt-not-yet-valid", lambda: sign(claims(nbf=int(NOW) + 600)), J.REASON_JWT_NOT_YET_VALID),
    ("jwt-iat-in-future", lambda: sign(claims(iat=int(NOW) + 600)), J.REASON_JWT_NOT_YET_VALID),
    ("jwt-too-old", lambda: sign(claims(iat=int(NOW) - 3 * 86400)), J.REASON_JWT_TOO_OLD),
    (
        "jwt-wrong-issuer",
        lambda: sign(claims(iss="https://evil.example")),
        J.REASON_JWT_WRONG_ISSUER,
    ),
    ("jwt-wrong-audience", lambda: sign(claims(aud="api://other")), J.REASON_JWT_WRONG_AUDIENCE),
    ("jwt-audience-list-ok", lambda: sign(claims(aud=["x", "api://bank"])), ""),
    ("jwt-missing-exp", lambda: sign(claims(exp=None)), J.REASON_JWT_MISSING_CLAIM),
    ("jwt-tampered-payload", _tampered, J.REASON_JWT_BAD_SIGNATURE),
    ("jwt-stripped-signature", _stripped, J.REASON_JWT_BAD_SIGNATURE),
    ("jwt-oversized", lambda: sign(claims(pad="A" * 9000)), J.REASON_JWT_OVERSIZED),
    (
        "jwt-zip-header",
        lambda: raw_token({"alg": "RS256", "kid": "rsa-1", "zip": "DEF"}, claims(), b"s" * 256),
        J.REASON_JWT_ZIP,
    ),
    (
        "jwt-crit-header",
        lambda: raw_token({"alg": "RS256", "crit": ["b64"], "b64": False}, claims(), b"s" * 256),
        J.REASON_JWT_CRIT,
    ),
    ("jwt-malformed", lambda: "not.a.jwt!", J.REASON_JWT_MALFORMED),
]


@pytest.mark.parametrize(("make", "reason"), [pytest.param(m, r, id=name) for name, m, r in CASES])
async def test_verifier(make: Callable[[], str], reason: str) -> None:
    verifier = JWTVerifier(jwt_settings(), store=MemoryStore(clock=clock), clock=clock)
    verdict = await verifier.verify(make())
    assert verdict.reason == reason
    assert (verdict.principal is not None) == (reason == "")


async def test_jwt_revoked_jti() -> None:
    store = MemoryStore(clock=clock)
    verifier = JWTVerifier(jwt_settings(), store=store, clock=clock)
    token = sign(claims(jti="revoke-me"))
    assert (await verifier.verify(token)).principal is not None
    await revoke_jti(store, "revoke-me", expires_at=NOW + 300, now=NOW)
    assert (await verifier.verify(token)).reason == J.REASON_JWT_REVOKED
    assert (await verifier.verify(sign(claims(jti="other")))).principal is not None


async def test_principal_from_token() -> None:
    verifier = JWTVerifier(jwt_settings(), store=MemoryStore(clock=clock), clock=clock)
    principal = (await verifier.verify(sign(claims()))).principal
    assert principal is not None
    assert (principal.identity, principal.source) == ("alice", "jwt")
    assert principal.roles == {"admin"}
    assert principal.scopes == {"read:x", "write:x"}


def test_oversized_refused_before_decoding() -> None:
    # Not even valid base64: size is checked first, so decoding never starts.
    assert inspect_token("%" * 10_000, 8192).reason == J.REASON_JWT_OVERSIZED


async def test_jwks_url_rotation_refetches_once_per_interval() -> None:
    now = [0.0]
    served = {"keys": [RSA_KEY.as_dict(private=False)]}
    urls: list[str] = []

    async def fetch(url: str) -> bytes:
        urls.append(url)
        return json.dumps(served).encode()

    cache = J.JWKSCache(
        "https://id.example/jwks",
        allowed_algorithms=("RS256", "ES256"),
        ttl_seconds=300,
        min_refresh_seconds=60,
        fetch=fetch,
        clock=lambda: now[0],
    )
    settings = jwt_settings()
    verifier = JWTVerifier(settings, store=MemoryStore(clock=clock), keys=cache, clock=clock)
    assert (await verifier.verify(sign(claims()))).principal is not None
    assert len(urls) == 1
    # The issuer rotates: a token with the new kid triggers one refetch.
    served = {"keys": [RSA_KEY.as_dict(private=False), EC_KEY.as_dict(private=False)]}
    now[0] = 61
    assert (await verifier.verify(sign(claims(), key=EC_KEY, alg="ES256"))).principal
    assert len(urls) == 2
    # A flood of unknown kids within the interval costs no further fetch.
    for n in range(5):
        verdict = await verifier.verify(sign(claims(), kid=f"random-{n}"))
        assert verdict.reason == J.REASON_JWT_UNKNOWN_KEY
    assert len(urls) == 2


async def test_jwks_fetch_failure_keeps_old_keys() -> None:
    now = [0.0]
    fail = [False]

    async def fetch(url: str) -> bytes:
        if fail[0]:
            raise OSError("down")
        return json.dumps({"keys": [RSA_KEY.as_dict(private=False)]}).encode()

    cache = J.JWKSCache(
        "https://id.example/jwks",
        allowed_algorithms=("RS256",),
        ttl_seconds=300,
        min_refresh_seconds=60,
        fetch=fetch,
        clock=lambda: now[0],
    )
    assert await cache.find("rsa-1") is not None
    fail[0], now[0] = True, 1000
    assert await cache.find("rsa-1") is not None


def test_key_algorithm_is_fixed_per_key() -> None:
    assert J.key_algorithm({"kty": "RSA"}, ("RS256",)) == "RS256"
    assert J.key_algorithm({"kty": "RSA", "alg": "PS256"}, ("RS256",)) is None
    assert J.key_algorithm({"kty": "oct"}, ("RS256",)) is None  # HS needs opting in
    assert J.key_algorithm({"kty": "RSA", "use": "enc"}, ("RS256",)) is None


async def test_jwks_lookups_during_the_first_fetch_wait_for_it() -> None:
    release = asyncio.Event()
    fetches = [0]

    async def slow_fetch(url: str) -> bytes:
        fetches[0] += 1
        await release.wait()
        return json.dumps({"keys": [RSA_KEY.as_dict(private=False)]}).encode()

    cache = J.JWKSCache(
        "https://id.example/jwks",
        allowed_algorithms=("RS256",),
        ttl_seconds=300,
        min_refresh_seconds=60,
        fetch=slow_fetch,
        clock=lambda: 0.0,
    )
    first = asyncio.create_task(cache.find("rsa-1"))
    second = asyncio.create_task(cache.find("rsa-1"))
    await asyncio.sleep(0)  # both lookups are now waiting on the one fetch
    release.set()
    found = await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
    assert all(key is not None for key in found)
    assert fetches[0] == 1
