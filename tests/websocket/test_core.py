"""The guard's pure decisions and its settings, tested directly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.hosts import Origin
from bastion.stores.gcra import GCRALimit, gcra_step
from bastion.websocket import (
    REASON_BEARER_MALFORMED,
    REASON_FOREIGN_ORIGIN,
    REASON_NO_ORIGIN_WITH_SESSION,
    REASON_NULL_ORIGIN,
    REASON_ORIGIN_MALFORMED,
    REASON_TICKET_EXPIRED,
    REASON_TICKET_INVALID,
    OriginPolicy,
    WebSocketSettings,
    WebSocketTickets,
    check_origin,
    choose_subprotocol,
    split_bearer,
)
from bastion.websocket.core import own_origin, take_token

OWN = Origin("https", "app.example", 443)
POLICY = OriginPolicy(frozenset({Origin("https", "partner.example", 443)}), True)

ORIGIN_CASES = [
    pytest.param([b"https://app.example"], True, "", id="ws-same-origin-ok"),
    pytest.param([b"https://APP.example:443"], True, "", id="ws-same-origin-spelling-ok"),
    pytest.param([b"https://partner.example"], True, "", id="ws-allowed-origin-ok"),
    pytest.param([], False, "", id="ws-no-origin-without-cookie-ok"),
    pytest.param([b"https://evil.example"], True, REASON_FOREIGN_ORIGIN, id="ws-foreign-origin"),
    pytest.param([b"http://app.example"], True, REASON_FOREIGN_ORIGIN, id="ws-scheme-downgrade"),
    pytest.param([b"https://app.example:8443"], True, REASON_FOREIGN_ORIGIN, id="ws-other-port"),
    pytest.param(
        [b"https://app.example.evil.net"], True, REASON_FOREIGN_ORIGIN, id="ws-suffix-trick"
    ),
    pytest.param([b"null"], True, REASON_NULL_ORIGIN, id="ws-null-origin"),
    pytest.param([b"app.example"], True, REASON_ORIGIN_MALFORMED, id="ws-origin-malformed"),
    pytest.param(
        [b"https://app.example", b"https://app.example"],
        True,
        REASON_ORIGIN_MALFORMED,
        id="ws-origin-twice",
    ),
    pytest.param([], True, REASON_NO_ORIGIN_WITH_SESSION, id="ws-no-origin-with-session-cookie"),
]


@pytest.mark.parametrize(("origins", "cookie", "reason"), ORIGIN_CASES)
def test_check_origin(origins: list[bytes], cookie: bool, reason: str) -> None:
    assert check_origin(origins, OWN, POLICY, cookie_authenticated=cookie) == reason


def test_same_origin_can_be_turned_off() -> None:
    strict = OriginPolicy(frozenset(), False)
    verdict = check_origin([b"https://app.example"], OWN, strict, cookie_authenticated=True)
    assert verdict == REASON_FOREIGN_ORIGIN


def test_own_origin_maps_ws_schemes_and_default_ports() -> None:
    assert own_origin("wss", "app.example", None, None) == OWN
    assert own_origin("ws", None, None, b"127.0.0.1:8000") == Origin("http", "127.0.0.1", 8000)
    assert own_origin("ws", None, None, b"bad/host") is None


def test_bearer_is_taken_out_and_never_echoed() -> None:
    offer = split_bearer(["chat.v1", "bearer", "secret-token"])
    assert offer.untrusted_token == "secret-token"
    assert offer.subprotocols == ("chat.v1",)
    assert choose_subprotocol(None, offer) == "bearer"
    assert choose_subprotocol("secret-token", offer) == "bearer"
    assert choose_subprotocol("chat.v1", offer) == "chat.v1"
    assert split_bearer(["bearer"]).reason == REASON_BEARER_MALFORMED
    assert choose_subprotocol("chat.v1", split_bearer(["chat.v1"])) == "chat.v1"


def test_tickets_expire_and_refuse_forgery() -> None:
    now = [1_000_000.0]
    tickets = WebSocketTickets(["k" * 32], max_age_seconds=30, clock=lambda: now[0])
    ticket = tickets.issue("alice")
    assert tickets.issue("alice") != ticket
    assert tickets.check(ticket).user_id == "alice"
    other = WebSocketTickets(["x" * 32], max_age_seconds=30, clock=lambda: now[0])
    assert other.check(ticket).reason == REASON_TICKET_INVALID
    assert tickets.check(ticket + "x").reason == REASON_TICKET_INVALID
    now[0] += 31
    assert tickets.check(ticket).reason == REASON_TICKET_EXPIRED


@pytest.mark.parametrize(
    "values",
    [
        {"allowed_origins": ["*"]},
        {"allowed_origins": ["null"]},
        {"allowed_origins": ["ftp://x.example"]},
        {"routes": {"ws/no-slash": "public"}},
        {"routes": {"/ws/*": "open"}},
        {"max_message_bytes": 0},
        {"unknown_option": 1},
    ],
)
def test_settings_refuse_bad_values(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        WebSocketSettings.model_validate(values)


def test_settings_store_origins_normalised() -> None:
    settings = WebSocketSettings(allowed_origins=("HTTPS://Partner.Example:443",))
    assert settings.allowed_origins == ("https://partner.example",)


@given(
    tat_us=st.none() | st.integers(0, 10**12),
    now_us=st.integers(0, 10**12),
    interval_us=st.integers(1, 10**9),
    tolerance_us=st.integers(0, 10**10),
    cost=st.integers(0, 3),
)
def test_take_token_is_the_gcra_step(
    tat_us: int | None, now_us: int, interval_us: int, tolerance_us: int, cost: int
) -> None:
    """The per-message bucket keeps `gcra_step`'s verdict and TAT, without its result."""
    limit = GCRALimit(interval_us, tolerance_us, cost)
    step = gcra_step(tat_us, now_us, limit)
    assert take_token(tat_us, now_us, limit) == (
        step.allowed,
        step.tat_us if step.allowed else tat_us,
    )
