"""Own-issued tokens: short-lived access tokens, rotating refresh tokens, reuse."""

from __future__ import annotations

import pytest

from bastion.auth.jwt import (
    REASON_REFRESH_INVALID,
    REASON_REFRESH_REUSE,
    JWTVerifier,
    TokenIssuer,
)
from bastion.events import EventEmitter
from bastion.stores.memory import MemoryStore
from tests.auth.harness import AUDIENCE, EC_KEY, ISSUER, clock, jwt_settings, public_jwks
from tests.conftest import RecordingSink

pytestmark = pytest.mark.anyio


def _issuer(store: MemoryStore, events: EventEmitter) -> TokenIssuer:
    return TokenIssuer(
        key=EC_KEY,
        algorithm="ES256",
        issuer=ISSUER,
        audience=AUDIENCE,
        store=store,
        events=events,
        clock=clock,
    )


async def test_access_token_verifies(events: EventEmitter) -> None:
    store = MemoryStore(clock=clock)
    pair = await _issuer(store, events).login("alice", roles=["ops"], scopes=["read:x"])
    verifier = JWTVerifier(jwt_settings(jwks=public_jwks(EC_KEY)), store=store, clock=clock)
    principal = (await verifier.verify(pair.access_token)).principal
    assert principal is not None
    assert principal.roles == {"ops"}


async def test_rotation_then_refresh_token_reuse(events: EventEmitter, sink: RecordingSink) -> None:
    store = MemoryStore(clock=clock)
    issuer = _issuer(store, events)
    first = await issuer.login("alice")
    second = (await issuer.refresh(first.refresh_token)).tokens
    assert second is not None
    assert second.refresh_token != first.refresh_token
    # The thief replays the first token: reuse detected, and the whole family dies,
    # including the newest token the legitimate client holds.
    replay = await issuer.refresh(first.refresh_token)
    assert (replay.tokens, replay.reason) == (None, REASON_REFRESH_REUSE)
    assert (await issuer.refresh(second.refresh_token)).reason == REASON_REFRESH_INVALID
    assert "authn_token_reuse" in [r["kind"] for r in sink.records]


async def test_unknown_refresh_token(events: EventEmitter) -> None:
    issuer = _issuer(MemoryStore(clock=clock), events)
    assert (await issuer.refresh("made.up")).reason == REASON_REFRESH_INVALID
