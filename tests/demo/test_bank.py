"""Bastion Bank, in process: each defence by name, beside the request that must pass.

The protected bank runs in production mode (HTTPS, `__Host-` cookies, deny-by-default
policy) exactly as `create_app()` builds it, on a copy of one seeded data directory
(so argon2 seeding runs once per test run). The unprotected bank is driven too, to
show that it works and that its weaknesses are real: those are what `bastion audit`
reports. HTTP goes through httpx's ASGI transport, WebSockets through Starlette's
`TestClient`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Mount, Route, WebSocketRoute
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from bastion.auth.jwt import TokenIssuer
from bastion.crypto import DecryptionError, FieldEncryptor
from bastion.demo import create_app, create_unprotected_app
from bastion.demo.bank import ROUTE_POLICY, bank_settings
from bastion.demo.bank.app import sanitise_note
from bastion.demo.bank.db import (
    DEMO_USERS,
    BankDatabase,
    iban_aad,
    like_pattern,
    parse_amount,
)
from bastion.demo.bank.keys import (
    FIELD_KEY_FILE,
    PROTECTED_DB_FILE,
    UNPROTECTED_DB_FILE,
    jwt_keys,
)
from bastion.demo.bank.live import EventRing
from bastion.demo.settings import DemoSettings
from bastion.routes import RouteTable
from bastion.shield import Shield
from bastion.stores.memory import MemoryStore
from bastion.types import ASGIApp
from tests.support.secret_watch import never_logged
from tests.support.servers import RunningServer, serve

BASE = "https://localhost"
COOKIE = "__Host-session"
PASSWORDS = {user.username: never_logged(user.password) for user in DEMO_USERS}
EMAIL_USERNAME = never_logged("mallory.the.phisher@evil.example")
OPEN_TIMEOUT = 5.0
RECV_TIMEOUT = 5.0
_TOKEN_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')


# --- fixtures and helpers -------------------------------------------------------------


@pytest.fixture(scope="session")
def seeded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory with both databases and every key, made once."""
    path = tmp_path_factory.mktemp("bank-seed")
    create_app(demo=DemoSettings(data_dir=path))
    create_unprotected_app(DemoSettings(data_dir=path))
    return path


@pytest.fixture
def demo(seeded_dir: Path, tmp_path: Path) -> DemoSettings:
    data_dir = tmp_path / "bank"
    shutil.copytree(seeded_dir, data_dir)
    return DemoSettings(data_dir=data_dir)


@pytest.fixture
def protected(demo: DemoSettings) -> Shield:
    return create_app(demo=demo)


@pytest.fixture
def unprotected(demo: DemoSettings) -> FastAPI:
    return create_unprotected_app(demo)


def client_for(app: ASGIApp, address: str = "127.0.0.1") -> httpx.AsyncClient:
    # raise_app_exceptions=False: the unprotected bank's debug page re-raises after
    # answering, as Starlette's ServerErrorMiddleware does; we look at the answer.
    transport = httpx.ASGITransport(app=app, client=(address, 5000), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url=BASE)


@pytest.fixture
async def client(protected: Shield) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(protected) as session:
        yield session


def form_token(page: str) -> str:
    found = _TOKEN_FIELD.search(page)
    assert found is not None, "the page has no CSRF token field"
    return found.group(1)


async def log_in(client: httpx.AsyncClient, username: str, password: str = "") -> httpx.Response:
    page = await client.get("/login")
    return await client.post(
        "/login",
        data={
            "username": username,
            "password": password or PASSWORDS[username],
            "csrf_token": form_token(page.text),
        },
    )


async def balances(client: httpx.AsyncClient) -> dict[str, str]:
    answer = await client.get("/api/accounts")
    assert answer.status_code == 200
    return {account["name"]: account["balance"] for account in answer.json()["accounts"]}


def bank_of(app: Shield | FastAPI) -> Any:
    fastapi_app = app.app if isinstance(app, Shield) else app
    assert isinstance(fastapi_app, FastAPI)
    return fastapi_app.state.bank


pytestmark = pytest.mark.anyio


# --- the pure core ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        pytest.param("12", 1200, id="amount-units"),
        pytest.param("12.5", 1250, id="amount-one-decimal"),
        pytest.param(" 0.01 ", 1, id="amount-smallest"),
        pytest.param("1000000", 100_000_000, id="amount-largest"),
        pytest.param("0", None, id="amount-zero"),
        pytest.param("-5", None, id="amount-negative"),
        pytest.param("1e3", None, id="amount-exponent"),
        pytest.param("10.001", None, id="amount-three-decimals"),
        pytest.param("1000000.01", None, id="amount-over-limit"),
        pytest.param("NaN", None, id="amount-nan"),
        pytest.param("\uff11\uff12", None, id="amount-non-ascii-digits"),
    ],
)
def test_parse_amount(text: str, cents: int | None) -> None:
    assert parse_amount(text) == cents


@pytest.mark.parametrize(
    ("query", "pattern"),
    [
        pytest.param("rent", "%rent%", id="like-plain"),
        pytest.param("50%", "%50\\%%", id="like-percent"),
        pytest.param("a_b", "%a\\_b%", id="like-underscore"),
        pytest.param("back\\slash", "%back\\\\slash%", id="like-escape-char"),
    ],
)
def test_like_pattern_escapes_wildcards(query: str, pattern: str) -> None:
    assert like_pattern(query) == pattern


@pytest.mark.parametrize(
    ("html", "kept", "gone"),
    [
        pytest.param("<b>bold</b> <em>it</em>", "<b>bold</b> <em>it</em>", "", id="note-format-ok"),
        pytest.param("<script>alert(1)</script>hi", "hi", "<script", id="note-xss-script"),
        pytest.param('<img src=x onerror="alert(1)">', "", "onerror", id="note-xss-handler"),
        pytest.param(
            '<a href="javascript:alert(1)">x</a>', "x", "javascript:", id="note-xss-js-url"
        ),
        pytest.param("<style>*{}</style><iframe src=//e>", "", "<iframe", id="note-xss-iframe"),
        pytest.param(
            '<a href="https://ok.example">ok</a>',
            'rel="noopener noreferrer"',
            "",
            id="note-link-ok",
        ),
    ],
)
def test_sanitise_note(html: str, kept: str, gone: str) -> None:
    clean = sanitise_note(html)
    assert kept in clean
    if gone:
        assert gone not in clean


def test_event_ring_is_bounded() -> None:
    ring = EventRing(capacity=3)
    for index in range(10):
        ring.handle({"kind": "malicious_csrf", "action": "blocked", "path": f"/{index}"})
    ring.handle({"kind": "sys_startup", "action": "allowed"})
    assert [r.get("path") for r in ring.recent(10)] == ["/9", "/8"]
    assert ring.refused_by_kind() == {"malicious_csrf": 10}


# --- settings ---------------------------------------------------------------------------


def test_route_policy_names_every_route_and_nothing_else(protected: Shield) -> None:
    table = RouteTable(ROUTE_POLICY)
    app = protected.app
    assert isinstance(app, FastAPI)
    served: set[str] = set()
    for route in app.routes:
        if isinstance(route, Route):
            for method in route.methods or ():
                assert table.lookup(method, route.path) is not None, route.path
                if method != "HEAD":  # a GET rule holds for HEAD
                    served.add(f"{method} {route.path}")
        elif isinstance(route, WebSocketRoute):
            served.add(f"WEBSOCKET {route.path}")
            assert table.lookup("WEBSOCKET", route.path) is not None
        elif isinstance(route, Mount):
            served.add(f"GET {route.path}/*")
    assert set(ROUTE_POLICY) == served
    assert protected.settings.policy.deny_by_default


def test_demo_defaults_rank_below_environment_and_code(
    demo: DemoSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bank.example"]')
    keys = jwt_keys(demo.data_dir, None)
    from_env = bank_settings(demo, keys)
    assert from_env.transport.allowed_hosts == ("bank.example",)
    assert from_env.transport.https_port == demo.https_port  # the demo default survives
    assert from_env.policy.deny_by_default
    assert "email" in from_env.events.redact_pii
    from_code = bank_settings(demo, keys, overrides={"transport": {"allowed_hosts": ["a.example"]}})
    assert from_code.transport.allowed_hosts == ("a.example",)


# --- logging in -----------------------------------------------------------------------------


async def test_login_rotates_the_session_id(protected: Shield) -> None:
    async with client_for(protected) as browser:
        page = await browser.get("/login")
        before = page.cookies[COOKIE]  # the CSRF token's session, made before login
        answer = await browser.post(
            "/login",
            data={
                "username": "alice",
                "password": PASSWORDS["alice"],
                "csrf_token": form_token(page.text),
            },
        )
        assert answer.status_code == 303
        after = answer.cookies[COOKIE]
        assert after != before
        assert (await browser.get("/accounts")).status_code == 200
    async with client_for(protected) as fixer:  # an attacker who planted `before`
        fixer.cookies.set(COOKIE, before)
        assert (await fixer.get("/accounts")).status_code == 401


@pytest.mark.parametrize(
    ("username", "password", "status"),
    [
        pytest.param("alice", "", 303, id="login-ok"),
        pytest.param("alice", "alice-wrong-password", 401, id="login-wrong-password"),
        pytest.param("nobody", "whatever-password", 401, id="login-unknown-user"),
        pytest.param("alice", "x" * 5000, 401, id="login-oversized-password"),
    ],
)
async def test_login(client: httpx.AsyncClient, username: str, password: str, status: int) -> None:
    answer = await log_in(client, username, password)
    assert answer.status_code == status
    expected = 200 if status == 303 else 401
    assert (await client.get("/accounts")).status_code == expected


async def test_login_is_rate_limited(client: httpx.AsyncClient) -> None:
    """Guessing across many accounts from one client (credential stuffing) hits the
    login route's rate; each account's own backoff never comes into play here."""
    statuses = [
        (
            await client.post(
                "/login",
                data={"username": f"user{index}", "password": "guess-password"},
                headers={"sec-fetch-site": "same-origin"},
            )
        ).status_code
        for index in range(11)
    ]
    assert statuses == [401] * 10 + [429]


async def test_logout_revokes_the_session(client: httpx.AsyncClient) -> None:
    await log_in(client, "alice")
    cookie = client.cookies[COOKIE]
    page = await client.get("/accounts")
    answer = await client.post("/logout", data={"csrf_token": form_token(page.text)})
    assert answer.status_code == 303
    client.cookies.set(COOKIE, cookie)  # replaying the old cookie
    assert (await client.get("/accounts")).status_code == 401


# --- transfers and CSRF -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "with_token", "status"),
    [
        pytest.param({}, True, 303, id="transfer-form-token-ok"),
        pytest.param({"sec-fetch-site": "same-origin"}, False, 303, id="transfer-same-origin-ok"),
        pytest.param({"origin": BASE}, False, 303, id="transfer-own-origin-ok"),
        pytest.param({"origin": "https://evil.example"}, True, 403, id="transfer-csrf-evil-origin"),
        pytest.param({"sec-fetch-site": "cross-site"}, True, 403, id="transfer-csrf-cross-site"),
        pytest.param({"origin": "null"}, True, 403, id="transfer-csrf-null-origin"),
        pytest.param({}, False, 403, id="transfer-csrf-no-token"),
    ],
)
async def test_transfer_csrf(
    client: httpx.AsyncClient, headers: dict[str, str], with_token: bool, status: int
) -> None:
    await log_in(client, "alice")
    page = await client.get("/accounts")
    form = {"from_account": "1", "to_user": "bob", "amount": "10.00", "memo": "lunch"}
    if with_token:
        form["csrf_token"] = form_token(page.text)
    answer = await client.post("/transfer", data=form, headers=headers)
    assert answer.status_code == status
    expected = "1,240.00" if status == 303 else "1,250.00"
    assert (await balances(client))["Current"] == expected


@pytest.mark.parametrize(
    ("form", "status"),
    [
        pytest.param({"from_account": "2", "amount": "5000"}, 303, id="transfer-whole-balance-ok"),
        pytest.param({"amount": "1250.01"}, 400, id="transfer-overdraft"),
        pytest.param({"amount": "-10"}, 400, id="transfer-negative-amount"),
        pytest.param({"from_account": "3"}, 400, id="transfer-from-someone-elses-account"),
        pytest.param({"to_user": "alice", "from_account": "2"}, 303, id="transfer-own-accounts-ok"),
        pytest.param({"to_user": "alice"}, 400, id="transfer-to-the-same-account"),
        pytest.param({"to_user": "nobody"}, 400, id="transfer-unknown-recipient"),
        pytest.param({"memo": "m" * 141}, 400, id="transfer-memo-too-long"),
    ],
)
async def test_transfer_rules(
    client: httpx.AsyncClient, protected: Shield, form: dict[str, str], status: int
) -> None:
    await log_in(client, "alice")
    page = await client.get("/accounts")
    data = {"from_account": "1", "to_user": "bob", "amount": "1", "memo": ""} | form
    answer = await client.post("/transfer", data=data | {"csrf_token": form_token(page.text)})
    assert answer.status_code == status
    async with client_for(protected) as bob:
        await log_in(bob, "bob")
        bob_balance = (await balances(bob))["Current"]
    moved_to_bob = status == 303 and data["to_user"] == "bob"
    assert (bob_balance != "830.50") is moved_to_bob


# --- the JSON API and JWTs ------------------------------------------------------------------


async def issue_token(client: httpx.AsyncClient) -> str:
    page = await client.get("/accounts")
    answer = await client.post("/api/token", data={"csrf_token": form_token(page.text)})
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    token: str = answer.json()["access_token"]
    return never_logged(token)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged(demo: DemoSettings, case: str) -> str:
    """A token as an attacker (or a careless issuer) would make it."""
    keys = jwt_keys(demo.data_dir, None)
    assert keys.signing_key is not None
    clock = (lambda: 1_700_000_000.0) if case == "expired" else time.time
    issuer = TokenIssuer(
        key=keys.signing_key,
        algorithm="Ed25519",
        issuer=demo.jwt_issuer,
        audience="another-service" if case == "audience" else demo.jwt_audience,
        store=MemoryStore(),
        clock=clock,
    )
    good = issuer.issue_access_token("alice", roles=["admin"])
    header, payload, signature = good.split(".")
    if case == "none":
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    if case == "tampered":
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        return f"{header}.{b64(claims | {'sub': 'bob'})}.{signature}"
    return good


@pytest.mark.parametrize(
    ("case", "status"),
    [
        pytest.param("valid", 200, id="api-jwt-ok"),
        pytest.param("missing", 401, id="api-no-token"),
        pytest.param("none", 401, id="api-jwt-alg-none"),
        pytest.param("tampered", 401, id="api-jwt-tampered"),
        pytest.param("expired", 401, id="api-jwt-expired"),
        pytest.param("audience", 401, id="api-jwt-wrong-audience"),
    ],
)
async def test_api_bearer(protected: Shield, demo: DemoSettings, case: str, status: int) -> None:
    headers = {} if case == "missing" else {"authorization": f"Bearer {forged(demo, case)}"}
    async with client_for(protected) as api:
        answer = await api.get("/api/accounts", headers=headers)
    assert answer.status_code == status
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_api_with_an_issued_token(client: httpx.AsyncClient, protected: Shield) -> None:
    await log_in(client, "alice")
    token = await issue_token(client)
    async with client_for(protected) as api:  # no cookies: the token alone
        answer = await api.get("/api/accounts", headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        assert answer.json()["user"] == "alice"
        assert [a["name"] for a in answer.json()["accounts"]] == ["Current", "Savings"]
        # A token cannot mint tokens, nor move money.
        bearer = {"authorization": f"Bearer {token}"}
        minted = await api.post("/api/token", headers=bearer)
        assert minted.status_code == 403
        moved = await api.post(
            "/transfer", data={"from_account": "1", "to_user": "bob", "amount": "1"}, headers=bearer
        )
        assert moved.status_code == 403


# --- authorization -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "path", "status"),
    [
        pytest.param("admin", "/admin", 200, id="admin-page-admin-ok"),
        pytest.param("alice", "/admin", 403, id="admin-page-customer"),
        pytest.param(None, "/admin", 401, id="admin-page-anonymous"),
        pytest.param("admin", "/events", 200, id="events-page-admin-ok"),
        pytest.param("bob", "/events.json", 403, id="events-json-customer"),
        pytest.param(None, "/not-a-route", 401, id="policy-deny-by-default"),
        pytest.param(None, "/health", 200, id="health-public-ok"),
    ],
)
async def test_role_required(
    client: httpx.AsyncClient, username: str | None, path: str, status: int
) -> None:
    if username is not None:
        await log_in(client, username)
    assert (await client.get(path)).status_code == status


# --- search, notes, CSP ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "memos"),
    [
        pytest.param("Luigi's", ["Dinner at Luigi's"], id="search-quote-ok"),
        pytest.param("%", ["Concert tickets 50% off"], id="search-like-percent"),
        pytest.param("_", ["Rent_March"], id="search-like-underscore"),
        pytest.param("' OR '1'='1", [], id="search-sqli-or-true"),
        pytest.param("x' UNION SELECT password_hash FROM users --", [], id="search-sqli-union"),
        pytest.param("\\", [], id="search-escape-char"),
    ],
)
async def test_search_is_literal(client: httpx.AsyncClient, query: str, memos: list[str]) -> None:
    await log_in(client, "bob")
    answer = await client.get("/search", params={"q": query})
    assert answer.status_code == 200
    found = re.findall(r'<td class="num">[^<]*</td><td>([^<]*)</td>', answer.text)
    assert [m.replace("&#39;", "'") for m in found] == memos
    assert "argon2" not in answer.text


async def test_note_script_is_sanitised_and_pages_use_the_nonce(client: httpx.AsyncClient) -> None:
    await log_in(client, "alice")
    page = await client.get("/notes")
    note = '<b>pay rent</b><script>alert("xss")</script><img src=x onerror=alert(1)>'
    answer = await client.post("/notes", data={"text": note, "csrf_token": form_token(page.text)})
    assert answer.status_code == 303
    shown = await client.get("/notes")
    assert "<b>pay rent</b>" in shown.text
    assert "alert" not in shown.text
    accounts = await client.get("/accounts")
    nonce = re.search(r"'nonce-([^']+)'", accounts.headers["content-security-policy"])
    assert nonce is not None
    scripts = re.findall(r"<script[^>]*>", accounts.text)
    assert scripts == [f'<script nonce="{nonce.group(1)}" src="/static/bank.js">']
    assert re.search(r"<[^>]+\son[a-z]+\s*=", accounts.text) is None  # no inline handlers


# --- data at rest ----------------------------------------------------------------------------


def test_iban_is_ciphertext_bound_to_its_row(protected: Shield, demo: DemoSettings) -> None:
    path = demo.data_dir / PROTECTED_DB_FILE
    # `with` on a connection commits but does not close it (Python 3.13 warns of that).
    with closing(sqlite3.connect(path)) as conn:
        stored = dict(conn.execute("SELECT id, iban FROM accounts").fetchall())
    assert all("BSTN" not in value for value in stored.values())
    key = (demo.data_dir / FIELD_KEY_FILE).read_text().strip()
    encryptor = FieldEncryptor([key])
    assert encryptor.decrypt_text(stored[1], iban_aad(1)).startswith("BB00 BSTN")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        # The attacker copies alice's IBAN onto bob's row.
        conn.execute("UPDATE accounts SET iban = ? WHERE id = 3", (stored[1],))
    with pytest.raises(DecryptionError):
        encryptor.decrypt_text(stored[1], iban_aad(3))
    with pytest.raises(DecryptionError):
        BankDatabase(path, encryptor).accounts_of("bob")


def test_unprotected_bank_keeps_ibans_in_the_clear(
    unprotected: FastAPI, demo: DemoSettings
) -> None:
    with closing(sqlite3.connect(demo.data_dir / UNPROTECTED_DB_FILE)) as conn:
        stored = [row[0] for row in conn.execute("SELECT iban FROM accounts")]
    assert all(value.startswith("BB00 BSTN") for value in stored)


# --- events, errors ---------------------------------------------------------------------------


async def test_email_in_an_event_is_redacted(
    protected: Shield, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bastion.security")
    async with client_for(protected, "127.0.0.2") as attacker:
        answer = await log_in(attacker, EMAIL_USERNAME, "guess-password")
        assert answer.status_code == 401
    async with client_for(protected) as admin:
        await log_in(admin, "admin")
        records = (await admin.get("/events.json")).json()["refused"]
        page = await admin.get("/events")
    failures = [r for r in records if r["reason"] == "bank-bad-credentials"]
    assert failures[0]["details"] == {"username": "[redacted-email]"}
    assert "[redacted-email]" in page.text
    assert EMAIL_USERNAME not in page.text
    logged = [r.getMessage() for r in caplog.records if r.name == "bastion.security"]
    assert any("bank-bad-credentials" in line and "[redacted-email]" in line for line in logged)
    assert not any(EMAIL_USERNAME in line for line in logged)


async def test_events_page_shows_a_refused_attack(protected: Shield) -> None:
    async with client_for(protected, "127.0.0.3") as attacker:
        answer = await attacker.post(
            "/login",
            data={"username": "alice", "password": "x"},
            headers={"sec-fetch-site": "cross-site"},
        )
        assert answer.status_code == 403
        assert (await attacker.get("/admin")).status_code == 401  # an event without details
    async with client_for(protected) as admin:
        await log_in(admin, "admin")
        body = (await admin.get("/events.json")).json()
        page = await admin.get("/events")
    # The login guard also counts the refused login post as a failure (authn_login_fail).
    assert body["by_kind"]["malicious_csrf"] == 1
    assert body["by_kind"]["authz_fail"] == 1
    assert {r["client"] for r in body["refused"]} == {"127.0.0.3"}
    assert page.status_code == 200
    assert "malicious_csrf" in page.text
    assert '<script nonce="' in page.text


async def test_csp_violation_report_reaches_the_events_page(protected: Shield) -> None:
    report = {
        "csp-report": {
            "document-uri": f"{BASE}/notes",
            "violated-directive": "script-src-elem",
            "effective-directive": "script-src-elem",
            "blocked-uri": "inline",
            "disposition": "enforce",
        }
    }
    async with client_for(protected) as browser:
        answer = await browser.post(
            "/.bastion/csp-report",
            content=json.dumps(report),
            headers={"content-type": "application/csp-report"},
        )
        assert answer.status_code == 204
        await log_in(browser, "admin")
        body = (await browser.get("/events.json")).json()
    assert body["by_kind"]["malicious_csp_violation"] == 1


async def test_boom_is_a_generic_500_with_an_incident_id(client: httpx.AsyncClient) -> None:
    answer = await client.get("/boom", headers={"accept": "application/json"})
    assert answer.status_code == 500
    assert "boom" not in answer.text
    assert "Traceback" not in answer.text
    assert answer.json() == {
        "error": "Internal Server Error",
        "status": 500,
        "request_id": answer.json()["request_id"],
    }
    assert re.fullmatch(r"[0-9a-f]{16}", answer.json()["request_id"])
    page = await client.get("/boom")
    assert page.status_code == 500
    assert re.search(r"Incident id: <code>[0-9a-f]{16}</code>", page.text)
    assert "boom" not in page.text


# --- the live feed, on a real server --------------------------------------------------------


@pytest.fixture(scope="module", params=["create_app", "create_unprotected_app"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, seeded_dir: Path
) -> Iterator[RunningServer]:
    """The bank on uvicorn, over plain HTTP (development mode: TLS is the server's)."""
    data_dir = tmp_path_factory.mktemp("bank-served") / "bank"
    shutil.copytree(seeded_dir, data_dir)
    env = {"BASTION_DEMO__DATA_DIR": str(data_dir), "BASTION_MODE": "development"}
    with serve(f"bastion.demo:{request.param}", env=env, extra_args=("--no-proxy-headers",)) as up:
        yield up


async def served_log_in(server: RunningServer, username: str) -> tuple[httpx.AsyncClient, str]:
    """A signed-in client of the served bank, and a form token of its session."""
    client = httpx.AsyncClient(base_url=server.url)
    try:
        await log_in(client, username)
        accounts = await client.get("/accounts")
        assert accounts.status_code == 200
    except BaseException:
        await client.aclose()
        raise
    return client, form_token(accounts.text)


def feed(server: RunningServer, client: httpx.AsyncClient | None, origin: str) -> Any:
    cookie = "; ".join(
        f"{name}={value}" for name, value in (client.cookies.items() if client else [])
    )
    return connect(
        f"ws://{server.host}:{server.port}/ws/feed",
        origin=origin,  # type: ignore[arg-type]  # websockets types Origin as a NewType
        additional_headers={"cookie": cookie} if cookie else None,
        open_timeout=OPEN_TIMEOUT,
    )


async def next_update(connection: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(connection.recv(), RECV_TIMEOUT))
    return message


@pytest.mark.server
async def test_feed_pushes_balance_changes(server: RunningServer) -> None:
    client, token = await served_log_in(server, "alice")
    try:
        async with feed(server, client, server.url) as connection:
            first = [await next_update(connection), await next_update(connection)]
            assert [m["name"] for m in first] == ["Current", "Savings"]
            answer = await client.post(
                "/transfer",
                data={"from_account": "2", "to_user": "bob", "amount": "1", "csrf_token": token},
            )
            assert answer.status_code == 303
            update = await next_update(connection)
    finally:
        await client.aclose()
    assert update["id"] == 2
    assert (
        parse_amount(update["balance"].replace(",", ""))
        == (parse_amount(first[1]["balance"].replace(",", "")) or 0) - 100
    )


@pytest.mark.server
@pytest.mark.parametrize(
    ("origin", "signed_in", "status"),
    [
        pytest.param("https://evil.example", True, 403, id="feed-cross-origin"),
        pytest.param("null", True, 403, id="feed-null-origin"),
        pytest.param(None, False, 401, id="feed-anonymous"),
    ],
)
async def test_feed_refuses(
    server: RunningServer, origin: str | None, signed_in: bool, status: int
) -> None:
    client = (await served_log_in(server, "bob"))[0] if signed_in else None
    try:
        if signed_in and not server_is_protected(server):
            # The unprotected bank lets any site's page read bob's balances (CSWSH).
            async with feed(server, client, origin or server.url) as connection:
                assert (await next_update(connection))["name"] == "Current"
            return
        with pytest.raises(InvalidStatus) as refused:
            async with feed(server, client, origin or server.url):
                pass
        # Unprotected, the bank's own check closes an anonymous handshake (403).
        expected = status if server_is_protected(server) else 403
        assert refused.value.response.status_code == expected
    finally:
        if client is not None:
            await client.aclose()


def server_is_protected(server: RunningServer) -> bool:
    headers = httpx.get(f"{server.url}/health").headers
    return bool(headers.get("x-content-type-options") == "nosniff")


# --- the unprotected bank: it works, and its weaknesses are real ----------------------------


async def test_unprotected_bank_works_and_is_weak(unprotected: FastAPI, demo: DemoSettings) -> None:
    async with client_for(unprotected) as browser:
        first = await browser.get("/login")
        before = first.cookies["session"]
        assert "httponly" not in first.headers["set-cookie"].lower()
        assert "content-security-policy" not in first.headers
        answer = await log_in(browser, "alice")
        assert answer.status_code == 303
        assert browser.cookies["session"] == before  # session fixation
        forged_transfer = await browser.post(
            "/transfer",
            data={"from_account": "1", "to_user": "bob", "amount": "10"},
            headers={"origin": "https://evil.example", "sec-fetch-site": "cross-site"},
        )
        assert forged_transfer.status_code == 303  # cross-site request forgery
        assert (await balances(browser))["Current"] == "1,240.00"
        assert (await browser.get("/admin")).status_code == 403  # the app's own role check
        boom = await browser.get("/boom")
        assert boom.status_code == 500
        assert "boom: this detail stays in the server log" in boom.text  # debug page
    async with client_for(unprotected) as api:
        expired = forged(demo, "expired")
        late = await api.get("/api/accounts", headers={"authorization": f"Bearer {expired}"})
        assert late.status_code == 200  # expired tokens accepted
        none = await api.get(
            "/api/accounts", headers={"authorization": f"Bearer {forged(demo, 'none')}"}
        )
        assert none.status_code == 401  # joserfc itself never accepts alg none
