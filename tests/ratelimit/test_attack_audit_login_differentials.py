"""Attack audit of the login guard: where it and the application read a request apart.

* `login-past-budget-basic-decoy-unnamed-body` (400 opted in): past
  `login_client_lockout_after`, a pair that logged in within the failure window
  may still try under its own backoff and lockout; but a failure of a request
  whose body names no account counted toward the budget alone and never touched
  the pair. The attacker logged in to its own account with HTTP Basic, then sent
  every guess with the same Basic header and a body the guard read as naming no
  account and the application as the victim's (here a field the guard is not
  told about): unlimited guesses. A Basic user-id alone no longer gets past the
  budget, and an attempt let past it always fails as its pair
  (`login-past-budget-client-failure-is-pairs`). A user who logged in with the
  account in the body still gets in past the budget
  (`login-past-budget-known-user-ok`).
* `login-multipart-media-type-with-equals`, `login-media-type-separator-padded`
  (400 opted in): Django reads the media type through `email.message`, cut at `=`
  and `str.strip()`ped (`\\x1c`-`\\x1f`, and `\\xa0` and `\\x85`:
  `login-media-type-nbsp-padded`), so `multipart/form-data=x; boundary=B` is
  multipart to it; the guard read no parts, the body named no account, and its
  failures went to the budget alone. `login-text-body-unnamed-is-pairs`: a body of
  a media type the guard does not read whole (a login that parses its own
  `text/plain`) is no longer taken to name no account; a form or JSON body
  without the account (an OAuth 2 code grant) still spends the budget alone
  (`login-*-unnamed-budget-only-ok`).
* `login-multipart-charset-rfc2231-continuation`, `-extended` (the default
  statuses): Django joins `charset*0=utf-7` (and `charset*0*=utf-8''utf-7`) into
  the charset UTF-7 and decodes multipart fields with it: `+AGE-lice` is `alice`
  to it, a fresh account per spelling to the guard. `login-form-charset-*-padded-name`:
  it strips a parameter's name as `str.strip()` does (`\\xa0charset=utf-7`).
  `login-multipart-boundary-rfc2231-continuation`: `boundary*0=C` replaces the
  boundary Django splits at, so the guard read a fresh decoy in the parts of one
  boundary and Django `alice` in those of the other.

Each beside the legitimate login that must still pass, through a real Django ASGI
application and real Starlette applications over a real memory store on a fake
clock.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.events import EventEmitter
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings
from bastion.ratelimit.keys import ClientGrouping, client_key
from bastion.ratelimit.login import (
    LoginGuard,
    LoginPolicy,
    account_from_request,
    read_login_account,
)
from bastion.ratelimit.reasons import REASON_LOGIN_LOCKED, REASON_LOGIN_THROTTLED
from bastion.types import ASGIApp
from tests.ratelimit.harness import ATTACKER, USER, django_asgi, request
from tests.support.clock import FakeClock
from tests.support.stores import SwitchableStore

pytestmark = pytest.mark.anyio

# Past every backoff delay (at most 60 s), well within the lockout (900 s).
PAST_DELAYS = 61.0
# `login_failure_statuses` of an operator who opts 400 in.
WITH_400 = (400, 401, 403)
# One shared address (a NAT, a corporate egress): the attacker and the office's users.
OFFICE = ("198.51.100.7", 40000)
MALLORY_BASIC = "Basic " + base64.b64encode(b"mallory:own").decode("ascii")


async def _budget(store: SwitchableStore, client: tuple[str, int]) -> bytes | None:
    """The client's units of its login budget (`login:c:`)."""
    return await store.get(f"login:c:{client_key(client[0], ClientGrouping())}")


async def _status(app: ASGIApp, path: str, client: tuple[str, int], **kwargs: Any) -> int:
    return (await request(app, "POST", path, client, **kwargs)).status_code


# -- a pair let past the budget: its failures are its own ------------------------------


class Logins:
    """Three logins that answer wrong credentials 400, recording the accounts they
    judged: `/login` reads a form's `username` (a code grant's form has none);
    `/api/login` a JSON `email`, a field the guard is not told about
    (`login_account_field` left at `username`); `/text-login` a `text/plain` body
    `user:password`, parsed its own way."""

    def __init__(self) -> None:
        self.judged: list[str] = []

    def _answer(self, user: object, password: object) -> Response:
        self.judged.append(str(user))
        ok = (str(user).partition("@")[0], password) in (("alice", "right"), ("mallory", "own"))
        return PlainTextResponse("ok" if ok else "no", status_code=200 if ok else 400)

    def app(self) -> ASGIApp:
        async def form_login(request: Request) -> Response:
            form = await request.form()
            if "username" not in form:
                return PlainTextResponse("invalid_grant", status_code=400)
            return self._answer(form.get("username"), form.get("password"))

        async def json_login(request: Request) -> Response:
            data = json.loads(await request.body())
            if "email" not in data:
                return PlainTextResponse("invalid_grant", status_code=400)
            return self._answer(data.get("email"), data.get("password"))

        async def text_login(request: Request) -> Response:
            user, _, password = (await request.body()).decode().partition(":")
            return self._answer(user, password)

        return Starlette(
            routes=[
                Route("/login", form_login, methods=["POST"]),
                Route("/api/login", json_login, methods=["POST"]),
                Route("/text-login", text_login, methods=["POST"]),
            ]
        )


def guarded(app: ASGIApp, store: SwitchableStore, events: EventEmitter, **options: Any) -> ASGIApp:
    routes = ("POST /login", "POST /api/login", "POST /text-login")
    settings = RateLimitSettings(limits={}, login_routes=routes, **options)
    return RateLimitMiddleware(app, settings, store=store, events=events)


@pytest.mark.parametrize(
    ("authorization", "statuses"),
    [
        pytest.param(
            MALLORY_BASIC,
            [400] * 3 + [429] * 5,
            id="login-past-budget-basic-decoy-unnamed-body",
        ),
        # Without the Basic header the guesses named no account all along.
        pytest.param(None, [400] * 3 + [429] * 5, id="login-unnamed-body-budget-holds-ok"),
    ],
)
async def test_a_basic_user_id_never_gets_past_the_budget(
    authorization: str | None,
    statuses: list[int],
    store: SwitchableStore,
    events: EventEmitter,
) -> None:
    logins = Logins()
    app = guarded(
        logins.app(), store, events, login_failure_statuses=WITH_400, login_client_lockout_after=3
    )
    headers = {} if authorization is None else {"authorization": authorization}
    # The attacker logs in to its own account: the pair (mallory, its address) is
    # one that logged in, as far as the guard reads the Basic user-id.
    own = {"email": "mallory@x", "password": "own"}
    assert await _status(app, "/api/login", ATTACKER, json=own, headers=headers) == 200
    answered = []
    for i in range(len(statuses)):
        guess = {"email": "alice@x", "password": f"guess-{i}"}
        answered.append(await _status(app, "/api/login", ATTACKER, json=guess, headers=headers))
    assert answered == statuses
    assert logins.judged.count("alice@x") == 3
    # Legitimate: alice, elsewhere, logs in at once.
    right = {"email": "alice@x", "password": "right"}
    assert await _status(app, "/api/login", USER, json=right) == 200


@pytest.mark.parametrize("case", ["login-past-budget-known-user-ok"])
async def test_a_known_user_past_the_budget_still_logs_in(
    case: str, store: SwitchableStore, clock: FakeClock, events: EventEmitter
) -> None:
    """alice logged in from the office this hour, naming her account in the body;
    one host there spends the budget; alice still gets in, and her typo past the
    budget (a 400, opted in) is her pair's failure: the next try waits."""
    app = guarded(
        Logins().app(), store, events, login_failure_statuses=WITH_400, login_client_lockout_after=3
    )
    alice = {"username": "alice", "password": "right"}
    assert await _status(app, "/login", OFFICE, data=alice) == 200
    # One host there spends the budget on made-up accounts.
    burned = [await _status(app, "/login", OFFICE, data={"username": f"d{i}"}) for i in range(4)]
    assert burned == [400, 400, 400, 429]
    typo = {"username": "alice", "password": "rihgt"}
    assert await _status(app, "/login", OFFICE, data=typo) == 400
    waited = await request(app, "POST", "/login", OFFICE, data=alice)
    assert (waited.status_code, waited.headers["retry-after"]) == (429, "1")
    clock.advance(PAST_DELAYS)
    assert await _status(app, "/login", OFFICE, data=alice) == 200


@pytest.mark.parametrize(
    ("past_budget", "next_allowed"),
    [
        pytest.param(True, False, id="login-past-budget-client-failure-is-pairs"),
        pytest.param(False, True, id="login-under-budget-client-failure-budget-only-ok"),
    ],
)
async def test_a_client_failure_past_the_budget_is_the_pairs(
    past_budget: bool, next_allowed: bool, store: SwitchableStore, clock: FakeClock
) -> None:
    """`record_client_failure` of an attempt let past the budget: there the pair's
    backoff and lockout are the only bound, so its failure is the pair's."""
    guard = LoginGuard(store, LoginPolicy(client_lockout_after=2))
    client = ATTACKER[0]
    await guard.record_success("alice", client)  # the pair logged in
    for account in ("d1", "d2") if past_budget else ("d1",):
        await guard.record_failure(account, client, await guard.begin(account, client))
    attempt = await guard.begin("alice", client)
    assert (attempt.allowed, attempt.past_budget) == (True, past_budget)
    await guard.record_client_failure("alice", client, attempt)
    after = await guard.begin("alice", client)
    assert after.allowed is next_allowed
    if not next_allowed:
        assert after.reason == REASON_LOGIN_THROTTLED
    if past_budget:
        # A Basic user-id alone is never let past the budget, logged in or not.
        clock.advance(PAST_DELAYS)
        from_header = await guard.begin("alice", client, account_from_header=True)
        assert (from_header.allowed, from_header.reason) == (False, REASON_LOGIN_LOCKED)
        assert (await guard.begin("alice", client)).past_budget


# -- a body the guard does not read whole may name an account ----------------------------


@pytest.mark.parametrize(
    ("path", "send", "statuses", "budget"),
    [
        pytest.param(
            "/text-login",
            {"content": b"alice:guess", "headers": {"content-type": "text/plain"}},
            [400, 429, 429],
            b"1",
            id="login-text-body-unnamed-is-pairs",
        ),
        pytest.param(
            "/login",
            {"data": {"grant_type": "authorization_code", "code": "bogus"}},
            [400, 400, 400],
            b"3",
            id="login-form-unnamed-budget-only-ok",
        ),
        pytest.param(
            "/api/login",
            {
                "content": b'{"grant_type": "refresh_token"}',
                "headers": {"content-type": "application/vnd.api+json"},
            },
            [400, 400, 400],
            b"3",
            id="login-json-suffix-unnamed-budget-only-ok",
        ),
    ],
)
async def test_a_body_not_read_whole_may_name_an_account(
    path: str,
    send: dict[str, Any],
    statuses: list[int],
    budget: bytes,
    store: SwitchableStore,
    events: EventEmitter,
) -> None:
    app = guarded(Logins().app(), store, events, login_failure_statuses=WITH_400)
    answered = [await _status(app, path, ATTACKER, **send) for _ in statuses]
    assert answered == statuses
    assert await _budget(store, ATTACKER) == budget


# -- Django: the media type and the parameters as `email.message` reads them ------------


class DjangoLogin:
    """The URL configuration of a real Django ASGI application (`ASGIHandler`): a
    login view reading `request.POST` (as `LoginView` and DRF's
    `obtain_auth_token` read it), answering wrong credentials `failure_status`."""

    def __init__(self) -> None:
        from django.http import HttpRequest, HttpResponse
        from django.urls import path

        self.seen: list[str] = []
        self.failure_status = 401

        def login(request: HttpRequest) -> HttpResponse:
            username = str(request.POST.get("username"))
            self.seen.append(username)
            ok = (username, request.POST.get("password")) == ("alice", "right")
            return HttpResponse("ok" if ok else "no", status=200 if ok else self.failure_status)

        self.urlpatterns = [path("login", login)]


@pytest.fixture
def django_login() -> Iterator[tuple[DjangoLogin, ASGIApp]]:
    views = DjangoLogin()
    with django_asgi(views) as handler:
        yield views, handler


def _part(boundary: bytes, name: bytes, value: bytes) -> bytes:
    return (
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="'
        + name
        + b'"\r\n\r\n'
        + value
        + b"\r\n"
    )


def _login(username: bytes, password: bytes = b"guess") -> bytes:
    return _part(b"B", b"username", username) + _part(b"B", b"password", password) + b"--B--\r\n"


# `alice` to Django decoding the fields in UTF-7; a fresh account each to the guard.
UTF7_ALICE = (b"+AGE-lice", b"a+AGw-ice", b"al+AGk-ce")


def _utf7(i: int, password: bytes = b"guess") -> bytes:
    return _login(UTF7_ALICE[i], password)


def _two_boundaries(i: int, password: bytes = b"guess") -> bytes:
    """Parts at `B` (the guard's boundary) naming a fresh decoy, and inside one of
    them parts at `C` (Django's, from `boundary*0=C`) naming alice: Django reads the
    last `username`, alice."""
    inner = _part(b"C", b"username", b"alice") + _part(b"C", b"password", password) + b"--C--"
    return _part(b"B", b"username", b"decoy%d" % i) + _part(b"B", b"x", inner) + b"--B--\r\n"


def _plain(i: int, password: bytes = b"guess") -> bytes:
    return _login(b"alice", password)


@pytest.mark.parametrize(
    ("failure", "content_type", "body", "account"),
    [
        pytest.param(
            400,
            b"multipart/form-data=x; boundary=B",
            _plain,
            "alice",
            id="login-multipart-media-type-with-equals",
        ),
        pytest.param(
            400,
            # `str.strip()` strips the ASCII separators; Django's multipart parser
            # wants the raw value to start with `multipart/`, so only after it.
            b"multipart/form-data\x1e; boundary=B",
            _plain,
            "alice",
            id="login-media-type-separator-padded",
        ),
        pytest.param(
            400, b"multipart/form-data; boundary=B", _plain, "alice", id="login-multipart-400-ok"
        ),
        pytest.param(
            401,
            b"multipart/form-data; boundary=B; charset*0=utf-7",
            _utf7,
            "",
            id="login-multipart-charset-rfc2231-continuation",
        ),
        pytest.param(
            401,
            b"multipart/form-data; boundary=B; charset*0*=utf-8''utf-7",
            _utf7,
            "",
            id="login-multipart-charset-rfc2231-extended",
        ),
        pytest.param(
            401,
            b"multipart/form-data; boundary=B; boundary*0=C",
            _two_boundaries,
            "",
            id="login-multipart-boundary-rfc2231-continuation",
        ),
        pytest.param(
            401,
            b"multipart/form-data; boundary=B; charset=utf-8",
            _plain,
            "alice",
            id="login-multipart-charset-utf8-ok",
        ),
        pytest.param(
            401,
            b'multipart/form-data; boundary=B; charset="UTF-8"',
            _plain,
            "alice",
            id="login-multipart-charset-utf8-quoted-ok",
        ),
    ],
)
async def test_django_reads_no_other_account_than_the_guard(
    failure: int,
    content_type: bytes,
    body: Any,
    account: str,
    django_login: tuple[DjangoLogin, ASGIApp],
    store: SwitchableStore,
    events: EventEmitter,
) -> None:
    views, app = django_login
    views.failure_status = failure
    statuses = (failure, 401, 403)
    layer = RateLimitMiddleware(
        app,
        RateLimitSettings(
            limits={}, login_routes=("POST /login",), login_failure_statuses=statuses
        ),
        store=store,
        events=events,
    )
    # Each guess is alice to Django; read as alice or as none, it is one pair, and
    # the second guess waits for the first one's backoff.
    answered = []
    for i in range(3):
        headers = {"content-type": content_type}
        sent = await request(layer, "POST", "/login", ATTACKER, content=body(i), headers=headers)
        answered.append(sent.status_code)
    assert answered == [failure, 429, 429]
    assert views.seen == ["alice"]
    assert account_from_request(body(0), content_type, b"", [], "username") == account
    # Legitimate: the real user, elsewhere, logs in sent the same way.
    headers = {"content-type": content_type}
    right = await request(layer, "POST", "/login", USER, content=body(0, b"right"), headers=headers)
    assert right.status_code == 200


MULTIPART = b"multipart/form-data; boundary=B"


@pytest.mark.parametrize(
    ("content_type", "body", "account", "may_name"),
    [
        # Django's multipart parser refuses a non-ASCII `Content-Type`, but its
        # `request.content_type` (and a parser that reads it so) strips these too.
        pytest.param(
            b"\xa0multipart/form-data\x85; boundary=B",
            _login(b"alice"),
            "alice",
            True,
            id="login-media-type-nbsp-padded",
        ),
        # A multipart body's parameters must all be tokens (`parse_boundary`);
        # a form's are read as `email.message` reads them.
        pytest.param(
            b"application/x-www-form-urlencoded; \xa0charset=utf-7",
            b"username=%2BAGE-lice&password=guess",
            "",
            True,
            id="login-form-charset-nbsp-padded-name",
        ),
        pytest.param(
            b"application/x-www-form-urlencoded; charset\x1f=utf-7",
            b"username=%2BAGE-lice&password=guess",
            "",
            True,
            id="login-form-charset-separator-padded-name",
        ),
        pytest.param(
            MULTIPART + b"; CharSet*1=7; charset*0=utf-",
            _login(b"+AGE-lice"),
            "",
            True,
            id="login-multipart-charset-rfc2231-split",
        ),
        # Quoted, cut at its `;`: `utf-8;sig` is `utf-8-sig` to `codecs.lookup`.
        pytest.param(
            MULTIPART + b'; charset="utf-8;sig"',
            _login(b"alice"),
            "",
            True,
            id="login-charset-quoted-semicolon-names-none",
        ),
        pytest.param(
            b"text/plain",
            b"alice:guess",
            "",
            True,
            id="login-unread-media-type-may-name",
        ),
        pytest.param(
            b"application/x-www-form-urlencoded; charset=UTF-8",
            b"username=alice&password=guess",
            "alice",
            True,
            id="login-form-charset-utf8-ok",
        ),
        pytest.param(
            b"application/x-www-form-urlencoded",
            b"grant_type=authorization_code&code=x",
            "",
            False,
            id="login-form-unnamed-ok",
        ),
        pytest.param(b"", b"", "", False, id="login-no-body-unnamed-ok"),
    ],
)
def test_the_guard_reads_the_content_type_as_the_frameworks_do(
    content_type: bytes, body: bytes, account: str, may_name: bool
) -> None:
    assert account_from_request(body, content_type, b"", [], "username") == account
    assert read_login_account(body, content_type, b"", [], "username")[:2] == (account, may_name)
