"""`create_store` URLs and `StoreSettings`: the right store, and no password in any error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bastion.exceptions import ConfigurationError
from bastion.stores import MemoryStore, SQLiteStore, StoreSettings, create_store, parse_store_url
from bastion.stores.base import public_url
from bastion.stores.redis import RedisStore
from tests.support.secret_watch import never_logged

pytestmark = pytest.mark.anyio

PASSWORD = never_logged("pa55-w0rd-secret")


async def test_memory_urls() -> None:
    default = create_store("memory://")
    assert isinstance(default, MemoryStore)
    assert default.max_entries == 100_000
    sized = create_store("memory://?max_entries=50&max_keys_per_owner=7")
    assert isinstance(sized, MemoryStore)
    assert (sized.max_entries, sized.max_keys_per_owner) == (50, 7)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite:///bastion.db", "bastion.db", id="relative"),
        pytest.param("sqlite:///data/bastion.db", "data/bastion.db", id="relative-dir"),
        pytest.param("sqlite:////var/lib/bastion.db", "/var/lib/bastion.db", id="absolute"),
        pytest.param("sqlite:///my%20store.db", "my store.db", id="percent-encoded"),
    ],
)
async def test_sqlite_urls(url: str, expected: str) -> None:
    store = create_store(url, timeout_seconds=2.5)
    assert isinstance(store, SQLiteStore)
    assert (store.path, store.timeout_seconds) == (expected, 2.5)
    await store.close()


async def test_sqlite_store_from_url_works(tmp_path: Path) -> None:
    store = create_store(f"sqlite:///{tmp_path}/store.db")
    try:
        await store.set("k", b"v", None)
        assert await store.get("k") == b"v"
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "cluster", "shown"),
    [
        pytest.param("redis://127.0.0.1:6379/0", False, "redis://127.0.0.1:6379/0", id="redis"),
        pytest.param(
            f"redis://:{PASSWORD}@cache.internal:6380/2",
            False,
            "redis://cache.internal:6380/2",
            id="password",
        ),
        pytest.param(
            f"rediss://app:{PASSWORD}@cache.internal:6380/0",
            False,
            "rediss://cache.internal:6380/0",
            id="tls-user-password",
        ),
        pytest.param(
            "redis+cluster://node1.internal:7000", True, "redis://node1.internal:7000", id="cluster"
        ),
        pytest.param(
            f"rediss+cluster://:{PASSWORD}@node1.internal:7000",
            True,
            "rediss://node1.internal:7000",
            id="tls-cluster",
        ),
    ],
)
async def test_redis_urls(url: str, cluster: bool, shown: str) -> None:
    store = create_store(url, key_prefix="app1:", timeout_seconds=0.3)
    assert isinstance(store, RedisStore)
    assert (store.cluster, store.url, store.key_prefix) == (cluster, shown, "app1:")
    assert PASSWORD not in repr(store)
    await store.close()


BAD_URLS = [
    pytest.param("", id="empty"),
    pytest.param("memcached://host:11211", id="unknown-scheme"),
    pytest.param("memory://host", id="memory-with-host"),
    pytest.param("memory://?max_entries=0", id="memory-zero-bound"),
    pytest.param("memory://?max_entries=lots", id="memory-not-a-number"),
    pytest.param("memory://?size=1", id="memory-unknown-option"),
    pytest.param("sqlite://host/file.db", id="sqlite-with-host"),
    pytest.param("sqlite:///", id="sqlite-without-path"),
    pytest.param(f"sqlite:///file.db?password={PASSWORD}", id="sqlite-with-query"),
    pytest.param(f"redis://:{PASSWORD}@/0", id="redis-without-host"),
    pytest.param(f"redis://:{PASSWORD}@host:port/0", id="redis-bad-port"),
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_urls_are_refused_without_echo(url: str) -> None:
    with pytest.raises(ConfigurationError, match="store url") as caught:
        parse_store_url(url)
    assert PASSWORD not in str(caught.value)


def test_memory_bound_errors_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="max_bytes"):
        create_store("memory://?max_bytes=10")


def test_settings_default_to_memory() -> None:
    settings = StoreSettings()
    assert settings.url.get_secret_value() == "memory://"
    assert isinstance(settings.create_store(), MemoryStore)


async def test_settings_hide_the_url() -> None:
    settings = StoreSettings(url=f"redis://:{PASSWORD}@cache.internal:6379/0", timeout_seconds=0.5)
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings.model_dump())
    store = settings.create_store()
    assert isinstance(store, RedisStore)
    await store.close()


def test_invalid_settings_never_echo_the_url() -> None:
    with pytest.raises(ValidationError) as caught:
        StoreSettings(url=f"redis://:{PASSWORD}@/0")
    assert PASSWORD not in str(caught.value)
    assert "needs a host" in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"key_prefix": ""}, id="empty-prefix"),
        pytest.param({"key_prefix": "a{b}"}, id="prefix-with-braces"),
        pytest.param({"timeout_seconds": 0}, id="zero-timeout"),
        pytest.param({"connect_timeout_seconds": 600}, id="absurd-timeout"),
        pytest.param({"urls": "memory://"}, id="misspelt"),
    ],
)
def test_settings_validation(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        StoreSettings.model_validate(options)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(f"redis://u:{PASSWORD}@h:1/0?password={PASSWORD}", "redis://h:1/0", id="all"),
        pytest.param("redis://[::1]:6379/0", "redis://[::1]:6379/0", id="ipv6"),
        pytest.param("redis://h:notaport", "<invalid url>", id="invalid"),
    ],
)
def test_public_url(url: str, shown: str) -> None:
    assert public_url(url) == shown
