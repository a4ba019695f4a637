"""SQLite store specifics: exact across OS processes, sweeping, persistence, failures,
and an event loop that keeps running while SQLite waits for its lock."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

from bastion.exceptions import StoreError
from bastion.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio

_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from bastion.stores.sqlite import SQLiteStore

    async def main(path, count):
        # Exact counting is the point here, not the lock wait's bound: a machine busy
        # with other work can hold four writers past the default 5 s.
        store = SQLiteStore(path, timeout_seconds=60.0)
        await store.ping()
        print("ready", flush=True)
        sys.stdin.readline()  # every worker starts at the same moment
        try:
            counts = [await store.incr("hits", ttl_seconds=None) for _ in range(count)]
            won = await store.set_if_absent("winner", sys.argv[3].encode(), None)
            gcra = [
                (await store.gcra("rl", emission_interval_seconds=3600.0,
                                  burst_tolerance_seconds=3600.0 * 49)).allowed
                for _ in range(count)
            ]
        finally:
            await store.close()
        print(json.dumps({"counts": counts, "won": won, "allowed": sum(gcra)}))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def test_several_processes_count_exactly(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    processes, per_process = 4, 250
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), str(per_process), f"worker-{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for n in range(processes)
    ]
    outputs = []
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline() == b"ready\n"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
            worker.stdin.flush()
        for worker in workers:
            stdout, _ = worker.communicate(timeout=60)
            assert worker.returncode == 0
            outputs.append(json.loads(stdout))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    every_count = sorted(count for output in outputs for count in output["counts"])
    assert every_count == list(range(1, processes * per_process + 1))  # none lost, none twice
    assert sum(output["won"] for output in outputs) == 1
    assert sum(output["allowed"] for output in outputs) == 50  # the burst, exactly


async def test_state_survives_a_new_store(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "store.db"
    first = SQLiteStore(path, clock=clock)
    await first.set("k", b"v", 60.0)
    await first.incr("n", 5, ttl_seconds=None)
    await first.close()
    second = SQLiteStore(path, clock=clock)
    try:
        assert await second.get("k") == b"v"
        assert await second.incr("n", ttl_seconds=None) == 6
    finally:
        await second.close()


def _rows(path: Path) -> int:
    # `with` on a connection ends a transaction but does not close it (Python 3.13
    # warns of a connection left open): `closing` does.
    with closing(sqlite3.connect(path)) as db:
        (store,) = db.execute("SELECT count(*) FROM bastion_store").fetchone()
        (owners,) = db.execute("SELECT count(*) FROM bastion_owners").fetchone()
    return int(store) + int(owners)


async def test_expired_rows_are_swept_in_bounded_batches(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "store.db"
    store = SQLiteStore(path, clock=clock, sweep_every_writes=10, sweep_batch=5)
    try:
        for i in range(9):
            await store.set(f"old:{i}", b"x", 1.0)
        await store.add_to_owner("alice", "old:0", 1.0)  # the 10th write: a sweep, nothing due
        assert _rows(path) == 10
        clock.advance(2.0)
        for i in range(10):
            await store.set(f"new:{i}", b"x", None)
        # One sweep ran (at the 20th write): at most 5 rows from each table.
        assert _rows(path) == 10 + 10 - 5 - 1
        assert await store.sweep() == 4
        assert _rows(path) == 10
    finally:
        await store.close()


async def test_the_loop_runs_while_sqlite_waits_for_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SQLiteStore(path)
    await store.ping()  # create the schema
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        pending = asyncio.create_task(store.incr("n", ttl_seconds=None))
        ticks = 0
        while ticks < 200:  # the loop keeps serving while the store waits
            await asyncio.sleep(0)
            ticks += 1
        assert not pending.done()
        holder.execute("COMMIT")
        assert await pending == 1
    finally:
        holder.close()
        await store.close()


async def test_a_held_lock_times_out_as_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SQLiteStore(path, timeout_seconds=0.05)
    await store.ping()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked"):
            await store.incr("n", ttl_seconds=None)
        holder.execute("ROLLBACK")
        assert await store.incr("n", ttl_seconds=None) == 1  # and it recovers
    finally:
        holder.close()
        await store.close()


async def test_a_corrupted_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not a database" * 100)
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreError, match="not a database") as caught:
            await store.get("k")
        assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    finally:
        await store.close()


async def test_an_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "missing-directory" / "store.db")
    try:
        with pytest.raises(StoreError, match="unable to open"):
            await store.ping()
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreError, match="schema version"):
            await store.ping()
    finally:
        await store.close()


async def test_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SQLiteStore(path)
    await store.ping()
    await store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timeout"):
        SQLiteStore(tmp_path / "s.db", timeout_seconds=0)
    with pytest.raises(ValueError, match="sweep"):
        SQLiteStore(tmp_path / "s.db", sweep_batch=0)
