"""The test application behind the transport layer, for a real server process.

`serve("tests.transport.app_factory:create_app", env={SETTINGS_ENV: ...})` starts
it; the layer's settings come from the environment as JSON, so each test decides
which peers are trusted.
"""

from __future__ import annotations

import os
from typing import Final

from bastion.events import EventEmitter
from bastion.transport import TransportMiddleware, TransportSettings
from bastion.types import ASGIApp
from tests.support.apps import starlette_app

SETTINGS_ENV: Final = "BASTION_TEST_TRANSPORT_SETTINGS"


def create_app() -> ASGIApp:
    settings = TransportSettings.model_validate_json(os.environ.get(SETTINGS_ENV, "{}"))
    # No sinks: the server's output stays quiet; events are tested in-process.
    return TransportMiddleware(starlette_app(), settings, events=EventEmitter(()))
