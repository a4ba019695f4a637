"""The ban list ("jail"): clients that pile up refusals are refused outright for a time.

Threat: a client that probes (forged requests, bad tokens, oversized bodies, too
many requests) keeps costing every layer work, and each refusal teaches it a little.
Defence: every refusal any Bastion layer reports (an event with action `blocked`)
counts against the client's network (grouped as for rate limits); at `threshold`
refusals within `window_seconds`, the client is banned for `ban_seconds`, and the
rate-limit layer answers it 403 (`banned`) before any other work. Counters and bans
live in the shared store, so one worker's ban holds in every worker.

Counting from the event stream: events are emitted synchronously from every layer,
including those OUTSIDE the rate-limit layer (transport, limits), so the jail cannot
learn of them by watching responses. `JailSink` is an event sink: `handle` schedules
the store increment as a task on the running loop and returns at once. At most
`max_in_flight` increments run at a time; beyond that (the store is slow, or a flood)
an increment is dropped and counted in `JailSink.dropped`, so the sink can never
queue unbounded work. A dropped count only delays a ban.

Not counted: refusals of already-banned clients (a ban would extend itself for
ever, at a store write per refused request), and `sys_*` events (the service's own
trouble, such as a store outage, is not the client's fault).

Not covered: shared addresses. Everyone behind one NAT shares a network and a ban;
thresholds are set high enough that normal clients never get close.

References: fail2ban `maxretry`, `findtime`, `bantime` (jail.conf);
OWASP Automated Threats, OAT-004 and OAT-008.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from bastion.events import EventEmitter, SecurityEvent
from bastion.exceptions import StoreError
from bastion.ratelimit.keys import ClientGrouping, client_key
from bastion.ratelimit.reasons import KIND_BY_REASON, LAYER, REASON_BANNED
from bastion.stores import Store

# fail2ban bans after 5 failures in 10 minutes for SSH logins. HTTP refusals are
# noisier (a buggy client retrying, a browser's favicon 400), so ten times as many.
DEFAULT_BAN_THRESHOLD: Final = 50
DEFAULT_BAN_WINDOW_SECONDS: Final = 600.0
# fail2ban's `bantime` default is 10 minutes; a quarter of an hour outlasts most
# scripted retry loops without punishing a shared address for long.
DEFAULT_BAN_SECONDS: Final = 900.0
# Increments in flight per process: well above a steady refusal rate's needs (each
# takes about a millisecond), small enough that a flood cannot pile up tasks.
DEFAULT_MAX_IN_FLIGHT: Final = 256
# The `details` key that marks the event of a ban starting, apart from the refusals
# of an already-banned client, which share its reason (`is_ban_start`).
BAN_START_DETAIL: Final = "refusals"


@dataclass(frozen=True, slots=True)
class BanPolicy:
    threshold: int = DEFAULT_BAN_THRESHOLD
    window_seconds: float = DEFAULT_BAN_WINDOW_SECONDS
    ban_seconds: float = DEFAULT_BAN_SECONDS

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.window_seconds <= 0 or self.ban_seconds <= 0:
            raise ValueError("threshold, window_seconds and ban_seconds must be positive")


def counts_toward_ban(record: Mapping[str, object]) -> bool:
    """Whether a redacted event record is a refusal the client earned.

    A redirect (the HTTP-to-HTTPS one is reported as `blocked`, status 308) is not:
    every browser following an `http://` link would walk towards a ban.
    """
    status = record.get("status")
    return (
        record.get("action") == "blocked"
        and not (isinstance(status, int) and status < 400)
        and record.get("reason") != REASON_BANNED
        and not str(record.get("kind", "")).startswith("sys_")
        and isinstance(record.get("client"), str)
    )


def is_ban_start(record: Mapping[str, object]) -> bool:
    """Whether a redacted event record reports a ban starting (`Jail.record_refusal`)."""
    details = record.get("details")
    return (
        record.get("layer") == LAYER
        and record.get("reason") == REASON_BANNED
        and isinstance(details, Mapping)
        and BAN_START_DETAIL in details
    )


class Jail:
    """Refusal counters and bans in the store. Store failures raise `StoreError`."""

    __slots__ = ("events", "grouping", "policy", "store")

    def __init__(
        self,
        store: Store,
        policy: BanPolicy | None = None,
        *,
        grouping: ClientGrouping | None = None,
        events: EventEmitter | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or BanPolicy()
        self.grouping = grouping or ClientGrouping()
        self.events = events

    def _keys(self, client: str | None) -> tuple[str, str]:
        part = client_key(client, self.grouping)
        return f"jail:n:{part}", f"jail:b:{part}"

    @staticmethod
    def ban_key(client_part: str) -> str:
        """The store key of a ban, from the client's `client_key` part."""
        return "jail:b:" + client_part

    async def is_banned(self, client: str | None) -> bool:
        return await self.store.get(self._keys(client)[1]) is not None

    async def record_refusal(self, client: str | None) -> bool:
        """Count one refusal; True when this one started a ban."""
        count_key, ban_key = self._keys(client)
        count = await self.store.incr(count_key, ttl_seconds=self.policy.window_seconds)
        if count < self.policy.threshold:
            return False
        # Of several workers crossing the threshold at once, one starts the ban.
        started = await self.store.set_if_absent(ban_key, b"1", self.policy.ban_seconds)
        await self.store.delete(count_key)
        if started and self.events is not None:
            self.events.emit(
                SecurityEvent(
                    kind=KIND_BY_REASON[REASON_BANNED],
                    reason=REASON_BANNED,
                    layer=LAYER,
                    status=403,
                    client=client,
                    details={BAN_START_DETAIL: count, "ban_seconds": self.policy.ban_seconds},
                )
            )
        return started

    async def ban(self, client: str | None, ban_seconds: float | None = None) -> None:
        """Ban a client's network now (an operator's decision)."""
        await self.store.set(self._keys(client)[1], b"1", ban_seconds or self.policy.ban_seconds)

    async def lift(self, client: str | None) -> bool:
        """Lift a ban and forget the refusals; True if a ban was in force."""
        count_key, ban_key = self._keys(client)
        await self.store.delete(count_key)
        return await self.store.delete(ban_key)


async def lift_ban(store: Store, client: str, *, grouping: ClientGrouping | None = None) -> bool:
    """Lift a client's ban (for a command line: `bastion ratelimit unban ADDRESS`)."""
    return await Jail(store, grouping=grouping).lift(client)


class JailSink:
    """An event sink that feeds refusals to a `Jail`, without blocking the emitter.

    Register it with the stack's `EventEmitter`. `handle` never raises and never
    awaits: it starts one task per counted refusal, up to `max_in_flight`.
    """

    def __init__(self, jail: Jail, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.jail = jail
        self.max_in_flight = max_in_flight
        self.dropped = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def handle(self, record: Mapping[str, object]) -> None:
        if not counts_toward_ban(record):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # emitted outside any loop (a CLI, a thread)
            self.dropped += 1
            return
        if len(self._tasks) >= self.max_in_flight:
            self.dropped += 1
            return
        task = loop.create_task(self._record(str(record["client"])))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, client: str) -> None:
        try:
            await self.jail.record_refusal(client)
        except StoreError:
            self.failed += 1

    async def drain(self) -> None:
        """Wait for the increments in flight (tests, graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
