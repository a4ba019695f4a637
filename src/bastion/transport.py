"""STUB: replaced by the transport layer's implementation."""

from __future__ import annotations

from bastion.events import EventEmitter
from bastion.sections import LayerSettings
from bastion.types import ASGIApp, Receive, Scope, Send


class TransportSettings(LayerSettings):
    allowed_hosts: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    insecure_allow_http: bool = False


class TransportMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        settings: TransportSettings | None = None,
        *,
        events: EventEmitter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or TransportSettings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
