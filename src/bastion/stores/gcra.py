"""The generic cell rate algorithm (GCRA): the arithmetic of one rate-limit step.

Threat: a client sends requests faster than a route should serve them (credential
stuffing, scraping, resource exhaustion).
Defence: GCRA, as in ATM networks and redis-cell. Each key keeps one number, the
theoretical arrival time (TAT): when the client's bucket will be empty again if it
sends nothing more. With `T` the emission interval (seconds per request at the
sustained rate) and `tau` the burst tolerance, a request of `cost` units at `now`:

    tat     = max(stored_tat, now)            # an idle past earns nothing beyond a full bucket
    new_tat = tat + cost * T
    allowed = new_tat - (tau + T) <= now      # i.e. new_tat - now <= tau + T

An allowed request stores `new_tat` (it may expire at `new_tat`: from then on the
stored state means the same as no state); a refused one stores nothing. So a fresh
key allows a burst of `1 + tau / T` requests at once, then one every `T` seconds, and
over any stretch of `elapsed` seconds at most `(elapsed + tau + T) / T` units.

Everything is integer microseconds, so the arithmetic is exact in every backend (a
Python int, an SQLite INTEGER, and a Lua double, which holds integers exactly up to
2**53, about 285 years of microseconds). The Redis store runs the same lines in Lua;
its test compares both on the same inputs.

This module is sans-IO: time comes in as `now_us`; it never reads a clock or a store.
Not covered here: which key a request maps to (the rate-limit layer decides).

References: ITU-T I.371 Annex A (GCRA, virtual scheduling algorithm);
https://brandur.org/rate-limiting ; https://github.com/brandur/redis-cell
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final, NamedTuple

MICROSECONDS: Final = 1_000_000
# One year. Longer intervals are not rate limits; the bound also keeps every sum
# below 2**53, where Lua doubles stop being exact.
MAX_INTERVAL_SECONDS: Final = 365 * 24 * 3600.0
# A request can cost at most this many units; a bigger cost is a units mistake.
MAX_COST: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class GCRALimit:
    """A validated rate in integer microseconds: the input of `gcra_step`."""

    emission_interval_us: int
    burst_tolerance_us: int
    cost: int = 1

    @classmethod
    def from_seconds(
        cls,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRALimit:
        """Validate and convert; raises ValueError naming the rule broken.

        A cost the burst can never hold (`cost * T > tau + T`) is refused here,
        because such a request could never be allowed and has no honest Retry-After.
        """
        for name, seconds in (
            ("emission_interval_seconds", emission_interval_seconds),
            ("burst_tolerance_seconds", burst_tolerance_seconds),
        ):
            if not math.isfinite(seconds) or not 0 <= seconds <= MAX_INTERVAL_SECONDS:
                raise ValueError(f"{name} must be between 0 and {MAX_INTERVAL_SECONDS:g}")
        interval_us = round(emission_interval_seconds * MICROSECONDS)
        if interval_us < 1:
            raise ValueError("emission_interval_seconds must be at least one microsecond")
        if isinstance(cost, bool) or not isinstance(cost, int) or not 0 <= cost <= MAX_COST:
            raise ValueError(f"cost must be an integer between 0 and {MAX_COST}")
        tolerance_us = round(burst_tolerance_seconds * MICROSECONDS)
        if cost * interval_us > tolerance_us + interval_us:
            raise ValueError("cost is larger than the burst: such a request is never allowed")
        return cls(interval_us, tolerance_us, cost)

    @classmethod
    def from_rate(
        cls, count: int, period_seconds: float, *, burst: int | None = None, cost: int = 1
    ) -> GCRALimit:
        """`count` requests per `period_seconds`, with bursts of `burst` (default `count`)."""
        if count < 1 or period_seconds <= 0:
            raise ValueError("count must be at least 1 and period_seconds positive")
        burst = count if burst is None else burst
        if burst < 1:
            raise ValueError("burst must be at least 1")
        interval = period_seconds / count
        limit = cls.from_seconds(interval, interval * (burst - 1), cost)
        # Round the tolerance as a whole number of *rounded* intervals: rounding the
        # two separately can leave the tolerance a microsecond short of (burst - 1)
        # intervals, which would allow one request less than the burst.
        return cls(limit.emission_interval_us, limit.emission_interval_us * (burst - 1), cost)

    @property
    def burst(self) -> int:
        """How many cost-1 requests a fresh key allows at once."""
        return (self.burst_tolerance_us + self.emission_interval_us) // self.emission_interval_us


class GCRAResult(NamedTuple):
    """The verdict of one GCRA step, as every store returns it.

    A named tuple rather than a frozen dataclass: as immutable, and a store on the
    hot path builds it with one C call (`tuple.__new__`), where the frozen
    dataclass's `__init__` set each field through `object.__setattr__` (a third of
    the memory store's step).

    `remaining` is how many more cost-1 requests would be allowed right now;
    `retry_after_seconds` is 0 when allowed, else the wait until this same request
    would be; `reset_after_seconds` is the wait until the bucket is full again (the
    `reset` of the IETF RateLimit header fields).
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after_seconds: float
    reset_after_seconds: float


@dataclass(frozen=True, slots=True)
class GCRAStep:
    """The exact decision: what to answer and what to store.

    `tat_us` is the TAT to store (with a time to live of `reset_after_us`), or None
    when nothing changes (a refused request, or cost 0).
    """

    allowed: bool
    tat_us: int | None
    limit: int
    remaining: int
    retry_after_us: int
    reset_after_us: int

    def result(self) -> GCRAResult:
        return GCRAResult(
            allowed=self.allowed,
            limit=self.limit,
            remaining=self.remaining,
            retry_after_seconds=self.retry_after_us / MICROSECONDS,
            reset_after_seconds=self.reset_after_us / MICROSECONDS,
        )


def gcra_step(stored_tat_us: int | None, now_us: int, limit: GCRALimit) -> GCRAStep:
    """One GCRA step for a key whose stored TAT is `stored_tat_us` (None: no state)."""
    interval = limit.emission_interval_us
    window = limit.burst_tolerance_us + interval  # new_tat may run at most this far ahead
    tat = now_us if stored_tat_us is None or stored_tat_us < now_us else stored_tat_us
    new_tat = tat + limit.cost * interval
    allow_at = new_tat - window
    if allow_at > now_us:
        return GCRAStep(
            allowed=False,
            tat_us=None,
            limit=limit.burst,
            remaining=max(0, (now_us + window - tat) // interval),
            retry_after_us=allow_at - now_us,
            reset_after_us=tat - now_us,
        )
    return GCRAStep(
        allowed=True,
        tat_us=new_tat if limit.cost > 0 else None,
        limit=limit.burst,
        remaining=(now_us + window - new_tat) // interval,
        retry_after_us=0,
        reset_after_us=new_tat - now_us,
    )


@functools.lru_cache(maxsize=1024, typed=True)
def parse_limit(
    emission_interval_seconds: float, burst_tolerance_seconds: float, cost: int = 1
) -> GCRALimit:
    """`GCRALimit.from_seconds`, remembered: a rate limiter asks for few distinct rates."""
    return GCRALimit.from_seconds(emission_interval_seconds, burst_tolerance_seconds, cost)


def to_microseconds(seconds: float) -> int:
    """A clock reading in integer microseconds, as `gcra_step` takes it."""
    return round(seconds * MICROSECONDS)
