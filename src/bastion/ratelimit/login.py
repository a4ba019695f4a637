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
* A success from a client clears that client's failures for the account. A body
  the guard cannot read names no account (""), and its failures are the
  client's, whatever account they were for: no success clears them.
* One attempt per pair at a time: `begin` claims the pair's gate before the
  application checks the password, and the outcome replaces the claim. A check
  that only read the gate let a client fire any number of guesses at once, all
  of them past the gate before the first failure closed it. The claim holds a
  random token of its attempt, and an attempt releases the gate only while it
  still holds that token (`Store.delete_if_equal`): a claim outlives its
  `ATTEMPT_CLAIM_SECONDS` when the application is slow, and a plain delete then
  lifted whatever a later attempt wrote in its place (the pair's lockout).
* Per client, across accounts: at `client_lockout_after` failures within the
  failure window, on any accounts (or none), the client's login attempts are
  refused until the window ends. The per-pair counts hold only as far as the
  guard reads the account the application checks; wherever the two still differ
  (a database collation that equates spellings this folding keeps apart, a body
  the guard cannot read), this budget bounds the guesses a client gets. Each
  attempt reserves its unit before it runs (concurrent attempts cannot all pass
  a read of it); a failure keeps the unit, any other outcome gives it back. A
  failure that judged no named account's password (`record_client_failure`: a
  status the operator counts, such as an OAuth 2 code grant's 400, for a request
  naming none) counts here alone, not in the pair it would share with every such
  request of the client.
  Clients behind one address (NAT, a corporate egress) share it, so one of them
  could lock the others out: past the budget, a pair that logged in within the
  failure window may still try, under its own backoff and lockout (a success
  there clears nothing, and a failure there is always the pair's, never the
  budget's alone), but only a pair whose account the body or the query string
  names: with the attacker's own account as the user-id of a Basic header, beside
  a body the guard read as naming none and the application as the victim's, the
  pair got past the budget and its failures went to no pair, so its guesses were
  unbounded. `never_ban` networks have no budget.
* Accounts are compared more loosely than any application compares them: case
  folded (upper case first, so the dotless i, U+0131, meets `i` as Postgres's
  `UPPER` and MariaDB's `_ci` collations meet it), NFKD (NFKC is Django's
  `UsernameField`), with combining marks, format characters (a zero-width space)
  and control characters dropped, and stripped: `ALICE`, `alicé`, `alice` with a
  zero-width space inside, and `alice` in fullwidth letters are `alice`, not fresh
  counters. Two real accounts merged only share a client's pair counter and the
  account-wide challenge count, so looser is safe. An account name longer than
  `MAX_ACCOUNT_CHARS` names none (no login form allows one; NFKC is quadratic in
  a run of combining marks). A login body that names
  the account more than once, with different values, names none (""): frameworks
  disagree on which one wins (Starlette and Django take the last form field,
  Werkzeug the first), and a decoy name beside the real one would count the
  failures elsewhere. For the same reason the body is read every way an
  application could read it (url-encoded, JSON whatever the declared type,
  multipart when declared), and with the query string's pairs (Werkzeug's
  `request.values` reads them first), names an account only when every reading
  that finds the field agrees (`account_from_request`); the user-id of an
  `Authorization: Basic` header names it when no other reading finds the field
  (a proxy's Basic gate in front of a site sends its own user-id with every form
  login, so that as a reading that must agree it merged every user at an
  address into one pair; a body decoy beside an application's own Basic check
  is left to the client budget); a multipart part with any header but
  `Content-Disposition`, a `charset` other than UTF-8 or any other parameter whose
  name starts with `charset` or holds a `*` (RFC 2231: Django joins `charset*0=utf-7`
  into the charset UTF-7, and `boundary*0=` into the boundary), or text before the
  first boundary or after the closing one (Django parses both as parts), names none.
  The media type is read as Django reads it (`email.message`: cut at the first
  `;`, then at `=`, and `str.strip()`, so `multipart/form-data=x; boundary=...`
  and `multipart/form-data` followed by U+001E are multipart); a body of any other
  media type than those the guard reads whole (url-encoded, JSON, multipart, or
  no body) may name an account to the application however it names none to the
  guard, so a failure of a status the operator added is its pair's.

Delays are returned as `retry_after_seconds`; nothing sleeps in the request path,
so a guessing client costs a store read, not a held worker.

Not covered: guessing many accounts from one client (credential stuffing) below the
per-client budget: a rate on the login route (`"POST /login": ["5/minute"]`) and the
ban list cover it.
Nor distributed guessing at one account from a botnet below every per-client
threshold: `requires_challenge` is the signal the app must act on.

References: OWASP Authentication Cheat Sheet, "Account Lockout"
https://cheatsheetseries.owasp.org/cheatsheets/Authentication_Cheat_Sheet.html ;
NIST SP 800-63B section 5.2.2 (rate limiting, at most 100 consecutive failures).
"""

from __future__ import annotations

import binascii
import json
import math
import re
import secrets
import unicodedata
from base64 import b64decode
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qsl

from bastion.limits.forms import parse_boundary
from bastion.limits.json import is_json_media_type
from bastion.ratelimit.jail import IPNetwork, is_never_banned
from bastion.ratelimit.keys import ClientGrouping, client_key, hash_part
from bastion.ratelimit.reasons import REASON_LOGIN_LOCKED, REASON_LOGIN_THROTTLED
from bastion.stores import Store
from bastion.stores.base import check_store
from bastion.types import RawHeaders

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
# Failures of one client network across all accounts within the failure window:
# a person mistyping a few passwords, or an office behind one address, stays far
# below; NIST SP 800-63B allows 100 consecutive failures per account.
DEFAULT_CLIENT_LOCKOUT_AFTER: Final = 100
# Longest account name read: Django's `User.username` is 150 characters, an email
# address at most 254. Checked before any normalisation (NFKC is quadratic).
MAX_ACCOUNT_CHARS: Final = 256
# Methods that make a login attempt only when they carry credentials (RFC 9110
# section 9.2.1: safe), and whose 2xx is a page, never a success (`carries_credentials`).
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Longest an attempt holds its pair's gate (`LoginGuard.begin`) before the outcome
# replaces the claim: a password hash takes well under a second. A claim whose
# release is lost (a worker crash, a store outage) holds the pair back this long.
ATTEMPT_CLAIM_SECONDS: Final = 30.0
# Random decimal digits of an attempt's claim (`LoginGuard.begin`): 39 are 129 bits,
# so no two attempts' claims are ever equal, whichever worker drew them.
CLAIM_TOKEN_DIGITS: Final = 39
# Statuses of a login route's answer that count as a failure by default
# (`login_failure_statuses`): HTTP authentication refused (RFC 9110 sections 15.5.2,
# 15.5.4), what an application answers a wrong password with whatever the request.
# 400 and 422 are opt-in: an OAuth 2 token endpoint answers 400 to every grant it
# refuses (RFC 6749 section 5.2: an expired refresh token, a code pasted twice, a
# device flow's `authorization_pending` poll), none of which names an account, so
# counted by default they locked a relying party's backend, one client and no
# account for all its users, out of every exchange; and a form behind HTTP Basic
# that fails validation (422) locked out the administrator who had logged in.
DEFAULT_FAILURE_STATUSES: Final = (401, 403)
# The statuses that count as a failure of any request (`login_failure_statuses` must
# hold 401). Another status the operator adds (400, 422) counts fully only for a
# request whose body or query string names the account, or may name one to the
# application (`read_login_account`): for one that names none (an OAuth 2 code or
# refresh grant, a Basic-authenticated form), the failure goes to the client's
# budget alone (`LoginGuard.record_client_failure`), unless the attempt was let
# past that budget (`LoginVerdict.past_budget`).
AUTHENTICATION_FAILURE_STATUSES: Final = frozenset(DEFAULT_FAILURE_STATUSES)

_LOCKED: Final = b"locked"
# A claim's gate value: `1.`, then the attempt's token as digits. A worker of the
# version whose claim was the base delay's `repr` (before claims held a token)
# reads every gate but `locked` as a delay in seconds (`float(gate)`): this one it
# reads as one to two seconds' backoff, an attempt in flight, as it read its own;
# `claim:<hex>` made it raise during a rolling upgrade (a 500, and a unit of the
# client's budget never given back). No delay `record_failure` writes is as long (a
# float's `repr` has at most 17 significant digits): the length tells a claim apart.
_CLAIM_PREFIX: Final = b"1."
_CLAIM_LENGTH: Final = len(_CLAIM_PREFIX) + CLAIM_TOKEN_DIGITS


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """Thresholds of the login guard (validated)."""

    lockout_after: int = DEFAULT_LOCKOUT_AFTER
    lockout_seconds: float = DEFAULT_LOCKOUT_SECONDS
    base_delay_seconds: float = DEFAULT_BASE_DELAY_SECONDS
    max_delay_seconds: float = DEFAULT_MAX_DELAY_SECONDS
    challenge_after: int = DEFAULT_CHALLENGE_AFTER
    failure_window_seconds: float = DEFAULT_FAILURE_WINDOW_SECONDS
    client_lockout_after: int = DEFAULT_CLIENT_LOCKOUT_AFTER

    def __post_init__(self) -> None:
        if self.lockout_after < 1 or self.client_lockout_after < 1:
            raise ValueError("lockout_after and client_lockout_after must be at least 1")
        if self.challenge_after <= self.lockout_after:
            raise ValueError("challenge_after must be higher than lockout_after")
        if not 0 < self.base_delay_seconds <= self.max_delay_seconds:
            raise ValueError("base_delay_seconds must be positive and <= max_delay_seconds")
        if self.lockout_seconds <= 0 or self.failure_window_seconds <= 0:
            raise ValueError("lockout_seconds and failure_window_seconds must be positive")


@dataclass(frozen=True, slots=True)
class LoginVerdict:
    """Whether an attempt may proceed; `reason` is a REASON_* constant, "" if allowed.

    `reserved`: the attempt holds a unit of the client's budget (`LoginGuard.begin`),
    which a failure keeps and any other outcome gives back. `past_budget`: it was let
    through past that budget, as a pair that logged in before, so its failure is
    always the pair's (`LoginGuard.record_client_failure`). `claim`: the value
    the attempt's claim wrote in the pair's gate (b"" when it claimed none), which
    only this attempt can release."""

    allowed: bool
    reason: str = ""
    retry_after_seconds: float = 0.0
    requires_challenge: bool = False
    reserved: bool = False
    past_budget: bool = False
    # Which attempt, not what was decided: left out of comparisons and the repr.
    claim: bytes = field(default=b"", repr=False, compare=False)


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


# Dropped from an account name: combining marks (the accent of `é` after NFKD),
# format characters (zero-width spaces, which `_unicode_ci` collations ignore) and
# control characters.
_IGNORED_CATEGORIES: Final = frozenset({"Mn", "Me", "Cf", "Cc"})


def _new_claim() -> bytes:
    """A fresh claim of a pair's gate (`_CLAIM_PREFIX`): `1.` and random digits."""
    digits = secrets.randbelow(10**CLAIM_TOKEN_DIGITS)
    return _CLAIM_PREFIX + f"{digits:0{CLAIM_TOKEN_DIGITS}d}".encode("ascii")


def normalise_account(untrusted_account: str) -> str:
    """One account, however the client spells it (module docstring): `Alice `,
    `alicé`, `al\u0131ce` (dotless i) and `alice` in fullwidth letters are `alice`.
    A name longer than `MAX_ACCOUNT_CHARS` is "" (none), before any normalisation."""
    if len(untrusted_account) > MAX_ACCOUNT_CHARS:
        return ""
    # NFKD both before folding (fullwidth and other compatibility letters have
    # case) and after it (`İ` folds to `i` and a combining dot).
    folded = unicodedata.normalize(
        "NFKD", unicodedata.normalize("NFKD", untrusted_account).upper().casefold()
    )
    category = unicodedata.category
    return "".join(c for c in folded if category(c) not in _IGNORED_CATEGORIES).strip()


class LoginGuard:
    """Counts login failures in the store and says when a client must wait.

        guard = LoginGuard(store)
        attempt = await guard.begin(username, client_host)
        if not attempt.allowed: answer 429 with Retry-After: attempt.retry_after_seconds
        ... verify the password ...
        await (guard.record_success if ok else guard.record_failure)(username, client_host, attempt)
        (or `guard.abandon(username, client_host, attempt)` when it judged no password)

    Store layout (all keys hashed and bounded): `login:a:<account>` counts the
    account's failures; `login:p:<account>:<client>` the pair's; `login:g:...` is
    the pair's gate, whose TTL is the delay, the lockout or an attempt's claim;
    `login:k:...` marks a pair that logged in within the failure window;
    `login:c:<client>` counts the client's failures on every account and its
    attempts in flight (`begin` reserves a unit, a failure keeps it, any other
    outcome gives it back). An allowed `begin` is three round trips (the store has
    no read of several keys; one more, the pair's mark, for a client past its
    budget), a failure two counters and the gate (three writes), a success at most
    four (the pair's count and gate deleted, its mark set, the unit given back) and
    an abandoned attempt two, a failure of the client's budget alone one (the
    claim released, the unit kept); `StoreError` propagates, and the caller applies
    its fail mode. An attempt's own claim is released by compare-and-delete, never
    by a plain delete (module docstring). The store must have every method of the
    protocol (`check_store`; `ConfigurationError` otherwise).
    """

    __slots__ = ("grouping", "never_ban", "policy", "store")

    def __init__(
        self,
        store: Store,
        policy: LoginPolicy | None = None,
        *,
        grouping: ClientGrouping | None = None,
        never_ban: tuple[IPNetwork, ...] = (),
    ) -> None:
        # Every method, now: one missing surfaced after the application answered.
        check_store(store)
        self.store = store
        self.policy = policy or LoginPolicy()
        self.grouping = grouping or ClientGrouping()
        # The operator's own networks (`ratelimit.never_ban`): exempt from the
        # client budget, which one office's bad day would otherwise spend for all.
        self.never_ban = never_ban

    def _keys(self, account: str, client: str | None) -> tuple[str, str, str, str, str]:
        """The account's, the pair's, the pair's gate's, the client's and the
        pair's mark's keys."""
        account_part = hash_part(normalise_account(account))
        client_part = client_key(client, self.grouping)
        pair = f"{account_part}:{client_part}"
        return (
            f"login:a:{account_part}",
            f"login:p:{pair}",
            f"login:g:{pair}",
            f"login:c:{client_part}",
            f"login:k:{pair}",
        )

    def _exempt(self, client: str | None) -> bool:
        """Whether the client's network is in `never_ban` (no client budget)."""
        return bool(self.never_ban) and is_never_banned(client, self.never_ban, self.grouping)

    async def check(
        self, account: str, client: str | None, *, account_from_header: bool = False
    ) -> LoginVerdict:
        """Whether the pair may try now; reads only (see `begin`)."""
        account_key, _pair_key, gate_key, client_failures_key, known_key = self._keys(
            account, client
        )
        if not self._exempt(client):
            failures = await self.store.get(client_failures_key)
            if int(failures or b"0") >= self.policy.client_lockout_after and (
                account_from_header or await self.store.get(known_key) is None
            ):
                return self._client_lockout
        gate = await self.store.get(gate_key)
        return self._verdict(gate, await self.store.get(account_key))

    async def begin(
        self, account: str, client: str | None, *, account_from_header: bool = False
    ) -> LoginVerdict:
        """`check`, and when the attempt may go on, claim the pair's gate for it
        (`ATTEMPT_CLAIM_SECONDS`) in the same step: a concurrent attempt of the pair
        is then throttled as if the first had failed already. The attempt's outcome
        replaces the claim (`record_failure`, `record_success`); an attempt that
        ends with neither releases it (`abandon`); each is given the verdict.

        The client's budget is reserved the same way, a unit per attempt before it
        runs (`LoginVerdict.reserved`): read here and counted only after the
        attempt, it let a burst of concurrent attempts, each on a fresh account, all
        past it. Past the budget, only a pair that logged in within the failure
        window (a user behind the same address as the attacker) may still try,
        under its own backoff and lockout (`LoginVerdict.past_budget`); every other
        attempt is refused and its unit given back, and so is one whose account is
        only the user-id of an `Authorization: Basic` header (`account_from_header`:
        the attacker's own, logged in, sent with every guess whose body the guard
        reads as naming no account and the application as the victim's). As many
        round trips as `check` when allowed under the budget.

        The claim holds a token drawn for this attempt (`LoginVerdict.claim`), by
        which `abandon` and `record_success` tell it from whatever replaced it
        once it expired."""
        account_key, _pair_key, gate_key, client_failures_key, known_key = self._keys(
            account, client
        )
        reserved = past_budget = False
        if not self._exempt(client):
            units = await self.store.incr(
                client_failures_key, ttl_seconds=self.policy.failure_window_seconds
            )
            reserved = True
            # The mark is read only past the budget: the usual attempt pays nothing.
            if units > self.policy.client_lockout_after:
                if account_from_header or await self.store.get(known_key) is None:
                    await self._give_back(client_failures_key)
                    return self._client_lockout
                past_budget = True
        claim = _new_claim()
        gate: bytes | None = None
        if not await self.store.set_if_absent(gate_key, claim, ATTEMPT_CLAIM_SECONDS):
            # Held by another attempt, or by the delay a failure set: a gate gone
            # between the two calls was still in the way of this attempt.
            gate = await self.store.get(gate_key) or claim
        verdict = self._verdict(gate, await self.store.get(account_key))
        if not verdict.allowed:
            if reserved:
                await self._give_back(client_failures_key)
            return verdict
        return LoginVerdict(
            allowed=True,
            requires_challenge=verdict.requires_challenge,
            reserved=reserved,
            past_budget=past_budget,
            claim=claim,
        )

    async def abandon(
        self, account: str, client: str | None, attempt: LoginVerdict | None = None
    ) -> None:
        """Release the claim of `begin` for an attempt that neither failed nor
        succeeded, and give its unit of the client's budget back.

        Only the attempt's own claim is deleted (`Store.delete_if_equal`): once it
        has expired (an application slower than `ATTEMPT_CLAIM_SECONDS`), the gate
        may hold another attempt's claim, or the delay or lockout of a failure since,
        and an attempt that judged no password has no business lifting those.
        Without `attempt` (or one that claimed nothing) no gate is released: the
        claim then ends with its TTL."""
        _account_key, _pair_key, gate_key, client_failures_key, _known_key = self._keys(
            account, client
        )
        if attempt is not None and attempt.claim:
            await self.store.delete_if_equal(gate_key, attempt.claim)
        if attempt is not None and attempt.reserved:
            await self._give_back(client_failures_key)

    async def record_client_failure(
        self, account: str, client: str | None, attempt: LoginVerdict | None = None
    ) -> None:
        """Count a failure toward the client's budget alone, for an attempt the
        application refused without judging a named account's password (a status
        the operator added to `login_failure_statuses`, such as an OAuth 2 `400
        invalid_grant` for a code or a refresh token, to a request whose body names
        no account): no backoff or lockout of the pair, whose account ("", or a
        Basic user-id) is then one every such request of the client shares. The
        claim is released as `abandon` releases it; the unit `begin` reserved is
        kept (a failure of an attempt that reserved none is counted now).

        Counted at all because the guard may misread where the application reads
        the account (a parser it does not know): the budget still bounds that
        client's guesses, as it bounds every other misreading. An attempt let
        through past the budget (`LoginVerdict.past_budget`) has no budget left to
        bound it: its failure is its pair's (`record_failure`), whose backoff and
        lockout are then the only bound on its guesses."""
        if attempt is not None and attempt.past_budget:
            await self.record_failure(account, client, attempt)
            return
        _account_key, _pair_key, gate_key, client_failures_key, _known_key = self._keys(
            account, client
        )
        if attempt is not None and attempt.claim:
            await self.store.delete_if_equal(gate_key, attempt.claim)
        if not (attempt is not None and attempt.reserved) and not self._exempt(client):
            await self.store.incr(
                client_failures_key, ttl_seconds=self.policy.failure_window_seconds
            )

    async def _give_back(self, client_failures_key: str) -> None:
        """Return an attempt's unit of the client's budget (`begin`)."""
        window = self.policy.failure_window_seconds
        if await self.store.incr(client_failures_key, -1, ttl_seconds=window) < 0:
            # The counter expired under the attempt, and this created a new one: a
            # window must not start below zero (one more guess in it).
            await self.store.incr(client_failures_key, ttl_seconds=window)

    @property
    def _client_lockout(self) -> LoginVerdict:
        """The verdict for a client past its budget: locked out of every account.
        Its counter expires a failure window after its first attempt, which the
        store does not tell; `lockout_seconds` is when to look again."""
        return LoginVerdict(
            allowed=False,
            reason=REASON_LOGIN_LOCKED,
            retry_after_seconds=self.policy.lockout_seconds,
        )

    def _verdict(self, gate: bytes | None, account_failures: bytes | None) -> LoginVerdict:
        challenge = int(account_failures or b"0") >= self.policy.challenge_after
        if gate is None:
            return LoginVerdict(allowed=True, requires_challenge=challenge)
        locked = gate == _LOCKED
        # The gate holds no expiry time (the store's clock is its own), so this is
        # the full delay: an upper bound, never too short.
        retry_after = self.policy.lockout_seconds if locked else self._gate_delay(gate)
        return LoginVerdict(
            allowed=False,
            reason=REASON_LOGIN_LOCKED if locked else REASON_LOGIN_THROTTLED,
            retry_after_seconds=retry_after,
            requires_challenge=challenge,
        )

    def _gate_delay(self, gate: bytes) -> float:
        """The delay a gate other than a lockout asks for. An attempt in flight (a
        claim) asks for the first failure's delay, as before its outcome; so does a
        value that is no positive, finite delay (`claim:<hex>`, the claim of the
        version before this one, written by one of its workers during an upgrade):
        still throttled, never an error."""
        if len(gate) == _CLAIM_LENGTH and gate.startswith(_CLAIM_PREFIX):
            return self.policy.base_delay_seconds
        try:
            delay = float(gate)
        except ValueError:
            return self.policy.base_delay_seconds
        return delay if 0 < delay < math.inf else self.policy.base_delay_seconds

    @staticmethod
    def _delay_value(delay: float) -> bytes:
        return repr(delay).encode("ascii")

    async def record_failure(
        self, account: str, client: str | None, attempt: LoginVerdict | None = None
    ) -> LoginVerdict:
        """Count a failure; the verdict says what the pair's next attempt faces.

        The client's budget counts it through the unit `begin` reserved; a failure
        of an attempt that reserved none (`attempt` None, or refused and let
        through in monitor-only mode) is counted there now."""
        account_key, pair_key, gate_key, client_failures_key, _known_key = self._keys(
            account, client
        )
        window = self.policy.failure_window_seconds
        account_failures = await self.store.incr(account_key, ttl_seconds=window)
        pair_failures = await self.store.incr(pair_key, ttl_seconds=window)
        if not (attempt is not None and attempt.reserved) and not self._exempt(client):
            await self.store.incr(client_failures_key, ttl_seconds=window)
        reason, delay = delay_after_failure(pair_failures, self.policy)
        value = _LOCKED if reason == REASON_LOGIN_LOCKED else self._delay_value(delay)
        await self.store.set(gate_key, value, delay)
        return LoginVerdict(
            allowed=False,
            reason=reason,
            retry_after_seconds=delay,
            requires_challenge=account_failures >= self.policy.challenge_after,
        )

    async def record_success(
        self, account: str, client: str | None, attempt: LoginVerdict | None = None
    ) -> None:
        """Clear this client's failures for the account (not the account's count),
        mark the pair as one that logged in (`begin` lets it try past the client's
        budget for a failure window) and give the attempt's unit back.

        A success that named no account ("") clears only the attempt's claim: the
        failures counted there were guesses at accounts the guard could not read,
        and the client's login to an account of its own, sent so that it names none
        too, must not wipe them. Nor does a success clear the client's failures
        on every account (`login:c:`): an attacker's own login would reset them.
        Nor does one let through past the budget (`LoginVerdict.past_budget`) clear
        the pair's: there the pair's lockout is the only bound left, and the
        attacker's own login, read as its account wherever the guard and the
        application still differ, would reset it.

        An attempt that claimed the gate deletes it only while it holds its claim
        (as `abandon` does): a success that outlived its claim leaves the gate a
        failure wrote since, its lockout included. Without a claim (no `attempt`,
        or one let through in monitor-only mode) the gate is deleted."""
        _account_key, pair_key, gate_key, client_failures_key, known_key = self._keys(
            account, client
        )
        if normalise_account(account):
            if attempt is None or not attempt.past_budget:
                await self.store.delete(pair_key)
            await self.store.set(known_key, b"1", self.policy.failure_window_seconds)
        if attempt is not None and attempt.claim:
            await self.store.delete_if_equal(gate_key, attempt.claim)
        else:
            await self.store.delete(gate_key)
        if attempt is not None and attempt.reserved:
            await self._give_back(client_failures_key)


# A login form is well under 1 KiB; a body larger than this names no account we
# read (the attempt is still counted, under the empty account, per client).
MAX_LOGIN_BODY_BYTES: Final = 16 * 1024
_MAX_FORM_FIELDS: Final = 100  # a login form has a handful (user, password, token)
# The charsets a body may declare and still name an account: UTF-8, as read here,
# unquoted or quoted whole (a quoted value cut at a `;` inside it may be longer:
# `charset="utf-8;sig"` is `utf-8-sig` to `codecs.lookup`).
_UTF8: Final = frozenset({"utf-8", "us-ascii", '"utf-8"', '"us-ascii"'})
# Media types whose every reading by a framework the guard reads too (JSON as
# well: `is_json_media_type`); "" is a body that declares none, which no framework
# parses as a form. A body of another type (XML, YAML, a `text/plain` the
# application parses its own way) may name an account the guard never sees.
_FULLY_READ_MEDIA_TYPES: Final = frozenset(
    {"", "application/x-www-form-urlencoded", "multipart/form-data"}
)
# The one header line a multipart login part may have (RFC 7578 section 4.2), the
# `Content-Disposition`: a quoted name, and a quoted file name for a file.
_DISPOSITION: Final = re.compile(rb'form-data; name="([^"\\\r\n]*)"(; filename="[^"\\\r\n]*")?')


def account_from_request(
    body: bytes | None,
    content_type: bytes | None,
    query_string: bytes,
    authorizations: list[bytes],
    field: str,
) -> str:
    """The account a login request names in `field`, or "" if it names none clearly.

    The body's readings (`account_from_body`; a `body` of None, one the caller
    could not read whole, names none), and two more that must agree with them:
    the query string's url-encoded pairs (Werkzeug's `request.values`, which
    Flask apps read, takes the query string's `username` before the form's), and
    the user-id of an `Authorization: Basic` header (`authorizations`: every
    `Authorization` value; two, or a Basic one that does not decode as strict
    base64 of UTF-8 text, name none), read only when no other reading finds
    `field`. Either names the account by itself too.
    """
    return read_login_account(body, content_type, query_string, authorizations, field)[0]


def read_login_account(
    body: bytes | None,
    content_type: bytes | None,
    query_string: bytes,
    authorizations: list[bytes],
    field: str,
) -> tuple[str, bool, bool]:
    """`account_from_request`; whether the body or the query string may name an
    account; and whether the account is the user-id of the `Authorization: Basic`
    header (no other reading found `field`).

    The body or query string names none (False) only when both were read whole,
    every reading of them parsed and none has `field` (an OAuth 2 code or refresh
    grant; a form behind HTTP Basic, whose account is then the Basic user-id), and
    the body is empty or of a media type the guard reads whole (url-encoded, JSON,
    multipart, or none declared: `_FULLY_READ_MEDIA_TYPES`). A body not read whole,
    a reading that failed, or a body of another type (`application/xml`, or
    `multipart/form-data` spelled so that the guard missed it) may name one to the
    application's parser: True, fail closed."""
    if body is None:
        return "", True, False
    content_type = content_type or b""
    readings = _body_readings(body, content_type)
    if readings is None:
        return "", True, False
    readings.append((True, _urlencoded_pairs(query_string)))
    found = any(
        pairs and any(name == field for name, _value in pairs) for _names, pairs in readings
    )
    named = (
        found
        or any(pairs is None for _names, pairs in readings)
        or (bool(body) and not _is_fully_read(_media_type(content_type)))
    )
    if authorizations and not found:
        # Only when nothing else names the account: a proxy's Basic gate in front of
        # the whole site (nginx `auth_basic` on a staging site) sends its one user-id
        # with every form login, and as a reading that must agree it made every
        # login name none, every user behind an address one client's pair.
        readings.append((True, _basic_user(authorizations, field)))
    account = _agreed(readings, field)
    return account, named, bool(account) and not found


def carries_credentials(headers: RawHeaders, query_string: bytes, field: str) -> bool:
    """Whether a request of a safe method on a login route makes an attempt: it has
    an `Authorization` header (HTTP Basic guesses are GETs), or its query string
    names `field` (Werkzeug's `request.values` reads it on a GET), or cannot be
    read (a parser that replaces what it cannot decode may still find it there).
    A plain page load does neither."""
    if any(name.lower() == b"authorization" for name, _value in headers):
        return True
    if not query_string:
        return False
    pairs = _urlencoded_pairs(query_string)
    return pairs is None or any(name == field for name, _value in pairs)


def account_from_body(body: bytes, content_type: bytes | None, field: str) -> str:
    """The account a login body names in `field`, or "" if it names none clearly.

    The body is read every way an application could read it, whatever it declares:
    applications read JSON whatever the `Content-Type` (Starlette's
    `request.json()`, Django's `json.loads(request.body)`), so a JSON object sent
    as a form, with `&username=decoy&` in one of its strings, names `alice` to them
    and `decoy` to a guard that trusted the declared type. The readings are: the
    url-encoded pairs, always (naming an account by themselves only in a body
    declared a form); a JSON object, when the text (decoded as `json.loads`
    decodes bytes) starts with `{`; the multipart parts, only when the body is
    declared multipart with its boundary (no parser reads parts without it). The
    body names an account only when every value of `field` that any reading finds
    is the same, and no reading failed on a body it should read (a JSON-looking
    text that does not parse, a declared multipart body not of the plainest
    shape, a body not UTF-8 or with more fields than a login form). A `charset`
    other than UTF-8 names none for any type: Django decodes multipart fields with
    it (`+AGE-lice` is `alice` in UTF-7); so does any RFC 2231 parameter, or one
    whose name starts with `charset` (`_has_unread_parameters`). A value longer
    than `MAX_ACCOUNT_CHARS` names none. The declared type is read as the
    frameworks read it (`_media_type`).

    Bounded by the caller (`MAX_LOGIN_BODY_BYTES`), and at `_MAX_FORM_FIELDS`
    url-encoded fields; anything unparsable is "".
    """
    readings = _body_readings(body, content_type)
    return "" if readings is None else _agreed(readings, field)


# A reading of a login request: whether it names an account by itself, and the
# fields it finds (None: it failed on text it should read, and the request names none).
_Reading: TypeAlias = tuple[bool, "list[tuple[str, Any]] | None"]


def _body_readings(body: bytes, content_type: bytes | None) -> list[_Reading] | None:
    """The readings of a body (`account_from_body`); None when its `Content-Type` has
    a parameter the guard does not read (`_has_unread_parameters`: a charset other
    than UTF-8)."""
    content_type = content_type or b""
    if _has_unread_parameters(content_type):
        return None
    media_type = _media_type(content_type)
    # The url-encoded pairs of a body not declared a form only check the others:
    # an application may parse them out of any body (`QueryDict(request.body)`),
    # but the frameworks' form parsers read none there.
    readings: list[_Reading] = [
        (media_type == "application/x-www-form-urlencoded", _urlencoded_pairs(body)),
        (True, _json_members(body)),
    ]
    if media_type == "multipart/form-data":
        readings.append((True, _multipart_fields(body, content_type)))
    return readings


def _media_type(content_type: bytes) -> str:
    """The media type of a `Content-Type`, lower case, as Django's
    `parse_header_parameters` reads it: a value without `;` whole; otherwise
    `email.message`'s first parameter, whose name ends at the first `=`, so
    `multipart/form-data=x; boundary=XyZ` is multipart to it. Decoded as latin-1
    and `str.strip()`ped, which strips U+001C to U+001F, U+0085 and U+00A0 too (as
    the limits layer's `_media_type`).

    `email.message` cuts at the first `;` outside a quoted string. Where that is
    not the first `;`, a `"` comes before the first: both media types then hold a
    `"`, and neither is one the guard reads, unless an `=` comes before the `"`,
    where both end the same."""
    text = content_type.decode("latin-1")
    if ";" in text:
        text = text.partition(";")[0].partition("=")[0]
    return text.strip().lower()


def _is_fully_read(media_type: str) -> bool:
    """Whether the guard reads a body of this media type every way a framework reads
    it (`_FULLY_READ_MEDIA_TYPES`, JSON)."""
    return media_type in _FULLY_READ_MEDIA_TYPES or is_json_media_type(media_type)


def _agreed(readings: list[_Reading], field: str) -> str:
    """The one value of `field` every reading that finds it agrees on, or ""."""
    values: list[Any] = []
    named = False
    for names, pairs in readings:
        if pairs is None:
            return ""
        found = [value for name, value in pairs if name == field]
        values += found
        named = named or (names and bool(found))
    # Named more than once, differently, in one reading or across two: which one
    # the application reads depends on its parser (module docstring).
    if not named or any(value != values[0] for value in values):
        return ""
    account = values[0]
    # Checked before any normalisation, which is quadratic in combining marks.
    return account if isinstance(account, str) and len(account) <= MAX_ACCOUNT_CHARS else ""


def _basic_user(authorizations: list[bytes], field: str) -> list[tuple[str, Any]] | None:
    """The user-id of an `Authorization: Basic` header (RFC 7617), as the one field
    `field`: [] for another scheme, None for two headers (Django joins them with a
    comma, Starlette takes the first) or credentials that are not strict base64 of
    UTF-8 text (a lenient decoder drops the characters outside the alphabet, and
    reads `YW!xpY2U6` as `alice:`)."""
    if len(authorizations) > 1:
        return None
    scheme, _, credentials = authorizations[0].strip().partition(b" ")
    if scheme.lower() != b"basic":
        return []
    try:
        user_id = b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return [(field, user_id.partition(":")[0])]


def _has_unread_parameters(content_type: bytes) -> bool:
    """Whether a `Content-Type` has a parameter that may change how the application
    decodes the body, beyond what the guard reads: a `charset` other than UTF-8 (or
    its subset US-ASCII), in any case, unquoted or quoted whole; any other parameter
    whose name starts with `charset`; or any RFC 2231 parameter (a `*` in its name,
    RFC 2231 sections 3 and 4). `email.message`, through which Django reads the
    parameters, joins `charset*0=utf-7` and `charset*0*=utf-8''utf-7` into the
    charset UTF-7 (`+AGE-lice` is `alice` to it), and `boundary*0=` into a boundary
    that replaces the one `parse_boundary` reads. Names are stripped as
    `str.strip()` strips them (`charset` after U+00A0 is `charset` to it).

    Split at every `;`, quoted or not: a `;` inside a quoted value only adds pieces,
    each starting where a parameter could, so this never misses one a parser sees;
    a value cut short at such a `;` is no longer quoted whole, so not UTF-8."""
    for parameter in content_type.decode("latin-1").split(";")[1:]:
        name, _, value = parameter.partition("=")
        name = name.strip().lower()
        if "*" in name:
            return True
        if name.startswith("charset") and (name != "charset" or value.strip().lower() not in _UTF8):
            return True
    return False


def _urlencoded_pairs(body: bytes) -> list[tuple[str, Any]] | None:
    """The url-encoded fields of a body, as `&` and as `;` separate them; None when
    the body is not UTF-8 or has more fields than any login form."""
    try:
        text = body.decode("utf-8")
        pairs: list[tuple[str, Any]] = parse_qsl(
            text, keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS
        )
        if ";" in text:
            # Lenient parsers split on `;` too (as `parse_qsl` itself did before
            # the fix of CVE-2021-23336): the fields they see count as well.
            pairs += parse_qsl(
                text.replace(";", "&"), keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS
            )
    except (UnicodeDecodeError, ValueError):  # ValueError: more fields than allowed
        return None
    return pairs


def _json_members(body: bytes) -> list[tuple[str, Any]] | None:
    """The members of the JSON object a body holds; [] when it holds no JSON text
    (its text does not start with `{`), None when it looks like one but does not
    parse as one.

    Decoded as `json.loads` decodes bytes (UTF-8, UTF-16 or UTF-32, told apart by
    the first bytes): a UTF-16 JSON object can spell `&username=decoy&` in the
    bytes of its characters, for the url-encoded reading alone to see.
    """
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError:
        return []  # `json.loads` fails on it too: no application reads JSON from it
    if not text.strip().startswith("{"):
        return []
    try:
        data = json.loads(text, object_pairs_hook=_Members)
    except (ValueError, RecursionError):
        return None  # a lenient JSON parser might still read it
    return data if isinstance(data, _Members) else None


def _multipart_fields(body: bytes, content_type: bytes) -> list[tuple[str, Any]] | None:
    """The fields of a multipart login form, or None unless every part is of the
    plainest shape (CRLF line breaks, one header line, `Content-Disposition:
    form-data; name="..."`, UTF-8 values).

    Strict on purpose, as the limits layer's boundary is: a part this reads
    differently from the application's parser could name a decoy account here and
    the real one there, while a body it declines names none (""), whose failures
    are the client's whatever the account. Any other header line of a part
    declines it: Django decodes a part whose `Content-Transfer-Encoding` is
    `base64`, dropping the characters outside the alphabet, so `YW!xpY2U=` is
    `alice` to it. A file part counts as a field without a string value, so a file
    under the account's name names none either. Nothing may come before the first
    boundary, nor after the closing one but a line break: Django parses a part out
    of that preamble and that epilogue, which RFC 2046 says to ignore.
    """
    boundary = parse_boundary(content_type)
    if boundary is None:
        return None
    sections = body.split(b"--" + boundary)
    if len(sections) < 3 or sections[0] or sections[-1] not in (b"--", b"--\r\n"):
        return None  # no part, not closed, or text outside the parts
    fields: list[tuple[str, Any]] = []
    for section in sections[1:-1]:
        head, blank, value = section.partition(b"\r\n\r\n")
        if not blank or not head.startswith(b"\r\n") or not value.endswith(b"\r\n"):
            return None
        header = head[2:]
        if b"\r\n" in header:
            return None  # a second header line
        header_name, _, header_value = header.partition(b":")
        if header_name.strip().lower() != b"content-disposition":
            return None
        disposition = _DISPOSITION.fullmatch(header_value.strip())
        if disposition is None:
            return None
        try:
            name = disposition.group(1).decode("utf-8")
            text = None if disposition.group(2) else value[:-2].decode("utf-8")
        except UnicodeDecodeError:
            return None
        fields.append((name, text))
    return fields


class _Members(list[tuple[str, Any]]):
    """A JSON object's members in document order, duplicate names kept (`json.loads`
    keeps the last only), so that `account_from_body` sees every one."""
