"""Session attacks, each beside the legitimate use that must keep working."""

from __future__ import annotations

import httpx
import pytest

from bastion.sessions import SessionSettings, new_session_id, store_key
from tests.conftest import RecordingSink, asgi_client
from tests.sessions.harness import Harness, build

pytestmark = pytest.mark.anyio

COOKIE = "session"


def cookie_of(response: httpx.Response) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == COOKIE:
            return rest.split(";")[0]
    return None


async def call(h: Harness, method: str, url: str, session_id: str | None = None) -> httpx.Response:
    headers = {"cookie": f"{COOKIE}={session_id}"} if session_id else {}
    async with asgi_client(h.app) as client:
        return await client.request(method, url, headers=headers)


async def test_no_cookie_no_store_access() -> None:
    h = build()
    response = await call(h, "GET", "/")
    assert response.json()["new"] is True
    assert cookie_of(response) is None
    assert h.store_reads == []


async def test_a_session_is_created_only_when_written() -> None:
    h = build()
    response = await call(h, "POST", "/set?k=v")
    session_id = cookie_of(response)
    assert session_id is not None
    again = await call(h, "GET", "/", session_id)
    assert again.json()["data"] == {"k": "v"}
    assert cookie_of(again) is None  # unchanged: nothing to send


async def test_session_fixation_client_chosen_id_is_never_used() -> None:
    h = build()
    planted = new_session_id()
    response = await call(h, "POST", "/set?k=v", planted)
    issued = cookie_of(response)
    assert issued is not None
    assert issued != planted
    assert await h.store.get(store_key(planted)) is None


async def test_login_rotates_the_id_and_the_old_one_is_dead() -> None:
    h = build()
    before = cookie_of(await call(h, "POST", "/set?k=v"))
    assert before is not None
    after = cookie_of(await call(h, "POST", "/login?u=alice", before))
    assert after is not None
    assert after != before
    assert (await call(h, "GET", "/", after)).json()["user"] == "alice"
    old = await call(h, "GET", "/", before)
    assert old.json()["new"] is True
    assert old.json()["data"] == {}


async def test_cookie_replayed_after_logout_is_dead() -> None:
    h = build()
    session_id = cookie_of(await call(h, "POST", "/login?u=alice"))
    assert session_id is not None
    logout = await call(h, "POST", "/logout", session_id)
    assert "Max-Age=0" in logout.headers["set-cookie"]
    assert logout.headers["clear-site-data"] == '"cache", "cookies", "storage"'
    replay = await call(h, "GET", "/", session_id)
    assert replay.json() == {"data": {}, "user": None, "new": True, "result": None}


@pytest.mark.parametrize(
    ("advance", "alive"),
    [
        pytest.param(1799, True, id="session-idle-just-alive"),
        pytest.param(1800, False, id="session-idle-expired"),
        pytest.param(1800 + 3600, False, id="session-idle-long-gone"),
    ],
)
async def test_idle_expiry(advance: float, alive: bool) -> None:
    h = build()
    session_id = cookie_of(await call(h, "POST", "/set?k=v"))
    h.clock.now += advance
    response = await call(h, "GET", "/", session_id)
    assert (response.json()["data"] == {"k": "v"}) is alive
    # Once expired, it stays dead: the next use does not bring it back.
    assert ((await call(h, "GET", "/", session_id)).json()["new"]) is not alive


async def test_absolute_expiry_even_when_active() -> None:
    sink = RecordingSink()
    from bastion.events import EventEmitter

    h = build(events=EventEmitter([sink]))
    session_id = cookie_of(await call(h, "POST", "/set?k=v"))
    for _ in range(12 * 60 // 4 + 2):  # active every 4 minutes, past twelve hours
        h.clock.now += 4 * 60
        response = await call(h, "GET", "/", session_id)
        if response.json()["new"]:
            break
    assert response.json()["new"] is True
    late = [r for r in sink.records if r["kind"] == "session_use_after_expire"]
    assert [r["reason"] for r in late] == ["absolute-timeout"]


async def test_idle_clock_moves_with_activity() -> None:
    h = build()
    session_id = cookie_of(await call(h, "POST", "/set?k=v"))
    for _ in range(5):
        h.clock.now += 1000  # under the 30-minute idle limit each time
        assert (await call(h, "GET", "/", session_id)).json()["data"] == {"k": "v"}


async def test_revoke_every_session_of_a_user() -> None:
    h = build()
    alice_1 = cookie_of(await call(h, "POST", "/login?u=alice"))
    alice_2 = cookie_of(await call(h, "POST", "/login?u=alice"))
    bob = cookie_of(await call(h, "POST", "/login?u=bob"))
    revoked = await call(h, "POST", "/revoke?u=alice", bob)
    assert revoked.json()["result"] == 2
    assert (await call(h, "GET", "/", alice_1)).json()["new"] is True
    assert (await call(h, "GET", "/", alice_2)).json()["new"] is True
    assert (await call(h, "GET", "/", bob)).json()["user"] == "bob"


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param("session=" + "A" * 43 + "; session=" + "B" * 43, id="session-cookie-tossed"),
        pytest.param("session=../../etc/passwd", id="session-cookie-garbage"),
        pytest.param("session=" + "x" * 5000, id="session-cookie-huge"),
    ],
)
async def test_suspicious_cookies_start_a_fresh_session(cookie: str) -> None:
    h = build()
    async with asgi_client(h.app) as client:
        response = await client.get("/", headers={"cookie": cookie})
    assert response.json()["new"] is True
    assert h.store_reads == []


async def test_session_ids_never_appear_in_events() -> None:
    sink = RecordingSink()
    from bastion.events import EventEmitter

    h = build(events=EventEmitter([sink]))
    first = cookie_of(await call(h, "POST", "/set?k=v"))
    second = cookie_of(await call(h, "POST", "/login?u=alice", first))
    await call(h, "POST", "/logout", second)
    assert [r["kind"] for r in sink.records] == [
        "session_created",
        "session_renewed",
        "authn_login_success",
        "session_expired",
    ]
    assert sink.records[2]["principal"] == "alice"
    text = repr(sink.records)
    assert first is not None
    assert second is not None
    assert first not in text
    assert second not in text


async def test_production_cookie_is_host_prefixed_and_secure() -> None:
    h = build(SessionSettings())
    async with asgi_client(h.app, base_url="https://testserver") as client:
        response = await client.post("/set?k=v")
    header = response.headers["set-cookie"]
    assert header.startswith("__Host-session=")
    assert "; Secure" in header
    assert "; HttpOnly" in header
    assert "; SameSite=Lax" in header
    assert "; Path=/" in header
    assert "Domain" not in header
    assert response.headers["cache-control"] == "no-store"


async def test_a_privilege_change_rotates_the_id_and_is_reported() -> None:
    from bastion.events import KIND_AUTHZ_CHANGE, EventEmitter

    sink = RecordingSink()
    h = build(events=EventEmitter([sink]))
    user = cookie_of(await call(h, "POST", "/login?u=alice"))
    assert user is not None
    admin = cookie_of(await call(h, "POST", "/roles?r=admin,ops", user))
    assert admin is not None
    assert admin != user  # a new id for the new privilege: the old cookie is dead
    assert (await call(h, "GET", "/", admin)).json()["data"] == {"roles": ["admin", "ops"]}
    assert (await call(h, "GET", "/", user)).json()["new"] is True
    dropped = cookie_of(await call(h, "POST", "/roles?r=", admin))
    assert dropped is not None
    changes = [r for r in sink.records if r["kind"] == KIND_AUTHZ_CHANGE]
    assert [c["principal"] for c in changes] == ["alice", "alice"]
    moves = [(c["details"]["from"], c["details"]["to"]) for c in changes]  # type: ignore[index]
    assert moves == [([], ["admin", "ops"]), (["admin", "ops"], [])]
