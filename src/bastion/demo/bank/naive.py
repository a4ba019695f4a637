"""The unprotected variant's plumbing: what an application without Bastion often does.

This module is deliberately weak, so that `bastion audit` has something real to find
in `create_unprotected_app()`. Nothing else may use it. Its weaknesses, each one a
finding the auditor reports:

* the session id travels in a cookie without `HttpOnly`, `Secure` or `SameSite`, so
  scripts can read it, plain HTTP carries it, and other sites' forms send it;
* the id is issued on the first visit and never changes, not at login and not at
  logout (session fixation: an attacker who planted or saw the id before login
  owns the session after it);
* bearer JWTs are checked for their signature only: `exp`, `nbf`, `iss` and `aud`
  are never looked at, so an expired token, or one issued for another service by
  the same key, still works.

It is bounded, like everything in the demo: at most `MAX_SESSIONS` sessions in
memory, the oldest forgotten first, so the demo itself cannot be run out of memory.

Compare `bastion.sessions` (random 256-bit ids in `__Host-` cookies, rotated at
login, revoked at logout) and `bastion.auth.jwt` (algorithm pinned per key, every
time claim checked, issuer and audience exact).
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final

from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.requests import cookie_parser

from bastion.types import ASGIApp, Message, Receive, Scope, Send

COOKIE_NAME: Final = "session"
MAX_SESSIONS: Final = 10_000
_ID_BYTES: Final = 16
# What the demo's own key set and `bastion keys new --kind jwt` produce.
_ALGORITHMS: Final = ["Ed25519", "ES256", "RS256", "PS256"]


class NaiveSessionMiddleware:
    """`scope["session"]`: a plain dict kept in memory under an id from a cookie."""

    def __init__(self, app: ASGIApp, max_sessions: int = MAX_SESSIONS) -> None:
        self.app = app
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cookies: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookies.update(cookie_parser(value.decode("latin-1")))
        session_id = cookies.get(COOKIE_NAME, "")
        data = self._sessions.get(session_id)
        is_new = data is None
        if data is None:
            session_id = secrets.token_urlsafe(_ID_BYTES)
            data = self._sessions[session_id] = {}
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        scope["session"] = data
        if not is_new or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = f"{COOKIE_NAME}={session_id}; Path=/".encode("latin-1")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"set-cookie", cookie)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)


class SignatureOnlyBearer:
    """Reads a bearer JWT after checking its signature, and nothing else."""

    def __init__(self, jwks_file: Path) -> None:
        self._keys = KeySet.import_key_set(json.loads(jwks_file.read_text(encoding="utf-8")))

    def claims(self, untrusted_token: str) -> dict[str, Any] | None:
        try:
            return dict(jose_jwt.decode(untrusted_token, self._keys, algorithms=_ALGORITHMS).claims)
        except (JoseError, ValueError):
            return None
