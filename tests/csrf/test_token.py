"""Tokens: masking, signing, session binding, expiry and key rotation."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.csrf import (
    REASON_TOKEN_EXPIRED,
    REASON_TOKEN_INVALID,
    REASON_TOKEN_MISSING,
    REASON_TOKEN_WRONG_SESSION,
    CSRFTokens,
)
from bastion.csrf.tokens import MAX_TOKEN_CHARS, mask, session_binding, unmask
from bastion.exceptions import ConfigurationError
from bastion.sessions import Session
from tests.csrf.harness import CSRF_KEY, NEW_CSRF_KEY
from tests.support.clock import FakeClock as Clock

MAX_AGE = 3600


def tokens(clock: Clock, *keys: str) -> CSRFTokens:
    return CSRFTokens(keys or (CSRF_KEY,), max_age_seconds=MAX_AGE, clock=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_round_trip(clock: Clock) -> None:
    issuer = tokens(clock)
    assert issuer.check(issuer.issue("secret-a"), "secret-a") == ""


def test_every_issue_is_masked_differently(clock: Clock) -> None:
    issuer = tokens(clock)
    issued = {issuer.issue("secret-a") for _ in range(50)}
    assert len(issued) == 50
    assert all(issuer.check(token, "secret-a") == "" for token in issued)
    # The same signed value underneath: only the pad differs.
    assert len({unmask(token) for token in issued}) == 1


def test_token_is_url_safe_and_bounded(clock: Clock) -> None:
    token = tokens(clock).issue("secret-a")
    assert token.replace("-", "").replace("_", "").isalnum()
    assert len(token) < MAX_TOKEN_CHARS


def test_token_does_not_carry_the_session_secret(clock: Clock) -> None:
    secret = "the-session-secret-value"
    signed = unmask(tokens(clock).issue(secret))
    assert signed is not None
    assert secret.encode() not in signed
    assert signed.startswith(session_binding(secret) + b".")


def test_other_sessions_token(clock: Clock) -> None:
    issuer = tokens(clock)
    assert issuer.check(issuer.issue("secret-a"), "secret-b") == REASON_TOKEN_WRONG_SESSION


def test_token_without_a_session(clock: Clock) -> None:
    issuer = tokens(clock)
    assert issuer.check(issuer.issue("secret-a"), None) == REASON_TOKEN_WRONG_SESSION


def test_expired_token(clock: Clock) -> None:
    issuer = tokens(clock)
    token = issuer.issue("secret-a")
    clock.now += MAX_AGE
    assert issuer.check(token, "secret-a") == ""
    clock.now += 1
    assert issuer.check(token, "secret-a") == REASON_TOKEN_EXPIRED


def test_token_from_the_future_is_refused(clock: Clock) -> None:
    issuer = tokens(clock)
    clock.now += 600
    token = issuer.issue("secret-a")
    clock.now -= 600
    assert issuer.check(token, "secret-a") != ""


def test_key_rotation(clock: Clock) -> None:
    old = tokens(clock, CSRF_KEY).issue("secret-a")
    # A new key in front: old tokens still verify, new ones are signed with it.
    rotated = tokens(clock, NEW_CSRF_KEY, CSRF_KEY)
    assert rotated.check(old, "secret-a") == ""
    new = rotated.issue("secret-a")
    assert tokens(clock, NEW_CSRF_KEY).check(new, "secret-a") == ""
    # The old key removed: everything it signed is revoked.
    assert tokens(clock, NEW_CSRF_KEY).check(old, "secret-a") == REASON_TOKEN_INVALID


def test_purpose_separates_signers(clock: Clock) -> None:
    from bastion.signing import Signer

    other_purpose = Signer([CSRF_KEY], purpose="websocket", clock=clock)
    forged = mask(other_purpose.sign(session_binding("secret-a")))
    assert tokens(clock).check(forged, "secret-a") == REASON_TOKEN_INVALID


def test_no_keys_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        CSRFTokens([], max_age_seconds=MAX_AGE)


def flip(token: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


# The masked token is pad || (binding "." timestamp "." signature) XOR pad; the
# signature (HMAC-SHA256, 43 base64 characters) is last, the timestamp before it.
# "signature-last" flips the second-to-last character: the last one carries two
# padding bits that base64 decoding ignores, so flipping those changes no byte of
# the signature (malleable text, not a forgery).
@pytest.mark.parametrize(
    "index",
    [0, 5, -2, -20, -47, -60],
    ids=["pad-first", "pad", "signature-last", "signature", "timestamp", "binding"],
)
def test_tampered_token(clock: Clock, index: int) -> None:
    issuer = tokens(clock)
    token = issuer.issue("secret-a")
    assert issuer.check(flip(token, index), "secret-a") == REASON_TOKEN_INVALID


def test_unmasked_signed_value_is_not_a_token(clock: Clock) -> None:
    issuer = tokens(clock)
    signed = unmask(issuer.issue("secret-a"))
    assert signed is not None
    bare = base64.urlsafe_b64encode(signed).rstrip(b"=").decode()
    assert issuer.check(bare, "secret-a") == REASON_TOKEN_INVALID


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param(None, REASON_TOKEN_MISSING, id="absent"),
        pytest.param("", REASON_TOKEN_MISSING, id="empty"),
        pytest.param("A", REASON_TOKEN_INVALID, id="one-char"),
        pytest.param("AA", REASON_TOKEN_INVALID, id="one-byte"),
        pytest.param("AAAA", REASON_TOKEN_INVALID, id="zeros"),
        pytest.param("not a token!", REASON_TOKEN_INVALID, id="not-base64url"),
        pytest.param("abc=", REASON_TOKEN_INVALID, id="padding"),
        pytest.param("é" * 10, REASON_TOKEN_INVALID, id="non-ascii"),
        pytest.param("A" * (MAX_TOKEN_CHARS + 1), REASON_TOKEN_INVALID, id="too-long"),
    ],
)
def test_malformed_tokens(clock: Clock, token: str | None, reason: str) -> None:
    assert tokens(clock).check(token, "secret-a") == reason


@given(st.text(max_size=600))
def test_check_never_raises(untrusted: str) -> None:
    issuer = CSRFTokens([CSRF_KEY], max_age_seconds=MAX_AGE)
    assert issuer.check(untrusted, "secret-a") in (REASON_TOKEN_MISSING, REASON_TOKEN_INVALID)


@given(st.binary(max_size=200))
def test_mask_round_trip(signed: bytes) -> None:
    if signed:
        assert unmask(mask(signed)) == signed


# --- With real sessions ------------------------------------------------------------


def test_token_after_session_rotation(clock: Clock) -> None:
    issuer = tokens(clock)
    session = Session()
    token = issuer.issue(session.csrf_secret())
    assert issuer.check(token, session.csrf_secret()) == ""
    session.rotate()
    assert issuer.check(token, session.csrf_secret()) == REASON_TOKEN_WRONG_SESSION


def test_token_after_login(clock: Clock) -> None:
    issuer = tokens(clock)
    session = Session()
    token = issuer.issue(session.csrf_secret())
    session.login("alice")
    assert issuer.check(token, session.csrf_secret()) == REASON_TOKEN_WRONG_SESSION


def test_two_sessions_never_share_tokens(clock: Clock) -> None:
    issuer = tokens(clock)
    first, second = Session(), Session()
    assert issuer.check(issuer.issue(first.csrf_secret()), second.csrf_secret()) != ""
