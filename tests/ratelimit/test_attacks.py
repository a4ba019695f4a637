"""Named attack cases, each beside the legitimate traffic that must still pass, against
raw ASGI, Starlette and FastAPI (`framework_app`), with a memory store on a fake clock.
Test ids are the layer's REASON_* constants where one applies."""

from __future__ import annotations

import asyncio

import pytest

from bastion.events import KIND_AUTHN_FAIL, KIND_EXCESS_RATE, KIND_SYS_AVAILABILITY, EventEmitter
from bastion.ratelimit import client_key, lift_ban
from bastion.ratelimit.keys import hash_part
from bastion.ratelimit.reasons import (
    REASON_BANNED,
    REASON_CONCURRENCY_LIMITED,
    REASON_LOGIN_FAILED,
    REASON_LOGIN_LOCKED,
    REASON_LOGIN_THROTTLED,
    REASON_RATE_LIMITED,
    REASON_STORE_UNAVAILABLE,
)
from bastion.types import ASGIApp
from tests.conftest import RecordingSink
from tests.ratelimit.harness import ATTACKER, USER, build, jail_sink_of, request
from tests.support.clock import FakeClock
from tests.support.stores import SwitchableStore

pytestmark = pytest.mark.anyio

WRONG = {"username": "alice", "password": "wrong"}
RIGHT = {"username": "alice", "password": "right"}


def _blocked(sink: RecordingSink, reason: str) -> list[dict[str, object]]:
    return [r for r in sink.records if r["reason"] == reason]


@pytest.mark.parametrize("case", [REASON_RATE_LIMITED])
async def test_rate_limited(
    case: str,
    framework_app: ASGIApp,
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
    sink: RecordingSink,
) -> None:
    app, _, _ = build(framework_app, store, events, limits={"*": ["3/minute"]})
    statuses = [(await request(app, "GET", "/", ATTACKER)).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = await request(app, "GET", "/", ATTACKER)
    assert refused.headers["retry-after"] == "20"
    assert "hello" not in refused.text
    assert (await request(app, "GET", "/", USER)).status_code == 200  # legitimate client
    records = _blocked(sink, case)
    assert len(records) == 3
    assert records[0]["kind"] == KIND_EXCESS_RATE
    assert records[0]["status"] == 429
    assert records[0]["client"] == ATTACKER[0]
    clock.advance(20)
    assert (await request(app, "GET", "/", ATTACKER)).status_code == 200


@pytest.mark.parametrize("case", ["rate-limit-headers"])
async def test_rate_limit_headers(
    case: str, framework_app: ASGIApp, store: SwitchableStore, events: EventEmitter
) -> None:
    app, _, _ = build(
        framework_app,
        store,
        events,
        limits={"/json": ["10/minute; name=default", "100/day; name=daily"], "/": []},
        response_headers="always",
    )
    ok = await request(app, "GET", "/json")
    assert ok.status_code == 200
    assert ok.json() == {"ok": True}
    assert ok.headers["ratelimit-policy"] == '"default";q=10;w=60, "daily";q=100;w=86400'
    assert ok.headers["ratelimit"] == '"default";r=9;t=6, "daily";r=99;t=864'
    unlimited = await request(app, "GET", "/")
    assert "ratelimit" not in unlimited.headers  # an unlimited route says nothing


@pytest.mark.parametrize("case", ["rate-xff-rotation-untrusted"])
async def test_rotating_forwarded_for_through_untrusted_peer_is_one_key(
    case: str, framework_app: ASGIApp, store: SwitchableStore, events: EventEmitter
) -> None:
    app, _, _ = build(framework_app, store, events, transport=True, limits={"*": ["3/minute"]})
    statuses = [
        (
            await request(app, "GET", "/", ATTACKER, headers={"x-forwarded-for": f"192.0.2.{i}"})
        ).status_code
        for i in range(6)
    ]
    assert statuses == [200, 200, 200, 429, 429, 429]
    assert (await request(app, "GET", "/", USER)).status_code == 200


@pytest.mark.parametrize("case", ["rate-ipv6-same-64"])
async def test_ipv6_addresses_of_one_64_share_a_bucket(
    case: str, framework_app: ASGIApp, store: SwitchableStore, events: EventEmitter
) -> None:
    app, _, _ = build(framework_app, store, events, limits={"*": ["2/minute"]})
    rotating = [f"2001:db8:aa:bb:{i:x}::{i + 1:x}" for i in range(4)]
    statuses = [(await request(app, "GET", "/", (host, 1))).status_code for host in rotating]
    assert statuses == [200, 200, 429, 429]
    # The next /64 is another subscriber.
    assert (await request(app, "GET", "/", ("2001:db8:aa:bc::1", 1))).status_code == 200


@pytest.mark.parametrize("case", ["login-brute-force-lockout"])
async def test_login_brute_force_lockout(
    case: str,
    framework_app: ASGIApp,
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
    sink: RecordingSink,
) -> None:
    app, _, _ = build(framework_app, store, events, limits={}, login_routes=["POST /login"])
    seen: list[tuple[int, str | None]] = []
    for _ in range(4):
        response = await request(app, "POST", "/login", ATTACKER, data=WRONG)
        seen.append((response.status_code, response.headers.get("retry-after")))
        hasty = await request(app, "POST", "/login", ATTACKER, data=WRONG)  # too soon
        seen.append((hasty.status_code, hasty.headers.get("retry-after")))
        clock.advance(float(hasty.headers["retry-after"]))
    assert seen == [
        (401, None),
        (429, "1"),
        (401, None),
        (429, "2"),
        (401, None),
        (429, "4"),
        (401, None),
        (429, "8"),
    ]
    assert (await request(app, "POST", "/login", ATTACKER, data=WRONG)).status_code == 401
    # Fifth failure: locked out, even with the right password.
    locked = await request(app, "POST", "/login", ATTACKER, data=RIGHT)
    assert (locked.status_code, locked.headers["retry-after"]) == (429, "900")
    assert len(_blocked(sink, REASON_LOGIN_FAILED)) == 5
    assert _blocked(sink, REASON_LOGIN_FAILED)[0]["kind"] == KIND_AUTHN_FAIL
    assert _blocked(sink, REASON_LOGIN_THROTTLED)
    assert _blocked(sink, REASON_LOGIN_LOCKED)
    clock.advance(900)
    assert (await request(app, "POST", "/login", ATTACKER, data=RIGHT)).status_code == 200


@pytest.mark.parametrize("case", ["login-legit-user-not-locked-out"])
async def test_real_user_logs_in_while_an_attacker_hammers_the_account(
    case: str,
    framework_app: ASGIApp,
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
) -> None:
    app, layer, _ = build(framework_app, store, events, limits={}, login_routes=["POST /login"])
    for bot in range(8):  # 8 addresses x 5 failures: 40 > the account threshold (20)
        for _ in range(5):
            await request(app, "POST", "/login", (f"198.51.100.{bot}", 1), data=WRONG)
            clock.advance(10)
        locked = await request(app, "POST", "/login", (f"198.51.100.{bot}", 1), data=RIGHT)
        assert locked.status_code == 429
    # The real user, from their own address, typos once and then gets in.
    assert (await request(app, "POST", "/login", USER, data=WRONG)).status_code == 401
    clock.advance(1)
    assert (await request(app, "POST", "/login", USER, data=RIGHT)).status_code == 200
    verdict = await layer.login_guard.check("alice", USER[0])
    assert verdict.allowed
    assert verdict.requires_challenge
    # Success cleared the user's own failures: a later typo costs one second again.
    assert (await request(app, "POST", "/login", USER, data=WRONG)).status_code == 401
    assert (await layer.login_guard.record_failure("alice", USER[0])).retry_after_seconds == 2.0


@pytest.mark.parametrize("case", [REASON_BANNED])
async def test_banned_after_refusals(
    case: str,
    framework_app: ASGIApp,
    store: SwitchableStore,
    events: EventEmitter,
    sink: RecordingSink,
) -> None:
    app, _, _ = build(
        framework_app,
        store,
        events,
        transport=True,
        jail_sink=True,
        limits={"*": ["1/minute"]},
        ban_threshold=5,
    )
    assert (await request(app, "GET", "/", ATTACKER)).status_code == 200
    for _ in range(3):
        assert (await request(app, "GET", "/", ATTACKER)).status_code == 429
    # A refusal by a layer outside (transport: a host we do not serve) counts too.
    for _ in range(2):
        bad_host = await request(app, "GET", "/", ATTACKER, headers={"host": "evil.example"})
        assert bad_host.status_code == 400
    await jail_sink_of(events).drain()
    banned = await request(app, "GET", "/", ATTACKER)
    assert banned.status_code == 403
    assert "hello" not in banned.text
    started = [r for r in _blocked(sink, case) if "details" in r and "refusals" in r["details"]]  # type: ignore[operator]
    assert len(started) == 1
    assert started[0]["client"] == ATTACKER[0]
    assert _blocked(sink, case)[-1]["status"] == 403
    assert (await request(app, "GET", "/", USER)).status_code == 200


@pytest.mark.parametrize("case", ["ban-lifted"])
async def test_ban_lifted(
    case: str,
    framework_app: ASGIApp,
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
) -> None:
    app, layer, _ = build(
        framework_app, store, events, jail_sink=True, limits={"*": ["1/minute"]}, ban_threshold=2
    )
    for _ in range(3):
        await request(app, "GET", "/", ATTACKER)
    await jail_sink_of(events).drain()
    assert (await request(app, "GET", "/", ATTACKER)).status_code == 403
    assert await lift_ban(store, ATTACKER[0]) is True
    clock.advance(60)
    assert (await request(app, "GET", "/", ATTACKER)).status_code == 200
    assert layer.jail is not None
    assert await layer.jail.lift(ATTACKER[0]) is False


@pytest.mark.parametrize("case", ["concurrency-per-client"])
async def test_concurrency_per_client(
    case: str,
    framework_app: ASGIApp,
    store: SwitchableStore,
    events: EventEmitter,
    sink: RecordingSink,
) -> None:
    app, _, gate = build(framework_app, store, events, limits={}, concurrency={"/slow": 1})
    held = asyncio.create_task(request(app, "GET", "/slow", ATTACKER))
    await gate.wait_entered(1)
    second = await request(app, "GET", "/slow", ATTACKER)
    assert (second.status_code, second.headers["retry-after"]) == (429, "1")
    assert _blocked(sink, REASON_CONCURRENCY_LIMITED)
    other = asyncio.create_task(request(app, "GET", "/slow", USER))  # another client: fine
    await gate.wait_entered(2)
    gate.open.set()
    assert (await held).status_code == 200
    assert (await other).status_code == 200
    # Released on every exit, an exception included.
    with pytest.raises(RuntimeError):
        await request(app, "GET", "/slow?boom", ATTACKER)
    assert (await request(app, "GET", "/slow", ATTACKER)).status_code == 200
    # The attacker's slot counter, named as the layer names it, is back to zero.
    counter = f"cc:{hash_part('/slow')[:16]}:" + client_key(ATTACKER[0])
    assert await store.get(counter) == b"0"


@pytest.mark.parametrize("case", ["store-down-fail-open"])
async def test_store_down_fail_open(
    case: str,
    framework_app: ASGIApp,
    store: SwitchableStore,
    events: EventEmitter,
    sink: RecordingSink,
) -> None:
    app, _, _ = build(framework_app, store, events, limits={"*": ["1/minute"]})
    assert (await request(app, "GET", "/")).status_code == 200
    store.down = True
    for _ in range(3):
        assert (await request(app, "GET", "/")).status_code == 200
    outage = _blocked(sink, REASON_STORE_UNAVAILABLE)
    assert len(outage) == 1  # one report per second, not one per request
    assert outage[0]["kind"] == KIND_SYS_AVAILABILITY
    assert outage[0]["action"] == "allowed"
    store.down = False  # back: limiting resumes, no restart
    assert (await request(app, "GET", "/")).status_code == 429


@pytest.mark.parametrize("case", ["store-down-fail-closed"])
async def test_store_down_fail_closed(
    case: str,
    framework_app: ASGIApp,
    store: SwitchableStore,
    events: EventEmitter,
    sink: RecordingSink,
) -> None:
    app, _, _ = build(framework_app, store, events, limits={"*": ["2/minute"]}, fail_open=False)
    assert (await request(app, "GET", "/")).status_code == 200
    store.down = True
    refused = await request(app, "GET", "/")
    assert (refused.status_code, refused.headers["retry-after"]) == (503, "5")
    assert "hello" not in refused.text
    assert _blocked(sink, REASON_STORE_UNAVAILABLE)[0]["status"] == 503
    store.down = False
    assert (await request(app, "GET", "/")).status_code == 200
    assert (await request(app, "GET", "/")).status_code == 429
