"""Attack audit of the login guard's per-client failure budget, and of the account
spellings it folds together.

* `login-client-budget-fresh-accounts`: each account the guard reads as another
  one is a fresh (account, client) pair, with its own five failures; wherever the
  guard and the application still read the account differently (a database
  collation, a body the guard cannot read), a client got five guesses per
  spelling. Past `login_client_lockout_after` failures on any accounts within the
  failure window, its attempts on every account are refused (429, the lockout).
* `login-own-success-keeps-budget`: the attacker's login to its own account does
  not give the budget back.
* `login-collation-spellings`: Postgres's `UPPER(...)` equates `alice` with a
  dotless i (U+0131) and `alice`, and MariaDB's `_ci` collations equate `alicé`,
  `álice` and `alice` with a zero-width space inside; NFKC and case folding kept
  each a fresh account.
* `login-budget-locks-out-shared-address`: one client behind a shared address
  (NAT, a corporate egress) spent the budget on made-up accounts, and every user
  there was refused for the rest of the hour. A pair that logged in within the
  failure window may still try, under its own backoff and lockout
  (`login-budget-known-pair-lockout-holds`: its success past the budget clears
  nothing), and `never_ban` networks have no budget (`login-budget-never-ban-ok`).
* `login-budget-overshoot-by-concurrency`: the budget was read before an attempt
  and counted after it, so a burst of concurrent attempts on distinct accounts all
  passed the read; `begin` now reserves a unit per attempt.

Each beside the legitimate login that must still pass, through a real Starlette
application over a real memory store on a fake clock (the budget over a real Redis
too), and the store round trips an allowed attempt costs.
"""

from __future__ import annotations

import asyncio
import unicodedata
import uuid
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.cli import describe_configuration
from bastion.events import EventEmitter
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings
from bastion.ratelimit.keys import ClientGrouping, client_key
from bastion.ratelimit.login import DEFAULT_CLIENT_LOCKOUT_AFTER, normalise_account
from bastion.settings import Settings
from bastion.stores import MemoryStore, Store
from bastion.stores.redis import RedisStore
from bastion.types import ASGIApp
from tests.conftest import asgi_client
from tests.ratelimit.harness import ATTACKER, USER, request
from tests.support.clock import FakeClock
from tests.support.redis import RedisServer
from tests.support.stores import SwitchableStore

pytestmark = pytest.mark.anyio


def collated_login(seen: list[str]) -> ASGIApp:
    """A login whose user lookup equates spellings as accent- and case-insensitive
    database collations do (a stand-in for Postgres `UPPER(...)` and MariaDB
    `utf8mb4_unicode_ci`, so that the test needs no database server)."""

    def same_user(name: str) -> str:
        decomposed = unicodedata.normalize("NFKD", name.upper())
        kept = "".join(c for c in decomposed if unicodedata.category(c) not in ("Mn", "Cf"))
        return kept.casefold()

    async def login(request: Request) -> Response:
        form = await request.form()
        user = str(form.get("username"))
        seen.append(user)
        password = form.get("password")
        if password is None:
            return PlainTextResponse("incomplete", status_code=400)  # counted if 400 is opted in
        if password == "outage":  # its user database is down: judged no password
            return PlainTextResponse("try later", status_code=503)
        ok = (same_user(user), password) in (("alice", "right"), ("mallory", "own"))
        return PlainTextResponse("ok" if ok else "no", status_code=200 if ok else 401)

    return Starlette(routes=[Route("/login", login, methods=["POST"])])


def guarded(app: ASGIApp, store: Store, events: EventEmitter, **settings: Any) -> ASGIApp:
    options = RateLimitSettings(limits={}, login_routes=("POST /login",), **settings)
    return RateLimitMiddleware(app, options, store=store, events=events)


async def attempt(
    app: ASGIApp, username: str, guess: str = "wrong", client: Any = ATTACKER
) -> httpx.Response:
    form = {"username": username, "password": guess}
    return await request(app, "POST", "/login", client, data=form)


# Spellings the collations above equate with `alice`, each a fresh account to NFKC
# and case folding (checked against real servers by the review).
COLLATED = ["al\u0131ce", "alicé", "álice", "al\u200bice", "al\u200b\u200bice", "a\u0301lice"]


@pytest.mark.parametrize(
    ("spellings", "statuses"),
    [
        pytest.param(COLLATED, [401] * 5 + [429], id="login-collation-spellings"),
        pytest.param(["alice"] * 6, [401] * 5 + [429], id="login-same-spelling-ok"),
        pytest.param(["alice", "bob"] * 3, [401] * 6, id="login-other-account-ok"),
    ],
)
async def test_collation_spellings_share_the_pair(
    spellings: list[str],
    statuses: list[int],
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
) -> None:
    seen: list[str] = []
    app = guarded(collated_login(seen), store, events)
    answered = []
    for spelling in spellings:
        answered.append((await attempt(app, spelling)).status_code)
        clock.advance(61)  # past every delay, not past the lockout
    assert answered == statuses


@pytest.mark.parametrize(
    ("spelling", "account"),
    [
        pytest.param("ALICE ", "alice", id="login-fold-case"),
        pytest.param("\uff41\uff4c\uff49\uff43\uff45", "alice", id="login-fold-fullwidth"),
        pytest.param("al\u0131ce", "alice", id="login-fold-dotless-i"),
        pytest.param("İalice", "ialice", id="login-fold-dotted-capital-i"),
        pytest.param("a\u0301li\u0327ce\u20dd", "alice", id="login-fold-marks"),
        pytest.param("\u200ba\u00adlice\u2060\x00", "alice", id="login-fold-format-control"),
        pytest.param("Straße", "strasse", id="login-fold-sharp-s"),
        pytest.param("bob", "bob", id="login-fold-other-ok"),
    ],
)
def test_normalise_account_folds_every_collation_spelling(spelling: str, account: str) -> None:
    assert normalise_account(spelling) == account
    assert normalise_account(account) == account


def _fresh(i: int) -> str:
    """A fresh account per guess: what each spelling the guard reads apart is."""
    return f"decoy{i}"


@pytest.mark.parametrize(
    ("budget", "statuses"),
    [
        pytest.param(3, [401] * 3 + [429] * 2, id="login-client-budget-fresh-accounts"),
        pytest.param(10, [401] * 4 + [200], id="login-client-under-budget-ok"),
    ],
)
async def test_the_client_budget_bounds_fresh_accounts(
    budget: int,
    statuses: list[int],
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
) -> None:
    seen: list[str] = []
    app = guarded(collated_login(seen), store, events, login_client_lockout_after=budget)
    answered = [(await attempt(app, _fresh(i))).status_code for i in range(4)]
    # Past the budget, every account is refused, the real one with the right password too.
    last = await attempt(app, "alice", "right")
    answered.append(last.status_code)
    assert answered == statuses
    if last.status_code == 429:
        assert last.headers["retry-after"] == "900"
        assert len(seen) == budget
    # Legitimate: the real user, elsewhere, logs in all along.
    assert (await attempt(app, "alice", "right", USER)).status_code == 200
    # The window ends an hour after the client's first failure: the budget is back.
    clock.advance(3600)
    assert (await attempt(app, "alice", "right")).status_code == 200


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("own", id="login-own-success-keeps-budget"),
        pytest.param("wrong", id="login-budget-no-success-ok"),
    ],
)
async def test_a_success_does_not_give_the_budget_back(
    password: str, store: SwitchableStore, events: EventEmitter
) -> None:
    app = guarded(collated_login([]), store, events, login_client_lockout_after=3)
    for i in range(2):
        assert (await attempt(app, _fresh(i))).status_code == 401
    own = await attempt(app, "mallory", password)
    assert own.status_code == (200 if password == "own" else 401)
    if password == "own":
        assert (await attempt(app, _fresh(2))).status_code == 401
    assert (await attempt(app, _fresh(3))).status_code == 429


@pytest.mark.parametrize("case", ["login-client-budget-default"])
async def test_the_default_budget(
    case: str, store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    app = guarded(collated_login([]), store, events)
    for i in range(DEFAULT_CLIENT_LOCKOUT_AFTER):
        assert (await attempt(app, _fresh(i))).status_code == 401
    refused = await attempt(app, _fresh(DEFAULT_CLIENT_LOCKOUT_AFTER))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "900"


@pytest.mark.parametrize("case", ["login-client-budget-redis"])
async def test_the_client_budget_over_redis(
    case: str, redis_standalone: RedisServer, events: EventEmitter
) -> None:
    store = RedisStore(redis_standalone.url, key_prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        app = guarded(collated_login([]), store, events, login_client_lockout_after=2)
        assert [(await attempt(app, _fresh(i))).status_code for i in range(3)] == [401, 401, 429]
        assert (await attempt(app, "alice", "right", USER)).status_code == 200
    finally:
        await store.close()


class CountingStore(MemoryStore):
    """A real memory store that counts its calls (each one round trip on Redis)."""

    calls = 0

    async def get(self, key: str) -> bytes | None:
        self.calls += 1
        return await super().get(key)

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        self.calls += 1
        await super().set(key, value, ttl_seconds)

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        self.calls += 1
        return await super().set_if_absent(key, value, ttl_seconds)

    async def delete(self, key: str) -> bool:
        self.calls += 1
        return await super().delete(key)

    async def delete_if_equal(self, key: str, value: bytes) -> bool:
        self.calls += 1
        return await super().delete_if_equal(key, value)

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None) -> int:
        self.calls += 1
        return await super().incr(key, amount, ttl_seconds=ttl_seconds)


@pytest.mark.parametrize(
    ("password", "calls"),
    [
        # begin: the budget's unit reserved, the claim, the account's read; a
        # failure: two counters and the gate (the unit stays); a success: the pair
        # and the gate deleted, the pair's mark set, the unit given back.
        pytest.param("wrong", 3 + 3, id="login-round-trips-failure"),
        pytest.param("right", 3 + 4, id="login-round-trips-success"),
    ],
)
async def test_round_trips_per_attempt(password: str, calls: int, events: EventEmitter) -> None:
    store = CountingStore()
    app = guarded(collated_login([]), store, events, ban_enabled=False)  # no ban read
    await attempt(app, "alice", password)
    assert store.calls == calls


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        pytest.param(0, False, id="login-client-lockout-zero-refused"),
        pytest.param(-1, False, id="login-client-lockout-negative-refused"),
        pytest.param(1, True, id="login-client-lockout-one-ok"),
    ],
)
def test_the_budget_setting_is_validated(value: int, valid: bool) -> None:
    if valid:
        settings = RateLimitSettings(login_client_lockout_after=value)
        assert settings.login_policy().client_lockout_after == value
    else:
        with pytest.raises(ValidationError):
            RateLimitSettings(login_client_lockout_after=value)


def test_the_budget_is_shown_by_bastion_config() -> None:
    shown = describe_configuration(Settings(mode="development"))
    assert shown["settings"]["ratelimit"]["login_client_lockout_after"] == 100


# One shared address (a NAT, a corporate egress): the attacker and the office's
# users alike.
OFFICE = ("198.51.100.7", 40000)


@pytest.mark.parametrize(
    ("before", "after", "statuses"),
    [
        # alice logged in from the office this hour: she still can.
        pytest.param(
            [("alice", "right")],
            [("alice", "right")],
            [200],
            id="login-budget-locks-out-shared-address",
        ),
        pytest.param(
            [("alice", "right")],
            [("alice", "typo"), ("alice", "right")],
            [401, 200],
            id="login-budget-known-user-ok",
        ),
        # Only the pair that logged in: any other account from the office is refused.
        pytest.param(
            [("alice", "right")],
            [("bob", "right"), ("decoy-x", "x")],
            [429, 429],
            id="login-budget-unknown-pairs-refused",
        ),
        # Its own backoff and lockout hold, and its success past the budget clears
        # nothing: the attacker's own account, read as another one wherever the
        # guard and the application differ, gets a pair's guesses, not more.
        pytest.param(
            [("mallory", "own")],
            [("mallory", "w"), ("mallory", "own")] * 5 + [("mallory", "own")],
            [401, 200] * 4 + [401, 429, 429],
            id="login-budget-known-pair-lockout-holds",
        ),
    ],
)
async def test_a_known_pair_logs_in_past_the_budget(
    before: list[tuple[str, str]],
    after: list[tuple[str, str]],
    statuses: list[int],
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
) -> None:
    app = guarded(collated_login([]), store, events, login_client_lockout_after=3)
    for username, password in before:
        assert (await attempt(app, username, password, OFFICE)).status_code == 200
    # One host behind the address spends the budget on made-up accounts.
    burned = [(await attempt(app, _fresh(i), client=OFFICE)).status_code for i in range(4)]
    assert burned == [401, 401, 401, 429]
    answered = []
    for username, password in after:
        clock.advance(61)  # past every delay, not past the lockout
        answered.append((await attempt(app, username, password, OFFICE)).status_code)
    assert answered == statuses


@pytest.mark.parametrize(
    ("never_ban", "statuses"),
    [
        pytest.param(("198.51.100.0/24",), [401] * 6 + [200], id="login-budget-never-ban-ok"),
        pytest.param(("192.0.2.0/24",), [401] * 3 + [429] * 4, id="login-budget-other-network"),
    ],
)
async def test_never_ban_networks_have_no_budget(
    never_ban: tuple[str, ...],
    statuses: list[int],
    store: SwitchableStore,
    events: EventEmitter,
) -> None:
    app = guarded(
        collated_login([]), store, events, login_client_lockout_after=3, never_ban=never_ban
    )
    answered = [(await attempt(app, _fresh(i), client=OFFICE)).status_code for i in range(6)]
    answered.append((await attempt(app, "alice", "right", OFFICE)).status_code)
    assert answered == statuses


@pytest.mark.parametrize("case", ["login-budget-never-ban-pair-lockout-holds"])
async def test_never_ban_keeps_the_pair_lockout(
    case: str, store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    app = guarded(collated_login([]), store, events, never_ban=("198.51.100.0/24",))
    answered = []
    for _ in range(6):
        answered.append((await attempt(app, "alice", "wrong", OFFICE)).status_code)
        clock.advance(61)
    assert answered == [401] * 5 + [429]


class HeldCheck:
    """A password check held open until released (a password hash takes a while),
    counting the attempts that reached it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.reached = 0

    def app(self) -> ASGIApp:
        async def login(request: Request) -> Response:
            await request.form()
            self.reached += 1
            await self.release.wait()
            return PlainTextResponse("no", status_code=401)

        return Starlette(routes=[Route("/login", login, methods=["POST"])])


@pytest.mark.parametrize(
    ("attempts", "reached"),
    [
        pytest.param(300, 100, id="login-budget-overshoot-by-concurrency"),
        pytest.param(60, 60, id="login-budget-concurrent-under-budget-ok"),
    ],
)
async def test_concurrent_attempts_stay_within_the_budget(
    attempts: int, reached: int, store: SwitchableStore, events: EventEmitter
) -> None:
    check = HeldCheck()
    app = guarded(check.app(), store, events)  # the default budget, 100
    async with asgi_client(app, client=ATTACKER) as http:

        async def one(i: int) -> int:
            form = {"username": f"user{i}", "password": "x"}
            return (await http.post("/login", data=form)).status_code

        tasks = [asyncio.create_task(one(i)) for i in range(attempts)]
        # Every attempt either reached the check or was refused before the release.
        for _ in range(500):
            if check.reached + sum(task.done() for task in tasks) >= attempts:
                break
            await asyncio.sleep(0.01)
        check.release.set()
        statuses = await asyncio.gather(*tasks)
    assert check.reached == reached
    assert statuses.count(401) == reached
    assert statuses.count(429) == attempts - reached


@pytest.mark.parametrize("case", ["login-budget-concurrency-redis"])
async def test_concurrent_attempts_over_redis(
    case: str, redis_standalone: RedisServer, events: EventEmitter
) -> None:
    store = RedisStore(redis_standalone.url, key_prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        check = HeldCheck()
        app = guarded(check.app(), store, events, login_client_lockout_after=10)
        async with asgi_client(app, client=ATTACKER) as http:

            async def one(i: int) -> int:
                form = {"username": f"user{i}", "password": "x"}
                return (await http.post("/login", data=form)).status_code

            tasks = [asyncio.create_task(one(i)) for i in range(40)]
            for _ in range(500):
                if check.reached + sum(task.done() for task in tasks) >= 40:
                    break
                await asyncio.sleep(0.01)
            check.release.set()
            statuses = await asyncio.gather(*tasks)
        assert check.reached == 10
        assert sorted(statuses) == [401] * 10 + [429] * 30
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("outcome", "units", "failure_statuses"),
    [
        pytest.param("wrong", b"1", None, id="login-budget-failure-keeps-unit"),
        pytest.param("right", b"0", None, id="login-budget-success-gives-unit-back-ok"),
        pytest.param("outage", b"0", None, id="login-budget-abandon-gives-unit-back-ok"),
        # A 400 is no failure by default (an OAuth 2 code grant's); opted in, it is.
        pytest.param("incomplete", b"0", None, id="login-budget-bad-request-gives-unit-back-ok"),
        pytest.param(
            "incomplete", b"1", (400, 401, 403), id="login-budget-bad-request-opted-in-keeps-unit"
        ),
    ],
)
async def test_an_attempt_keeps_its_unit_only_as_a_failure(
    outcome: str,
    units: bytes,
    failure_statuses: tuple[int, ...] | None,
    store: SwitchableStore,
    events: EventEmitter,
) -> None:
    statuses_option = (
        {} if failure_statuses is None else {"login_failure_statuses": failure_statuses}
    )
    layer = RateLimitMiddleware(
        collated_login([]),
        RateLimitSettings(limits={}, login_routes=("POST /login",), **statuses_option),
        store=store,
        events=events,
    )
    form = {"username": "alice", "password": outcome}
    if outcome == "incomplete":
        del form["password"]
    response = await request(layer, "POST", "/login", ATTACKER, data=form)
    statuses = {"wrong": 401, "right": 200, "incomplete": 400, "outage": 503}
    assert response.status_code == statuses[outcome]
    budget_key = f"login:c:{client_key(ATTACKER[0], ClientGrouping())}"
    assert await store.get(budget_key) == units
