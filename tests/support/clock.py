"""The one fake clock of the test suite: tests move time instead of sleeping."""

from __future__ import annotations


class FakeClock:
    """A `time.time`-like callable whose time only moves when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
