"""Login brute-force protection: growing delays, then lockout, per account and client.

Threat: password guessing against one account (brute force), and the defence turned
into a weapon: an attacker who fails on purpose to lock a real user out.
Defence: failures are counted twice, per (account, client network) and per account.

* Per (account, client): after each failure the pair must wait before its next try
  (exponential backoff: `base_delay * 2**(failures-1)`, capped), and at
  `lockout_after` failures the pair is locked out for `lockout_seconds`. Only that
  client is locked out of that account: the real user, elsewhere, is not.
* Per account: past the HIGHER `challenge_after` threshold the verdict only asks for
  a challenge (`requires_challenge`: a second factor or a CAPTCHA, the app decides).
  It never refuses, since a shared account-wide gate is one an attacker can hold
  shut for everyone by failing faster than the real user tries.
* A success from a client clears that client's failures for the account.

Delays are returned as `retry_after_seconds`; nothing sleeps in the request path,
so a guessing client costs a store read, not a held worker.

Not covered: guessing many accounts from one client (credential stuffing): a
rate on the login route (`"POST /login": ["5/minute"]`) and the ban list cover it.
Nor distributed guessing at one account from a botnet below every per-client
threshold: `requires_challenge` is the signal the app must act on.

References: OWASP Authentication Cheat Sheet, "Account Lockout"
https://cheatsheetseries.owasp.org/cheatsheets/Authentication_Cheat_Sheet.html ;
NIST SP 800-63B section 5.2.2 (rate limiting, at most 100 consecutive failures).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

from bastion.ratelimit.keys import ClientGrouping, client_key, hash_part
from bastion.ratelimit.reasons import REASON_LOGIN_LOCKED, REASON_LOGIN_THROTTLED
from bastion.stores import Store

# OWASP suggests locking after a few failures; 5 leaves room for typos and a
# forgotten caps lock, and is per client, so it never locks the real user out.
DEFAULT_LOCKOUT_AFTER: Final = 5
# 15 minutes: a pair locked out can try 4 times an hour, 96 a day, under NIST's 100.
DEFAULT_LOCKOUT_SECONDS: Final = 900.0
# Backoff 1, 2, 4, 8 s before the lockout: invisible to a human, fatal to a script.
DEFAULT_BASE_DELAY_SECONDS: Final = 1.0
DEFAULT_MAX_DELAY_SECONDS: Final = 60.0
# Account-wide: four lockouts' worth of failures. Only asks for a challenge.
DEFAULT_CHALLENGE_AFTER: Final = 20
# Failures are forgotten an hour after the first: long enough to span a lockout.
DEFAULT_FAILURE_WINDOW_SECONDS: Final = 3600.0

_LOCKED: Final = b"locked"


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """Thresholds of the login guard (validated)."""

    lockout_after: int = DEFAULT_LOCKOUT_AFTER
    lockout_seconds: float = DEFAULT_LOCKOUT_SECONDS
    base_delay_seconds: float = DEFAULT_BASE_DELAY_SECONDS
    max_delay_seconds: float = DEFAULT_MAX_DELAY_SECONDS
    challenge_after: int = DEFAULT_CHALLENGE_AFTER
    failure_window_seconds: float = DEFAULT_FAILURE_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if self.lockout_after < 1:
            raise ValueError("lockout_after must be at least 1")
        if self.challenge_after <= self.lockout_after:
            raise ValueError("challenge_after must be higher than lockout_after")
        if not 0 < self.base_delay_seconds <= self.max_delay_seconds:
            raise ValueError("base_delay_seconds must be positive and <= max_delay_seconds")
        if self.lockout_seconds <= 0 or self.failure_window_seconds <= 0:
            raise ValueError("lockout_seconds and failure_window_seconds must be positive")


@dataclass(frozen=True, slots=True)
class LoginVerdict:
    """Whether an attempt may proceed; `reason` is a REASON_* constant, "" if allowed."""

    allowed: bool
    reason: str = ""
    retry_after_seconds: float = 0.0
    requires_challenge: bool = False


def delay_after_failure(failures: int, policy: LoginPolicy) -> tuple[str, float]:
    """What one more failure costs the pair: (reason, seconds to wait).

    Pure: the backoff schedule and the lockout, checked by the tests as a table.
    """
    if failures >= policy.lockout_after:
        return REASON_LOGIN_LOCKED, policy.lockout_seconds
    exponent = min(failures - 1, 62)  # bounded: 2**62 is far past any cap
    return REASON_LOGIN_THROTTLED, min(
        policy.max_delay_seconds, policy.base_delay_seconds * 2**exponent
    )


def normalise_account(untrusted_account: str) -> str:
    """One account, however the client spells it (`Alice ` is `alice`)."""
    return untrusted_account.strip().casefold()


class LoginGuard:
    """Counts login failures in the store and says when a client must wait.

        guard = LoginGuard(store)
        verdict = await guard.check(username, client_host)
        if not verdict.allowed: answer 429 with Retry-After: verdict.retry_after_seconds
        ... verify the password ...
        await (guard.record_success if ok else guard.record_failure)(username, client_host)

    Store layout (all keys hashed and bounded): `login:a:<account>` counts the
    account's failures; `login:p:<account>:<client>` the pair's; `login:g:...` is
    the pair's gate, whose TTL is the delay or the lockout. A check is two reads;
    `StoreError` propagates, and the caller applies its fail mode.
    """

    __slots__ = ("grouping", "policy", "store")

    def __init__(
        self,
        store: Store,
        policy: LoginPolicy | None = None,
        *,
        grouping: ClientGrouping | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or LoginPolicy()
        self.grouping = grouping or ClientGrouping()

    def _keys(self, account: str, client: str | None) -> tuple[str, str, str]:
        account_part = hash_part(normalise_account(account))
        pair = f"{account_part}:{client_key(client, self.grouping)}"
        return f"login:a:{account_part}", f"login:p:{pair}", f"login:g:{pair}"

    async def check(self, account: str, client: str | None) -> LoginVerdict:
        account_key, _pair_key, gate_key = self._keys(account, client)
        gate = await self.store.get(gate_key)
        failures = int(await self.store.get(account_key) or b"0")
        challenge = failures >= self.policy.challenge_after
        if gate is not None:
            locked = gate == _LOCKED
            return LoginVerdict(
                allowed=False,
                reason=REASON_LOGIN_LOCKED if locked else REASON_LOGIN_THROTTLED,
                # The gate holds no expiry time (the store's clock is its own), so
                # this is the full delay: an upper bound, never too short.
                retry_after_seconds=self.policy.lockout_seconds if locked else float(gate),
                requires_challenge=challenge,
            )
        return LoginVerdict(allowed=True, requires_challenge=challenge)

    async def record_failure(self, account: str, client: str | None) -> LoginVerdict:
        """Count a failure; the verdict says what the pair's next attempt faces."""
        account_key, pair_key, gate_key = self._keys(account, client)
        window = self.policy.failure_window_seconds
        account_failures = await self.store.incr(account_key, ttl_seconds=window)
        pair_failures = await self.store.incr(pair_key, ttl_seconds=window)
        reason, delay = delay_after_failure(pair_failures, self.policy)
        value = _LOCKED if reason == REASON_LOGIN_LOCKED else repr(delay).encode("ascii")
        await self.store.set(gate_key, value, delay)
        return LoginVerdict(
            allowed=False,
            reason=reason,
            retry_after_seconds=delay,
            requires_challenge=account_failures >= self.policy.challenge_after,
        )

    async def record_success(self, account: str, client: str | None) -> None:
        """Clear this client's failures for the account (not the account's count)."""
        _account_key, pair_key, gate_key = self._keys(account, client)
        await self.store.delete(pair_key)
        await self.store.delete(gate_key)


# A login form is well under 1 KiB; a body larger than this names no account we
# read (the attempt is still counted, under the empty account, per client).
MAX_LOGIN_BODY_BYTES: Final = 16 * 1024
_MAX_FORM_FIELDS: Final = 100  # a login form has a handful (user, password, token)


def account_from_body(body: bytes, content_type: bytes | None, field: str) -> str:
    """The account a login body names in `field` (form or JSON), or "" if none.

    Bounded by the caller (`MAX_LOGIN_BODY_BYTES`); anything unparsable is "".
    """
    media_type = (content_type or b"").split(b";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if media_type == b"application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS)
        except ValueError:  # more fields than any login form has
            return ""
        return next((value for name, value in pairs if name == field), "")
    if media_type == b"application/json" or media_type.endswith(b"+json"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return ""
        value = data.get(field) if isinstance(data, dict) else None
        return value if isinstance(value, str) else ""
    return ""
