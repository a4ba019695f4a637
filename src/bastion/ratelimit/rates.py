"""Rates as users write them: `"100/minute"`, `"10/30s"`, `"5/minute; burst=2; key=api_key"`.

Grammar (whitespace around `/`, `;` and `=` is ignored; names are case-insensitive):

    rate    = count "/" period *( ";" param )
    period  = "second" / "minute" / "hour" / "day" / 1*DIGIT "s"
    param   = "burst=" 1*DIGIT / "key=" name / "name=" name
    name    = 1*( ALPHA / DIGIT / "_" / "-" / "." )

`burst` is how many requests a fresh client may send at once (default: `count`, so a
client may spend its whole quota in one go, as a fixed window would allow).
`key` says how requests are grouped into one bucket (see `bastion.ratelimit.keys`);
`name` is the policy name shown in the `RateLimit` header fields.

The parsed `Rate` is exact data; `Rate.gcra` gives the GCRA parameters the store's
atomic step takes (see `bastion.stores.gcra`), so the arithmetic is never repeated
here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from bastion.stores.gcra import MICROSECONDS, GCRALimit

PERIODS: Final[dict[str, int]] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
# Longest period: a day is the longest window the IETF draft's examples use, and a
# `Ns` period longer than a week is a units mistake (a quota, not a rate).
MAX_PERIOD_SECONDS: Final = 7 * 86400
# Most requests one rate can allow in its period: a million per period keeps every
# emission interval at one microsecond or more for periods of a second and up.
MAX_COUNT: Final = 1_000_000
KEY_CLIENT: Final = "client"
BUILTIN_KEYS: Final = frozenset({"client", "principal", "api_key", "route"})

_RATE: Final = re.compile(
    r"\s*([0-9]{1,9})\s*/\s*(?:(second|minute|hour|day)|([0-9]{1,9})\s*s)\s*\Z"
)
_NAME: Final = re.compile(r"[a-z0-9_.-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` requests per `period_seconds`, bursts of `burst`, grouped by `key`."""

    count: int
    period_seconds: int
    burst: int
    key: str = KEY_CLIENT
    name: str = ""

    @property
    def policy_name(self) -> str:
        """The name in the `RateLimit` fields: given, or derived (`100-per-60s`)."""
        return self.name or f"{self.count}-per-{self.period_seconds}s"

    @property
    def gcra(self) -> GCRALimit:
        """The GCRA parameters, with a burst of exactly `burst`.

        The tolerance is a whole number of (rounded) emission intervals: rounding the
        interval and the tolerance separately, as `GCRALimit.from_rate` does, can
        lose one unit of burst when the interval is not a whole microsecond (6/second
        with burst 3 would allow 2).
        """
        interval_us = round(self.period_seconds * MICROSECONDS / self.count)
        return GCRALimit.from_seconds(
            interval_us / MICROSECONDS, interval_us * (self.burst - 1) / MICROSECONDS
        )

    def __str__(self) -> str:
        text = f"{self.count}/{self.period_seconds}s"
        if self.burst != self.count:
            text += f"; burst={self.burst}"
        if self.key != KEY_CLIENT:
            text += f"; key={self.key}"
        if self.name:
            text += f"; name={self.name}"
        return text


def parse_rate(text: str) -> Rate:
    """Parse one rate, raising ValueError naming the rule it breaks."""
    head, *params = text.split(";")
    match = _RATE.match(head.lower())
    if match is None:
        raise ValueError(
            f"rate {text!r}: write N/second, N/minute, N/hour, N/day or N/Ms (e.g. 10/30s)"
        )
    count = int(match.group(1))
    period = PERIODS[match.group(2)] if match.group(2) else int(match.group(3))
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"rate {text!r}: the count must be between 1 and {MAX_COUNT}")
    if not 1 <= period <= MAX_PERIOD_SECONDS:
        raise ValueError(f"rate {text!r}: the period must be 1 to {MAX_PERIOD_SECONDS} seconds")
    values: dict[str, str] = {}
    for param in params:
        name, sep, value = (part.strip().lower() for part in param.partition("="))
        if not sep or name not in ("burst", "key", "name") or name in values:
            raise ValueError(f"rate {text!r}: parameters are burst=N, key=NAME and name=NAME")
        values[name] = value
    burst = count
    if "burst" in values:
        if not values["burst"].isdigit() or not 1 <= int(values["burst"]) <= MAX_COUNT:
            raise ValueError(f"rate {text!r}: burst must be between 1 and {MAX_COUNT}")
        burst = int(values["burst"])
    for name in ("key", "name"):
        if name in values and not _NAME.match(values[name]):
            raise ValueError(f"rate {text!r}: {name} must be 1-64 of a-z 0-9 _ . -")
    rate = Rate(count, period, burst, values.get("key", KEY_CLIENT), values.get("name", ""))
    try:
        rate.gcra  # noqa: B018 - validates: the burst must span at most a year
    except ValueError:
        raise ValueError(f"rate {text!r}: burst * period / count must be at most a year") from None
    return rate
