"""`create_store`: a store from one URL, as settings and environment variables give it.

    memory://                                 the default: this process only
    memory://?max_entries=200000&max_bytes=536870912
    sqlite:///bastion.db                      relative to the working directory
    sqlite:////var/lib/bastion/store.db       absolute (four slashes, as SQLAlchemy)
    redis://:password@redis.internal:6379/0
    rediss://user:password@redis.internal:6380/0     TLS
    redis+cluster://node1.internal:6379       Redis Cluster, through any node

Errors name the scheme and the rule, never the URL itself, which may hold a password.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from bastion.exceptions import ConfigurationError
from bastion.stores.base import Store

StoreKind = Literal["memory", "sqlite", "redis"]

_MEMORY_OPTIONS: Final = frozenset({"max_entries", "max_bytes", "max_keys_per_owner"})
_REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "redis+cluster", "rediss+cluster"})


@dataclass(frozen=True, slots=True)
class ParsedStoreURL:
    """What a store URL asks for; `path` is SQLite's file, `options` memory's bounds."""

    kind: StoreKind
    path: str = ""
    options: tuple[tuple[str, int], ...] = ()


def parse_store_url(url: str) -> ParsedStoreURL:
    """Check a store URL without connecting; raises ConfigurationError naming the rule."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return ParsedStoreURL("memory", options=_memory_options(url))
    if scheme == "sqlite":
        parts = urlsplit(url)
        if parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError(
                "store url: write sqlite:///relative/file.db or sqlite:////absolute/file.db"
            )
        path = unquote(parts.path[1:])
        if not path:
            raise ConfigurationError("store url: sqlite needs a file path")
        return ParsedStoreURL("sqlite", path=path)
    if scheme in _REDIS_SCHEMES:
        try:
            parts = urlsplit(url)
            host, _port = parts.hostname, parts.port
        except ValueError:
            raise ConfigurationError(f"store url: {scheme} has an invalid host or port") from None
        if not host:
            raise ConfigurationError(f"store url: {scheme} needs a host")
        return ParsedStoreURL("redis")
    raise ConfigurationError(
        "store url: scheme must be memory, sqlite, redis, rediss, redis+cluster or rediss+cluster"
    )


def _memory_options(url: str) -> tuple[tuple[str, int], ...]:
    parts = urlsplit(url)
    if parts.netloc or parts.path not in ("", "/"):
        raise ConfigurationError("store url: write memory:// or memory://?max_entries=N")
    options: list[tuple[str, int]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name not in _MEMORY_OPTIONS:
            raise ConfigurationError(
                f"store url: memory takes only {', '.join(sorted(_MEMORY_OPTIONS))}"
            )
        if not value.isdigit() or int(value) < 1:
            raise ConfigurationError(f"store url: memory {name} must be a positive integer")
        options.append((name, int(value)))
    return tuple(options)


def create_store(
    url: str,
    *,
    key_prefix: str = "bastion:",
    connect_timeout_seconds: float | None = None,
    timeout_seconds: float | None = None,
    clock: Callable[[], float] = time.time,
) -> Store:
    """The store `url` names (see the module docstring); nothing connects yet.

    `key_prefix` and the connect timeout apply to Redis; `timeout_seconds` is
    Redis's per-call deadline and SQLite's wait for the write lock (None: each
    store's default); `clock` applies to memory and SQLite (Redis uses its own).
    """
    parsed = parse_store_url(url)
    if parsed.kind == "memory":
        from bastion.stores.memory import MemoryStore

        try:
            return MemoryStore(clock=clock, **dict(parsed.options))
        except ValueError as exc:
            raise ConfigurationError(f"store url: {exc}") from None
    if parsed.kind == "sqlite":
        from bastion.stores.sqlite import DEFAULT_TIMEOUT_SECONDS, SQLiteStore

        return SQLiteStore(
            parsed.path, timeout_seconds=timeout_seconds or DEFAULT_TIMEOUT_SECONDS, clock=clock
        )
    try:
        from bastion.stores import redis as redis_store
    except ImportError:
        raise ConfigurationError(
            "store url: Redis needs the redis extra: pip install 'bastion-asgi[redis]'"
        ) from None
    return redis_store.RedisStore(
        url,
        key_prefix=key_prefix,
        connect_timeout_seconds=connect_timeout_seconds
        or redis_store.DEFAULT_CONNECT_TIMEOUT_SECONDS,
        timeout_seconds=timeout_seconds or redis_store.DEFAULT_TIMEOUT_SECONDS,
    )
