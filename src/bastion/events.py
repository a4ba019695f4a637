"""Security events: one stream for every refusal and every security-relevant success.

Each layer describes what happened as a `SecurityEvent` with a stable `kind` from the
OWASP Logging Vocabulary and a stable `reason` (the layer's `REASON_*` constant). The
`EventEmitter` redacts the event centrally, before any sink sees it, then hands the
plain record to every sink that accepts it (a sink may say which kinds and actions it
takes; an event none takes is never built). Sinks never see a secret, so no sink can
leak one.

Threats handled here:

* Secret leakage through logs: values under sensitive keys (`Authorization`,
  `Cookie`, `Set-Cookie`, passwords, tokens, API keys, session ids, and any field the
  user configures) are replaced by a fixed marker, at any depth of `details`; inside
  any string value, secret-shaped text (`password=...`, `Bearer ...`, a JWT, the
  password of a URL such as `postgres://app:pw@db`) is too (`scrub_text`).
* Log forging (CWE-117): a client can put CR, LF or ANSI escapes in a path or header.
  Records are written as JSON with `ensure_ascii`, which escapes every control and
  non-ASCII character, so one event is always exactly one line.
* Log flooding: every string value and key is truncated, and `details` nesting and
  the entries of each list or mapping are bounded.

References: OWASP Logging Vocabulary
https://cheatsheetseries.owasp.org/cheatsheets/Logging_Vocabulary_Cheat_Sheet.html ;
CWE-117 https://cwe.mitre.org/data/definitions/117.html
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal, Protocol, cast

from pydantic import BaseModel, ConfigDict, field_validator

Action = Literal["blocked", "monitored", "allowed"]

# OWASP Logging Vocabulary kinds used by Bastion's layers, and extensions.
KIND_INPUT_VALIDATION: Final = "input_validation_fail"
KIND_EXCESS_RATE: Final = "excess_rate_limit_exceeded"
KIND_MALICIOUS_CORS: Final = "malicious_cors"
KIND_AUTHN_FAIL: Final = "authn_login_fail"
KIND_AUTHZ_FAIL: Final = "authz_fail"
KIND_AUTHZ_CHANGE: Final = "authz_change"
KIND_SYS_CRASH: Final = "sys_crash"
KIND_SYS_MONITOR_DISABLED: Final = "sys_monitor_disabled"
KIND_SYS_STARTUP: Final = "sys_startup"
# Bastion extensions, named in the vocabulary's style (category, then a snake_case
# event) for events it has no word for:
# * a cross-site request forgery refused (MALICIOUS: a forged request is an attack);
# * a browser's CSP violation report (MALICIOUS because a violation of an enforced
#   policy is most often attempted injection; `action` and `details.disposition` say
#   whether anything was blocked; reports are unauthenticated and forgeable, so alert
#   on rates, not on one);
# * load shedding and store outages (SYS: the service refusing work to stay correct).
KIND_MALICIOUS_CSRF: Final = "malicious_csrf"
KIND_CSP_VIOLATION: Final = "malicious_csp_violation"
KIND_SYS_AVAILABILITY: Final = "sys_availability"

REDACTED: Final = "[redacted]"
MAX_VALUE_CHARS: Final = 512  # long enough for any legitimate path or reason
_MAX_DEPTH: Final = 4  # details are shallow by construction; deeper is cut
# Details hold a few facts by construction; a list or mapping of more (an app's own
# event echoing a request) is cut, so one event stays one bounded line.
MAX_ITEMS: Final = 64

# A key is sensitive when its normalised name contains one of these fragments...
SENSITIVE_KEY_FRAGMENTS: Final = (
    "authorization",
    "cookie",
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "passphrase",
    "pwd",
)
# ...or is exactly one of these (a fragment like "session" would hide too much).
SENSITIVE_KEYS: Final = frozenset({"session", "sessionid", "session_id", "sid", "jwt", "otp"})


# Secrets inside free text (exception messages, tracebacks, event values):
# `password=...`, `access_token=...`, `Authorization: Bearer ...`, and anything shaped
# like a JWT. Each pattern is a fixed prefix followed by a single character class; the
# name's own prefix (`access_`, `j` of `jsessionid`) is word characters only, which
# cannot hold a word boundary, so each word is one start: matching stays linear.
_TEXT_SECRETS: Final = (
    re.compile(
        r"(?i)\b([A-Za-z0-9_]*(?:authorization|password|passwd|pwd|passphrase|secret|token"
        r"|api[_-]?key|sessionid|session_id|cookie))(\s*[=:]\s*)"
        r"(\"[^\"\n]*\"|'[^'\n]*'|(?:(?:bearer|basic)[ \t]+)?[^\s,;&]+)"
    ),
    re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=-]+)"),
    # The userinfo of a URL (`postgres://app:pw@db`, in a driver's exception): from
    # `://` up to the `@`, never across a `/`, so each scan stops at the next one.
    re.compile(r"(://)()[^/\s@?#]+(?=@)"),
)
# A JWT starts where no character of its alphabet precedes it, and its runs are
# possessive: linear. A word boundary (`\b`) let `eyJ-eyJ-...` start a match at
# every `eyJ`, each scanning to the end of the run: quadratic, minutes for a
# megabyte of exception message. (A JWT glued to a `-` before it is not redacted.)
_JWT_LIKE: Final = re.compile(
    r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+"
)


def scrub_text(text: str) -> str:
    """Redact secrets that appear inside free text, such as a traceback."""
    for pattern in _TEXT_SECRETS:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _JWT_LIKE.sub(REDACTED, text)


# Personal data by pattern (configurable, `EventSettings.redact_pii`). Every
# quantifier is bounded and values are truncated first, so matching stays linear in
# practice on at most MAX_VALUE_CHARS characters.
PII_PATTERNS: Final = {
    "email": re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"),
    "card": re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
    "us_ssn": re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"),
}
PIIKind = Literal["email", "card", "us_ssn"]


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _redact_card(match: re.Match[str]) -> str:
    digits = "".join(c for c in match.group(0) if c.isdigit())
    return "[redacted-card]" if _luhn_valid(digits) else match.group(0)


class EventSettings(BaseModel):
    """Where events go and what is redacted from them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    logger_name: str = "bastion.security"
    redact_fields: tuple[str, ...] = ()
    """Extra field names to redact (exact, case-insensitive), e.g. `email`, `ssn`."""

    prometheus: bool = False
    """Count events in Prometheus counters (`bastion[metrics]`); serve them with
    `Shield.metrics_app()` behind your authentication."""

    redact_pii: tuple[PIIKind, ...] = ("email", "card")
    """Personal data redacted wherever it appears in a value: `email`, `card` (card
    numbers that pass the Luhn check), `us_ssn`."""

    @field_validator("redact_fields")
    @classmethod
    def _normalise_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_normalise_key(name) for name in value)


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One thing that happened, described by facts only.

    `client` is the resolved client address (after trusted proxies). `details` may
    hold anything useful to an investigator; the emitter redacts it.
    """

    kind: str
    reason: str
    layer: str
    action: Action = "blocked"
    status: int | None = None
    request_id: str | None = None
    client: str | None = None
    method: str | None = None
    path: str | None = None
    principal: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)


class EventSink(Protocol):
    """Receives redacted, JSON-ready records. Must not raise.

    A sink that takes only some events may also define `accepts(kind, action)`
    (`Filter`; it must not raise either): the emitter asks every such sink before it
    builds a record, and an event no sink accepts is neither stamped nor redacted.
    It is given the event's kind and action only, Bastion's own constants: no sink
    sees a field of an event before it is redacted. A sink without `accepts` takes
    every event.
    """

    def handle(self, record: Mapping[str, object]) -> None: ...


Filter = Callable[[str, Action], bool]
"""A sink's `accepts(kind, action)`: whether it wants a record of such an event."""


def _normalise_key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


class Redactor:
    """Replaces sensitive values and bounds the size of everything else."""

    def __init__(
        self, extra_fields: Iterable[str] = (), pii: Iterable[PIIKind] = ("email", "card")
    ) -> None:
        self._exact = SENSITIVE_KEYS | {_normalise_key(name) for name in extra_fields}
        self._pii = tuple(dict.fromkeys(pii))

    def scrub_pii(self, text: str) -> str:
        for kind in self._pii:
            pattern = PII_PATTERNS[kind]
            if kind == "card":
                text = pattern.sub(_redact_card, text)
            else:
                text = pattern.sub(f"[redacted-{kind.replace('_', '-')}]", text)
        return text

    def is_sensitive(self, key: str) -> bool:
        name = _normalise_key(key)
        return name in self._exact or any(part in name for part in SENSITIVE_KEY_FRAGMENTS)

    def clean(self, value: object, depth: int = 0) -> object:
        """Return a JSON-ready copy of `value` with sensitive entries redacted."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(value, str):
            if len(value) > MAX_VALUE_CHARS:
                value = value[:MAX_VALUE_CHARS] + "..."
            value = scrub_text(value)
            return self.scrub_pii(value) if self._pii else value
        if depth >= _MAX_DEPTH:
            return "..."
        if isinstance(value, Mapping):
            cleaned: dict[str, object] = {}
            for key, item in itertools.islice(value.items(), MAX_ITEMS):
                name = str(key)
                safe = REDACTED if self.is_sensitive(name) else self.clean(item, depth + 1)
                cleaned[name[:MAX_VALUE_CHARS]] = safe
            if len(value) > MAX_ITEMS:
                cleaned["..."] = f"{len(value) - MAX_ITEMS} more"
            return cleaned
        if isinstance(value, list | tuple):
            if len(value) == 2 and isinstance(value[0], str | bytes):
                # A (name, value) header pair: redact by the header's name.
                name = value[0].decode("latin-1") if isinstance(value[0], bytes) else value[0]
                if self.is_sensitive(name):
                    return [self.clean(name, depth + 1), REDACTED]
            items = [self.clean(item, depth + 1) for item in value[:MAX_ITEMS]]
            return [*items, "..."] if len(value) > MAX_ITEMS else items
        return self.clean(str(value), depth)


class LoggingSink:
    """Writes each record as one JSON line to a stdlib logger (the default sink)."""

    def __init__(self, logger_name: str = "bastion.security") -> None:
        self.logger = logging.getLogger(logger_name)

    def accepts(self, kind: str, action: Action) -> bool:
        """Whether the logger writes such an event now (its level may change at any
        time, so this is asked per event): under the standard library's default
        level, WARNING, an allowed event is not built only to be dropped. A subclass
        with a `handle` of its own takes every event (it may not log at all)."""
        if type(self).handle is not LoggingSink.handle:
            return True
        return self.logger.isEnabledFor(logging.INFO if action == "allowed" else logging.WARNING)

    def handle(self, record: Mapping[str, object]) -> None:
        level = logging.INFO if record.get("action") == "allowed" else logging.WARNING
        if self.logger.isEnabledFor(level):
            self.logger.log(level, json.dumps(record, ensure_ascii=True, sort_keys=True))


class EventEmitter:
    """Stamps, redacts and fans an event out to every sink."""

    def __init__(
        self,
        sinks: Iterable[EventSink] | None = None,
        *,
        redactor: Redactor | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.sinks = tuple(sinks) if sinks is not None else (LoggingSink(),)
        self.redactor = redactor or Redactor()
        self._clock = clock or _utc_now

    @property
    def sinks(self) -> tuple[EventSink, ...]:
        """The sinks every record goes to; assign a new tuple to add one (`Shield`
        adds the jail's)."""
        return self._sinks

    @sinks.setter
    def sinks(self, sinks: Iterable[EventSink]) -> None:
        self._sinks: tuple[EventSink, ...] = tuple(sinks)
        # Each sink's `accepts`, or None for a sink that takes every event: looked
        # up once here, not per event.
        self._filters: tuple[Filter | None, ...] = tuple(map(_filter_of, self._sinks))

    @classmethod
    def from_settings(cls, settings: EventSettings) -> EventEmitter:
        return cls(
            (LoggingSink(settings.logger_name),),
            redactor=Redactor(settings.redact_fields, settings.redact_pii),
        )

    def wants(self, kind: str, action: Action) -> bool:
        """Whether any sink takes an event of this kind and action: a layer asks
        before it gathers an event's facts (`bastion.responses.Refuser.event`)."""
        return any(accepts is None or accepts(kind, action) for accepts in self._filters)

    def emit(self, event: SecurityEvent) -> None:
        """Hand a record of `event` to every sink that accepts it; with none (no sink,
        or none that wants this kind and action), no record is stamped or redacted."""
        kind, action = event.kind, event.action
        takers = [
            sink
            for sink, accepts in zip(self._sinks, self._filters, strict=True)
            if accepts is None or accepts(kind, action)
        ]
        if not takers:
            return
        record = self.to_record(event)
        for sink in takers:
            sink.handle(record)

    def to_record(self, event: SecurityEvent) -> dict[str, object]:
        clean = self.redactor.clean
        record: dict[str, object] = {
            "timestamp": self._clock().isoformat(timespec="milliseconds"),
            "kind": event.kind,
            "reason": event.reason,
            "layer": event.layer,
            "action": event.action,
        }
        for name in ("status", "request_id", "client", "method", "path", "principal"):
            value = getattr(event, name)
            if value is not None:
                record[name] = clean(value)
        if event.details:
            record["details"] = clean(event.details)
        return record


def _filter_of(sink: EventSink) -> Filter | None:
    """The sink's `accepts`; None when it has none. An attribute of that name that
    cannot be called as `accepts(kind, action)` is some other thing of the sink's
    (checked here, once, not as events come): that sink takes every event."""
    accepts = getattr(sink, "accepts", None)
    if not callable(accepts):
        return None
    try:
        inspect.signature(accepts).bind(KIND_SYS_STARTUP, "allowed")
    except (TypeError, ValueError):  # another signature, or none to be read
        return None
    return cast(Filter, accepts)


def _utc_now() -> datetime:
    return datetime.now(UTC)


_default_emitter: EventEmitter | None = None


def default_emitter() -> EventEmitter:
    """The emitter a layer uses when it is built alone, without `Shield`."""
    global _default_emitter
    if _default_emitter is None:
        _default_emitter = EventEmitter()
    return _default_emitter
