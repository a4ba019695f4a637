"""Attacks on the CI gate by the server it audits: stop the audit halfway, pass the gate.

The target is the raw HTTP/1.1 `hostile_server` on 127.0.0.1 (see
test_attack_audit_hostile_target.py). Its only high finding is a page that shows a
traceback (`leakage.error-page`); it tries to lose it from the report by breaking
the audit on another route:

* its OpenAPI document lists a path no request can carry (a lone surrogate, a
  control character, DEL, a space, one longer than httpx builds), which used to
  stop the leakage and CSRF probes at that route: every finding they would have
  made elsewhere vanished and `--fail-on high` exited 0. Such a route is dropped
  in discovery and named in `skipped`; the findings stay;
* its OpenAPI document gives a form a sample no request can carry (a lone
  surrogate in an example), which used to end the whole audit in discovery
  (exit 2, no report). The sample is dropped, the route probed without a body
  and named in `skipped`;
* it resets the connection, or sends an answer that cannot be read, on one route
  a probe sends to. The probe goes on with the other routes, and the check it
  could not finish is a failed `audit.incomplete`, critical, so every `--fail-on`
  level fails and every report format shows it.

Each attack sits beside the benign target, whose findings and exit codes stay.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from bastion.audit.discovery import routes_from_openapi
from bastion.audit.findings import SEVERITIES, AuditReport
from bastion.audit.report import parse_json, render_html, render_json, render_sarif, render_table
from bastion.audit.runner import MAX_UNSENDABLE_SHOWN, run_audit
from bastion.audit.target import URLTarget
from bastion.cli import app
from tests.audit.test_attack_audit_hostile_target import RESET, Answer, Handler, hostile_server
from tests.audit.test_report import VALIDATOR

pytestmark = pytest.mark.anyio

HTML = ("content-type", "text/html")
JSON = ("content-type", "application/json")
TRACEBACK = b'Traceback (most recent call last):\n  File "/app/x.py", line 3\nValueError: boom'
UNREADABLE = b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n"
# On every answer, so the header grade fails nothing at `high`: the gate then
# judges the traceback alone.
GRADED_WELL = (
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
)
# What the benign target (below) fails, apart from the header grade: the audit of
# every attack here must still report all of it.
Paths = Mapping[str, Mapping[str, object]]
"""An OpenAPI document's `paths`: path -> operations."""
BENIGN_FAILED = [
    ("csrf.cross-site-origin", "POST /transfer"),
    ("csrf.null-origin", "POST /transfer"),
    ("csrf.sec-fetch-site", "POST /transfer"),
    ("hosts.unknown-host", "GET /"),
    ("leakage.error-page", "GET /leak"),
    ("transport.https-redirect", "GET /"),
    ("transport.trace", "TRACE /"),
]


def _site(
    extra: Paths | None = None,
    broken: Callable[[str, str], Answer | bytes | None] | None = None,
) -> Handler:
    """A target whose OpenAPI lists `GET /leak` (a traceback), then the `extra`
    paths, then `POST /transfer` (it accepts anything); `broken` answers first."""
    paths: dict[str, Mapping[str, object]] = {"/leak": {"get": {}}}
    paths.update(extra or {})
    paths["/transfer"] = {"post": {}}
    document = json.dumps({"openapi": "3.1.0", "paths": paths}).encode()

    def handler(method: str, path: str) -> Answer | bytes | None:
        answer = broken(method, path) if broken is not None else None
        if answer is not None:
            return answer
        if path == "/openapi.json":
            return 200, (JSON, *GRADED_WELL), document
        if path == "/leak":
            return 500, (HTML, *GRADED_WELL), TRACEBACK
        return 200, (HTML, *GRADED_WELL), b"<p>ok</p>"

    return handler


async def _audit(handler: Handler) -> tuple[AuditReport, list[str]]:
    """The report, and the requests the target received."""
    async with hostile_server(handler) as target:
        report = await run_audit(
            URLTarget(f"http://{target.authority}", timeout_seconds=5), max_requests=300
        )
    return report, target.requests


def _failed(report: AuditReport, *, incomplete: bool = False) -> list[tuple[str, str]]:
    """(check, route) of the failed findings, the header grade's left out."""
    return sorted(
        (f.check, f.route)
        for f in report.failed
        if not f.check.startswith("headers.") and (f.check == "audit.incomplete") is incomplete
    )


@contextmanager
def _threaded(handler: Handler) -> Iterator[str]:
    """`hostile_server` in a thread with its own event loop: the command runs its own."""
    ready = threading.Event()
    started: list[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        stop = asyncio.Event()
        async with hostile_server(handler) as listener:
            started.append((f"http://{listener.authority}", asyncio.get_running_loop(), stop))
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    [(url, loop, stop)] = started
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def _exit_code(handler: Handler, fail_on: str) -> int:
    with _threaded(handler) as url:
        result = CliRunner().invoke(
            app, ["audit", url, "--fail-on", fail_on, "--format", "json", "--max-requests", "300"]
        )
    assert "Traceback" not in result.stderr
    return result.exit_code


# ---------------------------------------------------------------------------
# A path no request can carry, in the target's OpenAPI document

UNSENDABLE = [
    pytest.param("/a\ud800", id="audit-openapi-surrogate-route-keeps-other-findings"),
    pytest.param("/a\x07", id="audit-openapi-control-char-route-keeps-other-findings"),
    pytest.param("/a\x7f", id="audit-openapi-del-route-keeps-other-findings"),
    pytest.param("/a b", id="audit-openapi-space-route-not-probed"),
    # Past httpx's URL length limit (InvalidURL "URL too long"): only the target's
    # own URL building (`Target.can_send`) knows it.
    pytest.param("/" + "a" * 70_000, id="audit-openapi-overlong-route-keeps-other-findings"),
]


@pytest.mark.parametrize("path", UNSENDABLE)
async def test_an_unsendable_route_is_dropped_and_the_rest_audited(path: str) -> None:
    report, requests = await _audit(_site({path: {"get": {}, "post": {}}}))
    assert _failed(report) == BENIGN_FAILED
    assert _failed(report, incomplete=True) == []  # nothing there to check: not a gap
    assert not [r for r in report.routes if r.endswith(path)]
    assert [s for s in report.skipped if s.startswith("discovery:")] == [
        f"discovery: {method} {path}: not a path a request can carry (a space, a control "
        "character or invalid Unicode); not probed"
        for method in ("GET", "POST")
    ]
    assert not [r for r in requests if r.startswith(("GET /a", "POST /a"))]


async def test_a_plain_extra_route_is_audited() -> None:
    report, requests = await _audit(_site({"/b": {"get": {}, "post": {}}}))
    assert {"GET /b", "POST /b"} <= set(report.routes)
    assert {"GET /b", "POST /b"} <= set(requests)
    assert set(BENIGN_FAILED) <= set(_failed(report))
    assert not [s for s in report.skipped if s.startswith("discovery:")]


async def test_the_benign_target_is_audited_as_before() -> None:
    report, _ = await _audit(_site())
    assert _failed(report) == BENIGN_FAILED
    assert _failed(report, incomplete=True) == []
    assert not report.fails_at("critical")
    assert [f.check for f in report.failed if f.severity in ("critical", "high")] == [
        "leakage.error-page"
    ]


async def test_unsendable_routes_are_listed_within_bounds() -> None:
    """A document with thousands of such paths: the first few named, the rest counted."""
    many: Paths = {f"/a{n}\x07": {"get": {}} for n in range(MAX_UNSENDABLE_SHOWN + 30)}
    report, _ = await _audit(_site(many))
    dropped = [s for s in report.skipped if s.startswith("discovery:")]
    assert len(dropped) == MAX_UNSENDABLE_SHOWN + 1
    assert dropped[-1] == "discovery: 30 more such routes; not probed"
    assert _failed(report) == BENIGN_FAILED


@pytest.mark.parametrize(
    ("path", "exit_code"),
    [
        pytest.param("/a\ud800", 1, id="audit-cli-surrogate-route-fails-gate-as-before"),
        pytest.param(None, 1, id="audit-cli-benign-fails-gate-on-its-finding"),
    ],
)
def test_the_gate_judges_the_other_routes(path: str | None, exit_code: int) -> None:
    extra: Paths | None = {path: {"get": {}, "post": {}}} if path else None
    assert _exit_code(_site(extra), "high") == exit_code


# ---------------------------------------------------------------------------
# A sample body no request can carry, in the target's OpenAPI document

FORM = "application/x-www-form-urlencoded"


def _form_route(example: object, media: str = FORM) -> Paths:
    return {
        "/submit": {"post": {"requestBody": {"content": {media: {"schema": {"example": example}}}}}}
    }


UNSENDABLE_SAMPLES = [
    pytest.param(
        {"name": "\ud800"}, FORM, id="audit-openapi-surrogate-form-example-keeps-auditing"
    ),
    pytest.param(
        {"\udfff": "audit"}, FORM, id="audit-openapi-surrogate-form-field-name-keeps-auditing"
    ),
    pytest.param(
        {"name": "\ud800"},
        "multipart/form-data",
        id="audit-openapi-surrogate-multipart-example-keeps-auditing",
    ),
]
DROPPED_SAMPLE = (
    "discovery: POST /submit: its OpenAPI sample body cannot be sent (invalid Unicode); "
    "probed without a body"
)


@pytest.mark.parametrize(("example", "media"), UNSENDABLE_SAMPLES)
async def test_an_unsendable_sample_body_is_dropped_and_the_route_audited(
    example: object, media: str
) -> None:
    report, requests = await _audit(_site(_form_route(example, media)))
    assert set(BENIGN_FAILED) <= set(_failed(report))
    assert ("csrf.cross-site-origin", "POST /submit") in _failed(report)  # probed, bodiless
    assert _failed(report, incomplete=True) == []
    assert "POST /submit" in report.routes
    assert "POST /submit" in requests
    assert [s for s in report.skipped if s.startswith("discovery:")] == [DROPPED_SAMPLE]


async def test_a_sendable_sample_body_is_kept() -> None:
    report, requests = await _audit(_site(_form_route({"name": "audit \u00e9"})))
    assert ("csrf.cross-site-origin", "POST /submit") in _failed(report)
    assert "POST /submit" in requests
    assert not [s for s in report.skipped if s.startswith("discovery:")]


@pytest.mark.parametrize(
    ("example", "media", "body", "dropped"),
    [
        pytest.param({"name": "\ud800"}, FORM, b"", True, id="discovery-surrogate-form-dropped"),
        pytest.param(
            {"name": "audit \u00e9"}, FORM, b"name=audit+%C3%A9", False, id="discovery-form-ok"
        ),
        # JSON escapes a lone surrogate (`\ud800`): sendable as it is.
        pytest.param(
            {"name": "\ud800"},
            "application/json",
            b'{"name": "\\ud800"}',
            False,
            id="discovery-surrogate-json-escaped-ok",
        ),
    ],
)
def test_a_sample_body_that_cannot_be_encoded_is_dropped(
    example: object, media: str, body: bytes, dropped: bool
) -> None:
    [route] = routes_from_openapi({"paths": _form_route(example, media)})
    assert (str(route), route.body, route.body_dropped) == ("POST /submit", body, dropped)
    assert route.content_type == ("" if dropped else media)


async def test_unsendable_sample_bodies_are_listed_within_bounds() -> None:
    """The first few named, the rest counted, as unsendable routes are."""
    many: Paths = {
        f"/s{n}": _form_route({"name": "\ud800"})["/submit"]
        for n in range(MAX_UNSENDABLE_SHOWN + 30)
    }
    report, _ = await _audit(_site(many))
    dropped = [s for s in report.skipped if s.startswith("discovery:")]
    assert len(dropped) == MAX_UNSENDABLE_SHOWN + 1
    assert dropped[0] == DROPPED_SAMPLE.replace("/submit", "/s0")
    assert dropped[-1] == "discovery: 30 more such sample bodies; probed without a body"


@pytest.mark.parametrize(
    ("example", "fail_on", "exit_code"),
    [
        pytest.param(
            {"name": "\ud800"}, "high", 1, id="audit-cli-surrogate-form-example-fails-gate-on-leak"
        ),
        pytest.param(
            {"name": "\ud800"}, "critical", 0, id="audit-cli-surrogate-form-example-not-incomplete"
        ),
        pytest.param({"name": "audit"}, "high", 1, id="audit-cli-form-example-fails-gate-on-leak"),
    ],
)
def test_the_gate_judges_a_target_with_an_unsendable_sample(
    example: object, fail_on: str, exit_code: int
) -> None:
    """It used to exit 2 (cannot audit ...: surrogates not allowed), with no report."""
    assert _exit_code(_site(_form_route(example)), fail_on) == exit_code


# ---------------------------------------------------------------------------
# A route whose requests the target breaks, midway through a probe


def _breaks(answer: bytes) -> Callable[[str, str], Answer | bytes | None]:
    """Every POST to /boom gets `answer` (a reset, or bytes that are no answer)."""

    def broken(method: str, path: str) -> bytes | None:
        return answer if method == "POST" and path == "/boom" else None

    return broken


BREAKS = [
    pytest.param(RESET, id="audit-route-error-midway-fails-gate"),
    pytest.param(UNREADABLE, id="audit-route-unreadable-answer-midway-fails-gate"),
]
BOOM: Paths = {"/boom": {"post": {}}}


@pytest.mark.parametrize("answer", BREAKS)
async def test_a_route_error_midway_is_a_failed_check(answer: bytes) -> None:
    report, _ = await _audit(_site(BOOM, _breaks(answer)))
    assert _failed(report) == BENIGN_FAILED  # the leakage and CSRF findings elsewhere
    assert _failed(report, incomplete=True) == [
        ("audit.incomplete", "POST /boom"),
        ("audit.incomplete", "POST /boom"),
    ]
    evidence = sorted(f.evidence for f in report.failed if f.check == "audit.incomplete")
    assert evidence[0].startswith("the csrf checks of POST /boom were cut short: POST /boom: ")
    assert evidence[1].startswith("the leakage checks of POST /boom were cut short: POST /boom: ")
    assert all(report.fails_at(level) for level in SEVERITIES)


async def test_a_route_that_answers_is_not_incomplete() -> None:
    report, _ = await _audit(_site(BOOM))
    assert _failed(report, incomplete=True) == []
    assert ("csrf.cross-site-origin", "POST /boom") in _failed(report)


@pytest.mark.parametrize(
    ("broken", "fail_on", "exit_code"),
    [
        pytest.param(True, "critical", 1, id="audit-cli-route-error-fails-every-gate"),
        pytest.param(True, "high", 1, id="audit-cli-route-error-keeps-the-high-finding"),
        pytest.param(False, "critical", 0, id="audit-cli-benign-passes-critical-gate"),
        pytest.param(False, "high", 1, id="audit-cli-benign-fails-high-gate"),
    ],
)
def test_the_gate_fails_on_a_route_error(broken: bool, fail_on: str, exit_code: int) -> None:
    handler = _site(BOOM, _breaks(RESET) if broken else None)
    assert _exit_code(handler, fail_on) == exit_code


async def test_every_format_shows_the_incomplete_audit() -> None:
    report, _ = await _audit(_site(BOOM, _breaks(RESET)))
    table = render_table([report])
    assert "audit.incomplete" in table
    assert "critical" in table
    assert "leakage: POST /boom: ReadError" in table  # under "Not tested"
    assert parse_json(render_json([report])) == [report]
    log = json.loads(render_sarif([report]))
    VALIDATOR.validate(log)
    results = [r for r in log["runs"][0]["results"] if r["ruleId"] == "audit.incomplete"]
    assert [r["level"] for r in results] == ["error", "error"]
    assert all(r["message"]["text"].startswith("Failed: Every check ran") for r in results)
    assert all(
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("/boom")
        for r in results
    )
    page = render_html([report])
    assert "audit.incomplete" in page
    assert "the csrf checks of POST /boom were cut short" in page


# ---------------------------------------------------------------------------
# Each probe that loops over routes goes on past the broken one


def _first_then_reset(path: str, first: Answer) -> Callable[[str, str], Answer | bytes | None]:
    """`path` answers `first` once (the crawl), then resets every request to it;
    `GET /` reflects any origin with credentials (`cors.reflect-origin`)."""
    seen: collections.Counter[str] = collections.Counter()

    def broken(method: str, requested: str) -> Answer | bytes | None:
        if requested == "/":
            return (
                200,
                (
                    HTML,
                    ("access-control-allow-origin", "https://evil.example"),
                    ("access-control-allow-credentials", "true"),
                ),
                b"<p>home</p>",
            )
        if requested != path:
            return None
        seen[requested] += 1
        return first if seen[requested] == 1 else RESET

    return broken


def _bearer_only(method: str, path: str) -> Answer | None:
    return (401, (HTML,), b"sign in") if path == "/api/me" else None


PROBES = [
    # cors: GET / from evil.example, then the crawl's pages that answered.
    pytest.param(
        "/boom",
        (200, (HTML,), b"<p>ok</p>"),
        ("cors.reflect-origin", "GET /"),
        "cors",
        id="audit-route-error-in-cors-keeps-other-findings",
    ),
    # hosts: GET / with Host: evil.example, then the crawl's redirects.
    pytest.param(
        "/boom",
        (302, (("location", "/"),), b""),
        ("hosts.unknown-host", "GET /"),
        "hosts",
        id="audit-route-error-in-hosts-keeps-other-findings",
    ),
]


@pytest.mark.parametrize(("path", "first", "kept", "area"), PROBES)
async def test_a_probe_goes_on_past_a_broken_route(
    path: str, first: Answer, kept: tuple[str, str], area: str
) -> None:
    report, _ = await _audit(_site({path: {"get": {}}}, _first_then_reset(path, first)))
    assert kept in _failed(report)
    assert ("leakage.error-page", "GET /leak") in _failed(report)
    lost = [f.evidence for f in report.failed if f.check == "audit.incomplete"]
    assert any(e.startswith(f"the {area} checks of GET {path} were cut short") for e in lost)


async def test_jwt_goes_on_past_a_broken_route() -> None:
    """Two routes answer 401 at the crawl; the first then resets the forged tokens."""
    first = _first_then_reset("/boom", (401, (HTML,), b"sign in"))

    def broken(method: str, path: str) -> Answer | bytes | None:
        answer = first(method, path)
        return answer if answer is not None else _bearer_only(method, path)

    extra: Paths = {"/boom": {"get": {}}, "/api/me": {"get": {}}}
    report, _ = await _audit(_site(extra, broken))
    judged = {(f.check, f.route) for f in report.findings if f.check.startswith("jwt.")}
    assert ("jwt.alg-none", "GET /api/me") in judged
    lost = [f.evidence for f in report.failed if f.check == "audit.incomplete"]
    assert any(e.startswith("the jwt checks of GET /boom were cut short") for e in lost)


async def test_ratelimit_goes_on_past_a_broken_login_route() -> None:
    """Two login routes: the first resets after a few failed logins (no answer is
    not a 429), the second never throttles and must still be reported."""
    seen: collections.Counter[str] = collections.Counter()

    def broken(method: str, path: str) -> bytes | None:
        if method == "POST" and path == "/signin":
            seen[path] += 1
            return RESET if seen[path] > 5 else None
        return None

    extra: Paths = {"/signin": {"post": {}}, "/login": {"post": {}}}
    report, _ = await _audit(_site(extra, broken))
    assert ("ratelimit.login", "POST /login") in _failed(report)
    lost = [f.evidence for f in report.failed if f.check == "audit.incomplete"]
    assert any(e.startswith("the ratelimit checks of POST /signin were cut short") for e in lost)


@pytest.mark.parametrize(
    ("route", "exit_code"),
    [
        pytest.param("GET /a\x07", 2, id="audit-cli-route-option-control-char"),
        pytest.param("GET /a b", 2, id="audit-cli-route-option-space"),
        pytest.param("GET /a%20b", 0, id="audit-cli-route-option-encoded-ok"),
    ],
)
def test_a_route_option_no_request_can_carry_is_refused(route: str, exit_code: int) -> None:
    """Refused before anything is sent, with a clear error and no traceback."""
    with _threaded(_site()) as url:
        result = CliRunner().invoke(app, ["audit", url, "--route", route, "--max-requests", "100"])
    assert result.exit_code == exit_code, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    if exit_code == 2:
        said = " ".join(result.stderr.replace("\u2502", " ").split())  # the box's sides
        assert "--route: route 'GET /a" in said
        assert "a path cannot hold a space, a control character or invalid Unicode" in said
        assert "\x07" not in result.stderr
