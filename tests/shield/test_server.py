"""`Shield` in a real uvicorn process on 127.0.0.1, configured from the environment."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.secret_watch import never_logged
from tests.support.servers import serve

pytestmark = pytest.mark.server

KEY = never_logged("k3Y-" + "abcdefghijklmnopqrstuvwxyz0123456789")
ENV = {
    "BASTION_MODE": "development",
    "BASTION_SECRET_KEYS": KEY,
    "BASTION_TRANSPORT__ALLOWED_HOSTS": '["127.0.0.1"]',
    "BASTION_LIMITS__MAX_BODY_BYTES": "1000",
}


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_shield_from_environment_in_a_real_server(server: str) -> None:
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default and rewrites the
    # client before any middleware runs; Bastion must be the only proxy resolver.
    extra = ("--no-server-header", "--no-proxy-headers") if server == "uvicorn" else ()
    with (
        serve(
            "tests.shield.app_factory:create_app", server=server, env=ENV, extra_args=extra
        ) as running,
        httpx.Client(base_url=running.url) as client,
    ):
        page = client.get("/context", headers={"x-forwarded-for": "203.0.113.7"})
        assert page.status_code == 200
        # The peer is not a trusted proxy: X-Forwarded-For changes nothing.
        assert page.json()["client"][0] == "127.0.0.1"
        html = client.get("/page")
        [nonce] = re.findall(r'nonce="([^"]+)"', html.text)
        assert f"'nonce-{nonce}'" in html.headers["content-security-policy"]
        if server == "uvicorn":
            assert "server" not in page.headers

        assert client.get("/", headers={"host": "evil.example"}).status_code == 400
        same = {"sec-fetch-site": "same-origin"}
        # Sent chunked, so the server reads the whole body before the 413: a refusal
        # from a declared Content-Length is answered before the body is read, and a
        # server that then closes with the body unread may reset the connection
        # before the client reads the answer (an HTTP/1.1 race, not Bastion's; the
        # declared-length refusal is tested in-process, tests/limits).
        oversized = iter([b"x" * 1001])
        assert client.post("/submit", content=oversized, headers=same).status_code == 413
        assert client.post("/submit", content=b"x" * 1000, headers=same).text == "1000"
        cross = {"sec-fetch-site": "cross-site"}
        assert client.post("/submit", content=b"x", headers=cross).status_code == 403

        # The app runs with debug=True; the debug page never reaches the client.
        boom = client.get("/boom", headers={"accept": "text/html"})
        assert boom.status_code == 500
        assert "Traceback" not in boom.text
        assert "kaboom" not in boom.text
