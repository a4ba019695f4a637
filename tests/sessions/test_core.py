from __future__ import annotations

import pytest

from bastion.sessions import (
    EXPIRED_GRACE_SECONDS,
    REASON_ABSOLUTE,
    REASON_IDLE,
    SessionRecord,
    SessionSettings,
    build_cookie,
    expiry_reason,
    looks_like_session_id,
    new_session_id,
    read_cookie,
    store_key,
    ttl_for,
)

SETTINGS = SessionSettings(idle_timeout_seconds=600, absolute_timeout_seconds=3600)


def test_ids_are_256_bit_and_distinct() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(looks_like_session_id(i) and len(i) == 43 for i in ids)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="session-id-empty"),
        pytest.param("a", id="session-id-one-char"),
        pytest.param("x" * 42, id="session-id-short"),
        pytest.param("x" * 44, id="session-id-long"),
        pytest.param("x" * 42 + "!", id="session-id-bad-char"),
        pytest.param("../" * 14 + "x", id="session-id-path"),
    ],
)
def test_malformed_ids_never_reach_the_store(value: str) -> None:
    assert not looks_like_session_id(value)


def test_store_key_hides_the_id() -> None:
    session_id = new_session_id()
    assert session_id not in store_key(session_id)
    assert store_key(session_id).startswith("session:")


@pytest.mark.parametrize(
    ("created", "last_seen", "now", "expected"),
    [
        (0, 0, 599, None),
        (0, 0, 600, REASON_IDLE),
        (0, 3000, 3599, None),
        (0, 3599, 3600, REASON_ABSOLUTE),
    ],
)
def test_expiry(created: float, last_seen: float, now: float, expected: str | None) -> None:
    record = SessionRecord(created, last_seen, None, None, {})
    assert expiry_reason(record, now, SETTINGS) == expected


def test_ttl_is_the_first_timeout_to_fall_plus_grace() -> None:
    assert ttl_for(SessionRecord(0, 0, None, None, {}), 0, SETTINGS) == 600 + EXPIRED_GRACE_SECONDS
    assert ttl_for(SessionRecord(0, 3300, None, None, {}), 3300, SETTINGS) == (
        300 + EXPIRED_GRACE_SECONDS
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"v": 2}',
        b'{"v": 1, "c": 0}',
        b'{"v":1,"c":0,"s":0,"u":null,"x":null,"d":[]}',
    ],
)
def test_corrupt_records_are_none(raw: bytes) -> None:
    assert SessionRecord.decode(raw) is None


def test_record_round_trip() -> None:
    record = SessionRecord(1.0, 2.0, "alice", "secret", {"k": [1, "v"]})
    assert SessionRecord.decode(record.encode()) == record


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"cookie", b"a=1; s=abc")], "abc"),
        ([(b"cookie", b"a=1"), (b"cookie", b"s=abc")], "abc"),
        ([(b"cookie", b"s=abc; s=def")], None),
        ([(b"cookie", b"s=abc"), (b"cookie", b"s=def")], None),
        ([(b"cookie", b"xs=abc")], None),
        ([], None),
    ],
    ids=["one", "two-lines", "duplicate-tossed", "duplicate-lines", "suffix-name", "none"],
)
def test_read_cookie(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert read_cookie(headers, b"s") == expected


def test_cookie_flags() -> None:
    secure = build_cookie("__Host-session", "v", SessionSettings())
    assert secure == b"__Host-session=v; Path=/; HttpOnly; Secure; SameSite=Lax"
    dev = build_cookie("session", "v", SessionSettings(insecure_cookie_over_http=True))
    assert b"Secure" not in dev
    assert build_cookie("s", "", SessionSettings(), delete=True).endswith(b"Max-Age=0")


def test_development_cookie_name_drops_the_prefix() -> None:
    assert SessionSettings().effective_cookie_name == "__Host-session"
    assert SessionSettings(insecure_cookie_over_http=True).effective_cookie_name == "session"


def test_idle_longer_than_absolute_is_refused() -> None:
    with pytest.raises(ValueError, match="idle_timeout_seconds"):
        SessionSettings(idle_timeout_seconds=7200, absolute_timeout_seconds=3600)
