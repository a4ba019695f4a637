"""CSRF against a real browser: headless Chromium, two real uvicorn servers.

The bank (`tests.csrf.browser_apps:bank_app`) is visited as `http://localhost:<port>`;
the attacker's site (`evil_app`) as `http://127.0.0.1:<other port>`, another site.
Alice opens the bank's page (which gives her a session and a form with a token),
then the attacker's page, which makes her browser post to the bank by itself. The
bank's recorder shows what the browser actually sent.

With `CI=true` the test must run: a missing Chromium or Playwright fails it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support.browser import chromium_browser
from tests.support.servers import RunningServer, serve

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

pytestmark = pytest.mark.server

BANK_FACTORY = "tests.csrf.browser_apps:bank_app"
EVIL_FACTORY = "tests.csrf.browser_apps:evil_app"
COOKIE = "session"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as launched:
        yield launched


@pytest.fixture(scope="module")
def bank(browser: Browser) -> Iterator[RunningServer]:
    with serve(BANK_FACTORY) as server:
        yield server


@pytest.fixture(scope="module")
def evil(bank: RunningServer) -> Iterator[RunningServer]:
    with serve(EVIL_FACTORY, env={"BANK_URL": bank_url(bank)}) as server:
        yield server


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile per test: no cookies from earlier tests."""
    fresh = browser.new_context()
    try:
        yield fresh
    finally:
        fresh.close()


def bank_url(bank: RunningServer) -> str:
    return f"http://localhost:{bank.port}"


def evil_url(evil: RunningServer) -> str:
    return f"http://127.0.0.1:{evil.port}"


def bank_state(bank: RunningServer) -> dict[str, Any]:
    response = httpx.get(f"http://127.0.0.1:{bank.port}/state", timeout=10)
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    return state


def log_in(context: BrowserContext, bank: RunningServer, query: str = "") -> Page:
    """Alice opens the bank's page: she gets a session cookie and a form."""
    page = context.new_page()
    page.goto(bank_url(bank) + "/" + query)
    assert page.text_content("#user") == "alice"
    return page


def submit_and_status(page: Page, action: Any) -> int:
    with page.expect_response(lambda r: r.url.endswith("/transfer")) as response:
        action()
    status: int = response.value.status
    return status


def test_session_cookie_is_lax_and_http_only(context: BrowserContext, bank: RunningServer) -> None:
    log_in(context, bank)
    cookies = context.cookies(bank_url(bank))
    assert [(c["name"], c.get("sameSite"), c.get("httpOnly")) for c in cookies] == [
        (COOKIE, "Lax", True)
    ]


@pytest.mark.parametrize(
    "enctype", ["multipart/form-data", "application/x-www-form-urlencoded", "text/plain"]
)
def test_own_form_posts(context: BrowserContext, bank: RunningServer, enctype: str) -> None:
    page = log_in(context, bank, f"?enctype={enctype}")
    before = len(bank_state(bank)["transfers"])
    assert submit_and_status(page, lambda: page.click("#send")) == 200
    state = bank_state(bank)
    assert len(state["transfers"]) == before + 1
    last = state["log"][-1]
    assert (last["sec_fetch_site"], last["cookie_names"], last["status"]) == (
        "same-origin",
        [COOKIE],
        200,
    )


@pytest.mark.parametrize(
    "enctype",
    [
        pytest.param("application/x-www-form-urlencoded", id="csrf-browser-urlencoded"),
        pytest.param("text/plain", id="csrf-browser-text-plain"),
        pytest.param("multipart/form-data", id="csrf-browser-multipart"),
    ],
)
def test_cross_site_auto_submitted_form_is_refused(
    context: BrowserContext, bank: RunningServer, evil: RunningServer, enctype: str
) -> None:
    log_in(context, bank)
    before = bank_state(bank)["transfers"]
    page = context.new_page()
    status = submit_and_status(page, lambda: page.goto(f"{evil_url(evil)}/?enctype={enctype}"))
    assert status == 403
    state = bank_state(bank)
    assert state["transfers"] == before  # nothing changed
    last = state["log"][-1]
    assert last["sec_fetch_site"] == "cross-site"
    assert last["origin"] == evil_url(evil)
    # SameSite=Lax: the browser did not attach Alice's cookie to the cross-site POST.
    assert last["cookie_names"] == []
    assert last["status"] == 403


def test_cross_site_no_cors_fetch_is_refused(
    context: BrowserContext, bank: RunningServer, evil: RunningServer
) -> None:
    """`fetch(..., {mode: "no-cors", credentials: "include"})`: no preflight, an
    opaque answer the page cannot read, but the request itself still arrives."""
    log_in(context, bank)
    before = bank_state(bank)
    page = context.new_page()
    page.goto(f"{evil_url(evil)}/fetch")
    page.wait_for_function("document.getElementById('status').textContent === 'sent'")
    state = bank_state(bank)
    assert state["transfers"] == before["transfers"]
    assert len(state["log"]) == len(before["log"]) + 1
    last = state["log"][-1]
    assert (last["sec_fetch_site"], last["cookie_names"], last["status"]) == (
        "cross-site",
        [],
        403,
    )


def _as_legacy_browser(route: Route) -> None:
    """Forward the browser's request without Fetch Metadata or Origin, as a browser
    from before 2020 would send it. Chromium re-adds those headers to any request it
    sends itself, so Playwright's own client sends this one; the form body and the
    cookie are exactly the ones Chromium built."""
    headers = {
        name: value
        for name, value in route.request.all_headers().items()
        if not name.startswith("sec-fetch-") and name != "origin"
    }
    route.fulfill(response=route.fetch(headers=headers))


@pytest.mark.parametrize("enctype", ["multipart/form-data", "application/x-www-form-urlencoded"])
def test_legacy_browser_posts_with_the_form_token(
    context: BrowserContext, bank: RunningServer, enctype: str
) -> None:
    page = log_in(context, bank, f"?enctype={enctype}")
    page.route("**/transfer", _as_legacy_browser)
    before = len(bank_state(bank)["transfers"])
    assert submit_and_status(page, lambda: page.click("#send")) == 200
    state = bank_state(bank)
    # The body read for the token reached the app's form parser intact.
    assert state["transfers"][before:] == [{"to": "bob", "amount": "10"}]
    last = state["log"][-1]
    assert (last["sec_fetch_site"], last["origin"], last["cookie_names"]) == (None, None, [COOKIE])


def test_legacy_browser_without_the_token_is_refused(
    context: BrowserContext, bank: RunningServer
) -> None:
    page = log_in(context, bank)
    page.route("**/transfer", _as_legacy_browser)
    page.evaluate("document.querySelector('input[name=csrf_token]').value = ''")
    before = bank_state(bank)["transfers"]
    assert submit_and_status(page, lambda: page.click("#send")) == 403
    assert bank_state(bank)["transfers"] == before
