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
* `login-oauth2-invalid-grant-400`: an OAuth 2 token endpoint answers wrong
  credentials `400 invalid_grant` (RFC 6749 section 5.2), and only 401 and 403
  counted: any number of guesses. `login-fastapi-422-malformed`: FastAPI answers a
  body it cannot validate 422 (Starlette and Litestar answer 400): a failed
  attempt of its sender, counted as one. Both are in `login_failure_statuses`
  (default 400, 401, 403, 422).

Each beside the legitimate login that must still pass, through real Starlette and
FastAPI applications over a real memory store on a fake clock; the late release
over every store (memory, SQLite, Redis, Redis Cluster) at the guard.
"""

from __future__ import annotations

import asyncio
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
from bastion.ratelimit.login import (
    ATTEMPT_CLAIM_SECONDS,
    DEFAULT_FAILURE_STATUSES,
    LoginGuard,
    LoginPolicy,
)
from bastion.ratelimit.reasons import REASON_LOGIN_LOCKED
from bastion.settings import Settings
from bastion.stores import MemoryStore, SQLiteStore, Store
from bastion.types import ASGIApp
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


# -- failures answered 400 and 422 count ---------------------------------------------


def oauth2_token_endpoint() -> ASGIApp:
    """A resource owner password grant (RFC 6749 section 4.3): wrong credentials
    are `400 invalid_grant` (section 5.2), a missing parameter `invalid_request`."""

    async def token(request: Request) -> Response:
        form = await request.form()
        no_store = {"cache-control": "no-store", "pragma": "no-cache"}
        if form.get("grant_type") != "password" or "username" not in form:
            return JSONResponse({"error": "invalid_request"}, status_code=400, headers=no_store)
        if (form.get("username"), form.get("password")) != ("alice", "right"):
            return JSONResponse({"error": "invalid_grant"}, status_code=400, headers=no_store)
        body = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600}
        return JSONResponse(body, headers=no_store)

    return Starlette(routes=[Route("/oauth/token", token, methods=["POST"])])


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


def _json(body: dict[str, Any]) -> dict[str, Any]:
    return {"json": body}


@pytest.mark.parametrize(
    ("make", "route", "guess", "failure", "statuses"),
    [
        pytest.param(
            oauth2_token_endpoint,
            "POST /oauth/token",
            _oauth("wrong"),
            400,
            [400] * 5 + [429],
            id="login-oauth2-invalid-grant-400",
        ),
        pytest.param(
            fastapi_login,
            "POST /login",
            _json({"username": "alice", "password": 12345}),  # not a string: 422
            422,
            [422] * 5 + [429],
            id="login-fastapi-422-malformed",
        ),
        pytest.param(
            fastapi_login,
            "POST /login",
            _json({"username": "alice", "password": "wrong"}),
            401,
            [401] * 5 + [429],
            id="login-fastapi-401-ok",
        ),
    ],
)
async def test_failures_answered_400_or_422_count(
    make: Any,
    route: str,
    guess: dict[str, Any],
    failure: int,
    statuses: list[int],
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
) -> None:
    settings = RateLimitSettings(limits={}, login_routes=(route,))
    app = RateLimitMiddleware(make(), settings, store=store, events=events)
    path = route.split(" ", 1)[1]
    answered = []
    for _ in statuses:
        response = await request(app, "POST", path, ATTACKER, **guess)
        answered.append(response.status_code)
        clock.advance(PAST_DELAYS)
    assert answered == statuses
    # The legitimate login: the real user, elsewhere, after a typo, gets in.
    right = (
        _oauth("right")
        if make is oauth2_token_endpoint
        else _json({"username": "alice", "password": "right"})
    )
    typo = _oauth("rihgt") if make is oauth2_token_endpoint else guess
    assert (await request(app, "POST", path, USER, **typo)).status_code == failure
    clock.advance(PAST_DELAYS)
    ok = await request(app, "POST", path, USER, **right)
    assert ok.status_code == 200


async def test_failure_statuses_left_out_are_not_counted(
    store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    """`login-failure-statuses-narrowed`: an operator who leaves 400 out (an app
    whose 400 is no login attempt) gets what it asked for, reported as a weakening."""
    settings = RateLimitSettings(
        limits={}, login_routes=("POST /oauth/token",), login_failure_statuses=(401, 403)
    )
    app = RateLimitMiddleware(oauth2_token_endpoint(), settings, store=store, events=events)
    answered = []
    for _ in range(7):
        answered.append(
            (await request(app, "POST", "/oauth/token", ATTACKER, **_oauth("wrong"))).status_code
        )
    assert answered == [400] * 7
    assert settings.weakenings() == [
        "limits={}",
        "login_failure_statuses=401,403 (without 400,422)",
    ]


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
            [401],
            (401,),
            "login_failure_statuses=401 (without 400,403,422)",
            id="login-failure-statuses-401-only-weakened",
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
    assert shown["settings"]["ratelimit"]["login_failure_statuses"] == [400, 401, 403, 422]
