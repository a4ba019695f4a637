"""Storage for Bastion's shared state: one protocol, three implementations.

    from bastion.stores import create_store

    store = create_store("redis://redis.internal:6379/0")

`Store` is the protocol (see `bastion.stores.base` for the contract); `MemoryStore`
(the default), `SQLiteStore` and `RedisStore` implement it. `RedisStore` lives in
`bastion.stores.redis` and needs the `redis` extra; `create_store` imports it only
for a Redis URL, so the core import stays light.
"""

from __future__ import annotations

from bastion.stores.base import MAX_KEY_BYTES, MAX_VALUE_BYTES, Store
from bastion.stores.factory import create_store, parse_store_url
from bastion.stores.gcra import GCRALimit, GCRAResult, gcra_step
from bastion.stores.memory import MemoryStore
from bastion.stores.settings import StoreSettings
from bastion.stores.sqlite import SQLiteStore

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "GCRALimit",
    "GCRAResult",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "StoreSettings",
    "create_store",
    "gcra_step",
    "parse_store_url",
]
