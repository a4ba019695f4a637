"""The roles a bound ticket carries: what `WebSocketTickets` writes and accepts.

A ticket bound to a session carries the roles the authentication layer found in
that session, so the route policy's `roles:` rules can be checked once the guard has
verified the ticket (`test_policy_deferral` runs them through `Shield`). Roles
travel only beside a session, whose rotation (`change_roles`) ends the ticket; the
checks below are defence in depth behind the signature.
"""

from __future__ import annotations

import pytest

from bastion.websocket import WebSocketTickets
from bastion.websocket import reasons as r
from bastion.websocket.tickets import MAX_TICKET_CHARS
from tests.support.clock import FakeClock
from tests.websocket.test_ticket_session import BOUND, KEY, NONCE, signed_payload


@pytest.mark.parametrize(
    ("payload", "roles", "reason"),
    [
        pytest.param(["alice", NONCE, BOUND], frozenset(), "", id="ws-ticket-without-roles-ok"),
        pytest.param(
            ["alice", NONCE, BOUND, ["admin", "user"]],
            frozenset({"admin", "user"}),
            "",
            id="ws-ticket-bound-with-roles-ok",
        ),
        pytest.param(
            ["alice", NONCE, None, ["admin"]],
            None,
            r.REASON_TICKET_INVALID,
            id="ws-ticket-roles-without-session",
        ),
        pytest.param(
            ["alice", NONCE, BOUND, []], None, r.REASON_TICKET_INVALID, id="ws-ticket-roles-empty"
        ),
        pytest.param(
            ["alice", NONCE, BOUND, "admin"],
            None,
            r.REASON_TICKET_INVALID,
            id="ws-ticket-roles-not-a-list",
        ),
        pytest.param(
            ["alice", NONCE, BOUND, ["admin", ""]],
            None,
            r.REASON_TICKET_INVALID,
            id="ws-ticket-roles-empty-name",
        ),
        pytest.param(
            ["alice", NONCE, BOUND, ["admin", 5]],
            None,
            r.REASON_TICKET_INVALID,
            id="ws-ticket-roles-not-text",
        ),
        pytest.param(
            ["alice", NONCE, BOUND, ["admin"], "x"],
            None,
            r.REASON_TICKET_INVALID,
            id="ws-ticket-five-elements",
        ),
    ],
)
def test_ticket_roles(payload: object, roles: frozenset[str] | None, reason: str) -> None:
    clock = FakeClock()
    tickets = WebSocketTickets([KEY], max_age_seconds=30, clock=clock)
    checked = tickets.check(signed_payload(clock, payload))
    assert checked.reason == reason
    if roles is None:
        assert (checked.user_id, checked.roles) == (None, frozenset())
    else:
        assert (checked.user_id, checked.session_key, checked.roles) == ("alice", BOUND, roles)


def test_issue_writes_roles_beside_a_session_only() -> None:
    tickets = WebSocketTickets([KEY], max_age_seconds=30, clock=FakeClock())
    checked = tickets.check(tickets.issue("alice", session_key=BOUND, roles=["user", "admin"]))
    assert checked.roles == frozenset({"admin", "user"})
    assert tickets.check(tickets.issue("alice", session_key=BOUND)).roles == frozenset()
    with pytest.raises(ValueError, match="bound to a session"):
        tickets.issue("alice", roles=["admin"])
    with pytest.raises(ValueError, match="non-empty"):
        tickets.issue("alice", session_key=BOUND, roles=[""])
    with pytest.raises(ValueError, match="too long"):
        tickets.issue("alice", session_key=BOUND, roles=["r" * MAX_TICKET_CHARS])
    # A few dozen role names fit beside a user id of a few hundred characters.
    many = [f"role-{i:02d}-of-this-application" for i in range(30)]
    assert tickets.check(
        tickets.issue("a" * 300, session_key=BOUND, roles=many)
    ).roles == frozenset(many)
