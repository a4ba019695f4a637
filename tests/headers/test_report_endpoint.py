"""The built-in CSP report endpoint: legitimate reports beside named attacks."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import pytest
from pydantic import ValidationError

from bastion.events import (
    KIND_CSP_VIOLATION,
    KIND_EXCESS_RATE,
    KIND_INPUT_VALIDATION,
    REDACTED,
    EventEmitter,
    LoggingSink,
    Redactor,
)
from bastion.headers import HeadersMiddleware, HeadersSettings
from bastion.headers.policy import (
    DEFAULT_MAX_REPORT_EVENTS_PER_MINUTE,
    MAX_REPORT_EVENTS_PER_MINUTE,
)
from bastion.headers.reports import (
    DROP_NOTICE_INTERVAL_SECONDS,
    MAX_JSON_DEPTH,
    REASON_CSP_VIOLATION,
    REASON_REPORT_DEEPLY_NESTED,
    REASON_REPORT_INVALID_JSON,
    REASON_REPORT_MALFORMED,
    REASON_REPORT_RATE_LIMITED,
    REASON_REPORT_TOO_LARGE,
    REASON_REPORT_TOO_MANY,
    REASON_REPORT_WRONG_CONTENT_TYPE,
    REASON_REPORT_WRONG_METHOD,
    Allowance,
    ReportBudget,
    json_too_deep,
    parse_reports,
)
from bastion.types import ASGIApp, Message, Receive, Scope, Send
from tests.conftest import RecordingSink, asgi_client
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio

PATH = "/.bastion/csp-report"
LEGACY = "application/csp-report"
REPORTING = "application/reports+json"

LEGACY_REPORT = {
    "csp-report": {
        "document-uri": "https://bank.example/account/42?session=abc123#top",
        "referrer": "https://search.example/?q=secret-search",
        "violated-directive": "script-src-elem",
        "effective-directive": "script-src-elem",
        "original-policy": "default-src 'self'; script-src 'nonce-x'",
        "disposition": "enforce",
        "blocked-uri": "https://evil.example/steal.js?token=s3cr3t-token",
        "line-number": 12,
        "column-number": 3,
        "source-file": "https://bank.example/static/app.js?v=7",
        "status-code": 200,
        "script-sample": "alert(document.cookie)",
    }
}
LEGACY_DETAILS = {
    "effective_directive": "script-src-elem",
    "blocked_uri": "https://evil.example/steal.js",
    "document_path": "/account/42",
    "source_file": "https://bank.example/static/app.js",
    "line": 12,
    "column": 3,
    "disposition": "enforce",
    "format": "report-uri",
}


def _reporting_api(count: int, disposition: str = "enforce") -> list[dict[str, object]]:
    return [
        {
            "type": "csp-violation",
            "age": 10,
            "url": f"https://bank.example/page/{i}?id=7",
            "user_agent": "Mozilla/5.0",
            "body": {
                "documentURL": f"https://bank.example/page/{i}?id=7",
                "blockedURL": "inline",
                "effectiveDirective": "style-src-attr",
                "originalPolicy": "default-src 'self'",
                "disposition": disposition,
                "sample": "color: red",
                "statusCode": 200,
            },
        }
        for i in range(count)
    ]


class AppNotReached:
    """Fails the test if the report endpoint lets a request through to the app."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError(f"the app was reached for {scope['path']}")


async def _post(
    events: EventEmitter,
    body: bytes,
    content_type: str | None = LEGACY,
    *,
    method: str = "POST",
    settings: HeadersSettings | None = None,
    app: ASGIApp | None = None,
) -> int:
    middleware = HeadersMiddleware(app or AppNotReached(), settings, events=events)
    headers = {"content-type": content_type} if content_type else {}
    async with asgi_client(middleware) as client:
        response = await client.request(method, PATH, content=body, headers=headers)
    return response.status_code


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


async def test_legacy_report_becomes_one_event(sink: RecordingSink, events: EventEmitter) -> None:
    assert await _post(events, _json(LEGACY_REPORT)) == 204
    [record] = sink.records
    assert record["kind"] == KIND_CSP_VIOLATION
    assert record["reason"] == REASON_CSP_VIOLATION
    assert record["layer"] == "headers"
    assert record["action"] == "blocked"
    assert record["path"] == PATH
    assert record["client"] == "127.0.0.1"
    assert record["details"] == LEGACY_DETAILS


async def test_csp2_report_with_violated_directive_only(
    sink: RecordingSink, events: EventEmitter
) -> None:
    report = {"csp-report": {"violated-directive": "img-src", "blocked-uri": "data"}}
    assert await _post(events, _json(report), "application/csp-report; charset=utf-8") == 204
    details = sink.records[0]["details"]
    assert isinstance(details, Mapping)
    assert details["effective_directive"] == "img-src"
    assert details["blocked_uri"] == "data"
    assert details["disposition"] == "unknown"


async def test_reporting_api_batch(sink: RecordingSink, events: EventEmitter) -> None:
    batch = [*_reporting_api(2, "report"), {"type": "deprecation", "body": {"id": "x"}}]
    assert await _post(events, _json(batch), REPORTING) == 204
    assert sink.reasons() == [REASON_CSP_VIOLATION, REASON_CSP_VIOLATION]
    assert [r["action"] for r in sink.records] == ["monitored", "monitored"]
    assert [r["details"] for r in sink.records] == [
        {
            "effective_directive": "style-src-attr",
            "blocked_uri": "inline",
            "document_path": f"/page/{i}",
            "disposition": "report",
            "format": "reporting-api",
        }
        for i in range(2)
    ]


async def test_nothing_from_query_strings_samples_or_referrers_is_logged(
    sink: RecordingSink, events: EventEmitter
) -> None:
    await _post(events, _json(LEGACY_REPORT))
    text = json.dumps(sink.records)
    for secret in ("abc123", "s3cr3t-token", "secret-search", "document.cookie", "v=7"):
        assert secret not in text


async def test_configured_fields_are_redacted(sink: RecordingSink) -> None:
    emitter = EventEmitter([sink], redactor=Redactor(["document_path"]))
    await _post(emitter, _json(LEGACY_REPORT))
    details = sink.records[0]["details"]
    assert isinstance(details, Mapping)
    assert details["document_path"] == REDACTED
    assert details["blocked_uri"] == "https://evil.example/steal.js"


async def test_no_log_forging(caplog: pytest.LogCaptureFixture) -> None:
    emitter = EventEmitter([LoggingSink("bastion.test.csp")])
    forged = 'https://evil.example/x\n{"kind": "authn_login_success", "fake": true}\r\x1b[2J'
    report = {"csp-report": {"effective-directive": "script-src", "blocked-uri": forged}}
    with caplog.at_level(logging.WARNING, logger="bastion.test.csp"):
        assert await _post(emitter, _json(report)) == 204
    [log_record] = caplog.records
    line = log_record.getMessage()
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert json.loads(line)["details"]["blocked_uri"] == forged


def _too_many() -> bytes:
    return _json(_reporting_api(25))


def _nested(depth: int) -> bytes:
    return b'{"csp-report": ' + b"[" * depth + b"]" * depth + b"}"


# (method, content type, body, status, reasons emitted)
ATTACKS = [
    pytest.param(
        "POST", LEGACY, b'{"csp-report": {"blocked-uri": "' + b"a" * 40_000 + b'"}}', 413,
        [REASON_REPORT_TOO_LARGE], id="csp-report-too-large",
    ),
    pytest.param(
        "GET", LEGACY, b"", 405, [REASON_REPORT_WRONG_METHOD], id="csp-report-wrong-method"
    ),
    pytest.param(
        "PUT", LEGACY, _json(LEGACY_REPORT), 405, [REASON_REPORT_WRONG_METHOD],
        id="csp-report-wrong-method-put",
    ),
    pytest.param(
        "POST", "application/json", _json(LEGACY_REPORT), 415,
        [REASON_REPORT_WRONG_CONTENT_TYPE], id="csp-report-wrong-content-type",
    ),
    pytest.param(
        "POST", None, _json(LEGACY_REPORT), 415, [REASON_REPORT_WRONG_CONTENT_TYPE],
        id="csp-report-no-content-type",
    ),
    pytest.param(
        "POST", "text/plain; x=application/csp-report", _json(LEGACY_REPORT), 415,
        [REASON_REPORT_WRONG_CONTENT_TYPE], id="csp-report-content-type-in-parameter",
    ),
    pytest.param(
        "POST", LEGACY, b'{"csp-report": {', 400, [REASON_REPORT_INVALID_JSON],
        id="csp-report-invalid-json",
    ),
    pytest.param(
        "POST", LEGACY, b'{"csp-report": {"blocked-uri": "\xff\xfe"}}', 400,
        [REASON_REPORT_INVALID_JSON], id="csp-report-invalid-utf8",
    ),
    pytest.param(
        "POST", LEGACY, b'{"csp-report": {"line-number": ' + b"9" * 5000 + b"}}", 400,
        [REASON_REPORT_INVALID_JSON], id="csp-report-huge-integer",
    ),
    pytest.param(
        "POST", LEGACY, _nested(5000), 400, [REASON_REPORT_DEEPLY_NESTED],
        id="csp-report-deeply-nested",
    ),
    pytest.param(
        "POST", LEGACY, b'["not", "a", "report"]', 400, [REASON_REPORT_MALFORMED],
        id="csp-report-malformed-legacy",
    ),
    pytest.param(
        "POST", REPORTING, b'{"type": "csp-violation"}', 400, [REASON_REPORT_MALFORMED],
        id="csp-report-malformed-reporting-api",
    ),
    pytest.param(
        "POST", REPORTING, b'[{"type": "csp-violation", "body": "x"}]', 400,
        [REASON_REPORT_MALFORMED], id="csp-report-malformed-body",
    ),
    pytest.param(
        "POST", REPORTING, _too_many(), 204,
        [REASON_CSP_VIOLATION] * 20 + [REASON_REPORT_TOO_MANY], id="csp-report-too-many",
    ),
    pytest.param(
        "POST", LEGACY, _json(LEGACY_REPORT), 204, [REASON_CSP_VIOLATION], id="csp-report-ok"
    ),
    pytest.param(
        "POST", REPORTING, _json(_reporting_api(20)), 204, [REASON_CSP_VIOLATION] * 20,
        id="csp-report-full-batch-ok",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("method", "content_type", "body", "status", "reasons"), ATTACKS)
async def test_attacks(
    sink: RecordingSink,
    events: EventEmitter,
    method: str,
    content_type: str | None,
    body: bytes,
    status: int,
    reasons: list[str],
) -> None:
    assert await _post(events, body, content_type, method=method) == status
    assert sink.reasons() == reasons
    refusals = [r for r in sink.records if r["reason"] != REASON_CSP_VIOLATION]
    assert all(r["kind"] == KIND_INPUT_VALIDATION for r in refusals)


async def test_wrong_method_names_the_allowed_one(events: EventEmitter) -> None:
    middleware = HeadersMiddleware(AppNotReached(), events=events)
    async with asgi_client(middleware) as client:
        response = await client.get(PATH)
    assert response.headers["allow"] == "POST"
    assert "report" not in response.text.lower()  # generic body, no detail


async def test_too_many_event_counts_what_was_dropped(
    sink: RecordingSink, events: EventEmitter
) -> None:
    await _post(events, _too_many(), REPORTING)
    assert sink.records[-1]["details"] == {"kept": 20, "dropped": 5}


async def _call_raw(
    middleware: HeadersMiddleware, messages: list[Message], headers: list[tuple[bytes, bytes]]
) -> tuple[list[Message], int]:
    """Drive the middleware by hand; returns what it sent and how often it read."""
    sent: list[Message] = []
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return messages[min(reads, len(messages)) - 1]

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "headers": headers,
        "client": ("203.0.113.9", 5000),
    }
    await middleware(scope, receive, send)
    return sent, reads


async def test_reading_stops_at_the_limit(events: EventEmitter) -> None:
    chunk = {"type": "http.request", "body": b"x" * 10_000, "more_body": True}
    middleware = HeadersMiddleware(AppNotReached(), events=events)
    sent, reads = await _call_raw(middleware, [chunk], [(b"content-type", LEGACY.encode())])
    assert reads == 4  # 40 000 bytes > 32 KiB: the fourth chunk is the last one read
    assert sent[0]["status"] == 413


async def test_declared_length_over_the_limit_is_refused_unread(events: EventEmitter) -> None:
    middleware = HeadersMiddleware(AppNotReached(), events=events)
    for declared in (b"40000", b"9" * 5000):
        headers = [(b"content-type", LEGACY.encode()), (b"content-length", declared)]
        sent, reads = await _call_raw(middleware, [], headers)
        assert reads == 0
        assert sent[0]["status"] == 413


async def test_disconnect_gets_no_answer(sink: RecordingSink, events: EventEmitter) -> None:
    middleware = HeadersMiddleware(AppNotReached(), events=events)
    headers = [(b"content-type", LEGACY.encode())]
    sent, _ = await _call_raw(middleware, [{"type": "http.disconnect"}], headers)
    assert sent == []
    assert sink.records == []


async def test_no_content_length_on_204(events: EventEmitter) -> None:
    middleware = HeadersMiddleware(AppNotReached(), events=events)
    body = {"type": "http.request", "body": _json(LEGACY_REPORT), "more_body": False}
    sent, _ = await _call_raw(middleware, [body], [(b"content-type", LEGACY.encode())])
    assert sent[0] == {"type": "http.response.start", "status": 204, "headers": []}


async def test_custom_path_and_monitor_only(sink: RecordingSink, events: EventEmitter) -> None:
    settings = HeadersSettings(csp_report_path="/csp", monitor_only=True)
    middleware = HeadersMiddleware(AppNotReached(), settings, events=events)
    async with asgi_client(middleware) as client:
        response = await client.post(
            "/csp", content=_json(LEGACY_REPORT), headers={"content-type": LEGACY}
        )
        refused = await client.get("/csp")
    assert response.status_code == 204
    assert refused.status_code == 405
    assert sink.reasons() == [REASON_CSP_VIOLATION, REASON_REPORT_WRONG_METHOD]


async def test_without_report_path_the_app_answers(framework_app: ASGIApp) -> None:
    middleware = HeadersMiddleware(framework_app, HeadersSettings(csp_report_path=None))
    async with asgi_client(middleware) as client:
        response = await client.post(PATH, content=b"{}", headers={"content-type": LEGACY})
    assert response.status_code in (404, 405)


# The per-process report budget: the endpoint answers before rate limiting.


async def test_budget_caps_events_across_requests(sink: RecordingSink) -> None:
    clock = FakeClock()
    settings = HeadersSettings(csp_report_max_events_per_minute=3)
    middleware = HeadersMiddleware(
        AppNotReached(), settings, events=EventEmitter([sink]), clock=clock
    )
    batch = _json(_reporting_api(2))

    async def post() -> list[str]:
        start = len(sink.records)
        async with asgi_client(middleware) as client:
            response = await client.post(PATH, content=batch, headers={"content-type": REPORTING})
        assert response.status_code == 204  # dropping reports never changes the answer
        return [str(r["reason"]) for r in sink.records[start:]]

    assert await post() == [REASON_CSP_VIOLATION] * 2
    # One token left: one event, and the first drop is reported at once.
    assert await post() == [REASON_CSP_VIOLATION, REASON_REPORT_RATE_LIMITED]
    notice = sink.records[-1]
    assert notice["kind"] == KIND_EXCESS_RATE
    assert notice["details"] == {"dropped": 1, "max_events_per_minute": 3}
    # Spent: requests write nothing at all while the notice interval runs, and
    # batches without a violation do not bring the notice forward.
    for _ in range(50):
        assert await post() == []
        async with asgi_client(middleware) as client:
            other = _json([{"type": "deprecation", "body": {"id": "x"}}])
            await client.post(PATH, content=other, headers={"content-type": REPORTING})
    # At 3 a minute, 20 s refill one token: one event, the other violation is
    # dropped, and still no notice within the interval.
    clock.now += 20
    assert await post() == [REASON_CSP_VIOLATION]
    # 40 s more refill two: the request is granted in full, and the count of what
    # was dropped meanwhile follows it.
    clock.now += 40
    assert await post() == [REASON_CSP_VIOLATION] * 2 + [REASON_REPORT_RATE_LIMITED]
    assert sink.records[-1]["details"] == {"dropped": 101, "max_events_per_minute": 3}


def test_budget_grants_up_to_a_minute_of_burst() -> None:
    budget = ReportBudget(60, now=0.0)
    assert budget.take(60, now=0.0) == Allowance(granted=60, report_dropped=0)
    assert budget.take(1, now=0.0) == Allowance(granted=0, report_dropped=1)
    assert budget.take(1, now=0.5) == Allowance(granted=0, report_dropped=0)
    assert budget.take(1, now=1.0) == Allowance(granted=1, report_dropped=1)  # flushed
    # Idle for an hour: the bucket refills to one minute's allowance, no more.
    assert budget.take(100, now=3601.0) == Allowance(granted=60, report_dropped=40)


def test_budget_flushes_only_with_a_granted_event() -> None:
    # Otherwise empty batches between full ones would each carry a drop notice.
    budget = ReportBudget(1, now=0.0)
    assert budget.take(3, now=0.0) == Allowance(granted=1, report_dropped=2)
    assert budget.take(3, now=1.0) == Allowance(granted=0, report_dropped=0)
    assert budget.take(0, now=2.0) == Allowance(granted=0, report_dropped=0)
    assert budget.take(1, now=60.0) == Allowance(granted=1, report_dropped=3)


def test_budget_reports_drops_at_most_once_per_interval() -> None:
    budget = ReportBudget(1, now=0.0)
    assert budget.take(5, now=0.0) == Allowance(granted=1, report_dropped=4)
    for second in range(1, int(DROP_NOTICE_INTERVAL_SECONDS)):
        assert budget.take(5, now=second * 0.1).report_dropped == 0
    later = budget.take(5, now=DROP_NOTICE_INTERVAL_SECONDS)
    assert later == Allowance(
        granted=1, report_dropped=(int(DROP_NOTICE_INTERVAL_SECONDS) - 1) * 5 + 4
    )


def test_budget_ignores_a_clock_stepping_back() -> None:
    budget = ReportBudget(60, now=100.0)
    assert budget.take(60, now=100.0).granted == 60
    assert budget.take(1, now=50.0).granted == 0
    assert budget.take(1, now=100.5).granted == 0  # no refill for the step back
    assert budget.take(1, now=101.0).granted == 1


BUDGET_REFUSALS = [
    pytest.param(0, id="csp-report-budget-zero"),
    pytest.param(-1, id="csp-report-budget-negative"),
    pytest.param(MAX_REPORT_EVENTS_PER_MINUTE + 1, id="csp-report-budget-over-cap"),
]


@pytest.mark.parametrize("per_minute", BUDGET_REFUSALS)
def test_budget_setting_is_bounded(per_minute: int) -> None:
    # No value turns the budget off: an unbounded endpoint would need a name saying so.
    with pytest.raises(ValidationError, match="csp_report_max_events_per_minute"):
        HeadersSettings(csp_report_max_events_per_minute=per_minute)


def test_budget_default() -> None:
    assert (
        HeadersSettings().csp_report_max_events_per_minute == DEFAULT_MAX_REPORT_EVENTS_PER_MINUTE
    )
    with pytest.raises(ValueError, match="at least one"):
        ReportBudget(0, now=0.0)


# The pure parser.

DEPTHS = [
    pytest.param(b"[]", False, id="flat"),
    pytest.param(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, False, id="at-limit"),
    pytest.param(b"[" * (MAX_JSON_DEPTH + 1), True, id="over-limit"),
    pytest.param(b'["' + b"[" * 100 + b'"]', False, id="brackets-in-string"),
    pytest.param(b'["\\"' + b"[" * 100 + b'"]', False, id="escaped-quote-in-string"),
    pytest.param(b'{"a": {"b": {"c": [[[[[[1]]]]]]}}}', True, id="mixed"),
]


@pytest.mark.parametrize(("body", "too_deep"), DEPTHS)
def test_json_too_deep(body: bytes, too_deep: bool) -> None:
    assert json_too_deep(body) is too_deep


FIELDS = [
    pytest.param({"effective-directive": "script-src\nx"}, "effective_directive", "invalid"),
    pytest.param({"effective-directive": 7}, "effective_directive", "invalid"),
    pytest.param({"blocked-uri": ["x"]}, "blocked_uri", ""),
    pytest.param({"blocked-uri": "https://a.example/" + "p" * 1000}, "blocked_uri", None),
    pytest.param({"document-uri": "https://a.example"}, "document_path", "/"),
    pytest.param({"document-uri": "about:blank"}, "document_path", "about:blank"),
    pytest.param({"line-number": "12"}, "line", None),
    pytest.param({"line-number": True}, "line", None),
    pytest.param({"line-number": -1}, "line", None),
    pytest.param({"disposition": "ignore"}, "disposition", "unknown"),
]


@pytest.mark.parametrize(("report", "field", "expected"), FIELDS)
def test_untrusted_fields_are_bounded(
    report: dict[str, object], field: str, expected: object
) -> None:
    body = _json({"csp-report": report})
    [violation] = parse_reports("report-uri", body, max_reports=20).violations
    details = violation.details()
    if field == "blocked_uri" and expected is None:
        assert len(str(details[field])) == 256
    else:
        assert details.get(field) == expected
