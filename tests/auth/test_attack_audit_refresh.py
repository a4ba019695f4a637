"""Refresh tokens the client controls entirely, including text with no UTF-8 form."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bastion.auth.jwt import REASON_REFRESH_INVALID, TokenIssuer
from bastion.events import EventEmitter
from bastion.stores.memory import MemoryStore
from tests.auth.harness import AUDIENCE, EC_KEY, ISSUER, clock

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda token: token, id="refresh-ok"),
        pytest.param(lambda token: "\ud800", id="refresh-lone-surrogate"),
        pytest.param(lambda token: token + "\udfff", id="refresh-trailing-surrogate"),
        pytest.param(lambda token: token[:-1], id="refresh-truncated"),
    ],
)
async def test_refresh_token_shapes(make: Callable[[str], str], events: EventEmitter) -> None:
    issuer = TokenIssuer(
        key=EC_KEY,
        algorithm="ES256",
        issuer=ISSUER,
        audience=AUDIENCE,
        store=MemoryStore(clock=clock),
        events=events,
        clock=clock,
    )
    pair = await issuer.login("alice")
    presented = make(pair.refresh_token)
    verdict = await issuer.refresh(presented)
    if presented == pair.refresh_token:
        assert verdict.tokens is not None
    else:
        # A refresh token that is not ours: invalid, never a server error.
        assert (verdict.tokens, verdict.reason) == (None, REASON_REFRESH_INVALID)
