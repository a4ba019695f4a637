"""Password hashing: argon2id through argon2-cffi, with rehash and equal-time misses.

Threats and defences:

* Offline cracking of a stolen hash table: argon2id, memory-hard, with at least
  OWASP's parameters (m=19 MiB, t=2, p=1, the cheat sheet's first listed
  configuration; `PasswordSettings` refuses less). 19 MiB per hash makes GPU
  cracking costly, while one verification stays in the tens of milliseconds, which
  bounds the CPU an attacker can burn per login attempt (rate limiting does the rest).
* Outdated parameters: `verify_and_update` returns a new hash when the stored one was
  made with other parameters, so hashes upgrade as users log in.
* User enumeration by timing: for an unknown user the caller passes `None`, and we
  verify against a dummy hash made with the current parameters at construction, so
  both misses do the same argon2 work.

Not covered: password policy (length, breached-password checks) and rate limiting.

References: OWASP Password Storage Cheat Sheet
https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html ;
RFC 9106 (Argon2); argon2-cffi https://argon2-cffi.readthedocs.io/
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bastion.auth.settings import PasswordSettings


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    ok: bool
    new_hash: str | None = None  # set when the caller must store an upgraded hash


class PasswordHasher:
    """Hash and verify passwords with argon2id."""

    def __init__(self, settings: PasswordSettings | None = None) -> None:
        self.settings = settings or PasswordSettings()
        self._argon2 = _Argon2(
            time_cost=self.settings.time_cost,
            memory_cost=self.settings.memory_cost_kib,
            parallelism=self.settings.parallelism,
            type=Type.ID,
        )
        # Verified against when the user does not exist: same parameters, same work.
        self._dummy_hash = self._argon2.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._argon2.hash(password)

    def verify_and_update(self, stored_hash: str | None, password: str) -> PasswordCheck:
        """Check `password`; pass `stored_hash=None` for an unknown user."""
        target = stored_hash if stored_hash is not None else self._dummy_hash
        try:
            self._argon2.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return PasswordCheck(False)
        except UnicodeEncodeError:
            # A lone surrogate (`"\ud800"` in a JSON body) has no UTF-8 form, so no
            # hash was ever made of it: a wrong password, not a server error. It
            # fails before any argon2 work for known and unknown users alike.
            return PasswordCheck(False)
        if stored_hash is None:  # pragma: no cover - the dummy password is random
            return PasswordCheck(False)
        if self._argon2.check_needs_rehash(stored_hash):
            return PasswordCheck(True, self._argon2.hash(password))
        return PasswordCheck(True)
