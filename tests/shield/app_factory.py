"""The Starlette test app behind the whole `Shield` stack, for a real server process.

Settings come from the ordinary `BASTION_*` environment variables, exactly as a
deployment would set them.
"""

from __future__ import annotations

from bastion.shield import Shield
from bastion.types import ASGIApp
from tests.support.apps import starlette_app


def create_app() -> ASGIApp:
    return Shield(starlette_app(debug=True))
