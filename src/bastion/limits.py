"""STUB: replaced by the limits layer's implementation."""

from __future__ import annotations

from bastion.events import EventEmitter
from bastion.sections import LayerSettings
from bastion.types import ASGIApp, Receive, Scope, Send


class LimitsSettings(LayerSettings):
    pass


class LimitsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        settings: LimitsSettings | None = None,
        *,
        events: EventEmitter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or LimitsSettings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
