"""A minimal OpenID provider: the tests' fake peer, on purpose.

It is not a provider to copy: it auto-approves one fixed user, keeps everything in
memory, and has a test-only control endpoint (`/_test/configure`) that registers
the relying party and makes the NEXT ID token wrong in one chosen way, so each
attack test can ask for exactly the token it needs. What it does check is what a
real provider checks in the code flow: client_id, redirect_uri, the presence of a
PKCE S256 challenge at `/authorize`, and at `/token` the code (single use unless
told otherwise), client authentication and the PKCE verifier.

Served by uvicorn on 127.0.0.1 (`serve("tests.auth.oidc.provider:create_app")`);
its issuer is its own URL as seen in the request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

TEST_USER = "alice-0001"
# Modes of /_test/configure "next_token": each makes the next ID token wrong one way.
TOKEN_MODES = ("ok", "wrong-audience", "expired", "tampered", "stale-nonce", "other-key")


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    used: bool = False


@dataclass
class _State:
    key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256", {"kid": "k1"}))
    client_id: str = ""
    client_secret: str = ""
    redirect_uri: str = ""
    next_token: str = "ok"
    allow_code_reuse: bool = False
    token_delay_seconds: float = 0.0
    last_nonce: str = ""
    grants: dict[str, _Grant] = field(default_factory=dict)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def create_app() -> Starlette:
    state = _State()

    def issuer(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def discovery(request: Request) -> Response:
        base = issuer(request)
        return JSONResponse(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "jwks_uri": f"{base}/jwks",
                "end_session_endpoint": f"{base}/logout",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["ES256"],
            }
        )

    async def jwks(request: Request) -> Response:
        public = state.key.as_dict(private=False)
        return JSONResponse({"keys": [{**public, "alg": "ES256", "use": "sig"}]})

    async def configure(request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        for name in ("client_id", "client_secret", "redirect_uri", "next_token"):
            if name in body:
                setattr(state, name, str(body[name]))
        if state.next_token not in TOKEN_MODES:
            return JSONResponse({"error": "unknown mode"}, status_code=400)
        state.allow_code_reuse = bool(body.get("allow_code_reuse", False))
        state.token_delay_seconds = min(2.0, float(body.get("token_delay_seconds", 0.0)))
        return JSONResponse({"ok": True})

    async def authorize(request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != state.client_id or q.get("redirect_uri") != state.redirect_uri:
            # Never redirect to an unregistered redirect_uri (RFC 6749 section 4.1.2.1).
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        if not q.get("code_challenge") or "openid" not in q.get("scope", "").split():
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(24)
        state.grants[code] = _Grant(
            state.client_id, state.redirect_uri, q["code_challenge"], q.get("nonce", "")
        )
        params = {"code": code, "state": q.get("state", "")}
        return RedirectResponse(f"{state.redirect_uri}?{urlencode(params)}", status_code=302)

    def _client_ok(request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return client_id == state.client_id and hmac.compare_digest(secret, state.client_secret)

    async def token(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if state.token_delay_seconds:
            await asyncio.sleep(state.token_delay_seconds)
        grant = state.grants.get(form.get("code", ""))
        if not _client_ok(request, form):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if grant is None or (grant.used and not state.allow_code_reuse):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        grant.used = True
        verifier = form.get("code_verifier", "")
        if not verifier or not hmac.compare_digest(_s256(verifier), grant.challenge):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if form.get("redirect_uri") != grant.redirect_uri:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        mode, state.next_token = state.next_token, "ok"
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer(request),
            "aud": grant.client_id,
            "sub": TEST_USER,
            "nonce": grant.nonce,
            "iat": now,
            "exp": now + 300,
        }
        key = state.key
        if mode == "wrong-audience":
            claims["aud"] = "some-other-client"
        elif mode == "expired":
            claims["iat"], claims["exp"] = now - 4000, now - 3600
        elif mode == "stale-nonce":
            claims["nonce"] = state.last_nonce
        elif mode == "other-key":
            key = ECKey.generate_key("P-256", {"kid": "k1"})
        id_token = jwt.encode({"alg": "ES256", "kid": "k1"}, claims, key)
        if mode == "tampered":
            header, payload, signature = id_token.split(".")
            forged = {**claims, "sub": "admin"}
            payload = jwt.encode({"alg": "ES256", "kid": "k1"}, forged, key).split(".")[1]
            id_token = f"{header}.{payload}.{signature}"
        state.last_nonce = grant.nonce
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            }
        )

    async def logout(request: Request) -> Response:
        return JSONResponse(
            {"logged_out": True, "hint": bool(request.query_params.get("id_token_hint"))}
        )

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks", jwks),
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
            Route("/logout", logout),
            Route("/_test/configure", configure, methods=["POST"]),
        ]
    )
