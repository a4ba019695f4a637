"""Bastion Bank's routes: one FastAPI application for both variants.

Threats the routes themselves handle, in both variants (Bastion adds the rest):

* Stored XSS through notes: notes are HTML, cleaned by nh3 (an allowlist of a few
  formatting tags, `href` only on links, http(s) and mailto only, `rel=noopener
  noreferrer`) when saved and again when shown; everything else a template shows is
  autoescaped, and pages load their scripts from `/static` with the CSP nonce,
  with no inline handlers, so the nonce CSP of the protected variant can forbid all
  other script.
* Broken object-level authorization: a transfer, a search or a note touches only
  the signed-in user's rows (every query takes the caller's name); the admin page
  checks the role itself as well as through the route policy.
* Minting tokens with a token: `POST /api/token` issues an access token to a user
  signed in with a session only, never to a bearer of another token.
* Information leakage: `/boom` raises on purpose. Behind Bastion the error shield
  answers with a generic page and an incident id; unprotected, the debug page shows
  the traceback.

Routes (the route policy in `protection` lists the same, with who may call each):
`GET /`, `GET|POST /login`, `POST /logout`, `GET /accounts`, `POST /transfer`,
`GET /search`, `GET|POST /notes`, `GET /admin`, `GET /events`, `GET /events.json`,
`POST /api/token`, `GET /api/accounts`, `WEBSOCKET /ws/feed`, `GET /boom`,
`GET /health`, `GET /openapi.json`, `GET /static/*`.

Not covered: Bastion's protections (see `protection`); the unprotected variant has
none of them, on purpose.

References: OWASP XSS Prevention Cheat Sheet (rules 1 and 6, HTML sanitisation);
OWASP API Security Top 10 2023, API1 (object-level authorization); RFC 6749
section 5.1 (token responses are `no-store`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import anyio.to_thread
import jinja2
import nh3
from fastapi import Depends, FastAPI, Form, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.requests import HTTPConnection, Request
from starlette.websockets import WebSocket, WebSocketDisconnect

from bastion.auth.jwt import DEFAULT_ACCESS_TTL_SECONDS, TokenIssuer
from bastion.auth.passwords import PasswordHasher
from bastion.demo.bank.db import (
    DEMO_USERS,
    MAX_MEMO_CHARS,
    MAX_NOTE_CHARS,
    MAX_SEARCH_CHARS,
    MAX_USERNAME_CHARS,
    Account,
    BankDatabase,
    User,
    parse_amount,
)
from bastion.demo.bank.live import EventRing, FeedHub
from bastion.demo.bank.variants import Caller, Variant
from bastion.events import KIND_AUTHN_FAIL

HERE: Final = Path(__file__).parent
MAX_PASSWORD_CHARS: Final = 1024  # argon2 hashes any length; this bounds the work
EVENTS_SHOWN: Final = 50
REASON_BAD_CREDENTIALS: Final = "bank-bad-credentials"
WS_POLICY_VIOLATION: Final = 1008  # RFC 6455 section 7.4.1
WS_TRY_AGAIN_LATER: Final = 1013

# nh3's allowlist for notes: formatting and links, nothing that runs or loads.
NOTE_TAGS: Final = frozenset(
    {"a", "b", "br", "code", "em", "i", "li", "ol", "p", "pre", "strong", "ul"}
)
NOTE_ATTRIBUTES: Final = {"a": {"href"}}
NOTE_URL_SCHEMES: Final = frozenset({"http", "https", "mailto"})


# --- the core ------------------------------------------------------------------------


def sanitise_note(untrusted_html: str) -> str:
    """The note's HTML with everything outside the allowlist removed (nh3)."""
    return nh3.clean(
        untrusted_html[:MAX_NOTE_CHARS],
        tags=set(NOTE_TAGS),
        attributes={tag: set(names) for tag, names in NOTE_ATTRIBUTES.items()},
        url_schemes=set(NOTE_URL_SCHEMES),
        link_rel="noopener noreferrer",
    )


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def account_view(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "iban": account.iban,
        "balance": account.balance,
    }


@dataclass(frozen=True, slots=True)
class Bank:
    """Everything the routes share; `app.state.bank`."""

    variant: Variant
    database: BankDatabase
    hasher: PasswordHasher
    issuer: TokenIssuer | None  # None: the API trusts another issuer's keys
    ring: EventRing
    feed: FeedHub
    templates: Jinja2Templates

    def check_password(self, untrusted_username: str, password: str) -> User | None:
        """The user, if the password is theirs (blocking: run it in a thread)."""
        user = self.database.find_user(untrusted_username)
        # Unknown users cost the same argon2 work as known ones (no enumeration).
        check = self.hasher.verify_and_update(user.password_hash if user else None, password)
        if user is None or not check.ok:
            return None
        if check.new_hash is not None:
            self.database.set_password_hash(user.id, check.new_hash)
        return user


# --- dependencies --------------------------------------------------------------------


def get_bank(conn: HTTPConnection) -> Bank:
    bank: Bank = conn.app.state.bank
    return bank


BankDep = Annotated[Bank, Depends(get_bank)]


def get_caller(conn: HTTPConnection, bank: BankDep) -> Caller | None:
    return bank.variant.caller(conn)


CallerDep = Annotated[Caller | None, Depends(get_caller)]


def signed_in(caller: CallerDep) -> Caller:
    if caller is None:
        raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
    return caller


SignedIn = Annotated[Caller, Depends(signed_in)]


def admin(caller: SignedIn) -> Caller:
    # Also enforced by the route policy (`roles:admin`) when Bastion runs: two checks,
    # so a policy typo alone does not open the page.
    if not caller.is_admin:
        raise HTTPException(403, "Forbidden")
    return caller


Admin = Annotated[Caller, Depends(admin)]


def render(
    request: Request,
    bank: Bank,
    name: str,
    caller: Caller | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    return bank.templates.TemplateResponse(
        request,
        name,
        {"caller": caller, "protected": bank.variant.protected, **context},
        status_code=status,
    )


# --- the application -----------------------------------------------------------------


def build_templates(variant: Variant) -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, auto_reload=False
    )
    variant.install_template_globals(env)
    return Jinja2Templates(env=env)


def build_bank(
    *,
    variant: Variant,
    database: BankDatabase,
    hasher: PasswordHasher,
    issuer: TokenIssuer | None,
    ring: EventRing,
    debug: bool,
) -> FastAPI:
    """The bank as a FastAPI application (no protection of its own beyond its routes)."""
    app = FastAPI(title="Bastion Bank", debug=debug, docs_url=None, redoc_url=None)
    app.state.bank = Bank(
        variant, database, hasher, issuer, ring, FeedHub(), build_templates(variant)
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _add_pages(app)
    _add_money(app)
    _add_api(app)
    _add_operations(app)
    return app


def _add_pages(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def home(caller: CallerDep) -> RedirectResponse:
        return RedirectResponse("/accounts" if caller else "/login", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, bank: BankDep, caller: CallerDep) -> HTMLResponse:
        return render(request, bank, "login.html", caller, demo_users=DEMO_USERS)

    @app.post("/login", response_class=HTMLResponse)
    async def login(
        request: Request,
        bank: BankDep,
        username: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
    ) -> Response:
        user = None
        if 0 < len(username) <= MAX_USERNAME_CHARS and len(password) <= MAX_PASSWORD_CHARS:
            user = await anyio.to_thread.run_sync(bank.check_password, username, password)
        if user is None:
            # OWASP vocabulary authn_login_fail:userid. The emitter redacts e-mail
            # addresses (and secrets) from `details` before any sink sees them.
            bank.variant.report(
                request,
                kind=KIND_AUTHN_FAIL,
                reason=REASON_BAD_CREDENTIALS,
                status=401,
                details={"username": username[:MAX_USERNAME_CHARS]},
            )
            return render(
                request,
                bank,
                "login.html",
                None,
                status=401,
                demo_users=DEMO_USERS,
                error="Wrong user name or password.",
            )
        bank.variant.sign_in(request, user)
        return RedirectResponse("/accounts", status_code=303)

    @app.post("/logout")
    async def logout(request: Request, bank: BankDep, caller: SignedIn) -> RedirectResponse:
        bank.variant.sign_out(request)
        return RedirectResponse("/login", status_code=303)

    @app.get("/notes", response_class=HTMLResponse)
    async def notes(request: Request, bank: BankDep, caller: SignedIn) -> HTMLResponse:
        found = await anyio.to_thread.run_sync(bank.database.notes_of, caller.name)
        shown = [(note.created, Markup(sanitise_note(note.html))) for note in found]  # noqa: S704 - sanitised by nh3
        return render(request, bank, "notes.html", caller, notes=shown)

    @app.post("/notes")
    async def add_note(
        bank: BankDep, caller: SignedIn, text: Annotated[str, Form()] = ""
    ) -> RedirectResponse:
        clean = sanitise_note(text)
        if clean.strip():
            await anyio.to_thread.run_sync(bank.database.add_note, caller.name, clean, utc_now())
        return RedirectResponse("/notes", status_code=303)

    @app.get("/search", response_class=HTMLResponse)
    async def search(
        request: Request,
        bank: BankDep,
        caller: SignedIn,
        q: Annotated[str, Query(max_length=MAX_SEARCH_CHARS)] = "",
    ) -> HTMLResponse:
        found = await anyio.to_thread.run_sync(bank.database.search, caller.name, q) if q else []
        return render(request, bank, "search.html", caller, query=q, results=found)


def _add_money(app: FastAPI) -> None:
    @app.get("/accounts", response_class=HTMLResponse)
    async def accounts(request: Request, bank: BankDep, caller: SignedIn) -> HTMLResponse:
        return await _accounts_page(request, bank, caller)

    @app.post("/transfer", response_class=HTMLResponse)
    async def transfer(
        request: Request,
        bank: BankDep,
        caller: SignedIn,
        # The examples are a transfer the seeded `alice` can make (her first account),
        # so an audit's sample request reaches the money-moving code.
        from_account: Annotated[int, Form(examples=[1])],
        to_user: Annotated[str, Form(examples=["bob"])],
        amount: Annotated[str, Form(examples=["1.00"])],
        memo: Annotated[str, Form(examples=["Audit"])] = "",
    ) -> Response:
        if caller.via != "session":
            raise HTTPException(403, "Transfers are made from the web page")
        cents = parse_amount(amount)
        if cents is None or len(memo) > MAX_MEMO_CHARS or len(to_user) > MAX_USERNAME_CHARS:
            return await _accounts_page(
                request, bank, caller, status=400, error="Check the amount and the memo."
            )
        result = await anyio.to_thread.run_sync(
            bank.database.transfer, caller.name, from_account, to_user, cents, memo, utc_now()
        )
        if result.reason:
            return await _accounts_page(
                request, bank, caller, status=400, error=f"Transfer refused: {result.reason}."
            )
        for owner, account in ((caller.name, result.from_account), (to_user, result.to_account)):
            if account is not None:
                bank.feed.publish(owner, {"type": "balance", **account_view(account)})
        return RedirectResponse("/accounts", status_code=303)

    @app.websocket("/ws/feed")
    async def feed(websocket: WebSocket, bank: BankDep, caller: CallerDep) -> None:
        if caller is None:
            await websocket.close(WS_POLICY_VIOLATION)
            return
        with bank.feed.subscribe(caller.name) as queue:
            if queue is None:
                await websocket.close(WS_TRY_AGAIN_LATER)
                return
            await websocket.accept()
            found = await anyio.to_thread.run_sync(bank.database.accounts_of, caller.name)
            for account in found:
                await websocket.send_json({"type": "balance", **account_view(account)})
            await _pump(websocket, queue)


async def _accounts_page(
    request: Request, bank: Bank, caller: Caller, status: int = 200, error: str = ""
) -> HTMLResponse:
    found = await anyio.to_thread.run_sync(bank.database.accounts_of, caller.name)
    return render(
        request,
        bank,
        "accounts.html",
        caller,
        status=status,
        accounts=found,
        error=error,
        issues_tokens=bank.issuer is not None,
    )


async def _pump(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any]]) -> None:
    """Send queued updates until the client goes; its own messages (pings) are read
    and dropped, so a close from either side ends the loop."""
    receiving = asyncio.ensure_future(websocket.receive())
    getting: asyncio.Future[dict[str, Any]] | None = None
    try:
        while True:
            getting = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({receiving, getting}, return_when=asyncio.FIRST_COMPLETED)
            if getting in done:
                await websocket.send_json(getting.result())
            else:
                getting.cancel()
            if receiving in done:
                if receiving.result()["type"] == "websocket.disconnect":
                    return
                receiving = asyncio.ensure_future(websocket.receive())
    except WebSocketDisconnect:
        return
    finally:
        for task in (receiving, getting):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                    await task


def _add_api(app: FastAPI) -> None:
    @app.post("/api/token")
    async def token(bank: BankDep, caller: SignedIn) -> JSONResponse:
        if caller.via != "session":
            raise HTTPException(403, "Tokens are issued to a signed-in browser session")
        if bank.issuer is None:
            raise HTTPException(404, "This bank trusts another issuer's keys")
        access = bank.issuer.issue_access_token(caller.name, roles=caller.roles)
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": DEFAULT_ACCESS_TTL_SECONDS,
            },
            headers={"cache-control": "no-store"},
        )

    @app.get("/api/accounts")
    async def api_accounts(bank: BankDep, caller: SignedIn) -> dict[str, Any]:
        found = await anyio.to_thread.run_sync(bank.database.accounts_of, caller.name)
        return {"user": caller.name, "accounts": [account_view(a) for a in found]}


def _add_operations(app: FastAPI) -> None:
    @app.get("/admin", response_class=HTMLResponse)
    async def admin_page(request: Request, bank: BankDep, caller: Admin) -> HTMLResponse:
        users = await anyio.to_thread.run_sync(bank.database.summaries)
        return render(request, bank, "admin.html", caller, users=users)

    @app.get("/events", response_class=HTMLResponse)
    async def events_page(request: Request, bank: BankDep, caller: Admin) -> HTMLResponse:
        return render(
            request,
            bank,
            "events.html",
            caller,
            records=bank.ring.recent(EVENTS_SHOWN),
            by_kind=bank.ring.refused_by_kind(),
        )

    @app.get("/events.json")
    async def events_json(bank: BankDep, caller: Admin) -> dict[str, Any]:
        return {
            "refused": bank.ring.recent(EVENTS_SHOWN),
            "by_kind": bank.ring.refused_by_kind(),
            "total_refused": bank.ring.total_refused,
        }

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom: this detail stays in the server log")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}
