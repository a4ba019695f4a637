"""The SQLite store: one file, shared safely by every process on one host.

For a laptop, or a single host running several workers, where Redis would be one
more thing to run. State survives restarts (sessions stay signed in, bans stay).

Atomicity: every read-modify-write step is one `BEGIN IMMEDIATE` transaction, which
takes the database's write lock before reading, so two processes can never both read
the old counter. Waiting for the lock is bounded by `timeout_seconds` (SQLite's
`busy_timeout`); past it the step fails with `StoreError`.

The file is in WAL mode (readers never wait for the writer) with `synchronous=NORMAL`:
a committed step survives a crash of the application, and only a power loss can lose
the last few, which for sessions and rate limits means a few re-logins or a few
uncounted requests.

The event loop never waits on the disk: each store owns one worker thread and one
connection, and every call runs there (`run_in_executor`). Calls of one store are
thereby serialised, and calls from other stores or processes meet in SQLite's locks.

Expired rows are invisible at once (every read compares `expires_at` with the
clock) and deleted later: every `sweep_every_writes` writes, one sweep deletes at
most `sweep_batch` expired rows from each table, so no single write pays for a
backlog, and a steady load sweeps faster than it expires.

Reference: https://www.sqlite.org/lang_transaction.html (BEGIN IMMEDIATE),
https://www.sqlite.org/wal.html , https://www.sqlite.org/pragma.html#pragma_synchronous
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from bastion.exceptions import StoreError
from bastion.stores.base import (
    DEFAULT_MAX_KEYS_PER_OWNER,
    check_amount,
    check_counter,
    check_key,
    check_required_ttl,
    check_ttl,
    check_value,
    parse_counter,
)
from bastion.stores.gcra import (
    MICROSECONDS,
    GCRAResult,
    gcra_step,
    parse_limit,
    to_microseconds,
)

T = TypeVar("T")

# Python's sqlite3 waits 5 s for a lock by default; a step holds the lock for well
# under a millisecond, so waiting longer means the disk or a process is stuck.
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
# A sweep every 1,000 writes deleting up to 1,000 rows per table keeps ahead of any
# write rate (each write adds at most one row), and bounds a sweep to a few ms.
DEFAULT_SWEEP_EVERY_WRITES: Final = 1000
DEFAULT_SWEEP_BATCH: Final = 1000
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS bastion_store (
        key TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL,
        expires_at REAL
    ) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS bastion_store_expiry
        ON bastion_store (expires_at) WHERE expires_at IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS bastion_owners (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (owner, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS bastion_owners_expiry ON bastion_owners (expires_at)",
)
_UPSERT: Final = """INSERT INTO bastion_store (key, value, expires_at) VALUES (?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"""


class SQLiteStore:
    """A `Store` in one SQLite file; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_keys_per_owner: int = DEFAULT_MAX_KEYS_PER_OWNER,
        sweep_every_writes: int = DEFAULT_SWEEP_EVERY_WRITES,
        sweep_batch: int = DEFAULT_SWEEP_BATCH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if max_keys_per_owner < 1 or sweep_every_writes < 1 or sweep_batch < 1:
            raise ValueError("max_keys_per_owner, sweep_every_writes, sweep_batch must be >= 1")
        self.path = os.fspath(path)
        self.timeout_seconds = timeout_seconds
        self.max_keys_per_owner = max_keys_per_owner
        self.sweep_every_writes = sweep_every_writes
        self.sweep_batch = sweep_batch
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-sqlite")
        # Touched only from the worker thread.
        self._connection: sqlite3.Connection | None = None
        self._writes = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- the protocol ------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        check_key(key)

        def step(db: sqlite3.Connection, now: float) -> bytes | None:
            row = _select_live(db, key, now)
            return None if row is None else bytes(row[0])

        return await self._read(step)

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        check_key(key)
        check_value(value)
        ttl = check_ttl(ttl_seconds)

        def step(db: sqlite3.Connection, now: float) -> None:
            db.execute(_UPSERT, (key, value, _expiry(now, ttl)))

        await self._write(step)

    async def delete(self, key: str) -> bool:
        check_key(key)

        def step(db: sqlite3.Connection, now: float) -> bool:
            present = _select_live(db, key, now) is not None
            db.execute("DELETE FROM bastion_store WHERE key = ?", (key,))
            return present

        return await self._write(step)

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        check_key(key)
        check_value(value)
        ttl = check_ttl(ttl_seconds)

        def step(db: sqlite3.Connection, now: float) -> bool:
            if _select_live(db, key, now) is not None:
                return False
            db.execute(_UPSERT, (key, value, _expiry(now, ttl)))
            return True

        return await self._write(step)

    async def replace(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        check_key(key)
        check_value(value)
        ttl = check_ttl(ttl_seconds)

        def step(db: sqlite3.Connection, now: float) -> bool:
            # One statement, matching only a live row: an absent or expired key
            # stays absent (an expired row is left for the sweep).
            changed = db.execute(
                """UPDATE bastion_store SET value = ?, expires_at = ?
                WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)""",
                (value, _expiry(now, ttl), key, now),
            ).rowcount
            return bool(changed)

        return await self._write(step)

    async def delete_if_equal(self, key: str, value: bytes) -> bool:
        check_key(key)
        check_value(value)

        def step(db: sqlite3.Connection, now: float) -> bool:
            # One guarded statement, matching only a live row holding `value` (a
            # BLOB, as every value is written): anything else is left as it is.
            deleted = db.execute(
                """DELETE FROM bastion_store
                WHERE key = ? AND value = ? AND (expires_at IS NULL OR expires_at > ?)""",
                (key, value, now),
            ).rowcount
            return bool(deleted)

        return await self._write(step)

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None) -> int:
        check_key(key)
        check_amount(amount)
        ttl = check_ttl(ttl_seconds)

        def step(db: sqlite3.Connection, now: float) -> int:
            row = _select_live(db, key, now)
            if row is None:
                result, expires_at = check_counter(amount), _expiry(now, ttl)
            else:
                result = check_counter(parse_counter(bytes(row[0])) + amount)
                expires_at = row[1]
            db.execute(_UPSERT, (key, str(result).encode("ascii"), expires_at))
            return result

        return await self._write(step)

    async def touch(self, key: str, ttl_seconds: float) -> bool:
        check_key(key)
        ttl = check_required_ttl(ttl_seconds)

        def step(db: sqlite3.Connection, now: float) -> bool:
            changed = db.execute(
                """UPDATE bastion_store SET expires_at = ?
                WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)""",
                (now + ttl, key, now),
            ).rowcount
            return bool(changed)

        return await self._write(step)

    async def gcra(
        self,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult:
        check_key(key)
        limit = parse_limit(emission_interval_seconds, burst_tolerance_seconds, cost)

        def step(db: sqlite3.Connection, now: float) -> GCRAResult:
            row = _select_live(db, key, now)
            stored = None if row is None else parse_counter(bytes(row[0]))
            decision = gcra_step(stored, to_microseconds(now), limit)
            if decision.tat_us is not None:
                tat = decision.tat_us
                db.execute(_UPSERT, (key, str(tat).encode("ascii"), tat / MICROSECONDS))
            return decision.result()

        return await self._write(step)

    async def gcra_unless(
        self,
        guard_key: str,
        key: str,
        *,
        emission_interval_seconds: float,
        burst_tolerance_seconds: float,
        cost: int = 1,
    ) -> GCRAResult | None:
        check_key(guard_key)
        check_key(key)
        limit = parse_limit(emission_interval_seconds, burst_tolerance_seconds, cost)

        def step(db: sqlite3.Connection, now: float) -> GCRAResult | None:
            # One transaction: the guard is read under the same write lock as the step.
            if _select_live(db, guard_key, now) is not None:
                return None
            row = _select_live(db, key, now)
            stored = None if row is None else parse_counter(bytes(row[0]))
            decision = gcra_step(stored, to_microseconds(now), limit)
            if decision.tat_us is not None:
                tat = decision.tat_us
                db.execute(_UPSERT, (key, str(tat).encode("ascii"), tat / MICROSECONDS))
            return decision.result()

        return await self._write(step)

    async def add_to_owner(self, owner: str, key: str, ttl_seconds: float) -> None:
        check_key(owner, "owner")
        check_key(key)
        ttl = check_required_ttl(ttl_seconds)
        cap = self.max_keys_per_owner

        def step(db: sqlite3.Connection, now: float) -> None:
            db.execute(
                """INSERT INTO bastion_owners (owner, key, expires_at) VALUES (?, ?, ?)
                ON CONFLICT (owner, key)
                DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)""",
                (owner, key, now + ttl),
            )
            if _count_owned(db, owner) <= cap:
                return
            # Over the bound: forget entries whose key is gone, then, fail safe,
            # delete the keys that expire first along with their entries.
            db.execute(
                """DELETE FROM bastion_owners WHERE owner = ? AND (expires_at <= ?
                OR key NOT IN (SELECT key FROM bastion_store
                WHERE expires_at IS NULL OR expires_at > ?))""",
                (owner, now, now),
            )
            overflow = _count_owned(db, owner) - cap
            if overflow > 0:
                victims = db.execute(
                    """SELECT key FROM bastion_owners WHERE owner = ?
                    ORDER BY expires_at, key LIMIT ?""",
                    (owner, overflow),
                ).fetchall()
                for (victim,) in victims:
                    db.execute("DELETE FROM bastion_store WHERE key = ?", (victim,))
                    db.execute(
                        "DELETE FROM bastion_owners WHERE owner = ? AND key = ?", (owner, victim)
                    )

        await self._write(step)

    async def delete_owned(self, owner: str) -> int:
        check_key(owner, "owner")

        def step(db: sqlite3.Connection, now: float) -> int:
            (live,) = db.execute(
                """SELECT count(*) FROM bastion_store
                WHERE key IN (SELECT key FROM bastion_owners WHERE owner = ?)
                AND (expires_at IS NULL OR expires_at > ?)""",
                (owner, now),
            ).fetchone()
            db.execute(
                """DELETE FROM bastion_store
                WHERE key IN (SELECT key FROM bastion_owners WHERE owner = ?)""",
                (owner,),
            )
            db.execute("DELETE FROM bastion_owners WHERE owner = ?", (owner,))
            return int(live)

        return await self._write(step)

    async def ping(self) -> None:
        def step(db: sqlite3.Connection, now: float) -> None:
            db.execute("SELECT 1").fetchone()

        await self._read(step)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_connection)
        finally:
            self._executor.shutdown(wait=False)

    async def sweep(self) -> int:
        """Delete up to `sweep_batch` expired rows from each table now; how many went."""

        def step(db: sqlite3.Connection, now: float) -> int:
            return _sweep(db, now, self.sweep_batch)

        return await self._write(step, count=False)

    # -- internals ---------------------------------------------------------------

    async def _read(self, step: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run a read-only `step` outside any transaction (WAL: a consistent snapshot)."""
        return await self._submit(lambda: step(self._open(), self._clock()))

    async def _write(
        self, step: Callable[[sqlite3.Connection, float], T], *, count: bool = True
    ) -> T:
        def run() -> T:
            db = self._open()
            result = _transaction(db, lambda: step(db, self._clock()))
            if count:
                self._writes += 1
                if self._writes % self.sweep_every_writes == 0:
                    # The step has committed: a sweep that meets a busy lock must not
                    # report it as failed. The next sweep catches up.
                    with contextlib.suppress(sqlite3.OperationalError):
                        _transaction(db, lambda: _sweep(db, self._clock(), self.sweep_batch))
            return result

        return await self._submit(run)

    async def _submit(self, run: Callable[[], T]) -> T:
        if self._closed:
            raise StoreError("sqlite store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, run)
        except sqlite3.Error as exc:
            # SQLite's messages name the failure ("database is locked", "file is not
            # a database"), never data; the path is configuration, not a secret.
            raise StoreError(f"sqlite store: {type(exc).__name__}: {exc}") from exc
        except RuntimeError as exc:  # the executor was shut down by a concurrent close
            raise StoreError("sqlite store is closed") from exc

    def _open(self) -> sqlite3.Connection:
        """The worker thread's connection, opened and migrated on first use."""
        if self._connection is not None:
            return self._connection
        db = sqlite3.connect(
            self.path,
            timeout=self.timeout_seconds,
            isolation_level=None,  # autocommit; each step issues its own BEGIN
        )
        try:
            db.execute(f"PRAGMA busy_timeout = {round(self.timeout_seconds * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            _transaction(db, lambda: _migrate(db))
        except BaseException:
            db.close()
            raise
        self._connection = db
        return db

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _transaction(db: sqlite3.Connection, body: Callable[[], T]) -> T:
    """Run `body` in one BEGIN IMMEDIATE transaction: the write lock is taken first."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = body()
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _migrate(db: sqlite3.Connection) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"sqlite store: the file has schema version {version}, newer than this "
            f"Bastion's {SCHEMA_VERSION}"
        )
    for statement in _SCHEMA:
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _select_live(db: sqlite3.Connection, key: str, now: float) -> tuple[bytes, float] | None:
    row: tuple[bytes, float] | None = db.execute(
        """SELECT value, expires_at FROM bastion_store
        WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)""",
        (key, now),
    ).fetchone()
    return row


def _count_owned(db: sqlite3.Connection, owner: str) -> int:
    (count,) = db.execute(
        "SELECT count(*) FROM bastion_owners WHERE owner = ?", (owner,)
    ).fetchone()
    return int(count)


def _sweep(db: sqlite3.Connection, now: float, batch: int) -> int:
    store = db.execute(
        """DELETE FROM bastion_store WHERE key IN (SELECT key FROM bastion_store
        WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)""",
        (now, batch),
    ).rowcount
    owners = db.execute(
        """DELETE FROM bastion_owners WHERE (owner, key) IN (SELECT owner, key
        FROM bastion_owners WHERE expires_at <= ? LIMIT ?)""",
        (now, batch),
    ).rowcount
    return int(store) + int(owners)


def _expiry(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl
