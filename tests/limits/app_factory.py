"""The application the real-server tests serve: the raw test app behind the limits layer.

Settings come as JSON in `BASTION_TEST_LIMITS`, so each test server can differ.
"""

from __future__ import annotations

import json
import os

from bastion.events import EventEmitter
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.types import ASGIApp
from tests.support.apps import make_app


def create_app() -> ASGIApp:
    settings = LimitsSettings.model_validate(
        json.loads(os.environ.get("BASTION_TEST_LIMITS", "{}"))
    )
    framework = os.environ.get("BASTION_TEST_FRAMEWORK", "raw")
    return LimitsMiddleware(make_app(framework), settings, events=EventEmitter([]))
