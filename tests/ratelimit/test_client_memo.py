"""The client memo's catch-all bucket key: the key the layer would put together.

With one catch-all rule whose first rate counts by client (the default), the layer
remembers each client's bucket key beside its key part and ban key, instead of
joining the rate's prefix and the part on every request. The key must be the one
the awaited path joins (tests/ratelimit/test_sync_path.py holds the verdicts equal);
with any other rules there is none, and the key is joined per request as before.
"""

from __future__ import annotations

from typing import Any

import pytest

from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings
from bastion.stores import MemoryStore, memory
from tests.ratelimit.harness import USER
from tests.ratelimit.test_sync_path import Request, app, call
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("limits", "remembered"),
    [
        pytest.param({"*": ["3/minute"]}, True, id="ratelimit-memo-catch-all-by-client"),
        pytest.param({"*": ["3/minute; key=route"]}, False, id="ratelimit-memo-catch-all-by-route"),
        pytest.param({"/": ["3/minute"]}, False, id="ratelimit-memo-no-catch-all"),
        pytest.param({"GET *": ["3/minute"]}, False, id="ratelimit-memo-catch-all-one-method"),
    ],
)
async def test_the_remembered_bucket_is_the_joined_key(
    limits: dict[str, Any], remembered: bool
) -> None:
    store = MemoryStore(clock=FakeClock())
    layer = RateLimitMiddleware(app, RateLimitSettings(limits=limits), store=store)
    statuses = [(await call(layer, Request(client=USER))).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    part, ban_key, bucket, ban_digest, bucket_digest = layer._clients[USER[0]]
    rule = layer._rules.lookup("GET", "/")
    assert rule is not None
    first = rule.rates[0]
    if remembered:
        assert bucket == first.key_prefix + part
        assert memory._digest(bucket) in store._data  # the bucket the requests counted in
        # ... and the digests the layer steps are the store's names of the two keys
        assert (ban_digest, bucket_digest) == (memory._digest(ban_key), memory._digest(bucket))
    else:
        assert bucket is None
        assert (ban_digest, bucket_digest) == (None, b"")
    assert ban_key.endswith(part)
