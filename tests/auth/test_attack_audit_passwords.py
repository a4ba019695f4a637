"""Password verification with input that has no UTF-8 form."""

from __future__ import annotations

import pytest

from bastion.auth.passwords import PasswordHasher

HASHER = PasswordHasher()
STORED = HASHER.hash("correct horse")


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        pytest.param("correct horse", True, id="password-ok"),
        pytest.param("\u00e9t\u00e9 \U0001f40e", False, id="password-non-ascii-wrong"),
        pytest.param("\ud800", False, id="password-lone-surrogate"),
        pytest.param("correct horse\udfff", False, id="password-trailing-surrogate"),
    ],
)
@pytest.mark.parametrize("known_user", [True, False], ids=["known-user", "unknown-user"])
def test_password_without_utf8_form_is_a_wrong_password(
    password: str, ok: bool, known_user: bool
) -> None:
    # A JSON body can carry "\ud800"; it must be a wrong password, never a 500.
    check = HASHER.verify_and_update(STORED if known_user else None, password)
    assert check.ok == (ok and known_user)
    assert check.new_hash is None
