"""API keys: format, keyed hash at rest, expiry, revocation, the attack table."""

from __future__ import annotations

import pytest

from bastion.auth import apikeys as A
from bastion.auth.apikeys import APIKeyStore, create_api_key, parse_api_key
from bastion.auth.settings import APIKeySettings
from bastion.stores.memory import MemoryStore
from tests.auth.harness import NOW, PEPPER

pytestmark = pytest.mark.anyio
SETTINGS = APIKeySettings(peppers=(PEPPER,))


async def _keys() -> tuple[APIKeyStore, list[float], str]:
    now = [NOW]
    store = MemoryStore(clock=lambda: now[0])
    keys = APIKeyStore(store, SETTINGS, clock=lambda: now[0])
    key = await keys.create("svc", scopes=["read:x"], ttl_seconds=3600)
    return keys, now, key


async def test_valid_key_and_nothing_secret_at_rest() -> None:
    keys, _, key = await _keys()
    prefix, key_id, secret = key.split("_", 2)
    assert prefix == "bst"
    verdict = await keys.verify(key)
    assert verdict.principal is not None
    assert verdict.principal.scopes == {"read:x"}
    raw = await keys.store.get(A.STORE_PREFIX + key_id)
    assert raw is not None
    assert secret.encode() not in raw


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param("wrong-secret", id=A.REASON_APIKEY_WRONG_SECRET),
        pytest.param("valid-prefix-wrong-secret", id="apikey-valid-prefix-wrong-secret"),
        pytest.param("expired", id=A.REASON_APIKEY_EXPIRED),
        pytest.param("revoked", id=A.REASON_APIKEY_REVOKED),
        pytest.param("unknown-id", id=A.REASON_APIKEY_UNKNOWN),
        pytest.param("malformed", id=A.REASON_APIKEY_MALFORMED),
        pytest.param("other-prefix", id="apikey-other-prefix"),
    ],
)
async def test_attacks(attack: str) -> None:
    keys, now, key = await _keys()
    prefix, key_id, secret = key.split("_", 2)
    presented, reason = key, ""
    if attack in ("wrong-secret", "valid-prefix-wrong-secret"):
        presented, reason = f"{prefix}_{key_id}_{'A' * 43}", A.REASON_APIKEY_WRONG_SECRET
    elif attack == "expired":
        now[0] += 3601
        reason = A.REASON_APIKEY_EXPIRED
    elif attack == "revoked":
        assert await keys.revoke(key_id)
        reason = A.REASON_APIKEY_REVOKED
    elif attack == "unknown-id":
        presented, reason = f"{prefix}_{'0' * 16}_{secret}", A.REASON_APIKEY_UNKNOWN
    elif attack == "malformed":
        presented, reason = f"{prefix}_../../x_{secret}", A.REASON_APIKEY_MALFORMED
    elif attack == "other-prefix":
        presented, reason = f"ghp_{key_id}_{secret}", A.REASON_APIKEY_MALFORMED
    verdict = await keys.verify(presented)
    assert (verdict.principal, verdict.reason) == (None, reason)


async def test_pepper_rotation_verifies_old_keys() -> None:
    store = MemoryStore()
    key = await create_api_key(store, SETTINGS, "svc")
    rotated = APIKeySettings(peppers=("n" * 16 + "EWPEPPERabcdefghijklmn", PEPPER))
    assert (await APIKeyStore(store, rotated).verify(key)).principal is not None


def test_parse() -> None:
    assert parse_api_key("bst_0123456789abcdef_" + "a" * 43, "bst") is not None
    assert parse_api_key("bst_0123456789abcdef_" + "a" * 42, "bst") is None
