"""The app behind the layer for real server processes, sharing one Redis.

`serve("tests.ratelimit.app_factory:create_app", env={...})`: the store URL, key
prefix and rate come from the environment. `key=route`: every client shares one
bucket, so exactness across workers is what the test measures.
"""

from __future__ import annotations

import os
from typing import Final

from bastion.events import EventEmitter
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings
from bastion.stores.redis import RedisStore
from bastion.types import ASGIApp
from tests.support.apps import raw_app

URL_ENV: Final = "BASTION_TEST_RL_REDIS_URL"
PREFIX_ENV: Final = "BASTION_TEST_RL_PREFIX"
RATE_ENV: Final = "BASTION_TEST_RL_RATE"


def create_app() -> ASGIApp:
    settings = RateLimitSettings(
        limits={"/": (os.environ[RATE_ENV],)}, ban_enabled=False, fail_open=False
    )
    store = RedisStore(os.environ[URL_ENV], key_prefix=os.environ[PREFIX_ENV])
    return RateLimitMiddleware(raw_app, settings, store=store, events=EventEmitter(()))
