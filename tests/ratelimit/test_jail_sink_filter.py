"""The jail's sink declares the events it takes (`accepts`), so an event that cannot
count toward a ban builds no record for it. Its filter must never drop one that can:
it is held to `counts_toward_ban`, the decision on the record."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion.events import EventEmitter, SecurityEvent
from bastion.ratelimit.jail import Jail, JailSink, counts_toward_ban
from bastion.ratelimit.reasons import REASON_BANNED
from bastion.stores.memory import MemoryStore

ACTIONS = st.sampled_from(["blocked", "monitored", "allowed"])
KINDS = st.sampled_from(
    ["excess_rate_limit_exceeded", "authn_login_fail", "sys_availability", "sys_crash", "closed"]
)


def _sink() -> JailSink:
    return JailSink(Jail(MemoryStore()))


@given(
    kind=KINDS,
    action=ACTIONS,
    status=st.none() | st.sampled_from([200, 308, 400, 403, 429, 503]),
    reason=st.sampled_from(["rate-limited", REASON_BANNED, "bad-token"]),
    client=st.none() | st.just("203.0.113.9"),
)
def test_the_filter_keeps_every_event_that_can_count_toward_a_ban(
    kind: str, action: str, status: int | None, reason: str, client: str | None
) -> None:
    event = SecurityEvent(
        kind=kind,
        reason=reason,
        layer="ratelimit",
        action=action,  # type: ignore[arg-type]  # drawn from the Action literals
        status=status,
        client=client,
    )
    record = EventEmitter([]).to_record(event)
    if counts_toward_ban(record):
        assert _sink().accepts(event.kind, event.action)


def test_the_filter_refuses_what_never_counts() -> None:
    sink = _sink()
    assert sink.accepts("excess_rate_limit_exceeded", "blocked")
    assert not sink.accepts("closed", "allowed")
    assert not sink.accepts("excess_rate_limit_exceeded", "monitored")
    assert not sink.accepts("sys_availability", "blocked")
