"""A watch over every log record of the whole test run: no secret may appear in one.

Test modules register the secrets they use (`never_logged(value)`); a handler on the
root logger keeps every record the run produces (message, arguments and traceback
rendered); at the end of the session `conftest.py` fails the run if any registered
secret appears in any of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

NEVER_LOGGED: set[str] = set()


def never_logged(secret: str) -> str:
    """Register `secret` as a value that must never appear in a log record."""
    NEVER_LOGGED.add(secret)
    return secret


class RecordKeeper(logging.Handler):
    """Keeps the rendered text of every record (formatting happens once, here)."""

    def __init__(self) -> None:
        super().__init__(level=1)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.texts.append(self.format(record))
        except Exception as exc:  # a record that cannot render is kept as its repr
            self.texts.append(f"{record!r} ({type(exc).__name__})")


def find_leaks(texts: Iterable[str], secrets: Iterable[str]) -> list[tuple[str, str]]:
    """(secret prefix, offending text prefix) for every secret found in a text."""
    wanted = [s for s in secrets if s]
    leaks: list[tuple[str, str]] = []
    for text in texts:
        for secret in wanted:
            if secret in text:
                leaks.append((secret[:6] + "...", text[:200]))
    return leaks
