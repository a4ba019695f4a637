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
* `login-multipart-cte-base64`, `login-multipart-charset-utf7`: Django decodes a
  multipart field whose part says `Content-Transfer-Encoding: base64` (before 6.1
  dropping the characters outside the alphabet: `YW!xpY2U=` is `alice`; in every
  version ignoring the unused bits of the last character: `YWxpY2V=`), and decodes
  fields in the request's `charset` (`+AGE-lice` is `alice` in UTF-7); the guard
  read the raw bytes, a fresh decoy account per spelling.
  `login-form-charset-utf7`: the same charset on a url-encoded form (Django 5.2
  refuses it with a 400; a parser that honours the charset reads `alice`).
* `login-json-under-form-type`, `login-json-utf16-under-form-type`,
  `login-form-under-json-type`: applications read JSON whatever the declared type
  (Starlette's `request.json()`, which also decodes UTF-16), and url-encoded
  pairs out of any body (`QueryDict(request.body)`): a body that is both, with the
  account in one reading and a fresh decoy in the other, named the decoy.
* `login-401-then-raise`: a 401 already sent was not counted when the app raised
  afterwards (a background task failing on a field the attacker chose): every
  guess went through.

* `login-multipart-epilogue-django`, `login-multipart-preamble-*`: Django parses a
  part out of the text after the closing boundary (and before the first one);
  the guard read only the parts between, a fresh decoy per guess.
* `login-query-string-flask-values`: Flask's `request.values` takes the query
  string's `username` before the body's; the guard read the body alone.
* `login-basic-auth-body-decoy`: the app checks the `Authorization: Basic`
  user-id, the guard read a decoy in the body. The body's reading wins now (see
  the next item): a fresh decoy per guess is bounded by the client budget.
* `login-proxy-basic-gate-merges-users`: behind a proxy's Basic gate (nginx
  `auth_basic` on a staging site) every form login sent the gate's user-id too;
  as a reading that had to agree, it made every login name no account, so one
  user's typos locked every user at the address out. The user-id is read only
  when nothing else names the account (`login-basic-only-ok`).
* `login-account-too-long`: a fresh name per guess of combining marks, each NFKC'd
  (quadratic in the marks) two or three times per request, each a fresh pair.
* `login-get-page-clears-failures`: a method-less login route (`/login`) made the
  login page's 200 a success that cleared the client's failures, and page loads
  claim the pair's gate (`login-page-during-attempt-ok`).
* `login-basic-get-brute-force`, `login-values-get-brute-force`: safe methods
  were then never attempts (and `GET` patterns refused), but HTTP Basic guesses
  on `/admin/*` and a handler reading the query string (Flask's
  `request.values`) are GETs: none was throttled. A safe method is an attempt
  when it carries credentials, and its 2xx is never a success
  (`login-basic-get-success-clears-nothing`; a plain page GET, `login-page-get-ok`,
  neither counts nor clears).
* `login-empty-messages-pile-up`: empty body messages were all kept, however many.

Each beside the legitimate login that must still pass, through a real Starlette
application (and a real Django ASGI or Flask application where the attack is theirs) over
a real memory store on a fake clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.events import EventEmitter
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings
from bastion.ratelimit.login import (
    MAX_ACCOUNT_CHARS,
    MAX_LOGIN_BODY_BYTES,
    account_from_body,
    account_from_request,
    normalise_account,
)
from bastion.ratelimit.middleware import MAX_LOGIN_MESSAGES
from bastion.stores.redis import RedisStore
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from tests.ratelimit.harness import ATTACKER, USER, django_asgi, request
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
            if form.get("password") == "outage":  # its user database is down
                return PlainTextResponse("try later", status_code=503)
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
    # A 503 (the app's user database is down) or a 500 judges no password: the pair
    # is free for the next attempt at once, as before the claim. (A 400 counts: an
    # OAuth 2 token endpoint answers wrong credentials with it.)
    for _ in range(3):
        outage = {"username": "alice", "password": "outage"}
        assert (await request(app, "POST", "/login", ATTACKER, data=outage)).status_code == 503
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


class DjangoLogin:
    """The URL configuration of a real Django ASGI application (`ASGIHandler`): three
    login views, each reading the account as Django code commonly does, recording
    what it read."""

    def __init__(self) -> None:
        from django.http import HttpRequest, HttpResponse, QueryDict
        from django.urls import path

        self.seen: list[str] = []

        def answer(data: Any) -> HttpResponse:
            username = str(data.get("username"))
            self.seen.append(username)
            ok = (username, data.get("password")) == ("alice", "right")
            return HttpResponse("ok" if ok else "no", status=200 if ok else 401)

        def form_login(request: HttpRequest) -> HttpResponse:
            return answer(request.POST)  # what `LoginView` reads

        def json_login(request: HttpRequest) -> HttpResponse:
            return answer(json.loads(request.body))

        def body_form_login(request: HttpRequest) -> HttpResponse:
            return answer(QueryDict(request.body))  # what views handling PUT do

        self.urlpatterns = [
            path("login", form_login),
            path("json-login", json_login),
            path("body-login", body_form_login),
        ]


@pytest.fixture
def django_login() -> Iterator[tuple[DjangoLogin, ASGIApp]]:
    views = DjangoLogin()
    with django_asgi(views) as handler:
        yield views, handler


def starlette_json_login(seen: list[str]) -> ASGIApp:
    async def login(request: Request) -> Response:
        data = await request.json()  # whatever the Content-Type
        seen.append(str(data.get("username")))
        ok = (data.get("username"), data.get("password")) == ("alice", "right")
        return PlainTextResponse("ok" if ok else "no", status_code=200 if ok else 401)

    return Starlette(routes=[Route("/json-login", login, methods=["POST"])])


def guard_routes(app: ASGIApp, store: SwitchableStore, events: EventEmitter) -> ASGIApp:
    routes = ("POST /login", "POST /json-login", "POST /body-login")
    settings = RateLimitSettings(limits={}, login_routes=routes)
    return RateLimitMiddleware(app, settings, store=store, events=events)


async def guesses(
    app: ASGIApp, path: str, body: Callable[[int], bytes], content_type: bytes
) -> list[int]:
    """Three guesses at alice's password from one client, back to back, each body
    made by `body(i)`."""
    statuses = []
    for i in range(3):
        headers = {"content-type": content_type.decode()}
        answered = await request(app, "POST", path, ATTACKER, content=body(i), headers=headers)
        statuses.append(answered.status_code)
    return statuses


def _multipart_login(part_header: bytes, username: bytes) -> bytes:
    return (
        _part(b'form-data; name="username"' + part_header, username)
        + _part(b'form-data; name="password"', b"guess")
        + b"--B--\r\n"
    )


def _base64_alice(i: int) -> bytes:
    """The i-th base64 spelling of `alice` that the installed Django decodes as `alice`.

    Django before 6.1 decodes a part leniently, dropping the characters outside the
    alphabet: `YWxpY2U=` with junk. Django 6.1 validates the alphabet (django/django
    pull request 21145) and keeps such a part's raw text, but, as every base64
    decoder, ignores the unused low bits of the last character: `YWxpY2V=` is `alice`.
    """
    import django

    if django.VERSION < (6, 1):
        return b"YW" + b"!" * (i + 1) + b"xpY2U="
    return b"YWxpY2" + b"UVW"[i : i + 1] + b"="


FORM = b"application/x-www-form-urlencoded"
JSON = b"application/json"


UTF7_ALICE = (b"+AGE-lice", b"a+AGw-ice", b"al+AGk-ce")
CTE_BASE64 = b"\r\nContent-Transfer-Encoding: base64"


@pytest.mark.parametrize(
    ("body", "content_type", "account"),
    [
        pytest.param(
            lambda i: _multipart_login(CTE_BASE64, _base64_alice(i)),
            MULTIPART,
            "",
            id="login-multipart-cte-base64",
        ),
        pytest.param(
            lambda i: _multipart_login(b"", UTF7_ALICE[i]),
            MULTIPART + b"; charset=utf-7",
            "",
            id="login-multipart-charset-utf7",
        ),
        pytest.param(
            lambda i: _multipart_login(b"", b"alice"),
            MULTIPART,
            "alice",
            id="login-multipart-plain-ok",
        ),
        pytest.param(
            lambda i: _multipart_login(b"", b"alice"),
            MULTIPART + b'; charset="UTF-8"',
            "alice",
            id="login-multipart-charset-utf8-ok",
        ),
    ],
)
async def test_multipart_spellings_django_decodes_name_no_other_account(
    body: Callable[[int], bytes],
    content_type: bytes,
    account: str,
    django_login: tuple[DjangoLogin, ASGIApp],
    store: SwitchableStore,
    events: EventEmitter,
) -> None:
    views, django_app = django_login
    app = guard_routes(django_app, store, events)
    assert account_from_body(body(0), content_type, "username") == account
    # Every spelling is `alice` to Django: a fresh decoy account per guess for a
    # guard that read the raw bytes. Named as alice or as none, the second waits.
    assert await guesses(app, "/login", body, content_type) == [401, 429, 429]
    assert views.seen == ["alice"]
    # Legitimate: the real user, elsewhere, logs in with the same spelling.
    right = {"content-type": content_type.decode()}
    correct = body(0).replace(b"guess", b"right")
    answered = await request(app, "POST", "/login", USER, content=correct, headers=right)
    assert answered.status_code == 200


@pytest.mark.parametrize(
    ("parameters", "account"),
    [
        pytest.param(b"charset=utf-7", "", id="login-form-charset-utf7"),
        pytest.param(b'charset="UTF-7"', "", id="login-form-charset-utf7-quoted"),
        pytest.param(b"charset*=utf-8''utf-7", "", id="login-form-charset-rfc2231"),
        pytest.param(b"charset=utf-8; charset=utf-7", "", id="login-form-charset-twice"),
        pytest.param(b"charset=utf-8", "alice", id="login-form-charset-utf8-ok"),
        pytest.param(b'charset="US-ASCII"', "alice", id="login-form-charset-ascii-ok"),
    ],
)
def test_form_in_another_charset_names_none(parameters: bytes, account: str) -> None:
    form = FORM + b"; " + parameters
    body = b"username=alice&password=guess" if account else b"username=%2BAGE-lice"
    assert account_from_body(body, form, "username") == account
    # Any type: JSON in UTF-7 spells `alice` as `+AGE-lice` too.
    json_body = b'{"username": "alice"}' if account else b'{"username": "+AGE-lice"}'
    assert account_from_body(json_body, JSON + b"; " + parameters, "username") == account


def _utf16_polyglot(i: int) -> bytes:
    """A UTF-16 JSON object naming alice, one of whose strings is, byte for byte,
    `&username=d<i>&&`: `json.loads` decodes UTF-16 by itself."""
    decoy = f"&username=d{i}&&".encode()
    spelled = "".join(chr(int.from_bytes(decoy[n : n + 2], "big")) for n in range(0, 14, 2))
    data = {"username": "alice", "password": "guess", "x": spelled}
    return json.dumps(data, ensure_ascii=False).encode("utf-16-be")


@pytest.mark.parametrize(
    ("framework", "path", "body", "content_type", "account"),
    [
        pytest.param(
            "starlette",
            "/json-login",
            lambda i: b'{"username": "alice", "password": "guess", "x": "&username=d%d&"}' % i,
            FORM,
            "",
            id="login-json-under-form-type",
        ),
        pytest.param(
            "django",
            "/json-login",
            lambda i: b'{"username": "alice", "password": "guess", "x": "&username=d%d&"}' % i,
            FORM,
            "",
            id="login-json-under-form-type-django",
        ),
        pytest.param(
            "starlette",
            "/json-login",
            _utf16_polyglot,
            FORM,
            "",
            id="login-json-utf16-under-form-type",
        ),
        pytest.param(
            "django",
            "/body-login",
            lambda i: b'{"username": "d%d", "x": "&username=alice&password=guess&"}' % i,
            JSON,
            "",
            id="login-form-under-json-type",
        ),
        pytest.param(
            "starlette",
            "/json-login",
            lambda i: b'{"username": "alice", "password": "guess"}',
            JSON,
            "alice",
            id="login-json-ok",
        ),
        pytest.param(
            "django",
            "/login",
            lambda i: b"username=alice&password=guess",
            FORM,
            "alice",
            id="login-form-ok",
        ),
    ],
)
async def test_body_read_every_way_names_no_decoy(
    framework: str,
    path: str,
    body: Callable[[int], bytes],
    content_type: bytes,
    account: str,
    django_login: tuple[DjangoLogin, ASGIApp],
    store: SwitchableStore,
    events: EventEmitter,
) -> None:
    views, django_app = django_login
    seen = views.seen
    if framework == "starlette":
        seen = []
        django_app = starlette_json_login(seen)
    app = guard_routes(django_app, store, events)
    assert account_from_body(body(0), content_type, "username") == account
    # alice to the application each time, a fresh decoy to a guard reading one way.
    assert await guesses(app, path, body, content_type) == [401, 429, 429]
    assert seen == ["alice"]
    # Legitimate: the real user, elsewhere, logs in the same way.
    headers = {"content-type": content_type.decode()}
    correct = (
        body(0)
        .replace(b"guess", b"right")
        .replace("guess".encode("utf-16-be"), "right".encode("utf-16-be"))
    )
    answered = await request(app, "POST", path, USER, content=correct, headers=headers)
    assert answered.status_code == 200


def audited_login() -> ASGIApp:
    """A Starlette login whose background task (an ASCII-only audit sink) fails on a
    non-ASCII `note`, after the response is sent."""

    def audit(note: str) -> None:
        note.encode("ascii")

    async def login(request: Request) -> Response:
        form = await request.form()
        ok = (form.get("username"), form.get("password")) == ("alice", "right")
        return PlainTextResponse(
            "ok" if ok else "no",
            status_code=200 if ok else 401,
            background=BackgroundTask(audit, str(form.get("note", ""))),
        )

    return Starlette(routes=[Route("/login", login, methods=["POST"])])


async def _status(app: ASGIApp, data: dict[str, str]) -> int | str:
    """The status the client saw, or the error the app raised after answering."""
    try:
        return (await request(app, "POST", "/login", ATTACKER, data=data)).status_code
    except UnicodeEncodeError as error:
        return type(error).__name__


@pytest.mark.parametrize(
    ("note", "first"),
    [
        pytest.param("é", "UnicodeEncodeError", id="login-401-then-raise"),
        pytest.param("x", 401, id="login-401-ok"),
    ],
)
async def test_a_failure_the_app_raised_after_is_counted(
    note: str, first: int | str, store: SwitchableStore, events: EventEmitter
) -> None:
    app = guard_routes(audited_login(), store, events)
    guess = {"username": "alice", "password": "guess", "note": note}
    assert [await _status(app, guess) for _ in range(3)] == [first, 429, 429]


@pytest.mark.parametrize(
    ("note", "retry_after"),
    [
        # The error may have undone the login (a session not saved): the client's
        # failures stay, and its next failure is its second (a 2 s delay).
        pytest.param("é", "2", id="login-200-then-raise-keeps-failures"),
        pytest.param("x", "1", id="login-200-clears-failures-ok"),
    ],
)
async def test_a_success_the_app_raised_after_clears_nothing(
    note: str, retry_after: str, store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    app = guard_routes(audited_login(), store, events)
    assert await _status(app, {"username": "alice", "password": "guess"}) == 401
    clock.advance(1)
    right = {"username": "alice", "password": "right", "note": note}
    assert await _status(app, right) == (200 if note == "x" else "UnicodeEncodeError")
    # The success, raised after or not, freed the pair's gate for the next attempt.
    assert await _status(app, {"username": "alice", "password": "guess"}) == 401
    refused = await request(
        app, "POST", "/login", ATTACKER, data={"username": "alice", "password": "guess"}
    )
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == retry_after


# --- Review 2: readings outside the body, method-less routes, long names, piles ---


def _epilogue_login(i: int) -> bytes:
    """A decoy in the parts, `alice` after the closing delimiter: Django parses a
    part out of that epilogue, and its `request.POST` keeps the last value."""
    return (
        _multipart_login(b"", b"decoy%d" % i)
        + b'Content-Disposition: form-data; name="username"\r\n\r\nalice'
    )


@pytest.mark.parametrize(
    ("body", "account"),
    [
        pytest.param(
            b'Content-Disposition: form-data; name="username"\r\n\r\nalice\r\n'
            + _part(b'form-data; name="password"', b"x")
            + b"--B--\r\n",
            "",
            id="login-multipart-preamble-part",
        ),
        pytest.param(
            b"x\r\n" + _multipart_login(b"", b"alice"), "", id="login-multipart-preamble-text"
        ),
        pytest.param(_epilogue_login(0), "", id="login-multipart-epilogue-part"),
        pytest.param(
            _multipart_login(b"", b"alice") + b"\r\n", "", id="login-multipart-epilogue-crlfcrlf"
        ),
        pytest.param(
            _multipart_login(b"", b"alice")[:-2], "alice", id="login-multipart-closed-no-crlf-ok"
        ),
        pytest.param(_multipart_login(b"", b"alice"), "alice", id="login-multipart-closed-crlf-ok"),
    ],
)
def test_multipart_text_outside_the_parts_names_none(body: bytes, account: str) -> None:
    assert account_from_body(body, MULTIPART, "username") == account


@pytest.mark.parametrize(
    ("body", "account"),
    [
        pytest.param(_epilogue_login, "", id="login-multipart-epilogue-django"),
        pytest.param(lambda i: _multipart_login(b"", b"alice"), "alice", id="login-multipart-ok"),
    ],
)
async def test_django_epilogue_part_names_no_decoy(
    body: Callable[[int], bytes],
    account: str,
    django_login: tuple[DjangoLogin, ASGIApp],
    store: SwitchableStore,
    events: EventEmitter,
) -> None:
    views, django_app = django_login
    app = guard_routes(django_app, store, events)
    assert account_from_body(body(0), MULTIPART, "username") == account
    # Every guess is at alice to Django; named alice or none, the second waits.
    assert await guesses(app, "/login", body, MULTIPART) == [401, 429, 429]
    assert views.seen == ["alice"]


def flask_values_login(seen: list[str]) -> ASGIApp:
    """A real Flask application reading `request.values` (the query string first)."""
    from asgiref.wsgi import WsgiToAsgi
    from flask import Flask
    from flask import request as flask_request

    flask = Flask(__name__)

    @flask.post("/login")
    def login() -> tuple[str, int]:
        username = flask_request.values.get("username", "")
        seen.append(username)
        ok = (username, flask_request.values.get("password")) == ("alice", "right")
        return ("ok", 200) if ok else ("no", 401)

    return WsgiToAsgi(flask)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(
            "/login?username=alice", "username=decoy{}", id="login-query-string-flask-values"
        ),
        pytest.param("/login?username=alice", "password=x{}", id="login-query-string-only-ok"),
        pytest.param("/login?next=/home", "username=alice&x={}", id="login-form-with-query-ok"),
        pytest.param("/login", "username=alice&x={}", id="login-form-flask-ok"),
    ],
)
# asgiref warns that the test client's `send` is not marked async; it is.
@pytest.mark.filterwarnings("ignore:async_to_sync was passed a non-async-marked callable")
async def test_query_string_is_a_reading(
    path: str, body: str, store: SwitchableStore, events: EventEmitter
) -> None:
    seen: list[str] = []
    app = guard_routes(flask_values_login(seen), store, events)
    form = {"content-type": "application/x-www-form-urlencoded"}
    statuses = [
        (
            await request(app, "POST", path, ATTACKER, content=body.format(i), headers=form)
        ).status_code
        for i in range(3)
    ]
    # Every guess is at alice to Flask: the second, too soon after the first, waits.
    assert statuses == [401, 429, 429]
    assert seen == ["alice"]


def basic_login(seen: list[str]) -> ASGIApp:
    """A real Starlette login over HTTP Basic, decoding leniently as many apps do."""

    async def login(request: Request) -> Response:
        credentials = request.headers.get("authorization", "Basic Og==").split()[1]
        user, _, password = base64.b64decode(credentials).decode().partition(":")
        seen.append(user)
        ok = (user, password) == ("alice", "right")
        return PlainTextResponse("ok" if ok else "no", status_code=200 if ok else 401)

    return Starlette(routes=[Route("/login", login, methods=["POST"])])


def _basic(credentials: bytes) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(credentials).decode()}


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        # `YW!xpY2U6Z3Vlc3M=` is `alice:guess` to a decoder that drops the `!`.
        pytest.param(
            {"authorization": "Basic YW!xpY2U6Z3Vlc3M="}, "x={}", id="login-basic-auth-lenient-b64"
        ),
        pytest.param(_basic(b"alice:guess"), "x={}", id="login-basic-auth-ok"),
        pytest.param(_basic(b"alice:guess"), "username=alice&x={}", id="login-basic-and-form-ok"),
    ],
)
async def test_basic_auth_user_is_a_reading(
    headers: dict[str, str], body: str, store: SwitchableStore, events: EventEmitter
) -> None:
    seen: list[str] = []
    app = guard_routes(basic_login(seen), store, events)
    headers = {**headers, "content-type": "application/x-www-form-urlencoded"}
    statuses = [
        (
            await request(app, "POST", "/login", ATTACKER, content=body.format(i), headers=headers)
        ).status_code
        for i in range(3)
    ]
    assert statuses == [401, 429, 429]
    assert seen == ["alice"]


@pytest.mark.parametrize("case", ["login-basic-auth-body-decoy"])
async def test_a_body_decoy_beside_basic_is_bounded_by_the_budget(
    case: str, store: SwitchableStore, events: EventEmitter
) -> None:
    """The app checks the Basic user-id, the guard reads the body's decoy (a fresh
    one per guess): each is a fresh pair, and the client budget is the bound."""
    seen: list[str] = []
    settings = RateLimitSettings(
        limits={}, login_routes=("POST /login",), login_client_lockout_after=3
    )
    app = RateLimitMiddleware(basic_login(seen), settings, store=store, events=events)
    headers = {**_basic(b"alice:guess"), "content-type": "application/x-www-form-urlencoded"}
    statuses = [
        (
            await request(
                app, "POST", "/login", ATTACKER, content=f"username=d{i}", headers=headers
            )
        ).status_code
        for i in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]
    assert seen == ["alice"] * 3


def form_login() -> ASGIApp:
    """A real Starlette form login for alice and bob."""

    async def login(request: Request) -> Response:
        form = await request.form()
        ok = (form.get("username"), form.get("password")) in (("alice", "a"), ("bob", "b"))
        return PlainTextResponse("ok" if ok else "no", status_code=200 if ok else 401)

    return Starlette(routes=[Route("/login", login, methods=["POST"])])


# What an nginx `auth_basic` in front of a whole staging site adds to every request.
STAGING_GATE = _basic(b"staging:gate")


@pytest.mark.parametrize("case", ["login-proxy-basic-gate-merges-users"])
async def test_a_proxy_basic_gate_keeps_users_apart(
    case: str, store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    settings = RateLimitSettings(limits={}, login_routes=("POST /login",))
    app = RateLimitMiddleware(form_login(), settings, store=store, events=events)

    async def login(username: str, password: str) -> int:
        form = {"username": username, "password": password}
        clock.advance(61)  # past every delay, not past the lockout
        response = await request(app, "POST", "/login", USER, data=form, headers=STAGING_GATE)
        return response.status_code

    # alice's typos lock alice's pair out, and only hers: bob, at the same address,
    # logs in on his first attempt.
    assert [await login("alice", "typo") for _ in range(6)] == [401] * 5 + [429]
    assert await login("bob", "b") == 200
    # And a success is alice's own: bob's typos are cleared by his success alone.
    assert [await login("bob", "typo"), await login("bob", "b")] == [401, 200]
    assert await login("alice", "a") == 429


@pytest.mark.parametrize("case", ["login-basic-only-ok"])
async def test_a_basic_login_names_its_user(
    case: str, store: SwitchableStore, events: EventEmitter
) -> None:
    """Where nothing else names the account, the Basic user-id does: guesses at
    alice share alice's pair, whatever else the body says."""
    seen: list[str] = []
    settings = RateLimitSettings(limits={}, login_routes=("POST /login",))
    app = RateLimitMiddleware(basic_login(seen), settings, store=store, events=events)
    statuses = [
        (
            await request(
                app,
                "POST",
                "/login",
                ATTACKER,
                data={"remember": str(i)},
                headers=_basic(f"alice:g{i}".encode()),
            )
        ).status_code
        for i in range(3)
    ]
    assert statuses == [401, 429, 429]
    assert seen == ["alice"]


BASIC_ALICE = b"Basic " + base64.b64encode(b"alice:x")


@pytest.mark.parametrize(
    ("body", "query", "authorizations", "account"),
    [
        pytest.param(b"username=alice", b"username=decoy", [], "", id="login-query-decoy"),
        pytest.param(b"username=alice", b"username=alice", [], "alice", id="login-query-same-ok"),
        pytest.param(b"username=alice", b"username=%ff", [], "", id="login-query-not-utf8"),
        # A Basic gate in front of the site: the form names the account.
        pytest.param(
            b"username=alice",
            b"",
            [b"Basic " + base64.b64encode(b"staging:gate")],
            "alice",
            id="login-basic-gate-form-wins",
        ),
        pytest.param(
            b"x=1",
            b"username=alice",
            [b"Basic " + base64.b64encode(b"staging:gate")],
            "alice",
            id="login-basic-gate-query-wins",
        ),
        # Nothing else names it: the Basic user-id does, strictly decoded.
        pytest.param(b"x=1", b"", [BASIC_ALICE], "alice", id="login-basic-only-reading-ok"),
        pytest.param(b"", b"", [b"Basic !!!"], "", id="login-basic-undecodable"),
        pytest.param(
            b"", b"", [b"Basic " + base64.b64encode(b"\xe9:x")], "", id="login-basic-latin1"
        ),
        pytest.param(b"", b"", [BASIC_ALICE] * 2, "", id="login-basic-two-headers"),
        pytest.param(
            b"",
            b"",
            [b"bAsIc  " + base64.b64encode(b"alice:x:y")],
            "alice",
            id="login-basic-case-ok",
        ),
        pytest.param(b"x=1", b"", [b"Bearer alice"], "", id="login-bearer-not-a-reading"),
        pytest.param(b"username=alice", b"", [b"Bearer decoy"], "alice", id="login-bearer-ok"),
        # A body that fails a reading names none, whatever the Basic user-id says.
        pytest.param(b"{x", b"", [BASIC_ALICE], "", id="login-basic-beside-broken-json"),
    ],
)
def test_query_and_basic_readings(
    body: bytes, query: bytes, authorizations: list[bytes], account: str
) -> None:
    assert account_from_request(body, FORM, query, authorizations, "username") == account


@pytest.mark.parametrize(
    ("length", "named"),
    [
        pytest.param(MAX_ACCOUNT_CHARS + 1, False, id="login-account-too-long"),
        pytest.param(MAX_ACCOUNT_CHARS, True, id="login-account-longest-ok"),
    ],
)
async def test_a_long_account_names_none(
    length: int, named: bool, store: SwitchableStore, events: EventEmitter
) -> None:
    # Combining marks: NFKC's reordering is quadratic in a run of them.
    marks = "".join(chr(0x300 + i % 0x50) for i in range(length - 1))
    assert (normalise_account("x" + marks) != "") is named
    check = PasswordCheck()
    app = guarded(check, store, events)
    statuses = []
    for letter in "abc":
        # A fresh name per guess, each its own pair if named; as none, one pair.
        name = letter + marks
        assert account_from_body(urlencode({"username": name}).encode(), FORM, "username") == (
            name if named else ""
        )
        guess = {"username": name, "password": "wrong"}
        statuses.append((await request(app, "POST", "/login", ATTACKER, data=guess)).status_code)
    assert statuses == ([401, 401, 401] if named else [401, 429, 429])


def login_page(hold: asyncio.Event) -> ASGIApp:
    """A method-less login route as Django URLconfs have it: the page on GET, the
    password check on POST (held open while `hold` is clear)."""

    async def login(request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            return PlainTextResponse("<form>...</form>")
        form = await request.form()
        await hold.wait()
        ok = (form.get("username"), form.get("password")) == ("alice", "right")
        return PlainTextResponse("ok" if ok else "no", status_code=200 if ok else 401)

    return Starlette(routes=[Route("/login", login, methods=["GET", "POST"])])


# A page load carrying a login body the guard reads (as a form, naming alice).
PAGE_BODY = b"username=alice"
FORM_TYPE = {"content-type": "application/x-www-form-urlencoded"}


def _page_guard(hold: asyncio.Event, store: SwitchableStore, events: EventEmitter) -> ASGIApp:
    settings = RateLimitSettings(limits={}, login_routes=("/login",))
    return RateLimitMiddleware(login_page(hold), settings, store=store, events=events)


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("GET", id="login-get-page-clears-failures"),
        pytest.param("HEAD", id="login-head-page-clears-failures"),
        pytest.param(None, id="login-lockout-without-page-ok"),
    ],
)
async def test_a_page_load_is_no_login(
    method: str | None, store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    hold = asyncio.Event()
    hold.set()
    app = _page_guard(hold, store, events)
    wrong = {"username": "alice", "password": "wrong"}
    statuses = []
    for _ in range(7):
        statuses.append((await request(app, "POST", "/login", ATTACKER, data=wrong)).status_code)
        clock.advance(61)  # past every delay, not past the lockout
        if method is not None:
            # The page, with a login body the guard reads: a 200, not a success.
            page = await request(
                app, method, "/login", ATTACKER, content=PAGE_BODY, headers=FORM_TYPE
            )
            assert page.status_code == 200
    assert statuses == [401] * 5 + [429] * 2


@pytest.mark.parametrize("case", ["login-page-during-attempt-ok"])
async def test_the_page_loads_while_an_attempt_is_in_flight(
    case: str, store: SwitchableStore, events: EventEmitter
) -> None:
    hold = asyncio.Event()
    app = _page_guard(hold, store, events)
    attempt = asyncio.create_task(
        request(app, "POST", "/login", ATTACKER, data={"username": "alice", "password": "right"})
    )
    await asyncio.sleep(0.05)  # the attempt holds the pair's gate at the password check
    page = await request(app, "GET", "/login", ATTACKER, content=PAGE_BODY, headers=FORM_TYPE)
    assert page.status_code == 200
    hold.set()
    assert (await attempt).status_code == 200


@pytest.mark.parametrize(
    ("routes", "valid"),
    [
        # Safe methods make attempts with credentials: a pattern may name them.
        pytest.param(("GET /admin/*",), True, id="login-route-get-ok"),
        pytest.param(("GET,POST /login",), True, id="login-route-get-post-ok"),
        pytest.param(("POST /login", "/sign-in"), True, id="login-route-unsafe-ok"),
        pytest.param(("BREW /login",), False, id="login-route-unknown-method-refused"),
        pytest.param(("login",), False, id="login-route-no-slash-refused"),
    ],
)
def test_login_route_patterns_are_validated(routes: tuple[str, ...], valid: bool) -> None:
    if valid:
        assert RateLimitSettings(login_routes=routes).login_routes == routes
    else:
        with pytest.raises(ValidationError, match="route pattern"):
            RateLimitSettings(login_routes=routes)


def basic_admin() -> ASGIApp:
    """An admin area behind HTTP Basic (a real Starlette app): every GET is a
    credential check, answered 401 with a challenge when it fails."""

    async def admin(request: Request) -> Response:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        user, _, password = base64.b64decode(credentials).decode().partition(":")
        if scheme != "Basic" or (user, password) != ("alice", "right"):
            return PlainTextResponse("no", 401, headers={"www-authenticate": 'Basic realm="a"'})
        return PlainTextResponse("admin")

    return Starlette(routes=[Route("/admin/panel", admin)])


def values_login() -> ASGIApp:
    """A login that reads the query string and the form alike (Flask's
    `request.values`): a GET with `?username=&password=` is checked too, and a GET
    without them is the page."""

    async def login(request: Request) -> Response:
        values: dict[str, object] = dict(request.query_params)
        if request.method == "POST":
            values |= dict(await request.form())
        if "password" not in values:
            return PlainTextResponse("<form>...</form>")
        ok = (values.get("username"), values["password"]) == ("alice", "right")
        return PlainTextResponse("ok" if ok else "no", status_code=200 if ok else 401)

    return Starlette(routes=[Route("/login", login, methods=["GET", "POST"])])


def _basic_get(password: str) -> tuple[str, str, dict[str, Any]]:
    return "GET", "/admin/panel", {"headers": _basic(f"alice:{password}".encode())}


def _values_get(password: str) -> tuple[str, str, dict[str, Any]]:
    return "GET", "/login", {"params": {"username": "alice", "password": password}}


@pytest.mark.parametrize(
    ("app", "routes", "guess"),
    [
        pytest.param(basic_admin, "/admin/*", _basic_get, id="login-basic-get-brute-force"),
        pytest.param(basic_admin, "GET /admin/*", _basic_get, id="login-basic-get-pattern"),
        pytest.param(values_login, "/login", _values_get, id="login-values-get-brute-force"),
    ],
)
async def test_guesses_sent_as_get_are_attempts(
    app: Callable[[], ASGIApp],
    routes: str,
    guess: Callable[[str], tuple[str, str, dict[str, Any]]],
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
) -> None:
    settings = RateLimitSettings(limits={}, login_routes=(routes,))
    guarded = RateLimitMiddleware(app(), settings, store=store, events=events)

    async def send(password: str) -> int:
        method, path, options = guess(password)
        return (await request(guarded, method, path, ATTACKER, **options)).status_code

    # Back to back: the second waits out the first failure's delay.
    assert [await send(f"g{i}") for i in range(5)] == [401, 429, 429, 429, 429]
    statuses = []
    for i in range(6):
        clock.advance(61)  # past every delay, not past the lockout
        statuses.append(await send(f"h{i}"))
    assert statuses == [401] * 4 + [429] * 2
    # Legitimate: the real user, elsewhere, is not locked out.
    method, path, options = guess("right")
    assert (await request(guarded, method, path, USER, **options)).status_code == 200


@pytest.mark.parametrize(
    ("app", "routes", "guess"),
    [
        pytest.param(
            basic_admin, "/admin/*", _basic_get, id="login-basic-get-success-clears-nothing"
        ),
        pytest.param(
            values_login, "/login", _values_get, id="login-values-get-success-clears-nothing"
        ),
    ],
)
async def test_a_safe_method_success_clears_nothing(
    app: Callable[[], ASGIApp],
    routes: str,
    guess: Callable[[str], tuple[str, str, dict[str, Any]]],
    store: SwitchableStore,
    clock: FakeClock,
    events: EventEmitter,
) -> None:
    """A 2xx to a GET is a page (one a guess may get without logging anyone in),
    never a success: the pair's failures stay, and the lockout comes on time."""
    settings = RateLimitSettings(limits={}, login_routes=(routes,))
    guarded = RateLimitMiddleware(app(), settings, store=store, events=events)

    async def send(password: str) -> int:
        method, path, options = guess(password)
        clock.advance(61)
        return (await request(guarded, method, path, ATTACKER, **options)).status_code

    statuses = []
    for i in range(5):
        statuses += [await send(f"g{i}"), await send("right")]
    # The fifth failure locks the pair, the right password included.
    assert statuses == [401, 200] * 4 + [401, 429]


@pytest.mark.parametrize("case", ["login-page-get-ok"])
async def test_a_plain_page_get_neither_counts_nor_clears(
    case: str, store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    settings = RateLimitSettings(limits={}, login_routes=("/login",))
    app = RateLimitMiddleware(values_login(), settings, store=store, events=events)
    wrong = {"username": "alice", "password": "wrong"}
    statuses = []
    for _ in range(6):
        statuses.append((await request(app, "POST", "/login", ATTACKER, data=wrong)).status_code)
        # The page, while the failure's delay holds the pair's gate: no attempt.
        for query in ({}, {"next": "/home"}):
            page = await request(app, "GET", "/login", ATTACKER, params=query)
            assert page.status_code == 200
        clock.advance(61)
    assert statuses == [401] * 5 + [429]


@pytest.mark.parametrize(
    ("empty", "named"),
    [
        pytest.param(5000, False, id="login-empty-messages-pile-up"),
        pytest.param(3, True, id="login-few-messages-ok"),
    ],
)
async def test_empty_body_messages_do_not_pile_up(
    empty: int, named: bool, store: SwitchableStore, events: EventEmitter
) -> None:
    body = b"username=alice&password=wrong"
    sent: list[Message] = [{"type": "http.request", "body": b"", "more_body": True}] * empty
    sent += [
        {"type": "http.request", "body": body[:9], "more_body": True},
        {"type": "http.request", "body": body[9:], "more_body": False},
    ]
    received: list[Message] = []
    read_before_app: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        read_before_app.append(len(sent) - len(pending))
        while not received or received[-1].get("more_body"):
            received.append(await receive())
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    pending = list(sent)

    async def receive() -> Message:
        return pending.pop(0)

    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    layer = RateLimitMiddleware(
        app, RateLimitSettings(limits={}, login_routes=("POST /login",)), store=store, events=events
    )
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "2",
        "method": "POST",
        "scheme": "https",
        "path": "/login",
        "raw_path": b"/login",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/x-www-form-urlencoded")],
        "client": ATTACKER,
        "server": ("testserver", 443),
    }
    await layer(scope, receive, send)
    # The layer kept at most `MAX_LOGIN_MESSAGES` before the app ran, and the app
    # got every message, unchanged and in order.
    assert read_before_app[0] <= MAX_LOGIN_MESSAGES
    assert received == sent
    assert statuses == [401]
    # The failure closed the gate of the pair the body named: alice's when the
    # layer read it whole, the client's unnamed one when it gave up.
    account, other = ("alice", "") if named else ("", "alice")
    assert not (await layer.login_guard.check(account, ATTACKER[0])).allowed
    assert (await layer.login_guard.check(other, ATTACKER[0])).allowed
