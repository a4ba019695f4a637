"""Bastion Bank in a real headless Chromium: what issue #7 says the demo must show.

Log in through the real form; a stored script in a note does not run (nh3 removes it,
and the nonce CSP blocks it when the sanitiser is bypassed, and Chromium's violation
report becomes an event); a cross-site form and a cross-origin WebSocket are refused,
beside the bank's own form and feed, which work.

How it is served. The protected bank (`create_app`) runs on a real uvicorn on
127.0.0.1 in development mode, over plain HTTP: TLS is the demo server's job
(`bastion.demo.serve`), not what this test is about. Chromium treats
`http://localhost` as a potentially trustworthy origin (a secure context), so it
accepts `Secure` and `__Host-` cookies from it; the test therefore turns
`sessions.insecure_cookie_over_http` back off and keeps production's cookie
(`__Host-session; Secure; HttpOnly; SameSite=Lax`) instead of development mode's
unprefixed one. (httpx would not send a `Secure` cookie over plain HTTP, so every
request here goes through the browser or Playwright's request context, which shares
the browser's cookies.)

The sites. The bank is visited as `http://localhost:<bank port>`. The attacker's
pages (`attacker_app`, a tiny Starlette app on another uvicorn) are visited two ways:

* `http://127.0.0.1:<attacker port>`: another *site*. SameSite=Lax keeps Alice's
  cookie off the forged POST and off the WebSocket handshake, so the browser's own
  defence already acts; Bastion refuses the request anyway (CSRF: Fetch Metadata says
  `cross-site`).
* `http://localhost:<attacker port>`: the *same site* (cookies and SameSite ignore the
  port) but another *origin*. Chromium attaches Alice's cookie, so only Bastion stands
  in the way: its CSRF layer refuses the `same-site` POST, and its WebSocket guard the
  foreign `Origin`. These cases prove the refusal is Bastion's, not SameSite's; the
  refused event's reason names the layer's rule.

CSP reports. The demo's policy names both `report-uri` and `report-to` (with a
`Reporting-Endpoints` header), and CSP3 says `report-uri` is ignored when `report-to`
is present, as Chromium does. Over plain HTTP, Chromium 156 delivered no Reporting API
report here: nothing reached the endpoint within 100 s, with `--short-reporting-delay`
too, in a fresh or a persistent profile; the same violation under the same policy
without `report-to` arrives within milliseconds. (The likely cause, not proven here:
Chromium's network code takes reporting endpoints only from responses over HTTPS with
a valid certificate, as it does for `Report-To`.) So the test page is the bank's real
`/notes` response with two test-made changes, both in `_without_sanitiser`: the note
is inserted raw (as if the sanitiser had let it through) and `report-to` is dropped
from the CSP (so Chromium reports to `report-uri`, the same Bastion endpoint). Every
directive that blocks script is Bastion's, unchanged. Injecting through
`page.evaluate` would not do: a `<script>` element created by script is trusted
under `'strict-dynamic'` by design, and runs.

With `CI=true` a missing Chromium or Playwright fails the test (tests/support/browser).

References: RFC 6265bis section 5.6.7 (SameSite) and 4.1.3.2 (`__Host-`); Fetch Metadata
https://www.w3.org/TR/fetch-metadata/ ; CSP3 https://www.w3.org/TR/CSP3/ (section 6.5
reporting); Secure Contexts https://www.w3.org/TR/secure-contexts/ (localhost).
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from bastion.auth.policy import REASON_UNAUTHENTICATED
from bastion.csrf import REASON_CROSS_SITE, REASON_SAME_SITE
from bastion.demo.bank.db import DEMO_USERS
from bastion.events import KIND_AUTHZ_FAIL, KIND_CSP_VIOLATION, KIND_MALICIOUS_CSRF
from bastion.headers.policy import DEFAULT_REPORT_PATH
from bastion.sessions import SessionSettings
from bastion.websocket import REASON_FOREIGN_ORIGIN
from tests.support.browser import chromium_browser
from tests.support.secret_watch import never_logged
from tests.support.servers import RunningServer, serve

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Dialog, Page
    from playwright.sync_api import Route as BrowserRoute

pytestmark = pytest.mark.server

BANK_FACTORY: Final = "bastion.demo:create_app"
ATTACKER_FACTORY: Final = "tests.demo.test_bank_browser:attacker_app"
PASSWORDS: Final = {user.username: never_logged(user.password) for user in DEMO_USERS}
COOKIE: Final = SessionSettings().cookie_name  # `__Host-session`, kept over localhost
# Chromium answers in milliseconds; these bound each wait so a failure is quick.
WAIT_MS: Final = 10_000
EVENT_WAIT_SECONDS: Final = 10.0
POLL_SECONDS: Final = 0.1
STORED_XSS: Final = (
    "<b>pay rent</b><script>window.__pwned = 1</script>"
    '<img src="data:," onerror="window.__pwned = 2; alert(1)">'
)
ATTACK_AMOUNT: Final = "100.00"
# Listens before any page script runs (an init script runs whatever the page's CSP).
RECORD_VIOLATIONS: Final = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.effectiveDirective);
});
"""


# --- the attacker's site -----------------------------------------------------------------

ATTACK_FORM: Final = """<!doctype html>
<title>You won a prize</title>
<form id="attack" method="post" action="{target}">
  <input type="hidden" name="from_account" value="1">
  <input type="hidden" name="to_user" value="bob">
  <input type="hidden" name="amount" value="{amount}">
  <input type="hidden" name="memo" value="prize fee">
</form>
<script>document.getElementById("attack").submit();</script>
"""
ATTACK_SOCKET: Final = """<!doctype html>
<title>You won a prize</title>
<p id="status">connecting</p>
<script>
const status = document.getElementById("status");
const socket = new WebSocket({target});
socket.onopen = () => {{ status.textContent = "open"; }};
socket.onmessage = (event) => {{ status.textContent = "read: " + event.data; }};
socket.onclose = (event) => {{
  if (status.textContent === "connecting") status.textContent = "closed " + event.code;
}};
</script>
"""


async def _attack_form(request: Request) -> HTMLResponse:
    target = html.escape(request.query_params["target"], quote=True)
    return HTMLResponse(ATTACK_FORM.format(target=target, amount=ATTACK_AMOUNT))


async def _attack_socket(request: Request) -> HTMLResponse:
    # json.dumps makes a JS string literal; "</" cannot occur in a ws:// URL we pass.
    return HTMLResponse(ATTACK_SOCKET.format(target=json.dumps(request.query_params["target"])))


def attacker_app() -> Starlette:
    """The attacker's site (uvicorn `--factory`): pages that act the moment they load."""
    return Starlette(routes=[Route("/form", _attack_form), Route("/socket", _attack_socket)])


# --- servers, browser, sessions ------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as launched:
        yield launched


@pytest.fixture(scope="module")
def bank(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The protected bank's URL as the browser sees it (`http://localhost:<port>`).
    It asks for the browser first, so a missing one skips before any server starts."""
    data_dir: Path = tmp_path_factory.mktemp("bank-browser") / "bank"
    env = {
        "BASTION_DEMO__DATA_DIR": str(data_dir),
        "BASTION_MODE": "development",
        # Keep `__Host-session; Secure`: Chromium accepts it from http://localhost.
        "BASTION_SESSIONS__INSECURE_COOKIE_OVER_HTTP": "false",
    }
    with serve(BANK_FACTORY, env=env, extra_args=("--no-proxy-headers",)) as server:
        yield f"http://localhost:{server.port}"


@pytest.fixture(scope="module")
def attacker(browser: Browser) -> Iterator[RunningServer]:
    with serve(ATTACKER_FACTORY) as server:
        yield server


Site = Callable[[RunningServer], str]


def cross_site(attacker: RunningServer) -> str:
    return f"http://127.0.0.1:{attacker.port}"


def same_site(attacker: RunningServer) -> str:
    return f"http://localhost:{attacker.port}"


def log_in(context: BrowserContext, bank: str, username: str) -> Page:
    """Through the real login form: fill it in, click, land on the accounts page."""
    page = context.new_page()
    page.goto(f"{bank}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORDS[username])
    with page.expect_navigation(url=f"{bank}/accounts", timeout=WAIT_MS):
        page.click("form[action='/login'] button[type=submit]")
    return page


@pytest.fixture(scope="module")
def alice(browser: Browser, bank: str) -> Iterator[BrowserContext]:
    """Alice's browser profile, signed in once for the module (the login route's rate
    limit is ten a minute per client: one login per profile keeps well below it)."""
    context = browser.new_context()
    try:
        log_in(context, bank, "alice").close()
        yield context
    finally:
        context.close()


@pytest.fixture(scope="module")
def admin(browser: Browser, bank: str) -> Iterator[BrowserContext]:
    """The admin's profile, for reading the events page (`/events.json`)."""
    context = browser.new_context()
    try:
        log_in(context, bank, "admin").close()
        yield context
    finally:
        context.close()


def watch_dialogs(page: Page) -> list[str]:
    """The messages of every `alert`/`confirm` the page opens (each is dismissed)."""
    opened: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        opened.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    return opened


def get_json(context: BrowserContext, url: str) -> Any:
    answer = context.request.get(url)
    assert answer.status == 200, url
    return answer.json()


def current_balance(alice: BrowserContext, bank: str) -> str:
    accounts = get_json(alice, f"{bank}/api/accounts")["accounts"]
    balance: str = next(a["balance"] for a in accounts if a["id"] == 1)
    return balance


def wait_for_event(
    admin: BrowserContext, bank: str, seen: set[str], match: dict[str, str]
) -> dict[str, Any]:
    """The first refused event not in `seen` whose fields include `match` (bounded wait:
    Chromium sends CSP reports after the page's script has run)."""
    deadline = time.monotonic() + EVENT_WAIT_SECONDS
    while True:
        for record in get_json(admin, f"{bank}/events.json")["refused"]:
            if record["request_id"] not in seen and match.items() <= record.items():
                found: dict[str, Any] = record
                return found
        if time.monotonic() > deadline:
            pytest.fail(f"no event {match} within {EVENT_WAIT_SECONDS} s")
        time.sleep(POLL_SECONDS)


def event_ids(admin: BrowserContext, bank: str) -> set[str]:
    return {r["request_id"] for r in get_json(admin, f"{bank}/events.json")["refused"]}


# --- logging in --------------------------------------------------------------------------


def test_login_through_the_form(bank: str, alice: BrowserContext) -> None:
    page = alice.new_page()
    page.goto(f"{bank}/")
    assert page.url == f"{bank}/accounts"  # `/` sends a signed-in user to the accounts
    assert page.text_content("h1") == "Accounts of alice"
    cookies = alice.cookies(bank)
    assert [(c["name"], c["httpOnly"], c["secure"], c["sameSite"]) for c in cookies] == [
        (COOKIE, True, True, "Lax")
    ]
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
    page.close()


def test_wrong_password_stays_on_the_login_page(browser: Browser, bank: str) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{bank}/login")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "not-alices-password")
        with page.expect_response(f"{bank}/login") as answer:
            page.click("form[action='/login'] button[type=submit]")
        assert answer.value.status == 401
        assert page.text_content("[role=alert]") == "Wrong user name or password."
        assert page.evaluate("fetch('/accounts').then((r) => r.status)") == 401
    finally:
        context.close()


# --- stored XSS: sanitised, and blocked by CSP if it were not ----------------------------


def test_stored_script_in_a_note_does_not_run(bank: str, alice: BrowserContext) -> None:
    page = alice.new_page()
    dialogs = watch_dialogs(page)
    page.goto(f"{bank}/notes")
    page.fill("textarea[name=text]", STORED_XSS)
    with page.expect_navigation(url=f"{bank}/notes", timeout=WAIT_MS):
        page.click("form[action='/notes'] button[type=submit]")
    page.reload()
    note = "".join(
        page.locator("article.note").evaluate_all("(all) => all.map((n) => n.innerHTML)")
    )
    assert "<b>pay rent</b>" in note
    assert "script" not in note
    assert "onerror" not in note
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert dialogs == []
    page.close()


def without_report_to(policy: str) -> str:
    return "; ".join(d for d in policy.split("; ") if not d.startswith("report-to "))


def _without_sanitiser(route: BrowserRoute) -> None:
    """The bank's real `/notes` response, with the note inserted raw (as if nh3 had
    let it through) and `report-to` dropped from the CSP (see the module docstring)."""
    response = route.fetch()
    headers = dict(response.headers)
    headers["content-security-policy"] = without_report_to(headers["content-security-policy"])
    body = response.text().replace("</main>", f'<article id="raw">{STORED_XSS}</article></main>')
    route.fulfill(response=response, headers=headers, body=body)


def test_csp_blocks_an_unsanitised_script_and_the_report_becomes_an_event(
    bank: str, alice: BrowserContext, admin: BrowserContext
) -> None:
    real = alice.request.get(f"{bank}/notes")
    policy = real.headers["content-security-policy"]
    script_src = next(d for d in policy.split("; ") if d.startswith("script-src "))
    assert "'nonce-" in script_src
    assert "'strict-dynamic'" in script_src
    assert f"report-uri {DEFAULT_REPORT_PATH}" in policy
    assert without_report_to(policy) != policy  # the reason for the route below
    seen = event_ids(admin, bank)
    page = alice.new_page()
    dialogs = watch_dialogs(page)
    page.add_init_script(RECORD_VIOLATIONS)
    page.route(f"{bank}/notes", _without_sanitiser)
    page.goto(f"{bank}/notes")
    # The raw markup is in the page, as an unsanitised note would be ...
    assert page.locator("#raw script").count() == 1
    assert page.get_attribute("#raw img", "onerror") is not None
    # ... and neither the inline script nor the inline handler ran.
    page.wait_for_function("window.__violations.length >= 2", timeout=WAIT_MS)
    assert sorted(page.evaluate("window.__violations")) == ["script-src-attr", "script-src-elem"]
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert dialogs == []
    page.close()
    directives = set()
    for _ in range(2):  # one report per violation; their order is Chromium's
        record = wait_for_event(
            admin, bank, seen, {"kind": KIND_CSP_VIOLATION, "path": DEFAULT_REPORT_PATH}
        )
        seen.add(record["request_id"])
        details = record["details"]
        assert (details["document_path"], details["disposition"], details["format"]) == (
            "/notes",
            "enforce",
            "report-uri",
        )
        directives.add(details["effective_directive"])
    assert directives == {"script-src-elem", "script-src-attr"}


# --- transfers: the bank's own form, and a forged one --------------------------------------


def test_own_transfer_form_works(bank: str, alice: BrowserContext) -> None:
    before = current_balance(alice, bank)
    page = alice.new_page()
    page.goto(f"{bank}/accounts")
    page.select_option("select[name=from_account]", "1")
    page.fill("input[name=to_user]", "bob")
    page.fill("input[name=amount]", "1.00")
    page.fill("input[name=memo]", "coffee")
    with page.expect_response(f"{bank}/transfer") as answer:
        page.click("form[action='/transfer'] button[type=submit]")
    assert answer.value.status == 303
    page.wait_for_url(f"{bank}/accounts")
    after = current_balance(alice, bank)
    assert _cents(before) - _cents(after) == 100
    page.close()


@pytest.mark.parametrize(
    ("site", "reason", "principal"),
    [
        # Another site: SameSite=Lax already keeps Alice's cookie off the POST (no
        # principal); Bastion's CSRF layer refuses it on `Sec-Fetch-Site: cross-site`.
        pytest.param(cross_site, REASON_CROSS_SITE, None, id="browser-csrf-cross-site-form"),
        # Same site, another origin: the cookie goes along (Alice is signed in) and
        # only Bastion's CSRF layer stands in the way (`Sec-Fetch-Site: same-site`).
        pytest.param(
            same_site, REASON_SAME_SITE, "alice", id="browser-csrf-same-site-sibling-form"
        ),
    ],
)
def test_forged_transfer_form_is_refused(
    bank: str,
    attacker: RunningServer,
    alice: BrowserContext,
    admin: BrowserContext,
    site: Site,
    reason: str,
    principal: str | None,
) -> None:
    seen = event_ids(admin, bank)
    before = current_balance(alice, bank)
    page = alice.new_page()
    target = f"{bank}/transfer"
    with page.expect_response(target) as answer:
        page.goto(f"{site(attacker)}/form?target={target}")
    assert answer.value.status == 403
    request_headers = answer.value.request.all_headers()
    assert request_headers["origin"] == site(attacker)
    assert current_balance(alice, bank) == before
    record = wait_for_event(admin, bank, seen, {"kind": KIND_MALICIOUS_CSRF, "path": "/transfer"})
    assert (record["layer"], record["reason"], record.get("principal")) == (
        "csrf",
        reason,
        principal,
    )
    page.close()


def _cents(balance: str) -> int:
    units, _, cents = balance.replace(",", "").partition(".")
    return int(units) * 100 + int(cents or "0")


# --- the live feed: the bank's page connects, a foreign origin does not -----------------


def test_accounts_page_feed_connects(bank: str, alice: BrowserContext) -> None:
    page = alice.new_page()
    page.goto(f"{bank}/accounts")
    status = page.locator("#feed-status")
    status.filter(has_text="Live:").wait_for(timeout=WAIT_MS)
    page.locator("#feed-log li").first.wait_for(timeout=WAIT_MS)  # balances arrived
    page.close()


@pytest.mark.parametrize(
    ("site", "refused"),
    [
        # Same site: Alice's cookie goes with the handshake (she is the principal); the
        # WebSocket guard refuses the foreign Origin (cross-site WebSocket hijacking).
        pytest.param(
            same_site,
            ("websocket", KIND_MALICIOUS_CSRF, REASON_FOREIGN_ORIGIN, 403, "alice"),
            id="browser-ws-cross-origin",
        ),
        # Another site: SameSite=Lax keeps the cookie off the handshake, and the route
        # policy refuses the anonymous caller before the guard looks at the Origin.
        pytest.param(
            cross_site,
            ("authorization", KIND_AUTHZ_FAIL, REASON_UNAUTHENTICATED, 401, None),
            id="browser-ws-cross-site",
        ),
    ],
)
def test_foreign_page_cannot_open_the_feed(
    bank: str,
    attacker: RunningServer,
    alice: BrowserContext,
    admin: BrowserContext,
    site: Site,
    refused: tuple[str, str, str, int, str | None],
) -> None:
    seen = event_ids(admin, bank)
    page = alice.new_page()
    target = bank.replace("http://", "ws://", 1) + "/ws/feed"
    page.goto(f"{site(attacker)}/socket?target={target}")
    page.wait_for_function(
        "document.getElementById('status').textContent !== 'connecting'", timeout=WAIT_MS
    )
    assert page.text_content("#status") == "closed 1006"  # the handshake failed
    record = wait_for_event(admin, bank, seen, {"path": "/ws/feed", "method": "WEBSOCKET"})
    fields = ("layer", "kind", "reason", "status", "principal")
    assert tuple(record.get(name) for name in fields) == refused
    page.close()
