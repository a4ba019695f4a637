"""`StoreSettings`: which store Bastion keeps its shared state in.

The URL is a secret (a Redis URL may carry a password), so it is a `SecretStr`:
`repr`, logs and `bastion check` show stars. Set it in the environment as
`BASTION_STORE__URL=redis://:password@redis.internal:6379/0`, or in a secrets file.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import ConfigDict, Field, SecretStr, field_validator

from bastion.exceptions import ConfigurationError
from bastion.sections import Section
from bastion.stores.base import Store
from bastion.stores.factory import create_store, parse_store_url


class StoreSettings(Section):
    """Where sessions, rate limits, bans and revocations live; see the README reference."""

    # A rejected URL must not be echoed into the error: it may hold a password.
    model_config = ConfigDict(**Section.model_config, hide_input_in_errors=True)

    url: SecretStr = SecretStr("memory://")
    """`memory://` (one process), `sqlite:///file.db` (one host), `redis://`,
    `rediss://` or `redis+cluster://` (a fleet). Several workers need SQLite or Redis:
    a memory store is private to each process."""

    key_prefix: str = Field(default="bastion:", min_length=1, max_length=64)
    """Prefix of every Redis key, so several applications can share one Redis."""

    connect_timeout_seconds: float | None = Field(default=None, gt=0, le=60)
    """Longest wait to connect to Redis (default 1 s)."""

    timeout_seconds: float | None = Field(default=None, gt=0, le=60)
    """Longest a Redis call may take (default 1 s), or SQLite's wait for its write
    lock (default 5 s). Past it the call fails and the layer applies its fail mode."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretStr) -> SecretStr:
        try:
            parse_store_url(value.get_secret_value())
        except ConfigurationError as exc:  # its message never holds the URL
            raise ValueError(str(exc)) from None
        return value

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value.isprintable() or any(char in value for char in "{} "):
            raise ValueError("must be printable, without spaces or braces")
        return value

    def create_store(self, *, clock: Callable[[], float] = time.time) -> Store:
        """The configured store (no connection is made until first use)."""
        return create_store(
            self.url.get_secret_value(),
            key_prefix=self.key_prefix,
            connect_timeout_seconds=self.connect_timeout_seconds,
            timeout_seconds=self.timeout_seconds,
            clock=clock,
        )
