"""The verified-token memo of `JWTVerifier`: a remembered token is never trusted for
more than its signature. Revocation, the clock and the key set are asked on every
use, as for a token seen for the first time.

Each attack uses the memo after a first, honest verification of the same token,
and is set next to the legitimate use it must not break.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bastion.auth import jwt as J
from bastion.auth.jwt import (
    VERIFIED_MEMO_ENTRIES,
    JWTVerifier,
    StaticKeys,
    build_key_ring,
    revoke_jti,
)
from bastion.stores.memory import MemoryStore
from tests.auth.harness import (
    ATTACKER_KEY,
    EC_KEY,
    NOW,
    RSA_KEY,
    claims,
    jwt_settings,
    public_jwks,
    sign,
)

pytestmark = pytest.mark.anyio

ALLOWED = ("RS256", "ES256")
LEEWAY = jwt_settings().leeway_seconds


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _setup() -> tuple[JWTVerifier, MemoryStore, StaticKeys, Clock]:
    clock = Clock()
    store = MemoryStore(clock=clock)
    keys = StaticKeys(build_key_ring(public_jwks(RSA_KEY, EC_KEY), ALLOWED))
    verifier = JWTVerifier(jwt_settings(), store=store, keys=keys, clock=clock)
    return verifier, store, keys, clock


async def _revoke(store: MemoryStore, keys: StaticKeys, clock: Clock) -> None:
    await revoke_jti(store, "token-1", expires_at=NOW + 300, now=clock.now)


async def _expire(store: MemoryStore, keys: StaticKeys, clock: Clock) -> None:
    clock.now = NOW + 300 + LEEWAY + 1  # past `exp` and its leeway


async def _rotate_to_attacker_key(store: MemoryStore, keys: StaticKeys, clock: Clock) -> None:
    # The issuer's key is gone; a key with the same `kid` (not the one that signed
    # the token) replaces it. The remembered signature must not carry over.
    keys.ring = build_key_ring(public_jwks(ATTACKER_KEY, EC_KEY), ALLOWED)


async def _drop_key(store: MemoryStore, keys: StaticKeys, clock: Clock) -> None:
    keys.ring = build_key_ring(public_jwks(EC_KEY), ALLOWED)


async def _nothing(store: MemoryStore, keys: StaticKeys, clock: Clock) -> None:
    return None


async def _reload_same_keys(store: MemoryStore, keys: StaticKeys, clock: Clock) -> None:
    # A refetched key set with the same keys: verified again, and still accepted.
    keys.ring = build_key_ring(public_jwks(RSA_KEY, EC_KEY), ALLOWED)


Change = Callable[[MemoryStore, StaticKeys, Clock], Any]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(_revoke, J.REASON_JWT_REVOKED, id="jwt-memo-revoked-after-first-use"),
        pytest.param(_expire, J.REASON_JWT_EXPIRED, id="jwt-memo-expired-after-first-use"),
        pytest.param(
            _rotate_to_attacker_key, J.REASON_JWT_BAD_SIGNATURE, id="jwt-memo-key-replaced"
        ),
        pytest.param(_drop_key, J.REASON_JWT_UNKNOWN_KEY, id="jwt-memo-key-removed"),
        pytest.param(_nothing, "", id="legit-same-token-again"),
        pytest.param(_reload_same_keys, "", id="legit-key-set-reloaded"),
    ],
)
async def test_remembered_token_is_checked_again(change: Change, reason: str) -> None:
    verifier, store, keys, clock = _setup()
    token = sign(claims())
    first = await verifier.verify(token)
    assert first.reason == ""
    await change(store, keys, clock)
    again = await verifier.verify(token)
    assert again.reason == reason
    assert (again.principal is not None) == (reason == "")
    # Same answer as a verifier that never saw the token.
    fresh = JWTVerifier(jwt_settings(), store=store, keys=keys, clock=clock)
    assert (await fresh.verify(token)).reason == reason


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda c: c["roles"].append("root"), id="jwt-memo-claims-edited-in-place"),
        pytest.param(lambda c: c.update(sub="mallory"), id="jwt-memo-claims-replaced"),
    ],
)
async def test_each_use_gets_its_own_claims(edit: Callable[[dict[str, Any]], None]) -> None:
    verifier, _, _, _ = _setup()
    token = sign(claims())
    for _ in range(2):  # edit the claims of a first use, then of a remembered one
        verdict = await verifier.verify(token)
        assert verdict.claims is not None
        edit(verdict.claims)  # type: ignore[arg-type]  # a dict, edited as an app might
        after = await verifier.verify(token)
        assert after.principal is not None
        assert (after.principal.identity, after.principal.roles) == ("alice", frozenset({"admin"}))


async def test_an_expired_token_is_forgotten_and_the_memo_is_bounded() -> None:
    verifier, _, _, clock = _setup()
    token = sign(claims())
    await verifier.verify(token)
    clock.now = NOW + 300 + LEEWAY + 1
    assert (await verifier.verify(token)).reason == J.REASON_JWT_EXPIRED
    assert token not in verifier._verified  # internal: the entry went with the token
    clock.now = NOW
    for n in range(VERIFIED_MEMO_ENTRIES + 20):
        assert (await verifier.verify(sign(claims(jti=f"t-{n}")))).reason == ""
    assert len(verifier._verified) == VERIFIED_MEMO_ENTRIES


async def test_refused_tokens_are_not_remembered() -> None:
    verifier, _, _, _ = _setup()
    forged = sign(claims(), key=ATTACKER_KEY)
    assert (await verifier.verify(forged)).reason == J.REASON_JWT_BAD_SIGNATURE
    assert (
        await verifier.verify(sign(claims(exp=int(NOW) - LEEWAY - 1)))
    ).reason == J.REASON_JWT_EXPIRED
    assert verifier._verified == {}
