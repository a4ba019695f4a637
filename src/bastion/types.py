"""ASGI type aliases shared by every layer.

They are deliberately loose at the boundary, as in Starlette: the ASGI spec types
messages as plain dicts, and `Any` stops here. Each adapter converts the scope into
typed facts (frozen dataclasses) before any decision is made.

Reference: ASGI specification https://asgi.readthedocs.io/en/latest/specs/main.html
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
RawHeaders: TypeAlias = list[tuple[bytes, bytes]]
