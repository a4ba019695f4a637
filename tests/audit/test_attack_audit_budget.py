"""Attacks on the CI gate through the request budget: spend it, and the last probes vanish.

The target is the raw HTTP/1.1 `hostile_server` on 127.0.0.1 (see
test_attack_audit_hostile_target.py): a quiet site, graded well, with pages to
crawl and a login route that never throttles (`ratelimit.login`, medium). The
login hammer runs last; with a small `--max-requests` the budget ends before or
inside it, and its finding, or a worse one of the JWT or session probes, used to
vanish behind the info `audit.request-cap` while `--fail-on high` exited 0. Now
the probe the budget stopped is cut short and each later one did not run, each a
failed `audit.incomplete` (critical); `audit.request-cap` says why.

Each budget sits beside the default one, whose audit of the same site is complete
and judged as before.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bastion.audit.findings import SEVERITIES, AuditReport
from bastion.audit.runner import DEFAULT_MAX_REQUESTS, PROBES, run_audit
from bastion.audit.target import URLTarget
from bastion.cli import app
from tests.audit.test_attack_audit_hostile_target import Answer, Handler, hostile_server
from tests.audit.test_attack_audit_incomplete import GRADED_WELL, HTML, JSON, _threaded

pytestmark = pytest.mark.anyio

PAGES = 20
# What the site fails with the whole audit run: nothing at `high` or above.
COMPLETE_FAILED = [
    ("hosts.unknown-host", "GET /"),
    ("ratelimit.login", "POST /login"),
    ("transport.https-redirect", "GET /"),
    ("transport.trace", "TRACE /"),
]
BUDGET = "request budget of {} reached"


def _quiet_site() -> Handler:
    """`PAGES` pages and `POST /login`, which refuses every login and never throttles."""
    paths: dict[str, object] = {f"/p{n}": {"get": {}} for n in range(PAGES)}
    paths["/login"] = {"post": {}}
    document = json.dumps({"openapi": "3.1.0", "paths": paths}).encode()

    def handler(method: str, path: str) -> Answer:
        if path == "/openapi.json":
            return 200, (JSON, *GRADED_WELL), document
        if path == "/login":
            return 400, (HTML, *GRADED_WELL), b"<p>wrong password</p>"
        return 200, (HTML, *GRADED_WELL), b"<p>ok</p>"

    return handler


async def _audit(max_requests: int) -> AuditReport:
    async with hostile_server(_quiet_site()) as target:
        return await run_audit(
            URLTarget(f"http://{target.authority}", timeout_seconds=5), max_requests=max_requests
        )


def _failed(report: AuditReport) -> list[tuple[str, str]]:
    """(check, route) of the failed findings, the header grade's and audit's left out."""
    return sorted(
        (f.check, f.route) for f in report.failed if not f.check.startswith(("headers.", "audit."))
    )


def _incomplete(report: AuditReport) -> list[str]:
    return [f.evidence for f in report.failed if f.check == "audit.incomplete"]


def _lost(max_requests: int, cut_short: str | None, not_run: list[str]) -> list[str]:
    budget = BUDGET.format(max_requests)
    lost = [f"the {cut_short} checks of the target were cut short: {budget}"] if cut_short else []
    return lost + [f"the {area} checks of the target did not run: {budget}" for area in not_run]


LATER = ["csrf", "websocket", "jwt", "sessions", "cookies", "ratelimit"]
BUDGETS = [
    # The crawl, login and every probe before the hammer fit; the hammer does not.
    pytest.param(
        100,
        _lost(100, "ratelimit", []),
        id="audit-request-cap-cuts-the-last-probe-short",
    ),
    # The budget ends inside leakage: csrf and every later probe never start.
    pytest.param(
        40,
        _lost(40, "leakage", LATER),
        id="audit-request-cap-unrun-probes-are-incomplete",
    ),
    # The budget ends in the crawl: no probe starts.
    pytest.param(
        20,
        _lost(20, None, [name for name, _ in PROBES]),
        id="audit-request-cap-in-the-crawl-runs-no-probe",
    ),
]


@pytest.mark.parametrize(("max_requests", "lost"), BUDGETS)
async def test_probes_the_budget_did_not_finish_are_incomplete(
    max_requests: int, lost: list[str]
) -> None:
    report = await _audit(max_requests)
    assert report.requests_sent == max_requests
    assert _incomplete(report) == lost
    assert all(f.route == "" for f in report.failed if f.check == "audit.incomplete")
    assert all(report.fails_at(level) for level in SEVERITIES)
    [cap] = [f for f in report.findings if f.check == "audit.request-cap"]
    assert not cap.passed
    assert cap.severity == "info"
    unfinished = [line.split(" ")[1] for line in lost]
    assert cap.evidence == (
        f"{BUDGET.format(max_requests)}; cut short or not run: {', '.join(unfinished)} "
        "(each a failed audit.incomplete)"
    )
    assert f"ratelimit: {'did not run: ' if len(lost) > 1 else ''}" in "\n".join(report.skipped)
    assert ("ratelimit.login", "POST /login") not in _failed(report)


async def test_the_default_budget_audits_the_site_as_before() -> None:
    report = await _audit(DEFAULT_MAX_REQUESTS)
    assert report.requests_sent < 250
    assert _failed(report) == COMPLETE_FAILED
    assert _incomplete(report) == []
    assert not report.fails_at("high")
    [cap] = [f for f in report.findings if f.check == "audit.request-cap"]
    assert cap.passed
    assert not [s for s in report.skipped if "request budget" in s]


@pytest.mark.parametrize(
    ("max_requests", "fail_on", "exit_code"),
    [
        pytest.param("100", "high", 1, id="audit-request-cap-unrun-probes-fail-gate"),
        pytest.param("100", "critical", 1, id="audit-request-cap-unrun-probes-fail-every-gate"),
        pytest.param(None, "high", 0, id="audit-cli-default-budget-passes-high-gate"),
        pytest.param(None, "medium", 1, id="audit-cli-default-budget-fails-on-its-finding"),
    ],
)
def test_the_gate_fails_when_the_budget_ends_early(
    max_requests: str | None, fail_on: str, exit_code: int
) -> None:
    budget = ["--max-requests", max_requests] if max_requests else []
    with _threaded(_quiet_site()) as url:
        result = CliRunner().invoke(
            app, ["audit", url, "--fail-on", fail_on, "--format", "json", *budget]
        )
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exit_code == exit_code, result.stderr
    [target] = json.loads(result.stdout)["targets"]
    incomplete = [f for f in target["findings"] if f["check"] == "audit.incomplete"]
    if max_requests:
        assert [(f["severity"], f["passed"]) for f in incomplete] == [("critical", False)]
        assert incomplete[0]["evidence"].startswith("the ratelimit checks of the target")
    else:
        assert incomplete == []
