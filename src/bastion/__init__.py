"""Bastion: a security layer for ASGI applications.

    from bastion import Shield, Settings

    app = Shield(app, Settings(secret_keys=[...], transport={"allowed_hosts": [...]}))

Every layer is also a plain ASGI middleware usable alone (`ErrorsMiddleware`,
`TransportMiddleware`, `LimitsMiddleware`, `HeadersMiddleware`, `CORSMiddleware`,
`RateLimitMiddleware`, `SessionMiddleware`, `AuthenticationMiddleware`,
`CSRFMiddleware`, `AuthorizationMiddleware`, `WebSocketGuardMiddleware`), each taking
its own settings section.
"""

from __future__ import annotations

from bastion.auth import (
    AuthenticationMiddleware,
    AuthorizationMiddleware,
    AuthSettings,
    PolicySettings,
    Principal,
    requires_bastion,
)
from bastion.context import RequestContext, get_context
from bastion.cors import CORSMiddleware, CORSSettings
from bastion.csrf import CSRFMiddleware, CSRFSettings, install_csrf_token, issue_token
from bastion.errors import ErrorSettings, ErrorsMiddleware
from bastion.events import (
    EventEmitter,
    EventSettings,
    EventSink,
    LoggingSink,
    Redactor,
    SecurityEvent,
)
from bastion.exceptions import BastionError, ConfigurationError, StoreError
from bastion.headers import HeadersMiddleware, HeadersSettings, RouteHeadersSettings
from bastion.limits import LimitsMiddleware, LimitsSettings, RouteLimitsSettings
from bastion.ratelimit import LoginGuard, RateLimitMiddleware, RateLimitSettings
from bastion.sessions import Session, SessionMiddleware, SessionSettings
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.signing import Signer
from bastion.stores import MemoryStore, SQLiteStore, Store, StoreSettings, create_store
from bastion.templating import csp_nonce, install_csp_nonce
from bastion.transport import TransportMiddleware, TransportSettings
from bastion.websocket import WebSocketGuardMiddleware, WebSocketSettings, issue_ticket

__all__ = [
    "AuthSettings",
    "AuthenticationMiddleware",
    "AuthorizationMiddleware",
    "BastionError",
    "CORSMiddleware",
    "CORSSettings",
    "CSRFMiddleware",
    "CSRFSettings",
    "ConfigurationError",
    "ErrorSettings",
    "ErrorsMiddleware",
    "EventEmitter",
    "EventSettings",
    "EventSink",
    "HeadersMiddleware",
    "HeadersSettings",
    "LimitsMiddleware",
    "LimitsSettings",
    "LoggingSink",
    "LoginGuard",
    "MemoryStore",
    "PolicySettings",
    "Principal",
    "RateLimitMiddleware",
    "RateLimitSettings",
    "Redactor",
    "RequestContext",
    "RouteHeadersSettings",
    "RouteLimitsSettings",
    "SQLiteStore",
    "SecurityEvent",
    "Session",
    "SessionMiddleware",
    "SessionSettings",
    "Settings",
    "Shield",
    "Signer",
    "Store",
    "StoreError",
    "StoreSettings",
    "TransportMiddleware",
    "TransportSettings",
    "WebSocketGuardMiddleware",
    "WebSocketSettings",
    "create_store",
    "csp_nonce",
    "get_context",
    "install_csp_nonce",
    "install_csrf_token",
    "issue_ticket",
    "issue_token",
    "requires_bastion",
]
