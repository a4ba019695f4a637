"""What the bank shows live: the security events ring and the balance feed.

Threats:

* Memory exhaustion by an attacker who makes Bastion refuse many requests (every
  refusal is an event): `EventRing` keeps only the newest `capacity` records, and
  its counters only a bounded number of distinct kinds.
* Cross-site scripting through the events page: a record holds attacker-chosen
  text (paths, reasons of CSP reports). Records reach the page already redacted by
  the emitter and are rendered as text only (Jinja2 autoescaping; `textContent` in
  the page's script), never as markup.
* A slow WebSocket client holding unbounded pending messages: each subscriber has
  a bounded queue, and a message for a full queue is dropped for that subscriber
  (the next one carries the current balance anyway).

Not covered: persistence (the ring is per process and starts empty); the feed of a
user reaches only the sockets of the process that made the transfer.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

# A few hundred records fill the events page many times over.
DEFAULT_RING_CAPACITY: Final = 500
# Event kinds come from Bastion's vocabulary (a couple of dozen); anything beyond
# this many distinct kinds is not counted separately.
MAX_COUNTED_KINDS: Final = 64
OTHER_KIND: Final = "other"
# A person reads a handful of balance updates; 100 pending means the client is gone.
FEED_QUEUE_SIZE: Final = 100
# Sockets one user may hold in this process (tabs); the WebSocket guard caps per
# principal too when Bastion protects the bank.
MAX_FEEDS_PER_USER: Final = 20


class EventRing:
    """A bounded in-memory `EventSink`: the newest records, and refusals by kind."""

    def __init__(self, capacity: int = DEFAULT_RING_CAPACITY) -> None:
        self._records: deque[dict[str, object]] = deque(maxlen=capacity)
        self._refused_by_kind: Counter[str] = Counter()
        self.total_refused = 0

    def handle(self, record: Mapping[str, object]) -> None:
        self._records.append(dict(record))
        if record.get("action") == "allowed":
            return
        kind = str(record.get("kind", OTHER_KIND))
        if kind not in self._refused_by_kind and len(self._refused_by_kind) >= MAX_COUNTED_KINDS:
            kind = OTHER_KIND
        self._refused_by_kind[kind] += 1
        self.total_refused += 1

    def recent(self, limit: int, *, refused_only: bool = True) -> list[dict[str, object]]:
        """The newest records first (refusals only, unless told otherwise)."""
        found: list[dict[str, object]] = []
        for record in reversed(self._records):
            if len(found) >= limit:
                break
            if not refused_only or record.get("action") != "allowed":
                found.append(record)
        return found

    def refused_by_kind(self) -> dict[str, int]:
        return dict(self._refused_by_kind.most_common())


class FeedHub:
    """Balance changes, fanned out to each user's open sockets in this process."""

    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}

    @contextmanager
    def subscribe(self, username: str) -> Iterator[asyncio.Queue[dict[str, Any]] | None]:
        """A queue of `username`'s updates while the block runs; None if at the cap."""
        queues = self._queues.setdefault(username, set())
        if len(queues) >= MAX_FEEDS_PER_USER:
            yield None
            return
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(FEED_QUEUE_SIZE)
        queues.add(queue)
        try:
            yield queue
        finally:
            queues.discard(queue)
            if not queues:
                self._queues.pop(username, None)

    def publish(self, username: str, message: dict[str, Any]) -> None:
        for queue in self._queues.get(username, ()):
            if not queue.full():
                queue.put_nowait(message)
