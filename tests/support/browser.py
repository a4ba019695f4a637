"""A real headless Chromium for tests, driven by Playwright.

The browser is the system's Chromium (Debian's `chromium` package), never one that
Playwright downloads: `executable_path` points at it, and the flags keep it off the
network except for the pages a test opens (no component updates, no sync, no QUIC,
no first-run work). Each `chromium_browser()` launches one browser and closes it,
whatever happened.

With `CI=true` in the environment a missing Chromium or Playwright fails the test
(CI must install them: `apt-get install chromium` and the `playwright` package);
elsewhere it skips with the reason.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_PATH: Final = "/usr/bin/chromium"
LAUNCH_ARGS: Final = (
    "--headless",
    "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def require_browser() -> None:
    """Fail under CI, skip elsewhere, when Chromium or Playwright is missing."""
    missing: list[str] = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install playwright)")
    if not Path(CHROMIUM_PATH).is_file():
        missing.append(f"{CHROMIUM_PATH} (Debian: apt-get install chromium)")
    if not missing:
        return
    reason = "browser test needs " + " and ".join(missing)
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def chromium_browser() -> Iterator[Browser]:
    """A launched headless Chromium, closed on exit."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, args=list(LAUNCH_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
