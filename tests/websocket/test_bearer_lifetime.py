"""A socket opened with a bearer in `Sec-WebSocket-Protocol` lives no longer than its token.

Gap (5fea1a4; low-medium): `Shield`'s guard verified the subprotocol bearer at the
handshake only, and its watcher checked sessions and bans: a socket outlived its
token's `exp` (and maximum age) and the revocation of its `jti`, though the same
token in `Authorization` was refused from then on. Now the verifier's verdict
(`BearerVerdict`) carries when the token stops being valid (`exp`, or `iat` plus
`max_token_age_seconds`, plus the leeway) and its revocation key; the watcher closes
the socket (1008, `bearer-expired` / `bearer-revoked`) at the first check past the
one, and reads the other once per check, waking at the expiry when it comes before
the next tick.

Also (low): a refused bearer was logged `bearer-invalid` alone, the verifier's reason
(`jwt-revoked-jti`, `jwt-expired`, ...) lost; it is now in the event's details. And a
revocation list that could not be read at the handshake crashed the handshake (1011,
`unhandled-exception`, a traceback), where the `Authorization` path answers 503
`store-unavailable`; the guard now answers as that path does.

The stack is `Shield` on its memory store (a subclass whose revocation reads can be
switched off), with real ASGI calls. The authentication layer's verifier and the
guard read one fake clock, moved by the tests; the watcher's tick is a real 10 ms
sleep, except in the test of the wake at expiry, which reads the real clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bastion.auth.jwt import REVOKED_PREFIX, revoke_jti
from bastion.auth.middleware import AuthenticationMiddleware
from bastion.events import KIND_AUTHN_FAIL, KIND_SYS_AVAILABILITY, EventEmitter
from bastion.exceptions import StoreError
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.stores.memory import MemoryStore
from bastion.types import Scope
from bastion.websocket import reasons as r
from tests.auth.harness import claims, jwt_settings, sign
from tests.conftest import RecordingSink
from tests.support.clock import FakeClock
from tests.websocket.test_middleware import OK, connected, refused, ws_scope
from tests.websocket.test_policy_deferral import (
    GUARD,
    SECRET_KEYS,
    app,
    blocked,
    first_answer,
    guard_of,
)

pytestmark = pytest.mark.anyio

TICK = 0.01
LEEWAY = 30  # the JWT setting's default, spelt out: the sums below depend on it
LIFETIME = 60  # the token's `exp`, after its issue
MAX_AGE = 120  # the smallest `max_token_age_seconds` allowed is 60
READ = {"GET /api/*": "scopes:read:x"}


class RevocationOutageStore(MemoryStore):
    """A real memory store whose reads of the JWT revocation list fail while `down`."""

    down = False

    async def get(self, key: str) -> bytes | None:
        if self.down and key.startswith(REVOKED_PREFIX):
            raise StoreError("revocation list unreachable (test)")
        return await super().get(key)


def authentication_of(target: Shield) -> AuthenticationMiddleware:
    layer: Any = target._stack
    while not isinstance(layer, AuthenticationMiddleware):
        layer = layer.app
    return layer


def shield(sink: RecordingSink, store: MemoryStore, *, tick: float = TICK, **jwt: Any) -> Shield:
    settings = Settings.model_validate(
        {
            "mode": "development",
            "secret_keys": SECRET_KEYS,
            "transport": {"allowed_hosts": ["testserver"]},
            "auth": {"jwt": jwt_settings(**({"leeway_seconds": LEEWAY} | jwt))},
            "policy": {"routes": READ},
            "websocket": {"revocation_check_seconds": tick},
        }
    )
    return Shield(app, settings, events=EventEmitter([sink]), store=store)


@pytest.fixture
def store() -> RevocationOutageStore:
    return RevocationOutageStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(float(int(time.time())))


def on_clock(target: Shield, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Shield:
    """The verifier and the guard read `clock` (the stores keep real time)."""
    verifier = authentication_of(target).jwt
    assert verifier is not None
    monkeypatch.setattr(verifier, "clock", clock)
    monkeypatch.setattr(guard_of(target), "clock", clock)
    return target


def token_at(now: float, **overrides: Any) -> str:
    """A token issued 10 s before `now`, expiring `LIFETIME` after it; `iat` and `exp`
    overrides are offsets from `now`."""
    values: dict[str, Any] = {"iat": -10, "exp": LIFETIME, "jti": "live-1"} | overrides
    values["iat"] += now
    values["exp"] += now
    return sign(claims(**values), typ="at+jwt")


def bearer_socket(offered: str, *, denial_response: bool = False) -> Scope:
    scope = ws_scope(path="/api/live", origin=None)  # a native client
    scope["subprotocols"] = ["bearer", offered]
    if denial_response:
        scope["extensions"] = {"websocket.http.response": {}}
    return scope


# --- the live socket ------------------------------------------------------------------

# (token claims over `token_at`'s, jwt settings, what happens while the socket is open,
# the close reason or "" when it must stay open)
LIVE = [
    pytest.param(
        {}, {}, ("advance", LIFETIME + LEEWAY - 1), "", id="ws-bearer-socket-live-token-ok"
    ),
    pytest.param(
        {},
        {},
        ("advance", LIFETIME + LEEWAY),
        r.REASON_BEARER_EXPIRED,
        id="ws-bearer-socket-after-expiry",
    ),
    # Within `exp`, past the maximum age the verifier allows since `iat`.
    pytest.param(
        {"exp": 3600},
        {"max_token_age_seconds": MAX_AGE},
        ("advance", MAX_AGE - 10 + LEEWAY + 1),
        r.REASON_BEARER_EXPIRED,
        id="ws-bearer-socket-after-max-age",
    ),
    pytest.param(
        {},
        {},
        ("revoke", "live-1"),
        r.REASON_BEARER_REVOKED,
        id="ws-bearer-socket-after-jti-revoked",
    ),
    pytest.param({}, {}, ("revoke", "other-1"), "", id="ws-bearer-socket-other-jti-revoked-ok"),
]


@pytest.mark.parametrize(("token_claims", "jwt", "event", "closed_as"), LIVE)
async def test_a_bearer_socket_lives_no_longer_than_its_token(
    sink: RecordingSink,
    store: RevocationOutageStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    token_claims: dict[str, Any],
    jwt: dict[str, Any],
    event: tuple[str, Any],
    closed_as: str,
) -> None:
    target = on_clock(shield(sink, store, **jwt), clock, monkeypatch)
    offered = token_at(clock.now, **token_claims)
    async with connected(target, bearer_socket(offered)) as client:
        await client.say(OK)
        assert (await client.next())["text"] == OK
        action, value = event
        if action == "advance":
            clock.advance(value)
        else:
            await revoke_jti(store, value, expires_at=clock.now + LIFETIME, now=clock.now)
        if not closed_as:
            await wait_ticks()
            await client.say(OK)
            assert (await client.next())["text"] == OK
        else:
            assert await client.next() == {"type": "websocket.close", "code": 1008}
            await client.finish()
    if not closed_as:
        assert blocked(sink) == []
        return
    assert blocked(sink) == [(GUARD, closed_as)]
    (record,) = [rec for rec in sink.records if rec["reason"] == closed_as]
    assert (record["kind"], record["details"]) == (KIND_AUTHN_FAIL, {"close_code": 1008})


async def wait_ticks() -> None:
    # Real time on purpose: the watcher's tick is an asyncio sleep of `TICK`.
    await asyncio.sleep(TICK * 10)


async def test_the_watcher_wakes_at_the_expiry(sink: RecordingSink, store: MemoryStore) -> None:
    """ws-bearer-socket-closed-at-expiry-not-a-tick-later: with a five-minute tick, a
    token that expires in half a second closes its socket within the client's wait,
    not at the next tick. The real clock: `exp` is a fraction of a second away."""
    target = shield(sink, store, tick=300, leeway_seconds=0)
    now = time.time()
    offered = sign(claims(iat=now - 1, exp=now + 0.5, jti="short-1"), typ="at+jwt")
    async with connected(target, bearer_socket(offered)) as client:
        assert await client.next() == {"type": "websocket.close", "code": 1008}
        await client.finish()
    assert blocked(sink) == [(GUARD, r.REASON_BEARER_EXPIRED)]


async def test_a_revocation_list_outage_closes_the_socket_1011(
    sink: RecordingSink,
    store: RevocationOutageStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ws-bearer-socket-revocation-check-store-down: the token cannot be vouched for any
    longer: closed as a session check that fails is (1011, `store-unavailable`)."""
    target = on_clock(shield(sink, store), clock, monkeypatch)
    async with connected(target, bearer_socket(token_at(clock.now))) as client:
        store.down = True
        assert await client.next() == {"type": "websocket.close", "code": 1011}
        await client.finish()
    (record,) = [rec for rec in sink.records if rec["action"] == "blocked"]
    assert (record["reason"], record["kind"]) == (r.REASON_STORE_DOWN, KIND_SYS_AVAILABILITY)


# --- the handshake ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token_claims", "revoked", "bearer_reason"),
    [
        pytest.param({}, False, "", id="ws-bearer-valid-ok"),
        pytest.param({}, True, "jwt-revoked-jti", id="ws-bearer-revoked-jti-reason-logged"),
        pytest.param(
            {"iat": -1000, "exp": -500}, False, "jwt-expired", id="ws-bearer-expired-reason-logged"
        ),
        pytest.param(
            {"aud": "api://other"},
            False,
            "jwt-wrong-audience",
            id="ws-bearer-audience-reason-logged",
        ),
        pytest.param(
            {"pad": "x" * 9000}, False, "jwt-oversized", id="ws-bearer-oversized-reason-logged"
        ),
    ],
)
async def test_a_refused_bearer_keeps_the_verifiers_reason(
    sink: RecordingSink,
    store: RevocationOutageStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    token_claims: dict[str, Any],
    revoked: bool,
    bearer_reason: str,
) -> None:
    """Outside, the one generic refusal; inside, `bearer-invalid` and the JWT reason."""
    target = on_clock(shield(sink, store), clock, monkeypatch)
    if revoked:
        await revoke_jti(store, "live-1", expires_at=clock.now + LIFETIME, now=clock.now)
    answer = await first_answer(target, bearer_socket(token_at(clock.now, **token_claims)))
    if not bearer_reason:
        assert answer == {"type": "websocket.accept", "subprotocol": "bearer"}
        assert blocked(sink) == []
        return
    assert answer == {"type": "websocket.close", "code": 1008}
    assert blocked(sink) == [(GUARD, r.REASON_BEARER_INVALID)]
    (record,) = [rec for rec in sink.records if rec["action"] == "blocked"]
    assert record["details"] == {"bearer_reason": bearer_reason}


@pytest.mark.parametrize(
    ("denial_response", "answer"),
    [
        pytest.param(True, 503, id="ws-bearer-revocation-store-down-at-handshake"),
        pytest.param(False, 1013, id="ws-bearer-revocation-store-down-at-handshake-close"),
    ],
)
async def test_a_revocation_list_outage_refuses_the_handshake_as_the_header_path(
    sink: RecordingSink,
    store: RevocationOutageStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    denial_response: bool,
    answer: int,
) -> None:
    """Fails closed, as the same token in `Authorization` does (503,
    `store-unavailable`), with no crash: no `unhandled-exception`, no traceback."""
    target = on_clock(shield(sink, store), clock, monkeypatch)
    store.down = True
    scope = bearer_socket(token_at(clock.now), denial_response=denial_response)
    if denial_response:
        first = await first_answer(target, scope)
        assert (first["type"], first["status"]) == ("websocket.http.response.start", answer)
    else:
        assert await refused(target, scope) == answer
    assert [
        (rec["layer"], rec["reason"], rec["kind"])
        for rec in sink.records
        if rec["layer"] != "shield"  # its start-up event
    ] == [(GUARD, r.REASON_STORE_DOWN, KIND_SYS_AVAILABILITY)]


@pytest.mark.parametrize(
    ("expires_at", "opens"),
    [
        pytest.param(float("nan"), False, id="ws-bearer-verdict-expiry-nan"),
        pytest.param(float("inf"), False, id="ws-bearer-verdict-expiry-infinite"),
        pytest.param(None, True, id="ws-bearer-verdict-no-expiry-ok"),
        pytest.param(4_000_000_000.0, True, id="ws-bearer-verdict-finite-expiry-ok"),
    ],
)
async def test_a_verdict_whose_expiry_is_not_a_time_is_refused(
    sink: RecordingSink, expires_at: float | None, opens: bool
) -> None:
    """A verifier of one's own that answers `expires_at=NaN` (never past the clock, so
    the socket would never expire) or infinity is refused as `bearer-invalid`, not
    trusted for ever; no expiry, or a real time, opens the socket."""
    from bastion.websocket import BearerVerdict
    from tests.websocket.test_middleware import guard

    async def verify(untrusted_token: str) -> BearerVerdict:
        return BearerVerdict(principal="alice", expires_at=expires_at)

    layer = guard(EventEmitter([sink]))
    layer.bearer_verifier = verify
    scope = ws_scope()
    scope["subprotocols"] = ["bearer", "token-for-alice-0123456789"]
    if opens:
        async with connected(layer, scope):
            pass
        assert [rec["reason"] for rec in sink.records if rec["action"] == "blocked"] == []
        return
    assert await refused(layer, scope) == 1008
    assert [rec["reason"] for rec in sink.records if rec["action"] == "blocked"] == [
        r.REASON_BEARER_INVALID
    ]
