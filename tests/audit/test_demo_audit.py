"""`bastion audit` with no target: Bastion Bank bare fails, behind Bastion passes, in one run.

One run of `audit_demo` (a few seconds) is shared by the tests: each important
check must fail on the unprotected bank and be run and passed on the protected
one, which must grade A+ with no failed finding at low or above. The run is made
with `BASTION_MODE=development` in the environment and the user's data directory
pointed at a temporary one, so it also shows that the protected bank is audited
in production mode whatever the environment says, and that nothing is written
where `bastion demo` keeps its data.

Below the demo run, the probe fixes the demo showed, each false positive beside
the attack the probe must still report.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from bastion.audit import report
from bastion.audit.demo import (
    PROTECTED_LABEL,
    UNPROTECTED_LABEL,
    audit_demo_sync,
    demo_settings,
    token_recipe,
)
from bastion.audit.discovery import LoginRecipe, Route, TokenRecipe
from bastion.audit.findings import AuditReport, Finding
from bastion.audit.probes import ratelimit, transport
from bastion.audit.probes.base import ProbeContext
from bastion.audit.probes.jwt import split_token
from bastion.audit.runner import run_audit_sync
from bastion.audit.target import InProcessTarget, default_host
from bastion.demo import create_app
from bastion.demo.settings import DemoSettings
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.audit import weak_apps

# Every check the unprotected bank must fail and the protected bank must pass.
IMPORTANT_CHECKS = (
    "headers.content-security-policy",
    "headers.x-frame-options",
    "headers.x-content-type-options",
    "headers.strict-transport-security",
    "headers.redirection",
    "headers.cookies",
    "csrf.cross-site-origin",
    "csrf.null-origin",
    "csrf.sec-fetch-site",
    "sessions.fixation",
    "cookies.secure",
    "cookies.httponly",
    "cookies.samesite",
    "cookies.host-prefix",
    "websocket.foreign-origin",
    "jwt.expired",
    "leakage.error-page",
    "ratelimit.login",
    "transport.https-redirect",
    "transport.hsts",
    "hosts.unknown-host",
)
# Checks both banks pass (the bank's own code gets them right, or they need Bastion
# only in ways the bare bank happens to share); the protected bank must run them.
ALSO_PASSED_BY_PROTECTED = (
    "jwt.alg-none",
    "jwt.bad-signature",
    "websocket.no-auth",
    "cors.reflect-origin",
    "cors.null-origin",
    "hosts.host-header",
    "hosts.forwarded-host",
    "leakage.not-found",
    "leakage.method-not-allowed",
    "leakage.malformed-json",
    "leakage.oversized-body",
    "leakage.server-banner",
    "transport.trace",
    "audit.request-cap",
    "audit.still-served",
)
SARIF_SCHEMA = json.loads(
    (Path(__file__).parent / "fixtures" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8")
)


def _slug(check: str) -> str:
    return check.replace(".", "-")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[AuditReport], Path]:
    home = tmp_path_factory.mktemp("home")
    steps: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        # A developer's environment must not weaken the protected bank under audit.
        patch.setenv("BASTION_MODE", "development")
        patch.setenv("HOME", str(home))
        patch.setenv("XDG_DATA_HOME", str(home / "data"))
        reports = audit_demo_sync(progress=steps.append)
    assert any(step.startswith(f"{UNPROTECTED_LABEL}: ") for step in steps)
    assert any(step.startswith(f"{PROTECTED_LABEL}: ") for step in steps)
    return reports, home


@pytest.fixture(scope="module")
def unprotected(demo_run: tuple[list[AuditReport], Path]) -> AuditReport:
    return demo_run[0][0]


@pytest.fixture(scope="module")
def protected(demo_run: tuple[list[AuditReport], Path]) -> AuditReport:
    return demo_run[0][1]


def _by_check(audit: AuditReport, check: str) -> list[Finding]:
    return [f for f in audit.findings if f.check == check]


def test_demo_reports_come_in_order_with_their_labels(
    demo_run: tuple[list[AuditReport], Path],
) -> None:
    reports, _ = demo_run
    assert [r.target for r in reports] == [UNPROTECTED_LABEL, PROTECTED_LABEL]
    for audit in reports:
        assert {"POST /login", "POST /api/token", "GET /api/accounts", "WS /ws/feed"} <= set(
            audit.routes
        )


def test_demo_never_writes_the_users_data_dir(demo_run: tuple[list[AuditReport], Path]) -> None:
    _, home = demo_run
    assert not (home / "data" / "bastion-demo").exists()
    assert not (home / ".local").exists()


@pytest.mark.parametrize(
    "check",
    [pytest.param(c, id=f"demo-unprotected-fails-{_slug(c)}") for c in IMPORTANT_CHECKS],
)
def test_unprotected_bank_fails(unprotected: AuditReport, check: str) -> None:
    found = _by_check(unprotected, check)
    assert found, f"{check} was not run on the unprotected bank"
    assert any(not f.passed for f in found), found


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(c, id=f"demo-protected-passes-{_slug(c)}")
        for c in IMPORTANT_CHECKS + ALSO_PASSED_BY_PROTECTED
    ],
)
def test_protected_bank_passes(protected: AuditReport, check: str) -> None:
    found = _by_check(protected, check)
    assert found, f"{check} was not run on the protected bank (skipped is not passed)"
    assert all(f.passed for f in found), [f for f in found if not f.passed]


def test_grades(unprotected: AuditReport, protected: AuditReport) -> None:
    assert unprotected.grade.letter[0] in "DF", unprotected.grade
    assert protected.grade.letter == "A+", protected.grade
    assert not protected.fails_at("low"), protected.failed
    assert unprotected.fails_at("high")


def test_expired_token_is_really_signed(unprotected: AuditReport, protected: AuditReport) -> None:
    """The expired-token verdicts rest on the issuer's token, not a forged signature:
    the bare bank checks signatures only and accepts it; Bastion refuses it."""
    for audit, passed in ((unprotected, False), (protected, True)):
        [finding] = [f for f in _by_check(audit, "jwt.expired") if f.route == "GET /api/accounts"]
        assert finding.passed is passed
        assert "signed by the issuer" in finding.evidence


def test_the_writers_take_the_pair(unprotected: AuditReport, protected: AuditReport) -> None:
    pair = [unprotected, protected]
    table = report.render_table(pair)
    assert UNPROTECTED_LABEL in table
    assert PROTECTED_LABEL in table
    back = report.parse_json(report.render_json(pair))
    assert [(r.target, r.grade.letter) for r in back] == [(r.target, r.grade.letter) for r in pair]
    sarif = json.loads(report.render_sarif(pair, tool_version="0"))
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(sarif)
    assert len(sarif["runs"]) == 2
    page = report.render_html(pair)
    assert UNPROTECTED_LABEL in page
    assert PROTECTED_LABEL in page
    assert "A+" in page


def test_demo_recipes_keep_secrets_out_of_repr(tmp_path: Path) -> None:
    recipe = token_recipe(demo_settings(tmp_path), now=1_700_000_000.0)
    assert recipe.from_session
    assert recipe.expired_token is not None
    assert recipe.expired_token not in repr(recipe)
    parts = split_token(recipe.expired_token)
    assert parts is not None
    assert parts[1]["exp"] < 1_700_000_000


# ---------------------------------------------------------------------------
# Probe fixes the demo showed: each false positive beside the attack still caught


@pytest.mark.parametrize(
    ("status", "location", "upgrades"),
    [
        pytest.param(308, "https://localhost/", True, id="transport-redirect-same-host-ok"),
        # The false positive: `bastion demo` redirects http://localhost:8080/ to
        # https://localhost:8443/; HSTS and the Observatory go by host name.
        pytest.param(308, "https://localhost:8443/", True, id="transport-redirect-other-port-ok"),
        pytest.param(301, "https://LOCALHOST./", True, id="transport-redirect-host-spelling-ok"),
        pytest.param(301, "https://evil.example/", False, id="transport-redirect-off-host"),
        pytest.param(
            301, "https://localhost@evil.example/", False, id="transport-redirect-userinfo"
        ),
        pytest.param(
            301, "https://localhost.evil.example/", False, id="transport-redirect-suffix-host"
        ),
        pytest.param(301, "//evil.example/", False, id="transport-redirect-scheme-relative"),
        pytest.param(303, "/login", False, id="transport-redirect-relative-stays-http"),
        pytest.param(301, "http://localhost/x", False, id="transport-redirect-to-http"),
        pytest.param(200, "https://localhost/", False, id="transport-no-redirect-status"),
        pytest.param(301, None, False, id="transport-redirect-without-location"),
    ],
)
def test_https_upgrade(status: int, location: str | None, upgrades: bool) -> None:
    assert transport.upgrades_to_https(status, location, "http://localhost/") is upgrades


@pytest.mark.parametrize(
    ("anonymous", "signed_in", "ignores"),
    [
        # The false positive: `POST /api/token` refuses anonymous callers by policy
        # and issues a token to a session whatever the body says.
        pytest.param(401, 200, True, id="ratelimit-session-only-route-not-judged"),
        pytest.param(403, 201, True, id="ratelimit-forbidden-anonymous-not-judged"),
        pytest.param(401, 401, False, id="ratelimit-wrong-password-refused-judged"),
        pytest.param(401, 429, False, id="ratelimit-throttled-judged"),
        pytest.param(200, 200, False, id="ratelimit-form-reshown-judged"),
    ],
)
def test_route_that_ignores_credentials(anonymous: int, signed_in: int, ignores: bool) -> None:
    assert ratelimit.ignores_credentials(anonymous, signed_in) is ignores


@pytest.mark.parametrize(
    ("previous", "status", "retry_after", "throttled"),
    [
        pytest.param(None, 429, None, True, id="ratelimit-429-throttled"),
        pytest.param(401, 401, "30", True, id="ratelimit-retry-after-throttled"),
        # A lockout or a ban: the credentials were refused, then the caller is.
        pytest.param(401, 403, None, True, id="ratelimit-401-then-403-lockout"),
        pytest.param(401, 401, None, False, id="ratelimit-wrong-password-again-not-throttled"),
        pytest.param(None, 403, None, False, id="ratelimit-first-403-not-a-switch"),
        pytest.param(403, 403, None, False, id="ratelimit-403-throughout-not-a-switch"),
        pytest.param(200, 200, None, False, id="ratelimit-form-reshown-not-throttled"),
    ],
)
def test_is_throttled(
    previous: int | None, status: int, retry_after: str | None, throttled: bool
) -> None:
    assert ratelimit.is_throttled(status, retry_after, previous) is throttled


def _no_recipe_audit(app: ASGIApp, host: str) -> AuditReport:
    return run_audit_sync(InProcessTarget(app, label="no recipe", host=host))


def test_protected_demo_without_a_login_recipe_is_not_accused(tmp_path: Path) -> None:
    """The false failure of a live no-recipe audit of `bastion demo`, in-process:
    `POST /api/token` refuses anonymous callers by policy (401), so the probe cannot
    tell a credential check from a refusal of the caller and must not hammer it
    (which got the auditor banned: `audit.still-served` failed too)."""
    app = create_app(
        demo=DemoSettings(data_dir=tmp_path, https_port=443, http_port=None), mode="production"
    )
    audit = _no_recipe_audit(app, "localhost")
    assert not audit.failed, audit.failed
    assert audit.grade.letter == "A+"
    # The bank's login form answers a wrong password with 401 too: without a
    # session the two cannot be told apart, so neither guessed route is judged.
    for route in ("POST /api/token", "POST /login"):
        assert any(
            reason.startswith(f"ratelimit: {route} answered 401 anonymously")
            for reason in audit.skipped
        ), audit.skipped
    assert not _by_check(audit, "ratelimit.login")
    [served] = _by_check(audit, "audit.still-served")
    assert served.passed, served.evidence


def test_hardened_app_without_a_login_recipe_is_not_accused() -> None:
    app = weak_apps.hardened_app()
    audit = _no_recipe_audit(app, default_host(app))
    assert not audit.failed, audit.failed
    assert "login: no login recipe; authenticated probes run without a session" in audit.skipped


async def _refuse_all(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("never called: candidates() sends nothing")


@pytest.mark.parametrize(
    ("recipe", "judged"),
    [
        pytest.param(
            TokenRecipe("/api/token", from_session=True),
            ["POST /login"],
            id="ratelimit-session-token-route-not-a-login",
        ),
        pytest.param(
            TokenRecipe("/api/token", "alice", "pw"),
            ["POST /login", "POST /api/token"],
            id="ratelimit-credential-token-route-judged",
        ),
    ],
)
def test_login_candidates(recipe: TokenRecipe, judged: list[str]) -> None:
    ctx = ProbeContext(
        InProcessTarget(_refuse_all),
        [Route("POST", "/login"), Route("POST", "/api/token")],
        login=LoginRecipe("/login", "alice", "pw"),
        token=recipe,
    )
    assert [str(route) for route, _, _, _ in ratelimit.candidates(ctx)] == judged


def test_token_recipe_needs_a_username_unless_from_session() -> None:
    with pytest.raises(ValueError, match="username"):
        TokenRecipe("/token")
    assert TokenRecipe("/token", from_session=True).body() == (b"", "")


def _home_redirecting_app(*, bans_after: int | None) -> ASGIApp:
    """`/` redirects to `/login`, a page; with `bans_after`, every request past that
    many answers 403 (a ban of the auditor)."""
    seen = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal seen
        if scope["type"] != "http":
            return
        seen += 1
        if bans_after is not None and seen > bans_after:
            status, headers = 403, [(b"content-type", b"text/plain")]
        elif scope["path"] == "/":
            status, headers = 303, [(b"location", b"/login")]
        else:
            status, headers = 200, [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"page"})

    return app


@pytest.mark.parametrize(
    ("bans_after", "still_served"),
    [
        # The false positive: the start compared the page after redirects (200) with
        # the bare redirect at the end (303), and called the redirect a ban.
        pytest.param(None, True, id="audit-home-redirects-to-login-ok"),
        # Four requests: the main page and its redirect, twice (plain and with Origin).
        pytest.param(4, False, id="audit-auditor-banned"),
    ],
)
def test_still_served(bans_after: int | None, still_served: bool) -> None:
    app = _home_redirecting_app(bans_after=bans_after)
    audit = run_audit_sync(InProcessTarget(app), routes=["GET /"])
    [finding] = _by_check(audit, "audit.still-served")
    assert finding.passed is still_served, finding.evidence
