"""A real memory store that a test can switch "down": every call then raises StoreError."""

from __future__ import annotations

from bastion.exceptions import StoreError
from bastion.stores import MemoryStore
from bastion.stores.gcra import GCRAResult


class SwitchableStore(MemoryStore):
    """A `MemoryStore` whose backend fails while `down`; it also counts `touch` calls."""

    down = False
    touches = 0

    def _check(self) -> None:
        if self.down:
            raise StoreError("store is down (test)")

    async def get(self, key: str) -> bytes | None:
        self._check()
        return await super().get(key)

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None) -> int:
        self._check()
        return await super().incr(key, amount, ttl_seconds=ttl_seconds)

    async def touch(self, key: str, ttl_seconds: float) -> bool:
        self._check()
        self.touches += 1
        return await super().touch(key, ttl_seconds)

    async def gcra(
        self,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult:
        self._check()
        return await super().gcra(
            key,
            emission_interval_seconds=emission_interval_seconds,
            burst_tolerance_seconds=burst_tolerance_seconds,
            cost=cost,
        )
