"""What every probe shares: named checks, the request budget, the sessions.

Threat: an auditor that floods the target, or one whose probes each count,
log in and remember cookies their own way, so one of them leaks a cookie into
evidence or runs without bound.
Defence: probes never touch the target directly. They call `ProbeContext.send`
and `ProbeContext.websocket`, which count every request against `max_requests`
(`BudgetExhausted` stops the audit), keep the cookies the target set (names and
attributes for the cookie probe; values only inside `CookieJar`s), and report
each step to the progress callback.

A target can also break one of the auditor's requests (reset the connection,
send an answer that cannot be read, time out), hoping the probe stops there and
the findings it would have made on every other route vanish with it. So a probe
catches `TargetError` per route (or per request) and calls
`ProbeContext.cut_short`, which keeps the reason in `skipped` and the gap in
`incomplete`; the runner turns each gap into a failed `audit.incomplete`. So
does the request budget running out (`BudgetExhausted`): the probe it stopped is
cut short, and each later one did not run (`ProbeContext.did_not_run`).

A `Check` is a stable id with its title, severity, fix and references, defined
once at the top of the probe's module; `Check.result` makes the `Finding`.

Not covered: concurrency (probes run one request at a time, on purpose: an audit
is not a load test).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from bastion.audit.discovery import LoginRecipe, Route, TokenRecipe
from bastion.audit.findings import Finding, Severity
from bastion.audit.target import (
    Body,
    CookieJar,
    HTTPResponse,
    Scheme,
    SetCookie,
    Target,
    TargetError,
    WebSocketResult,
    parse_set_cookie,
)

# The foreign origin every cross-origin probe claims. `.example` is reserved
# (RFC 2606), so no real site can ever be it.
EVIL_ORIGIN: Final = "https://evil.example"
EVIL_HOST: Final = "evil.example"
# Cookie names that hold a session or a credential (and names that do not).
_SESSION_WORDS: Final = ("sess", "sid", "auth", "login", "token", "jwt", "remember", "user")
_NOT_SESSION_WORDS: Final = ("csrf", "xsrf", "consent", "lang", "theme")
_JSON_MEDIA: Final = ("application/json", "+json")

ProgressCallback = Callable[[str], None]


class BudgetExhausted(Exception):
    """The audit reached `max_requests`: it stops and reports what it found."""


@dataclass(frozen=True, slots=True)
class Check:
    """One named check: the property a passing target has."""

    id: str
    """`area.name`, stable: users filter and fail CI on it."""
    title: str
    severity: Severity
    fix: str
    references: tuple[str, ...] = ()

    def result(
        self, passed: bool, evidence: str, route: str = "", severity: Severity | None = None
    ) -> Finding:
        return Finding(
            check=self.id,
            title=self.title,
            severity=severity or self.severity,
            passed=passed,
            evidence=evidence,
            fix=self.fix,
            route=route,
            references=self.references,
        )


def summarise(
    check: Check, failures: Sequence[tuple[str, str]], tested: Sequence[str], passed_evidence: str
) -> list[Finding]:
    """One failed finding per (route, evidence), or one passed finding for all routes."""
    if failures:
        return [check.result(False, evidence, route) for route, evidence in failures]
    if not tested:
        return []
    return [check.result(True, f"{passed_evidence} ({', '.join(tested)})")]


def is_session_cookie(name: str, *, set_at_login: bool = False) -> bool:
    """Whether a cookie holds a session or a credential: by its name, or because
    the login set it (unless its name says it is something else, like a CSRF token)."""
    lowered = name.lower()
    if any(word in lowered for word in _NOT_SESSION_WORDS):
        return False
    return set_at_login or any(word in lowered for word in _SESSION_WORDS)


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == _JSON_MEDIA[0] or media.endswith(_JSON_MEDIA[1])


@dataclass(slots=True)
class SeenCookie:
    """A cookie the target set, where it was set, and whether that was after login."""

    route: str
    cookie: SetCookie
    after_login: bool


@dataclass(slots=True)
class ProbeContext:
    """The state one audit's probes share, and their only way to the target."""

    target: Target
    routes: list[Route]
    login: LoginRecipe | None = None
    token: TokenRecipe | None = None
    max_requests: int = 1000
    progress: ProgressCallback | None = None
    requests_sent: int = 0
    crawl: dict[Route, HTTPResponse] = field(default_factory=dict)
    """Anonymous GET answers of the discovered routes."""
    main: HTTPResponse | None = None
    """The main page (`GET /` on the target's scheme)."""
    session: CookieJar | None = None
    """Cookies of a logged-in session, once `log_in` succeeded."""
    cookies_seen: list[SeenCookie] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Why probes did not run (no login recipe, no WebSocket route, ...)."""
    incomplete: list[tuple[str, str]] = field(default_factory=list)
    """(route, what was lost) for each check a `TargetError` or the end of the
    request budget cut short or left unrun; "" for a route means the area's checks
    of the whole target. The runner reports each as a failed `audit.incomplete`, so
    breaking a request or spending the budget cannot pass a CI gate."""
    allow_writes: bool = False
    """Whether probes may send state-changing requests with the signed-in session.
    Off for a live server unless the user asks (`--allow-writes`): a forged transfer
    that the target accepts is a real transfer. The runner turns it on in-process."""
    _logging_in: bool = False

    @property
    def own_origin(self) -> str:
        return f"{self.target.scheme}://{self.target.host}"

    def step(self, description: str) -> None:
        if self.progress is not None:
            self.progress(description)

    def skip(self, reason: str) -> None:
        self.skipped.append(reason)
        self.step(f"skipped: {reason}")

    def cut_short(self, area: str, route: str, error: TargetError | BudgetExhausted) -> None:
        """`error` ended `area`'s checks of `route` ("" for the whole target): the
        reason goes to `skipped`, the gap to `incomplete`."""
        where = route or "the target"
        self.incomplete.append((route, f"the {area} checks of {where} were cut short: {error}"))
        self.skip(f"{area}: {error}")

    def did_not_run(self, area: str, error: BudgetExhausted) -> None:
        """`error` came before `area`'s checks started: as `cut_short`, for the
        whole target."""
        self.incomplete.append(("", f"the {area} checks of the target did not run: {error}"))
        self.skip(f"{area}: did not run: {error}")

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: Body = b"",
        content_type: str = "",
        scheme: Scheme | None = None,
        jar: CookieJar | None = None,
    ) -> HTTPResponse:
        """One request, counted; cookies from `jar` sent and the answer's kept in it."""
        self._spend()
        sent = list(headers)
        if content_type:
            sent.append(("content-type", content_type))
        if jar is not None:
            sent.extend(jar.header())
        response = await self.target.request(method, path, headers=sent, body=body, scheme=scheme)
        if jar is not None:
            jar.update(response)
        for line in response.header_all("set-cookie"):
            cookie = parse_set_cookie(line)
            if cookie is not None and not cookie.is_deletion:
                self.cookies_seen.append(
                    SeenCookie(f"{method.upper()} {path}", cookie, self._logging_in)
                )
        return response

    async def websocket(
        self, path: str, *, headers: Sequence[tuple[str, str]] = (), jar: CookieJar | None = None
    ) -> WebSocketResult:
        self._spend()
        sent = [*headers, *(jar.header() if jar is not None else ())]
        return await self.target.websocket(path, headers=sent)

    def _spend(self) -> None:
        if self.requests_sent >= self.max_requests:
            raise BudgetExhausted(f"request budget of {self.max_requests} reached")
        self.requests_sent += 1

    async def log_in(self, jar: CookieJar) -> HTTPResponse | None:
        """Sign in with the login recipe into `jar`; None when there is no recipe
        or the target did not answer with a success status."""
        if self.login is None:
            return None
        body, content_type = self.login.body()
        self._logging_in = True
        try:
            response = await self.send(
                "POST",
                self.login.path,
                headers=(("origin", self.own_origin), ("sec-fetch-site", "same-origin")),
                body=body,
                content_type=content_type,
                jar=jar,
            )
        finally:
            self._logging_in = False
        if response.status not in self.login.success_statuses:
            self.skip(f"login at {self.login.path} answered {response.status}")
            return None
        return response

    async def bearer_token(self) -> str | None:
        """An access token from the token recipe, or None.

        A session-issued token is asked for with the logged-in session's cookies
        and this site's `Origin` and `Sec-Fetch-Site: same-origin`, as the app's
        own page would send it (a CSRF defence lets it through, rightly).
        """
        if self.token is None:
            return None
        jar: CookieJar | None = None
        headers: tuple[tuple[str, str], ...] = ()
        if self.token.from_session:
            if self.session is None:
                self.skip(f"token recipe at {self.token.path}: no logged-in session to ask with")
                return None
            jar = self.session
            headers = (("origin", self.own_origin), ("sec-fetch-site", "same-origin"))
        body, content_type = self.token.body()
        response = await self.send(
            "POST", self.token.path, headers=headers, body=body, content_type=content_type, jar=jar
        )
        try:
            value = json.loads(response.body).get(self.token.token_field)
        except (ValueError, AttributeError, RecursionError):
            value = None
        if response.status >= 400 or not isinstance(value, str):
            self.skip(f"token recipe at {self.token.path} answered {response.status}")
            return None
        return value


def random_marker() -> str:
    """A unique string for one probe, to recognise its echo."""
    return f"bastion-audit-{secrets.token_hex(6)}"
