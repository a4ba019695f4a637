"""Attack audit of the login guard: guesses that dodged the per-(account, client) gate.

* `login-concurrent-guesses`: one client fires many guesses at once; a guard that
  only read the gate let all of them reach the password check before the first
  failure closed it, so the backoff and the lockout bounded nothing.
* `login-duplicate-account-field`: `username=decoy&username=alice` is `alice` to
  Starlette (the last field wins) but was `decoy` to the guard; a fresh decoy per
  guess got a fresh pair each time.
* `login-own-success-clears-unnamed`: guesses sent so that the guard reads no
  account (a body past the size it reads) were counted under "" for
  the client, and the attacker's login to its own account, sent the same way,
  cleared them: any number of guesses, a success every four.
* `login-nfkc-account`: `alice` in fullwidth letters is `alice` to an application
  that applies NFKC (Django's `UsernameField`), but was a fresh account to the guard.

Each beside the legitimate login that must still pass, through a real Starlette
application over a real memory store on a fake clock.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.events import EventEmitter
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings
from bastion.ratelimit.login import MAX_LOGIN_BODY_BYTES, account_from_body
from bastion.stores.redis import RedisStore
from bastion.types import ASGIApp
from tests.ratelimit.harness import ATTACKER, USER, request
from tests.support.clock import FakeClock
from tests.support.redis import RedisServer
from tests.support.stores import SwitchableStore

pytestmark = pytest.mark.anyio

FULLWIDTH_ALICE = "".join(chr(ord(c) - ord("a") + 0xFF41) for c in "alice")


class PasswordCheck:
    """A login endpoint's password check, held open until the test releases it (a
    password hash takes a while), counting the attempts that reached it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()
        self.reached: list[str] = []
        self._arrived = asyncio.Condition()

    async def wait_reached(self, count: int) -> None:
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.reached) >= count)

    def app(self) -> ASGIApp:
        async def login(request: Request) -> Response:
            form = await request.form()
            username = str(form.get("username", ""))  # Starlette: the last field wins
            async with self._arrived:
                self.reached.append(username)
                self._arrived.notify_all()
            await self.release.wait()
            if username == "boom":
                raise RuntimeError("boom")
            if "password" not in form:
                return PlainTextResponse("incomplete", status_code=400)
            ok = (username, form.get("password")) in (("alice", "right"), ("mallory", "own"))
            return PlainTextResponse("ok" if ok else "no", status_code=200 if ok else 401)

        return Starlette(routes=[Route("/login", login, methods=["POST"])])


def guarded(check: PasswordCheck, store: SwitchableStore, events: EventEmitter) -> ASGIApp:
    settings = RateLimitSettings(limits={}, login_routes=("POST /login",))
    return RateLimitMiddleware(check.app(), settings, store=store, events=events)


@pytest.mark.parametrize("case", ["login-concurrent-guesses"])
async def test_concurrent_guesses_reach_the_password_check_one_at_a_time(
    case: str, store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    check = PasswordCheck()
    app = guarded(check, store, events)
    check.release.clear()
    wrong = {"username": "alice", "password": "wrong"}
    guesses = [asyncio.create_task(request(app, "POST", "/login", ATTACKER, data=wrong))]
    await check.wait_reached(1)  # the first guess is at the password check
    guesses += [
        asyncio.create_task(request(app, "POST", "/login", ATTACKER, data=wrong)) for _ in range(20)
    ]
    # The real user, elsewhere, is not held back by the attacker's attempt in flight.
    user = asyncio.create_task(
        request(app, "POST", "/login", USER, data={"username": "alice", "password": "right"})
    )
    # Each concurrent guess is answered at once; none waits at the password check.
    _, waiting = await asyncio.wait(guesses[1:], timeout=5)
    await check.wait_reached(2)
    check.release.set()
    assert not waiting
    statuses = sorted([(await task).status_code for task in guesses])
    assert statuses == [401] + [429] * 20
    assert (await user).status_code == 200
    assert check.reached.count("alice") == 2  # the attacker's first guess, and the user
    # Legitimate: once the first failure's delay is over, the next try is judged.
    clock.advance(1)
    assert (await request(app, "POST", "/login", ATTACKER, data=wrong)).status_code == 401


@pytest.mark.parametrize("case", ["login-attempt-released-ok"])
async def test_an_attempt_that_judged_no_password_releases_the_pair(
    case: str, store: SwitchableStore, events: EventEmitter
) -> None:
    check = PasswordCheck()
    app = guarded(check, store, events)
    # A 400 (no password in the form) or a 500 judges no password: the pair is free
    # for the next attempt at once, as before the claim.
    for _ in range(3):
        incomplete = await request(app, "POST", "/login", ATTACKER, data={"username": "alice"})
        assert incomplete.status_code == 400
    with pytest.raises(RuntimeError):
        await request(app, "POST", "/login", ATTACKER, data={"username": "boom"})
    right = {"username": "alice", "password": "right"}
    assert (await request(app, "POST", "/login", ATTACKER, data=right)).status_code == 200
    assert (await request(app, "POST", "/login", ATTACKER, data=right)).status_code == 200


@pytest.mark.parametrize(
    "first",
    [
        pytest.param("decoy{}", id="login-duplicate-account-field"),
        pytest.param("alice", id="login-same-account-twice-ok"),
    ],
)
async def test_duplicate_account_field_counts_against_the_client(
    first: str, store: SwitchableStore, events: EventEmitter
) -> None:
    check = PasswordCheck()
    app = guarded(check, store, events)
    statuses = []
    for i in range(3):
        body = f"username={first.format(i)}&username=alice&password=wrong"
        form = {"content-type": "application/x-www-form-urlencoded"}
        answered = await request(app, "POST", "/login", ATTACKER, content=body, headers=form)
        statuses.append(answered.status_code)
    # Every guess was about alice; the second, too soon after the first, waits.
    assert statuses == [401, 429, 429]


@pytest.mark.parametrize(
    ("body", "account"),
    [
        pytest.param(b"username=decoy&username=alice", "", id="login-form-two-accounts"),
        pytest.param(b"username=alice&username=alice", "alice", id="login-form-same-twice-ok"),
        pytest.param(b"username=decoy;username=alice", "", id="login-form-semicolon-accounts"),
        pytest.param(b"username=alice;password=x", "", id="login-form-semicolon-account-value"),
        pytest.param(
            b"username=alice%3Bx&password=y", "alice;x", id="login-form-encoded-semicolon-ok"
        ),
        pytest.param(
            b'{"username": "decoy", "username": "alice"}', "", id="login-json-two-accounts"
        ),
        pytest.param(
            b'{"username": "alice", "nested": {"username": "x"}}',
            "alice",
            id="login-json-nested-ok",
        ),
        pytest.param(b'{"username": ["alice"]}', "", id="login-json-not-a-string"),
    ],
)
def test_account_named_twice_names_none(body: bytes, account: str) -> None:
    kind = b"application/json" if body.startswith(b"{") else b"application/x-www-form-urlencoded"
    assert account_from_body(body, kind, "username") == account


MULTIPART = b"multipart/form-data; boundary=B"


def _part(disposition: bytes, value: bytes) -> bytes:
    return b"--B\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + value + b"\r\n"


@pytest.mark.parametrize(
    ("body", "account"),
    [
        pytest.param(
            _part(b'form-data; name="username"', b"alice")
            + _part(b'form-data; name="password"', b"x")
            + b"--B--\r\n",
            "alice",
            id="login-multipart-account-ok",
        ),
        pytest.param(
            _part(b'form-data; name="username"', b"decoy")
            + _part(b'form-data; name="username"', b"alice")
            + b"--B--\r\n",
            "",
            id="login-multipart-two-accounts",
        ),
        pytest.param(
            _part(b'form-data; name="username"', b"decoy")
            + _part(b"form-data; name=username", b"alice")
            + b"--B--\r\n",
            "",
            id="login-multipart-unquoted-name",
        ),
        pytest.param(
            _part(b'form-data; name="username"; filename="a"', b"alice") + b"--B--\r\n",
            "",
            id="login-multipart-file-account",
        ),
        pytest.param(
            b'--B\nContent-Disposition: form-data; name="username"\n\nalice\n--B--\n',
            "",
            id="login-multipart-bare-lf",
        ),
        pytest.param(
            _part(b'form-data; name="username"', b"alice"), "", id="login-multipart-unclosed"
        ),
    ],
)
def test_multipart_account_is_read_strictly(body: bytes, account: str) -> None:
    assert account_from_body(body, MULTIPART, "username") == account


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        pytest.param(FULLWIDTH_ALICE, 429, id="login-nfkc-account"),
        pytest.param("ALICE ", 429, id="login-case-account"),
        pytest.param("bob", 401, id="login-other-account-ok"),
    ],
)
async def test_account_spellings_share_the_pair(
    spelling: str, expected: int, store: SwitchableStore, events: EventEmitter
) -> None:
    check = PasswordCheck()
    app = guarded(check, store, events)
    wrong = {"username": "alice", "password": "wrong"}
    assert (await request(app, "POST", "/login", ATTACKER, data=wrong)).status_code == 401
    again = {"username": spelling, "password": "wrong"}
    assert (await request(app, "POST", "/login", ATTACKER, data=again)).status_code == expected


def _unnamed(username: str, password: str) -> dict[str, Any]:
    """A login form past the size the guard reads (`MAX_LOGIN_BODY_BYTES`): it names
    no account to the guard, and `username` to Starlette."""
    pad = "x" * (MAX_LOGIN_BODY_BYTES + 1)
    return {"data": {"pad": pad, "username": username, "password": password}}


@pytest.mark.parametrize(
    "own_login",
    [
        pytest.param(_unnamed("mallory", "own"), id="login-own-success-clears-unnamed"),
        pytest.param(
            {"data": {"username": "mallory", "password": "own"}}, id="login-own-success-named-ok"
        ),
    ],
)
async def test_own_success_does_not_clear_unnamed_guesses(
    own_login: dict[str, Any],
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
) -> None:
    check = PasswordCheck()
    app = guarded(check, store, events)
    statuses = []
    for _ in range(6):
        guess = await request(app, "POST", "/login", ATTACKER, **_unnamed("alice", "guess"))
        statuses.append(guess.status_code)
        clock.advance(61)  # past every backoff delay, not past a lockout
        await request(app, "POST", "/login", ATTACKER, **own_login)
    # The fifth failure locks the client out of unnamed attempts, own login or not.
    assert statuses == [401] * 5 + [429]
    # Legitimate: the client's named login to its own account still goes.
    named = await request(
        app, "POST", "/login", ATTACKER, data={"username": "mallory", "password": "own"}
    )
    assert named.status_code == 200


@pytest.mark.parametrize("case", ["login-multipart-same-pair-ok"])
async def test_multipart_and_urlencoded_logins_share_the_pair(
    case: str, store: SwitchableStore, events: EventEmitter
) -> None:
    check = PasswordCheck()
    app = guarded(check, store, events)
    files = {"username": (None, "alice"), "password": (None, "wrong")}
    assert (await request(app, "POST", "/login", ATTACKER, files=files)).status_code == 401
    wrong = {"username": "alice", "password": "wrong"}
    assert (await request(app, "POST", "/login", ATTACKER, data=wrong)).status_code == 429
    assert check.reached == ["alice"]


@pytest.mark.parametrize("case", ["login-concurrent-guesses-redis"])
async def test_concurrent_guesses_over_redis(
    case: str, redis_standalone: RedisServer, events: EventEmitter
) -> None:
    store = RedisStore(redis_standalone.url, key_prefix=f"t{uuid.uuid4().hex[:12]}:")
    try:
        check = PasswordCheck()
        settings = RateLimitSettings(limits={}, login_routes=("POST /login",))
        app = RateLimitMiddleware(check.app(), settings, store=store, events=events)
        check.release.clear()
        wrong = {"username": "alice", "password": "wrong"}
        guesses = [
            asyncio.create_task(request(app, "POST", "/login", ATTACKER, data=wrong))
            for _ in range(10)
        ]
        await check.wait_reached(1)
        # Every guess but the one at the password check is answered at once.
        _, waiting = await asyncio.wait(guesses, timeout=2)
        check.release.set()
        assert len(waiting) == 1
        statuses = sorted([(await task).status_code for task in guesses])
        assert statuses == [401] + [429] * 9
        assert check.reached == ["alice"]
    finally:
        await store.close()
