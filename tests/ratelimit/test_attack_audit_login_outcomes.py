"""Attack audit of how a login attempt ends: a late release, and failures the guard
did not count.

* `login-late-abandon-lifts-lockout`: `begin` claims the pair's gate for
  `ATTEMPT_CLAIM_SECONDS`. An attempt that outlived its claim (a slow application:
  an identity provider timing out) and then judged no password released the gate
  with a plain delete; meanwhile the claim had expired and the client's other
  guesses had locked the pair out in the same key, so the late release lifted the
  lockout: one held-open attempt bought a fresh round of guesses.
  `login-late-success-keeps-later-lockout`: a success released it the same way.
  The claim now holds a token of its attempt, and the release is a
  compare-and-delete (`Store.delete_if_equal`); a release within the claim's time
  still frees the pair at once (`login-abandon-in-time-ok`).
* `login-claim-readable-by-previous-version`: during a rolling upgrade, a worker of
  the version before claims held a token reads every gate but `locked` as a delay
  (`float(gate)`), and the claim `claim:<hex>` made it raise (a 500, a unit of the
  client's budget never given back). The claim is now `1.` and random digits,
  which it reads as a second or two of backoff; this version tells a claim from a
  delay by its length, and reads any gate it cannot parse as an attempt in flight
  (`login-gate-*`: 429 with the base delay, never an error).
* `login-oauth2-invalid-grant-400`: an OAuth 2 token endpoint answers wrong
  credentials `400 invalid_grant` (RFC 6749 section 5.2), and only 401 and 403
  count by default: the operator adds 400 (`login_failure_statuses`), and then its
  guesses count. `login-fastapi-422-malformed`: the same for 422.
  But counted by default, 400 and 422 locked out those who had guessed nothing:
  `login-oauth2-code-failures-dont-lock-relying-party-ok` (and refresh, device
  polling): a token endpoint's code, refresh and device grants name no account, so
  every exchange of a relying party's backend is one pair, and five refused grants
  locked all its users out; `login-admin-422-doesnt-lock-ok` (and 400): an
  administrator behind HTTP Basic whose forms failed validation. Opted in, such a
  status for a request whose body names no account counts toward the client's
  budget alone (`login-*-opted-in-*-ok`), which still bounds a misread guess
  (`login-opted-in-400-unnamed-spends-budget`); a body that names one, however
  unclearly (a decoy beside it), still counts as the pair's.

Each beside the legitimate login that must still pass, through real Starlette and
FastAPI applications over a real memory store on a fake clock; the late release
over every store (memory, SQLite, Redis, Redis Cluster) at the guard.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion.cli import describe_configuration
from bastion.events import EventEmitter
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings
from bastion.ratelimit import login as login_module
from bastion.ratelimit.headers import retry_after_value
from bastion.ratelimit.keys import ClientGrouping, client_key, hash_part
from bastion.ratelimit.login import (
    ATTEMPT_CLAIM_SECONDS,
    DEFAULT_FAILURE_STATUSES,
    LoginGuard,
    LoginPolicy,
    normalise_account,
)
from bastion.ratelimit.reasons import (
    REASON_LOGIN_FAILED,
    REASON_LOGIN_LOCKED,
    REASON_LOGIN_THROTTLED,
)
from bastion.settings import Settings
from bastion.stores import MemoryStore, SQLiteStore, Store
from bastion.types import ASGIApp
from tests.conftest import RecordingSink
from tests.ratelimit.harness import ATTACKER, USER, request
from tests.support.clock import FakeClock
from tests.support.stores import SwitchableStore

pytestmark = pytest.mark.anyio

# Past every backoff delay (at most 60 s), well within the lockout (900 s).
PAST_DELAYS = 61.0


# -- a late release never lifts what was written since -------------------------------


class SlowLogin:
    """A login whose password check can be held (an identity provider that takes its
    time), answering 503 ("judged no password") or 200 when released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.held = asyncio.Event()

    def app(self) -> ASGIApp:
        async def login(request: Request) -> Response:
            form = await request.form()
            password = form.get("password")
            if password in ("slow-outage", "slow-right"):
                self.held.set()
                await self.release.wait()
                if password == "slow-outage":
                    return PlainTextResponse("try later", status_code=503)
                return PlainTextResponse("ok")
            ok = password == "right"
            return PlainTextResponse("ok" if ok else "no", status_code=200 if ok else 401)

        return Starlette(routes=[Route("/login", login, methods=["POST"])])


@pytest.mark.parametrize(
    ("held", "seconds_held", "after"),
    [
        pytest.param(
            "slow-outage", ATTEMPT_CLAIM_SECONDS + 1, 429, id="login-late-abandon-lifts-lockout"
        ),
        pytest.param(
            "slow-right",
            ATTEMPT_CLAIM_SECONDS + 1,
            429,
            id="login-late-success-keeps-later-lockout",
        ),
    ],
)
async def test_a_late_release_keeps_the_lockout_set_since(
    held: str,
    seconds_held: float,
    after: int,
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
) -> None:
    slow = SlowLogin()
    settings = RateLimitSettings(limits={}, login_routes=("POST /login",))
    app = RateLimitMiddleware(slow.app(), settings, store=store, events=events)
    form = {"username": "alice", "password": held}
    first = asyncio.create_task(request(app, "POST", "/login", ATTACKER, data=form))
    await slow.held.wait()
    clock.advance(seconds_held)  # the claim has expired
    wrong = {"username": "alice", "password": "wrong"}
    statuses = []
    for _ in range(settings.login_lockout_after):
        statuses.append((await request(app, "POST", "/login", ATTACKER, data=wrong)).status_code)
        clock.advance(PAST_DELAYS)
    assert statuses == [401] * settings.login_lockout_after  # the pair is locked out now
    slow.release.set()
    assert (await first).status_code in (200, 503)
    locked = await request(app, "POST", "/login", ATTACKER, data=wrong)
    assert locked.status_code == after
    assert locked.headers["retry-after"] == "900"
    # The real user, elsewhere, is not locked out.
    right = {"username": "alice", "password": "right"}
    assert (await request(app, "POST", "/login", USER, data=right)).status_code == 200


@pytest.mark.parametrize("held", ["slow-outage", "slow-right"])
async def test_a_release_in_time_frees_the_pair_at_once(
    held: str, store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    """`login-abandon-in-time-ok`: an attempt that ends within its claim's time
    releases the pair: the next attempt is judged at once."""
    slow = SlowLogin()
    settings = RateLimitSettings(limits={}, login_routes=("POST /login",))
    app = RateLimitMiddleware(slow.app(), settings, store=store, events=events)
    form = {"username": "alice", "password": held}
    first = asyncio.create_task(request(app, "POST", "/login", ATTACKER, data=form))
    await slow.held.wait()
    clock.advance(ATTEMPT_CLAIM_SECONDS - 1)
    # The claim holds the pair while the attempt runs: a concurrent guess waits.
    wrong = {"username": "alice", "password": "wrong"}
    assert (await request(app, "POST", "/login", ATTACKER, data=wrong)).status_code == 429
    slow.release.set()
    assert (await first).status_code in (200, 503)
    assert (await request(app, "POST", "/login", ATTACKER, data=wrong)).status_code == 401


@dataclass
class GuardStore:
    store: Store
    clock: FakeClock | None

    async def pass_time(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds + 0.05)  # real Redis expires the key itself


# Redis keeps its own time, so there the claim is made short instead of waited for.
SHORT_CLAIM_SECONDS = 0.3


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
async def guard_store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[GuardStore]:
    name = str(request.param)
    made: GuardStore
    if name == "memory":
        made = GuardStore(MemoryStore(clock=clock), clock)
    elif name == "sqlite":
        made = GuardStore(SQLiteStore(tmp_path / "store.db", clock=clock), clock)
    else:
        from bastion.stores.redis import RedisStore

        server = "redis_standalone" if name == "redis" else "redis_cluster_nodes"
        url = request.getfixturevalue(server).url
        prefix = f"t{uuid.uuid4().hex[:12]}:"
        monkeypatch.setattr(login_module, "ATTEMPT_CLAIM_SECONDS", SHORT_CLAIM_SECONDS)
        made = GuardStore(RedisStore(url, key_prefix=prefix), None)
    try:
        yield made
    finally:
        await made.store.close()


@pytest.mark.parametrize(
    ("outcome", "allowed_after"),
    [
        pytest.param("abandon", False, id="login-late-abandon-lifts-lockout-every-store"),
        pytest.param("success", False, id="login-late-success-keeps-later-lockout-every-store"),
        pytest.param("in-time", True, id="login-abandon-in-time-every-store-ok"),
    ],
)
async def test_the_guard_releases_only_its_own_claim(
    outcome: str, allowed_after: bool, guard_store: GuardStore
) -> None:
    store = guard_store.store
    # Two failures lock the pair out; a short backoff keeps real Redis quick.
    policy = LoginPolicy(lockout_after=2, base_delay_seconds=0.01, max_delay_seconds=0.01)
    guard = LoginGuard(store, policy)
    attempt = await guard.begin("alice", ATTACKER[0])
    assert attempt.allowed
    assert attempt.claim
    if outcome != "in-time":
        await guard_store.pass_time(login_module.ATTEMPT_CLAIM_SECONDS)  # it expired
        for _ in range(policy.lockout_after):
            await guard.record_failure("alice", ATTACKER[0])
        assert (await guard.check("alice", ATTACKER[0])).reason == REASON_LOGIN_LOCKED
    if outcome == "success":
        await guard.record_success("alice", ATTACKER[0], attempt)
    else:
        await guard.abandon("alice", ATTACKER[0], attempt)
    verdict = await guard.check("alice", ATTACKER[0])
    assert verdict.allowed is allowed_after
    if not allowed_after:
        assert verdict.reason == REASON_LOGIN_LOCKED
    # Another client of the account is never held back.
    assert (await guard.check("alice", USER[0])).allowed


async def test_each_attempt_draws_its_own_claim(store: SwitchableStore) -> None:
    """`login-claim-unique-ok`: two attempts never share a claim, so neither can
    release the other's; a second attempt of the pair meanwhile is throttled by
    the first's claim for the first failure's delay."""
    guard = LoginGuard(store)
    first = await guard.begin("alice", ATTACKER[0])
    concurrent = await guard.begin("alice", ATTACKER[0])
    assert not concurrent.allowed
    assert not concurrent.claim
    assert concurrent.retry_after_seconds == guard.policy.base_delay_seconds
    await guard.abandon("alice", ATTACKER[0], first)
    second = await guard.begin("alice", ATTACKER[0])
    elsewhere = await guard.begin("alice", USER[0])
    assert first.allowed
    assert second.allowed
    assert elsewhere.allowed
    assert len({first.claim, second.claim, elsewhere.claim}) == 3
    assert first == second  # the same decision: the claim is no part of it
    assert first.claim.decode("ascii") not in repr(first)


async def test_abandon_without_its_verdict_releases_nothing(
    store: SwitchableStore, clock: FakeClock
) -> None:
    """`login-abandon-without-claim-keeps-gate`: a release that cannot name its
    claim cannot tell it from a lockout: the claim ends with its TTL."""
    guard = LoginGuard(store)
    assert (await guard.begin("alice", ATTACKER[0])).allowed
    await guard.abandon("alice", ATTACKER[0])
    assert not (await guard.check("alice", ATTACKER[0])).allowed
    clock.advance(ATTEMPT_CLAIM_SECONDS)
    assert (await guard.check("alice", ATTACKER[0])).allowed


# -- a claim, and any gate, read by every version during a rolling upgrade ------------


def previous_version_answer(gate: bytes, policy: LoginPolicy) -> tuple[str, bytes]:
    """The reason and `Retry-After` a worker of the version before claims held a
    token answers for a pair whose gate holds `gate`: its `LoginGuard._verdict`
    (`git show ce35ba4^:src/bastion/ratelimit/login.py`) then the middleware's
    `retry_after_value`, reproduced line for line. Raises where that worker raised
    (a 500, and the unit of the client's budget its `begin` reserved never given
    back)."""
    locked = gate == b"locked"
    retry_after_seconds = policy.lockout_seconds if locked else float(gate)
    reason = REASON_LOGIN_LOCKED if locked else REASON_LOGIN_THROTTLED
    return reason, retry_after_value(retry_after_seconds)


def gate_key(account: str, client: str) -> str:
    return f"login:g:{hash_part(normalise_account(account))}:{client_key(client, ClientGrouping())}"


@pytest.mark.parametrize(
    "base_delay", [pytest.param(0.5, id="login-claim-readable-by-previous-version")]
)
async def test_a_claim_reads_as_a_short_throttle_to_the_previous_version(
    base_delay: float, guard_store: GuardStore
) -> None:
    """During a rolling upgrade, workers
    of both versions share the store. The previous version reads every gate but
    `locked` as a delay (`float(gate)`), and this version's claim, `claim:<hex>`,
    made it raise on a pair with an attempt in flight. The claim now reads as a
    second or two of backoff there, and as the base delay here, over every store
    (compared by exact bytes when released)."""
    store = guard_store.store
    policy = LoginPolicy(base_delay_seconds=base_delay)
    guard = LoginGuard(store, policy)
    attempt = await guard.begin("alice", ATTACKER[0])
    assert attempt.allowed
    claim = await store.get(gate_key("alice", ATTACKER[0]))
    assert claim == attempt.claim
    # A worker of the previous version, on the same pair meanwhile.
    assert previous_version_answer(claim, policy) in {
        (REASON_LOGIN_THROTTLED, b"1"),
        (REASON_LOGIN_THROTTLED, b"2"),
    }
    # This version tells it from a delay a failure wrote: the base delay, exactly.
    concurrent = await guard.begin("alice", ATTACKER[0])
    assert (concurrent.reason, concurrent.retry_after_seconds) == (
        REASON_LOGIN_THROTTLED,
        base_delay,
    )
    # The previous version's own claim (the base delay's `repr`) reads as before.
    previous_claim = repr(base_delay).encode("ascii")
    assert previous_version_answer(previous_claim, policy) == (REASON_LOGIN_THROTTLED, b"1")
    # And the attempt still releases its own claim, by its exact bytes.
    await guard.abandon("alice", ATTACKER[0], attempt)
    assert (await guard.check("alice", ATTACKER[0])).allowed


@pytest.mark.parametrize(
    "gate",
    [
        pytest.param(b"claim:" + b"ab" * 16, id="login-gate-claim-of-ce35ba4"),
        pytest.param(b"garbage", id="login-gate-not-a-number"),
        pytest.param(b"nan", id="login-gate-nan"),
        pytest.param(b"inf", id="login-gate-infinite"),
        pytest.param(b"-1.0", id="login-gate-negative"),
        pytest.param(b"\xff\xfe", id="login-gate-not-ascii"),
    ],
)
async def test_a_gate_that_is_no_delay_throttles_never_fails(
    gate: bytes, store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    """`login-gate-unparsable-throttles`: a gate value this version cannot read as a
    delay (another version's claim, anything a store hands back) is an attempt in
    flight: 429 with the base delay, never a 500 whose reserved unit of the client's
    budget is never given back."""
    settings = RateLimitSettings(limits={}, login_routes=("POST /login",))
    app = RateLimitMiddleware(SlowLogin().app(), settings, store=store, events=events)
    await store.set(gate_key("alice", ATTACKER[0]), gate, ATTEMPT_CLAIM_SECONDS)
    wrong = {"username": "alice", "password": "wrong"}
    refused = await request(app, "POST", "/login", ATTACKER, data=wrong)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    budget_key = f"login:c:{client_key(ATTACKER[0], ClientGrouping())}"
    assert await store.get(budget_key) == b"0"
    # Once it expires the pair is judged again; a delay a failure wrote reads as before.
    clock.advance(ATTEMPT_CLAIM_SECONDS)
    assert (await request(app, "POST", "/login", ATTACKER, data=wrong)).status_code == 401
    assert await store.get(gate_key("alice", ATTACKER[0])) == b"1.0"
    throttled = await request(app, "POST", "/login", ATTACKER, data=wrong)
    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "1")


# -- 400 and 422: opt-in, and never a pair's failure for a request naming no account ---

# A relying party's backend: it exchanges every one of its users' codes (and refresh
# tokens) at the token endpoint, from this one address, naming no account.
RELYING_PARTY = ("192.0.2.10", 443)
# `login_failure_statuses` of an operator who opts 400 (or 422) in.
WITH_400 = (400, 401, 403)
WITH_422 = (401, 403, 422)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 section 3.4
ADMIN_BASIC = "Basic " + base64.b64encode(b"admin:s3cret").decode("ascii")


def oauth2_token_endpoint() -> ASGIApp:
    """A token endpoint (RFC 6749): the resource owner password grant (section 4.3),
    the authorization code grant (4.1.3), refresh (6) and the device grant (RFC 8628
    section 3.4). Whatever the grant refuses is `400 invalid_grant` (section 5.2):
    wrong credentials, a code it never issued or already redeemed, an expired refresh
    token; a device code not yet approved is `400 authorization_pending` (RFC 8628
    section 3.5); a missing parameter `invalid_request`. Only the password grant
    names an account (`username`)."""
    codes = {f"code-{i}" for i in range(100)}

    async def token(request: Request) -> Response:
        form = await request.form()
        no_store = {"cache-control": "no-store", "pragma": "no-cache"}
        refused = JSONResponse({"error": "invalid_grant"}, status_code=400, headers=no_store)
        grant = form.get("grant_type")
        if grant == "password" and "username" in form:
            if (form.get("username"), form.get("password")) != ("alice", "right"):
                return refused
        elif grant == "authorization_code" and "code" in form:
            if form.get("code") not in codes:
                return refused
            codes.discard(str(form.get("code")))
        elif grant == "refresh_token" and "refresh_token" in form:
            if form.get("refresh_token") != "rt-live":
                return refused
        elif grant == DEVICE_GRANT and "device_code" in form:
            if form.get("device_code") != "dc-approved":  # the user has not approved yet
                pending = {"error": "authorization_pending"}
                return JSONResponse(pending, status_code=400, headers=no_store)
        else:
            return JSONResponse({"error": "invalid_request"}, status_code=400, headers=no_store)
        body = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600}
        return JSONResponse(body, headers=no_store)

    return Starlette(routes=[Route("/oauth/token", token, methods=["POST"])])


def admin_behind_basic() -> ASGIApp:
    """`/admin/*` behind HTTP Basic (a login route, per `login_routes`): wrong
    credentials 401 (RFC 7617 section 3); an authenticated administrator's form that
    fails validation 422 (as FastAPI answers it), or 400 without a field it needs."""

    async def items(request: Request) -> Response:
        if request.headers.get("authorization") != ADMIN_BASIC:
            return PlainTextResponse(
                "who?", status_code=401, headers={"www-authenticate": 'Basic realm="admin"'}
            )
        if request.method == "POST":
            form = await request.form()
            if "price" not in form:
                return PlainTextResponse("price is required", status_code=400)
            if not str(form["price"]).isdigit():
                return PlainTextResponse("price must be a number", status_code=422)
            return PlainTextResponse("saved")
        return PlainTextResponse("admin page")

    return Starlette(routes=[Route("/admin/items", items, methods=["GET", "POST"])])


class Credentials(BaseModel):
    username: str
    password: str


def fastapi_login() -> ASGIApp:
    """A FastAPI JSON login: a body it cannot validate is answered 422 before the
    handler runs; wrong credentials 401."""
    app = FastAPI()

    @app.post("/login")
    async def login(credentials: Credentials) -> dict[str, str]:
        from fastapi import HTTPException

        if (credentials.username, credentials.password) != ("alice", "right"):
            raise HTTPException(status_code=401, detail="no")
        return {"ok": "yes"}

    return app


def _oauth(password: str) -> dict[str, Any]:
    return {"data": {"grant_type": "password", "username": "alice", "password": password}}


def _code(code: str) -> dict[str, Any]:
    return {"data": {"grant_type": "authorization_code", "code": code}}


def _refresh(token: str) -> dict[str, Any]:
    return {"data": {"grant_type": "refresh_token", "refresh_token": token}}


def _device(device_code: str) -> dict[str, Any]:
    return {"data": {"grant_type": DEVICE_GRANT, "device_code": device_code}}


def _json(body: dict[str, Any]) -> dict[str, Any]:
    return {"json": body}


def _admin(price: str, authorization: str = ADMIN_BASIC) -> dict[str, Any]:
    return {"data": {"price": price}, "headers": {"authorization": authorization}}


def _statuses(failure_statuses: tuple[int, ...] | None) -> dict[str, Any]:
    return {} if failure_statuses is None else {"login_failure_statuses": failure_statuses}


@pytest.mark.parametrize(
    ("make", "route", "guess", "failure", "statuses", "failure_statuses"),
    [
        pytest.param(
            oauth2_token_endpoint,
            "POST /oauth/token",
            _oauth("wrong"),
            400,
            [400] * 5 + [429],
            WITH_400,
            id="login-oauth2-invalid-grant-400",
        ),
        pytest.param(
            oauth2_token_endpoint,
            "POST /oauth/token",
            # A decoy beside the account (Starlette reads the last): the guard reads
            # none, and the failure is still the pair's (its account named, unclearly).
            {"data": {"grant_type": "password", "username": ["decoy", "alice"]}},
            400,
            [400] * 5 + [429],
            WITH_400,
            id="login-oauth2-invalid-grant-400-decoy-account",
        ),
        pytest.param(
            oauth2_token_endpoint,
            "POST /oauth/token",
            # A confidential client authenticating with Basic (`client_secret_basic`):
            # the body names the account, so the Basic user-id is not read.
            {**_oauth("wrong"), "headers": {"authorization": "Basic Y2xpZW50OnNlY3JldA=="}},
            400,
            [400] * 5 + [429],
            WITH_400,
            id="login-oauth2-invalid-grant-400-client-basic",
        ),
        pytest.param(
            fastapi_login,
            "POST /login",
            _json({"username": "alice", "password": 12345}),  # not a string: 422
            422,
            [422] * 5 + [429],
            WITH_422,
            id="login-fastapi-422-malformed",
        ),
        pytest.param(
            fastapi_login,
            "POST /login",
            _json({"username": "alice", "password": "wrong"}),
            401,
            [401] * 5 + [429],
            None,
            id="login-fastapi-401-ok",
        ),
        pytest.param(
            admin_behind_basic,
            "/admin/*",
            _admin("10", "Basic " + base64.b64encode(b"admin:guess").decode("ascii")),
            401,
            [401] * 5 + [429],
            None,
            id="login-admin-basic-wrong-password",
        ),
    ],
)
async def test_failures_answered_with_an_added_status_count(
    make: Any,
    route: str,
    guess: dict[str, Any],
    failure: int,
    statuses: list[int],
    failure_statuses: tuple[int, ...] | None,
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
) -> None:
    """A login that answers wrong credentials 400 (or 422) counts them once the
    operator adds the status; a request that names its account in the body is the
    pair's failure, whatever else it carries (a decoy, a client's own Basic
    credentials)."""
    settings = RateLimitSettings(limits={}, login_routes=(route,), **_statuses(failure_statuses))
    app = RateLimitMiddleware(make(), settings, store=store, events=events)
    path = "/admin/items" if route == "/admin/*" else route.split(" ", 1)[1]
    answered = []
    for _ in statuses:
        response = await request(app, "POST", path, ATTACKER, **guess)
        answered.append(response.status_code)
        clock.advance(PAST_DELAYS)
    assert answered == statuses
    # The legitimate login: the real user, elsewhere, after a typo, gets in.
    right = {
        oauth2_token_endpoint: _oauth("right"),
        fastapi_login: _json({"username": "alice", "password": "right"}),
        admin_behind_basic: _admin("10"),
    }[make]
    typo = _oauth("rihgt") if make is oauth2_token_endpoint else guess
    assert (await request(app, "POST", path, USER, **typo)).status_code == failure
    clock.advance(PAST_DELAYS)
    ok = await request(app, "POST", path, USER, **right)
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("refused", "right"),
    [
        pytest.param(
            _code, _code("code-1"), id="login-oauth2-code-failures-dont-lock-relying-party-ok"
        ),
        pytest.param(
            _refresh,
            _refresh("rt-live"),
            id="login-oauth2-refresh-failures-dont-lock-relying-party-ok",
        ),
        pytest.param(
            _device, _device("dc-approved"), id="login-oauth2-device-polling-doesnt-lock-ok"
        ),
    ],
)
async def test_refused_grants_dont_lock_the_relying_party_by_default(
    refused: Any, right: dict[str, Any], store: SwitchableStore, events: EventEmitter
) -> None:
    """The token endpoint as a login route. Its code, refresh and device grants name
    no account, so every exchange of a relying party's backend is one pair, (none,
    its address); with 400 counted by default, five bogus codes pasted into its
    callback by any of its users, five expired refresh tokens, or a device's
    `authorization_pending` polls (RFC 8628 section 3.5) locked every exchange of
    the relying party out for 15 minutes. With the default statuses (401, 403) none
    counts; the password grant's guesses need 400 opted in
    (`login-oauth2-invalid-grant-400`)."""
    settings = RateLimitSettings(limits={}, login_routes=("POST /oauth/token",))
    app = RateLimitMiddleware(oauth2_token_endpoint(), settings, store=store, events=events)
    attempts = 2 * settings.login_lockout_after
    answered = [
        (await request(app, "POST", "/oauth/token", RELYING_PARTY, **refused(f"x-{i}"))).status_code
        for i in range(attempts)
    ]
    assert answered == [400] * attempts
    # Every other user of the relying party still logs in, at once.
    assert (await request(app, "POST", "/oauth/token", RELYING_PARTY, **right)).status_code == 200
    budget_key = f"login:c:{client_key(RELYING_PARTY[0], ClientGrouping())}"
    assert await store.get(budget_key) == b"0"


@pytest.mark.parametrize(
    ("form", "status"),
    [
        pytest.param({"price": "ten"}, 422, id="login-admin-422-doesnt-lock-ok"),
        pytest.param({"name": "widget"}, 400, id="login-admin-400-doesnt-lock-ok"),
    ],
)
async def test_an_administrators_invalid_forms_dont_lock_them_out_by_default(
    form: dict[str, str], status: int, store: SwitchableStore, events: EventEmitter
) -> None:
    """`/admin/*` behind HTTP Basic as a login route. An administrator, logged in,
    whose forms fail validation (422, or 400) was locked out after five, the next
    page load 429 after the first. With the default statuses none counts; a wrong
    Basic password still does (`login-admin-basic-wrong-password`)."""
    settings = RateLimitSettings(limits={}, login_routes=("/admin/*",))
    app = RateLimitMiddleware(admin_behind_basic(), settings, store=store, events=events)
    admin = {"authorization": ADMIN_BASIC}
    answered = []
    for _ in range(settings.login_lockout_after + 1):
        answered.append(
            (await request(app, "POST", "/admin/items", USER, data=form, headers=admin)).status_code
        )
        answered.append(
            (await request(app, "GET", "/admin/items", USER, headers=admin)).status_code
        )
    assert answered == [status, 200] * (settings.login_lockout_after + 1)
    saved = await request(app, "POST", "/admin/items", USER, **_admin("10"))
    assert saved.status_code == 200


@pytest.mark.parametrize(
    ("make", "path", "unnamed", "failure", "failure_statuses", "right"),
    [
        pytest.param(
            oauth2_token_endpoint,
            "/oauth/token",
            _code("bogus"),
            400,
            WITH_400,
            _code("code-1"),
            id="login-oauth2-opted-in-code-failures-dont-lock-relying-party-ok",
        ),
        pytest.param(
            oauth2_token_endpoint,
            "/oauth/token",
            _refresh("expired"),
            400,
            WITH_400,
            _refresh("rt-live"),
            id="login-oauth2-opted-in-refresh-failures-dont-lock-relying-party-ok",
        ),
        pytest.param(
            admin_behind_basic,
            "/admin/items",
            _admin("ten"),
            422,
            WITH_422,
            _admin("10"),
            id="login-admin-opted-in-422-doesnt-lock-ok",
        ),
    ],
)
async def test_an_added_status_for_a_request_naming_no_account_spends_the_budget_alone(
    make: Any,
    path: str,
    unnamed: dict[str, Any],
    failure: int,
    failure_statuses: tuple[int, ...],
    right: dict[str, Any],
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
    sink: RecordingSink,
) -> None:
    """Opted in, a 400 or 422 to a request whose body names no account (a code or
    refresh grant; a Basic-authenticated form, whose account is the Basic user-id)
    judged no account's password: it is no failure of the pair (no backoff, no
    lockout), only a unit of the client's budget, which still bounds a guess the
    guard misread (`login-opted-in-400-unnamed-spends-budget`)."""
    route = "/admin/*" if make is admin_behind_basic else f"POST {path}"
    settings = RateLimitSettings(limits={}, login_routes=(route,), **_statuses(failure_statuses))
    app = RateLimitMiddleware(make(), settings, store=store, events=events)
    failures = 2 * settings.login_lockout_after
    answered = [
        (await request(app, "POST", path, RELYING_PARTY, **unnamed)).status_code
        for _ in range(failures)
    ]
    assert answered == [failure] * failures
    assert (await request(app, "POST", path, RELYING_PARTY, **right)).status_code == 200
    budget_key = f"login:c:{client_key(RELYING_PARTY[0], ClientGrouping())}"
    assert await store.get(budget_key) == str(failures).encode("ascii")
    reported = [r for r in sink.records if r["reason"] == REASON_LOGIN_FAILED]
    assert len(reported) == failures
    # Reported, but not as a refusal: the jail does not count it.
    assert {(r["action"], r["status"]) for r in reported} == {("allowed", failure)}
    assert all(r["details"] == {"counted": "client"} for r in reported)


async def test_an_added_status_for_a_request_naming_no_account_still_spends_the_budget(
    store: SwitchableStore, events: EventEmitter
) -> None:
    """`login-opted-in-400-unnamed-spends-budget`: past `login_client_lockout_after`
    such failures the client is refused, as for any failures: a guard that misreads
    where the application finds the account still bounds the guesses."""
    settings = RateLimitSettings(
        limits={},
        login_routes=("POST /oauth/token",),
        login_failure_statuses=WITH_400,
        login_lockout_after=3,
        login_client_lockout_after=8,
    )
    app = RateLimitMiddleware(oauth2_token_endpoint(), settings, store=store, events=events)
    answered = [
        (await request(app, "POST", "/oauth/token", ATTACKER, **_code(f"bogus-{i}"))).status_code
        for i in range(settings.login_client_lockout_after + 1)
    ]
    assert answered == [400] * settings.login_client_lockout_after + [429]
    # Another client is not held back.
    assert (await request(app, "POST", "/oauth/token", USER, **_code("code-7"))).status_code == 200


async def test_default_statuses_leave_400_uncounted(
    store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    """`login-failure-statuses-default-leaves-400-out`: a login answering wrong
    credentials 400 needs it opted in (`login-oauth2-invalid-grant-400`); by default
    its 400s are no failure, which is not reported as a weakening."""
    settings = RateLimitSettings(limits={}, login_routes=("POST /oauth/token",))
    app = RateLimitMiddleware(oauth2_token_endpoint(), settings, store=store, events=events)
    answered = []
    for _ in range(7):
        answered.append(
            (await request(app, "POST", "/oauth/token", ATTACKER, **_oauth("wrong"))).status_code
        )
    assert answered == [400] * 7
    assert settings.weakenings() == ["limits={}"]


@pytest.mark.parametrize(
    ("value", "stored", "weakened"),
    [
        pytest.param(None, DEFAULT_FAILURE_STATUSES, "", id="login-failure-statuses-default-ok"),
        pytest.param(
            [422, 403, 401, 401, 400, 429],
            (400, 401, 403, 422, 429),
            "",
            id="login-failure-statuses-sorted-ok",
        ),
        pytest.param(
            [400, 401, 403, 422], (400, 401, 403, 422), "", id="login-failure-statuses-opt-in-ok"
        ),
        pytest.param(
            [401],
            (401,),
            "login_failure_statuses=401 (without 403)",
            id="login-failure-statuses-401-only-weakened",
        ),
        pytest.param(
            [400, 401],
            (400, 401),
            "login_failure_statuses=400,401 (without 403)",
            id="login-failure-statuses-400-without-403-weakened",
        ),
        pytest.param([], None, "", id="login-failure-statuses-empty-refused"),
        pytest.param([400, 403], None, "", id="login-failure-statuses-without-401-refused"),
        pytest.param([401, 200], None, "", id="login-failure-statuses-success-refused"),
        pytest.param([401, 500], None, "", id="login-failure-statuses-server-error-refused"),
        pytest.param([401, 399], None, "", id="login-failure-statuses-redirect-refused"),
        pytest.param([401, "x"], None, "", id="login-failure-statuses-not-a-number-refused"),
        pytest.param("401", None, "", id="login-failure-statuses-not-a-list-refused"),
    ],
)
def test_failure_statuses_are_validated(
    value: Any, stored: tuple[int, ...] | None, weakened: str
) -> None:
    options = {} if value is None else {"login_failure_statuses": value}
    if stored is None:
        with pytest.raises(ValidationError, match="login_failure_statuses"):
            RateLimitSettings(**options)
        return
    settings = RateLimitSettings(**options)
    assert settings.login_failure_statuses == stored
    assert settings.weakenings() == ([weakened] if weakened else [])


def test_failure_statuses_are_shown_by_bastion_config() -> None:
    shown = describe_configuration(Settings(mode="development"))
    assert shown["settings"]["ratelimit"]["login_failure_statuses"] == [401, 403]
    assert DEFAULT_FAILURE_STATUSES == (401, 403)
