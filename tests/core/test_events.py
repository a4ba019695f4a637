from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import pytest

from bastion import context as context_module
from bastion.events import (
    MAX_VALUE_CHARS,
    REDACTED,
    EventEmitter,
    EventSettings,
    LoggingSink,
    Redactor,
    SecurityEvent,
    scrub_text,
)
from bastion.responses import Refuser
from tests.conftest import RecordingSink

FIXED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_event(**details: object) -> SecurityEvent:
    return SecurityEvent(
        kind="input_validation_fail",
        reason="host-malformed",
        layer="transport",
        status=400,
        request_id="abc",
        client="203.0.113.9",
        method="GET",
        path="/x",
        details=details,
    )


@pytest.mark.parametrize(
    "key",
    [
        "Authorization",
        "authorization",
        "Proxy-Authorization",
        "Cookie",
        "set-cookie",
        "Set-Cookie",
        "password",
        "new_password",
        "access_token",
        "refresh-token",
        "X-API-Key",
        "client_secret",
        "session",
        "sessionid",
        "csrf_token",
    ],
)
def test_sensitive_keys_are_redacted(key: str) -> None:
    sink = RecordingSink()
    EventEmitter([sink], clock=lambda: FIXED).emit(make_event(**{key: "s3cr3t-value"}))
    assert sink.records[0]["details"] == {key: REDACTED}
    assert "s3cr3t-value" not in json.dumps(sink.records)


def test_header_pairs_are_redacted_by_name() -> None:
    sink = RecordingSink()
    headers = [(b"cookie", b"sid=s3cr3t"), (b"accept", b"text/html")]
    EventEmitter([sink]).emit(make_event(headers=headers))
    assert sink.records[0]["details"] == {
        "headers": [["cookie", REDACTED], ["accept", "text/html"]]
    }


def test_configured_fields_are_redacted() -> None:
    sink = RecordingSink()
    emitter = EventEmitter(
        [sink], redactor=Redactor(EventSettings(redact_fields=("E-Mail",)).redact_fields)
    )
    emitter.emit(make_event(e_mail="alice@example.com", other="kept"))
    assert sink.records[0]["details"] == {"e_mail": REDACTED, "other": "kept"}


def test_non_sensitive_keys_are_kept() -> None:
    assert not Redactor().is_sensitive("session_created")
    assert not Redactor().is_sensitive("path")


def test_values_are_truncated_and_depth_bounded() -> None:
    sink = RecordingSink()
    deep: dict[str, object] = {"a": {"b": {"c": {"d": {"e": "innermost"}}}}}
    EventEmitter([sink]).emit(make_event(long="x" * 10_000, deep=deep))
    details = sink.records[0]["details"]
    assert isinstance(details, dict)
    assert len(details["long"]) < 600
    assert "innermost" not in json.dumps(details)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param('/x\n{"kind": "authn_login_success"}', id="log-forging-newline"),
        pytest.param("/x\r\nfake", id="log-forging-crlf"),
        pytest.param("/x\x1b[31mred", id="log-forging-ansi-escape"),
        pytest.param("/x\u2028y", id="log-forging-unicode-line-separator"),
    ],
)
def test_log_lines_cannot_be_forged(path: str, caplog: pytest.LogCaptureFixture) -> None:
    event = SecurityEvent(kind="input_validation_fail", reason="r", layer="t", path=path)
    with caplog.at_level(logging.WARNING, logger="bastion.security"):
        EventEmitter([LoggingSink()]).emit(event)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert "\u2028" not in line
    assert json.loads(line)["path"] == path


def test_record_shape() -> None:
    sink = RecordingSink()
    EventEmitter([sink], clock=lambda: FIXED).emit(make_event())
    assert sink.records[0] == {
        "timestamp": "2026-01-02T03:04:05.000+00:00",
        "kind": "input_validation_fail",
        "reason": "host-malformed",
        "layer": "transport",
        "action": "blocked",
        "status": 400,
        "request_id": "abc",
        "client": "203.0.113.9",
        "method": "GET",
        "path": "/x",
    }


def test_allowed_events_log_at_info(caplog: pytest.LogCaptureFixture) -> None:
    event = SecurityEvent(kind="sys_startup", reason="startup", layer="shield", action="allowed")
    with caplog.at_level(logging.INFO, logger="bastion.security"):
        EventEmitter([LoggingSink()]).emit(event)
    assert [r.levelno for r in caplog.records] == [logging.INFO]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "/users/alice@example.com/reset",
            "/users/[redacted-email]/reset",
            id="pii-email-in-path",
        ),
        pytest.param(
            "card 4111 1111 1111 1111 ok", "card [redacted-card] ok", id="pii-card-spaced"
        ),
        pytest.param("4111-1111-1111-1111", "[redacted-card]", id="pii-card-dashed"),
        pytest.param(
            "order 4111111111111112", "order 4111111111111112", id="pii-not-a-card-luhn-fails"
        ),
        pytest.param("ssn 078-05-1120", "ssn 078-05-1120", id="pii-ssn-off-by-default"),
    ],
)
def test_pii_is_redacted_by_pattern(value: str, expected: str) -> None:
    sink = RecordingSink()
    EventEmitter([sink]).emit(make_event(note=value))
    assert sink.records[0]["details"] == {"note": expected}


def test_pii_kinds_are_configurable() -> None:
    redactor = Redactor(pii=("us_ssn",))
    assert redactor.clean("ssn 078-05-1120, a@b.example") == "ssn [redacted-us-ssn], a@b.example"
    assert Redactor(pii=()).clean("a@b.example") == "a@b.example"


def test_pii_scan_only_sees_the_truncated_value() -> None:
    hostile = "a" * 100_000 + "@" + "b." * 50_000
    cleaned = Redactor().clean(hostile)
    # Values are truncated before the scan, so the work is bounded whatever the input.
    assert isinstance(cleaned, str)
    assert len(cleaned) <= MAX_VALUE_CHARS + len("...")


def test_an_emitter_without_sinks_stamps_nothing() -> None:
    """No sink, no record: the event is neither stamped nor redacted (an emitter with
    no sinks is how events are turned off, as the benchmark's stacks do)."""

    def no_clock() -> datetime:
        raise AssertionError("a record was stamped for no sink")

    EventEmitter([], clock=no_clock).emit(
        SecurityEvent(kind="authn_fail", reason="bad-token", layer="auth", action="blocked")
    )


class RefusalsOnly(RecordingSink):
    """A sink that declares which events it takes, and remembers what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[object, ...]] = []

    def accepts(self, *given: object) -> bool:
        self.asked.append(given)
        return given[1] == "blocked"


def _stamp_counter() -> tuple[list[int], Callable[[], datetime]]:
    stamped: list[int] = []

    def clock() -> datetime:
        stamped.append(1)
        return FIXED

    return stamped, clock


ALLOWED = SecurityEvent(kind="closed", reason="closed", layer="websocket", action="allowed")
BLOCKED = SecurityEvent(
    kind="authn_fail", reason="bad-token", layer="auth", action="blocked", client="203.0.113.9"
)


def test_no_record_is_built_for_an_event_no_sink_accepts() -> None:
    stamped, clock = _stamp_counter()
    sink = RefusalsOnly()
    emitter = EventEmitter([sink], clock=clock)
    emitter.emit(ALLOWED)
    assert (stamped, sink.records) == ([], [])
    emitter.emit(BLOCKED)
    assert len(stamped) == 1
    assert sink.reasons() == ["bad-token"]


def test_a_filter_is_given_the_kind_and_action_only() -> None:
    """Sinks never see an unredacted field: `accepts` gets two of Bastion's constants."""
    sink = RefusalsOnly()
    EventEmitter([sink]).emit(BLOCKED)
    assert sink.asked == [("authn_fail", "blocked")]


def test_a_sink_without_a_filter_takes_every_event_beside_one_with_it() -> None:
    stamped, clock = _stamp_counter()
    selective, everything = RefusalsOnly(), RecordingSink()
    emitter = EventEmitter([selective, everything], clock=clock)
    emitter.emit(ALLOWED)
    emitter.emit(BLOCKED)
    assert everything.reasons() == ["closed", "bad-token"]
    assert selective.reasons() == ["bad-token"]
    assert len(stamped) == 2  # one record per event, shared by the sinks that take it


def test_sinks_added_later_are_asked_too() -> None:
    """`Shield` adds the jail's sink by assigning a new tuple: the filters follow it."""
    stamped, clock = _stamp_counter()
    emitter = EventEmitter([], clock=clock)
    selective = RefusalsOnly()
    emitter.sinks = (*emitter.sinks, selective)
    emitter.emit(ALLOWED)
    assert stamped == []
    everything = RecordingSink()
    emitter.sinks = (*emitter.sinks, everything)
    emitter.emit(ALLOWED)
    assert (len(stamped), everything.reasons(), selective.records) == (1, ["closed"], [])


@pytest.mark.parametrize(
    ("level", "allowed_taken", "blocked_taken"),
    [
        pytest.param(logging.INFO, True, True, id="logger-at-info"),
        pytest.param(logging.WARNING, False, True, id="logger-at-warning"),
        pytest.param(logging.ERROR, False, False, id="logger-at-error"),
    ],
)
def test_the_logging_sink_accepts_what_its_logger_writes(
    level: int, allowed_taken: bool, blocked_taken: bool, caplog: pytest.LogCaptureFixture
) -> None:
    sink = LoggingSink()
    stamped, clock = _stamp_counter()
    with caplog.at_level(level, logger="bastion.security"):
        assert sink.accepts("closed", "allowed") is allowed_taken
        assert sink.accepts("authn_fail", "blocked") is blocked_taken
        emitter = EventEmitter([sink], clock=clock)
        emitter.emit(ALLOWED)
        emitter.emit(BLOCKED)
    assert len(stamped) == allowed_taken + blocked_taken
    assert len(caplog.records) == allowed_taken + blocked_taken


def test_an_attribute_named_accepts_that_is_not_callable_filters_nothing() -> None:
    """A sink of the user's may have an `accepts` of its own that is no filter."""

    class Tagged(RecordingSink):
        accepts = frozenset({"blocked"})

    sink = Tagged()
    EventEmitter([sink]).emit(ALLOWED)
    assert sink.reasons() == ["closed"]


@pytest.mark.parametrize(
    ("sinks", "allowed", "blocked"),
    [
        pytest.param([], False, False, id="no-sink"),
        pytest.param([RefusalsOnly()], False, True, id="refusals-only"),
        pytest.param([RefusalsOnly(), RecordingSink()], True, True, id="one-takes-everything"),
    ],
)
def test_wants_says_whether_any_sink_takes_the_event(
    sinks: list[RecordingSink], allowed: bool, blocked: bool
) -> None:
    emitter = EventEmitter(sinks)
    assert emitter.wants("closed", "allowed") is allowed
    assert emitter.wants("authn_fail", "blocked") is blocked


@pytest.mark.parametrize(
    ("sinks", "built"),
    [
        pytest.param([RefusalsOnly()], False, id="refuser-event-no-taker"),
        pytest.param([RecordingSink()], True, id="refuser-event-taken"),
    ],
)
def test_a_refusers_event_no_sink_takes_is_not_built(
    sinks: list[RecordingSink], built: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Refuser.event` asks first: an allowed event nobody takes draws no request id
    and reads no context; one that a sink takes is complete."""
    drawn: list[str] = []
    real = context_module.new_request_id

    def counting() -> str:
        drawn.append("id")
        return real()

    monkeypatch.setattr(context_module, "new_request_id", counting)
    scope: dict[str, object] = {"type": "websocket", "path": "/ws", "headers": []}
    Refuser("websocket", EventEmitter(sinks)).event(
        scope, kind="session_websocket_closed", reason="closed", action="allowed"
    )
    assert drawn == (["id"] if built else [])
    records = [record for sink in sinks for record in sink.records]
    assert len(records) == built
    if built:
        assert records[0]["request_id"]
        assert records[0]["method"] == "WEBSOCKET"


def test_a_logging_sink_subclass_with_its_own_handle_takes_every_event() -> None:
    """A user's sink built on `LoggingSink` that writes records elsewhere is not
    filtered by a logger it does not use (the standard library's default WARNING
    would otherwise drop every allowed event before it)."""

    class Elsewhere(LoggingSink):
        def __init__(self) -> None:
            super().__init__()
            self.reasons: list[str] = []

        def handle(self, record: Mapping[str, object]) -> None:
            self.reasons.append(str(record["reason"]))

    sink = Elsewhere()
    EventEmitter([sink]).emit(ALLOWED)
    assert sink.reasons == ["closed"]


def test_an_accepts_of_another_signature_filters_nothing() -> None:
    """A sink's own `accepts(record)` is no filter: it is not called with two
    arguments as events come (which would raise in the request's path)."""

    class OwnMeaning(RecordingSink):
        def accepts(self, record: Mapping[str, object]) -> bool:
            raise AssertionError("not a filter: never called by the emitter")

    sink = OwnMeaning()
    emitter = EventEmitter([sink])
    assert emitter.wants("closed", "allowed")
    emitter.emit(ALLOWED)
    assert sink.reasons() == ["closed"]


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("eyJ-" * 250_000, id="scrub-jwt-quadratic"),
        pytest.param("eyJ" + "a" * 1_000_000, id="scrub-jwt-no-dots"),
        pytest.param("password=" + "a" * 1_000_000, id="scrub-password-run"),
        pytest.param("://" + "a:" * 500_000, id="scrub-url-userinfo-run"),
        pytest.param("_" * 1_000_000 + "token", id="scrub-name-prefix-run"),
    ],
)
def test_scrubbing_hostile_text_stays_linear(text: str) -> None:
    """A megabyte of text shaped to make a pattern backtrack: `eyJ-eyJ-...` took
    minutes when every `eyJ` started a match that scanned to the end. The bound is
    generous (linear matching takes well under a second here); it cannot pass a
    quadratic pattern, which takes minutes."""
    started = time.perf_counter()
    scrub_text(text)
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"Authorization: Bearer {JWT}", id="scrub-jwt-bearer-ok"),
        pytest.param(f"token={JWT}&next=/", id="scrub-jwt-query-ok"),
        pytest.param(f'{{"id_token": "{JWT}"}}', id="scrub-jwt-json-ok"),
        pytest.param(f"failed for ({JWT})", id="scrub-jwt-parenthesised-ok"),
    ],
)
def test_a_jwt_in_text_is_still_redacted(text: str) -> None:
    assert JWT not in scrub_text(text)
