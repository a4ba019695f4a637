"""The default headers in a real browser: Debian's headless Chromium, a real uvicorn.

A header the browser cannot parse is a header that does nothing, and a console that
warns on every page trains developers to ignore it. The default Permissions-Policy
must name only features Chromium recognises here (Linux): the page loads with no
"Error with Permissions-Policy header" message.

With `CI=true` the test must run: a missing Chromium or Playwright fails it.
"""

from __future__ import annotations

import pytest

from tests.support.browser import chromium_browser
from tests.support.servers import serve

pytestmark = pytest.mark.server


def test_default_permissions_policy_is_recognised_by_chromium() -> None:
    with (
        serve("tests.headers.browser_apps:default_headers_app") as server,
        chromium_browser() as browser,
    ):
        page = browser.new_page()
        messages: list[str] = []
        page.on("console", lambda message: messages.append(message.text))
        response = page.goto(server.url + "/")
        assert response is not None
        assert response.status == 200
        assert "accelerometer=()" in (response.headers.get("permissions-policy") or "")
        # A page script runs after the head is parsed: its message, seen, means every
        # message the header produced has been seen too.
        page.evaluate("console.log('loaded')")
        page.wait_for_function("document.readyState === 'complete'")
    assert "loaded" in messages
    assert [text for text in messages if "Permissions-Policy" in text] == []
