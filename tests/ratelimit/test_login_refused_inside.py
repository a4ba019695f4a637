"""A login POST refused by a Bastion layer inside the rate limiter (CSRF here) is not a
failed login: otherwise a cross-site page could push backoff and lockout onto a
victim's account and address without ever trying a password."""

from __future__ import annotations

import pytest

from bastion.settings import Settings
from bastion.shield import Shield
from tests.conftest import asgi_client
from tests.ratelimit.harness import Gate, with_test_routes
from tests.support.apps import raw_app

pytestmark = pytest.mark.anyio

CROSS_SITE = {"sec-fetch-site": "cross-site", "origin": "https://evil.example"}
SAME_ORIGIN = {"sec-fetch-site": "same-origin"}


@pytest.mark.parametrize("case", ["login-csrf-refusal-not-counted"])
async def test_csrf_refused_login_posts_do_not_lock_the_account(case: str) -> None:
    app = Shield(
        with_test_routes(raw_app, Gate()),
        Settings(mode="development", ratelimit={"login_routes": ["POST /login"], "limits": {}}),
    )
    async with asgi_client(app) as client:
        # Far past the lockout threshold (5).
        for _ in range(12):
            forged = await client.post(
                "/login", data={"username": "alice", "password": "x"}, headers=CROSS_SITE
            )
            assert forged.status_code == 403
        legit = await client.post(
            "/login", data={"username": "alice", "password": "right"}, headers=SAME_ORIGIN
        )
        assert legit.status_code == 200
        # The app's own 401 still counts: the next attempt is throttled.
        wrong = await client.post(
            "/login", data={"username": "alice", "password": "wrong"}, headers=SAME_ORIGIN
        )
        assert wrong.status_code == 401
        hasty = await client.post(
            "/login", data={"username": "alice", "password": "wrong"}, headers=SAME_ORIGIN
        )
        assert hasty.status_code == 429
