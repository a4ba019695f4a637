"""The application the real-server tests serve: the raw test app behind the limits layer.

Settings come as JSON in `BASTION_TEST_LIMITS`, so each test server can differ. With
`BASTION_TEST_EVENTS` set to a path, every event is appended there as one JSON line,
so a test can read the reason behind a status.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from bastion.events import EventEmitter, EventSink
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.types import ASGIApp
from tests.support.apps import make_app


class FileSink:
    """Appends each record to a file as one JSON line, flushed at once."""

    def __init__(self, path: str) -> None:
        self.path = path

    def handle(self, record: Mapping[str, object]) -> None:
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record, default=str) + "\n")


def create_app() -> ASGIApp:
    settings = LimitsSettings.model_validate(
        json.loads(os.environ.get("BASTION_TEST_LIMITS", "{}"))
    )
    framework = os.environ.get("BASTION_TEST_FRAMEWORK", "raw")
    events_path = os.environ.get("BASTION_TEST_EVENTS")
    sinks: list[EventSink] = [FileSink(events_path)] if events_path else []
    return LimitsMiddleware(make_app(framework), settings, events=EventEmitter(sinks))
