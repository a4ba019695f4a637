"""Passwords: argon2id parameters, rehash on login, equal work for unknown users."""

from __future__ import annotations

import statistics
import time

import pytest
from argon2 import PasswordHasher as Argon2

from bastion.auth.passwords import PasswordHasher
from bastion.auth.settings import PasswordSettings

HASHER = PasswordHasher()


def test_hash_is_argon2id_with_owasp_parameters() -> None:
    stored = HASHER.hash("correct horse")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert HASHER.verify_and_update(stored, "correct horse").ok
    assert not HASHER.verify_and_update(stored, "wrong").ok


def test_rehash_when_parameters_change() -> None:
    old = Argon2(time_cost=2, memory_cost=8192, parallelism=1).hash("pw")
    check = HASHER.verify_and_update(old, "pw")
    assert check.ok
    assert check.new_hash is not None
    assert "m=19456" in check.new_hash
    assert HASHER.verify_and_update(check.new_hash, "pw").new_hash is None


def test_weak_parameters_refused() -> None:
    with pytest.raises(ValueError, match="memory_cost_kib"):
        PasswordSettings(memory_cost_kib=4096)


def test_unknown_user_costs_the_same_as_wrong_password() -> None:
    stored = HASHER.hash("right")

    def timed(stored_hash: str | None) -> float:
        start = time.perf_counter()
        assert not HASHER.verify_and_update(stored_hash, "guess").ok
        return time.perf_counter() - start

    unknown, wrong = [], []
    for _ in range(30):  # interleaved, so drift in machine load hits both alike
        unknown.append(timed(None))
        wrong.append(timed(stored))
    a, b = statistics.median(unknown), statistics.median(wrong)
    assert abs(a - b) / max(a, b) < 0.25, (a, b)
