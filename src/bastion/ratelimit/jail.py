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

Exempt (`never_ban`): the operator's own monitoring, health checkers, load
generators and the `bastion audit` host, which earn refusals on purpose. Their
refusals are not counted and they are never banned; their rate limits and every
other layer still apply. A ban is kept per client network, so a listed address
exempts the whole network it is grouped in (its /64 for IPv6 by default): a
neighbour's refusals must not ban it. `never_ban` is parsed once; it is consulted
only when a refusal is reported or a ban is read through the jail (`is_banned`),
never on a request that nobody refuses. Entries wider than `MIN_NEVER_BAN_PREFIXLEN`
are refused: an exemption for a slice of the Internet is a switch-off in disguise.

Not covered: shared addresses. Everyone behind one NAT shares a network and a ban;
thresholds are set high enough that normal clients never get close.

References: fail2ban `maxretry`, `findtime`, `bantime` (jail.conf);
OWASP Automated Threats, OAT-004 and OAT-008.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Final, TypeAlias

from bastion.events import Action, EventEmitter, SecurityEvent
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
# The widest network `never_ban` accepts, per IP version: an IPv4 /8 is the largest
# private block (RFC 1918 10.0.0.0/8), an IPv6 /32 the minimum a regional registry
# allocates to a whole ISP (RIPE IPv6 address allocation policy, "minimum
# allocation size"). Wider is not "our monitoring" any more.
MIN_NEVER_BAN_PREFIXLEN: Final = {4: 8, 6: 32}
_IPV4_MAPPED_PREFIXLEN: Final = 96  # ::ffff:0:0/96 (RFC 4291 section 2.5.5.2)

IPNetwork: TypeAlias = IPv4Network | IPv6Network


def parse_never_ban(value: object) -> IPNetwork:
    """One `never_ban` entry (an address or CIDR network) as a network, or ValueError.

    Refused: anything that is not an address or network, a network with host bits
    set (`10.0.0.1/8` is a typo), and a network wider than `MIN_NEVER_BAN_PREFIXLEN`
    (`0.0.0.0/0` and `::/0` included). An IPv4-mapped IPv6 network is stored as the
    IPv4 network it names, as clients are grouped (`bastion.ratelimit.keys`).
    """
    if isinstance(value, IPv4Network | IPv6Network):
        network = value
    elif isinstance(value, IPv4Address | IPv6Address):
        network = ip_network(value)
    elif isinstance(value, str):
        try:
            network = ip_network(value.strip(), strict=True)
        except ValueError:
            raise ValueError(
                f"never_ban: {value!r} is not an IP address or CIDR network "
                "(host bits must be zero)"
            ) from None
    else:
        raise ValueError(f"never_ban: {value!r} is not an IP address or network")
    if network.version == 6 and network.prefixlen >= _IPV4_MAPPED_PREFIXLEN:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            network = IPv4Network((mapped, network.prefixlen - _IPV4_MAPPED_PREFIXLEN))
    minimum = MIN_NEVER_BAN_PREFIXLEN[network.version]
    if network.prefixlen < minimum:
        raise ValueError(
            f"never_ban: {str(network)!r} is wider than /{minimum} and would exempt "
            "other people's clients from bans; list your own hosts or subnets"
        )
    return network


@dataclass(frozen=True, slots=True)
class BanPolicy:
    threshold: int = DEFAULT_BAN_THRESHOLD
    window_seconds: float = DEFAULT_BAN_WINDOW_SECONDS
    ban_seconds: float = DEFAULT_BAN_SECONDS
    never_ban: tuple[IPNetwork, ...] = ()
    """Networks whose refusals are not counted and which are never banned."""

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.window_seconds <= 0 or self.ban_seconds <= 0:
            raise ValueError("threshold, window_seconds and ban_seconds must be positive")
        # Validated here too, for a policy built in code rather than from settings.
        networks = tuple(dict.fromkeys(parse_never_ban(n) for n in self.never_ban))
        object.__setattr__(self, "never_ban", networks)


# Remembered per address, as `client_key` is: the same client's refusals come in runs.
# Bounded, so a spray of addresses only churns it.
@functools.lru_cache(maxsize=4096)
def is_never_banned(
    host: str | None, never_ban: tuple[IPNetwork, ...], grouping: ClientGrouping
) -> bool:
    """Whether a client's ban group (its network, as `client_key` groups it) overlaps
    a `never_ban` network. A host that is not an IP address is never exempt."""
    if not host or not never_ban:
        return False
    try:
        address = ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, IPv4Address):
        group4 = IPv4Network((address, grouping.ipv4_prefix), strict=False)
        return any(isinstance(n, IPv4Network) and group4.overlaps(n) for n in never_ban)
    group6 = IPv6Network((address, grouping.ipv6_prefix), strict=False)
    return any(isinstance(n, IPv6Network) and group6.overlaps(n) for n in never_ban)


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
    """Refusal counters and bans in the store. Store failures raise `StoreError`.

    Clients of the policy's `never_ban` networks are exempt (module docstring): their
    refusals are not counted, `is_banned` is False for them, and `ban` refuses them.
    """

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

    def is_exempt(self, client: str | None) -> bool:
        """Whether the client's network may never be banned (`BanPolicy.never_ban`)."""
        never_ban = self.policy.never_ban
        return bool(never_ban) and is_never_banned(client, never_ban, self.grouping)

    async def is_banned(self, client: str | None) -> bool:
        if self.is_exempt(client):
            return False
        return await self.store.get(self._keys(client)[1]) is not None

    async def record_refusal(self, client: str | None) -> bool:
        """Count one refusal; True when this one started a ban."""
        if self.is_exempt(client):
            return False
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
        """Ban a client's network now (an operator's decision); ValueError when the
        network is exempt, rather than a ban that `is_banned` would deny."""
        if self.is_exempt(client):
            raise ValueError("the client's network is in ratelimit.never_ban; remove it there")
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

    def accepts(self, kind: str, action: Action) -> bool:
        """Only refusals can count toward a ban (`counts_toward_ban` decides on the
        record): no record is built for the jail of any other event."""
        return action == "blocked" and not kind.startswith("sys_")

    def handle(self, record: Mapping[str, object]) -> None:
        if not counts_toward_ban(record):
            return
        # Before a task is made: a load generator's stream of 429s must not take the
        # in-flight slots that count real clients' refusals.
        if self.jail.is_exempt(str(record["client"])):
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
        """Wait for the increments in flight (tests, graceful shutdown).

        The tasks waited for are taken out here, not left to their done callbacks:
        those run on a later turn of the loop, and since Python 3.12 a `gather` of
        tasks that have all finished returns without yielding to the loop, so this
        loop would spin forever on a finished task.
        """
        while self._tasks:
            waited = list(self._tasks)
            await asyncio.gather(*waited, return_exceptions=True)
            self._tasks.difference_update(waited)
