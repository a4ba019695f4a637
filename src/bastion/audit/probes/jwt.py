"""Forged JWTs on bearer routes: `alg: none`, a wrong signature, an expired token.

Threat: a server that decodes a JWT without verifying it, honours the token's own
`alg` (so `none` means "no signature"), or does not check `exp`: anyone can then
mint a token for any user, or replay one that should be dead.
Probe: bearer routes are the token recipe's protected route and the crawled GET
routes that answered 401 without credentials. The claims come from a real token
when a token recipe is given (so an app that checks `iss`/`aud` sees its own),
else a plausible set (`sub`, `iat`, `exp`). Three forged tokens are sent:

* `alg: none` with an empty signature;
* the claims with the original header and random bytes as the signature;
* an expired token: the token recipe's `expired_token` when it has one (really
  signed by the issuer, so only `exp` is wrong), else the claims with `exp` an
  hour past and `alg: none` if that was accepted. Otherwise `exp` is not tested
  (and the report says so): a token whose signature is refused shows nothing
  about `exp`.

A forged token is accepted when the route answers below 400. No key is ever
guessed and nothing is signed: forging needs no cryptography.

Not covered: an app that verifies signatures but not `exp`, unless the token
recipe brings a validly signed expired token (only the issuer can make one: a
test, or `bastion audit` of its own demo); key confusion
(RS256 public key as HS256 secret), `kid` injection, JWKS spoofing.

References: RFC 8725 (JWT best current practice) sections 2.1 and 3.1
https://www.rfc-editor.org/rfc/rfc8725 ; RFC 7519 section 4.1.4 (exp).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any, Final

from bastion.audit.findings import Finding
from bastion.audit.probes.base import Check, ProbeContext
from bastion.audit.target import TargetError

MAX_ROUTES: Final = 3
_REFERENCES: Final = ("https://www.rfc-editor.org/rfc/rfc8725",)
_FIX: Final = (
    "Verify bearer JWTs with Bastion's `auth.jwt` (issuer, audience and keys "
    "configured; algorithms fixed per key, never taken from the token; `exp` "
    "checked with `leeway_seconds`)."
)

ALG_NONE: Final = Check(
    "jwt.alg-none", "A JWT with alg: none is refused", "critical", _FIX, _REFERENCES
)
BAD_SIGNATURE: Final = Check(
    "jwt.bad-signature", "A JWT with a wrong signature is refused", "critical", _FIX, _REFERENCES
)
EXPIRED: Final = Check("jwt.expired", "An expired JWT is refused", "high", _FIX, _REFERENCES)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def assemble(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    """A compact JWS from parts, as an attacker writes it by hand."""
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)]
    )


def split_token(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The (unverified) header and claims of a compact JWS, or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1]))
    except (ValueError, RecursionError):  # the target wrote the token: `[[[[...` too
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


def default_claims(now: float) -> dict[str, Any]:
    return {"sub": "admin", "iat": int(now), "exp": int(now) + 600}


def forged_tokens(
    header: dict[str, Any], claims: dict[str, Any], now: float, *, none_accepted: bool
) -> tuple[str, str, str]:
    """The alg-none, bad-signature and expired tokens for these claims."""
    none_header = {"alg": "none", "typ": "JWT"}
    signed_header = (
        header
        if header.get("alg", "none").lower() != "none"
        else {
            "alg": "HS256",
            "typ": "JWT",
        }
    )
    alg_none = assemble(none_header, claims, b"")
    bad_signature = assemble(signed_header, claims, secrets.token_bytes(32))
    stale = claims | {"iat": int(now) - 7200, "exp": int(now) - 3600}
    if "nbf" in claims:
        stale["nbf"] = int(now) - 7200
    expired = (
        assemble(none_header, stale, b"")
        if none_accepted
        else assemble(signed_header, stale, secrets.token_bytes(32))
    )
    return alg_none, bad_signature, expired


async def _probe_path(
    ctx: ProbeContext, path: str, header: dict[str, Any], claims: dict[str, Any], now: float
) -> list[Finding]:
    """The forged tokens against one bearer-protected GET route."""
    findings: list[Finding] = []
    ctx.step(f"jwt: GET {path} without a token")
    baseline = await ctx.send("GET", path)
    if baseline.status < 400:
        ctx.skip(f"jwt: GET {path} answered {baseline.status} without a token")
        return findings
    route = f"GET {path}"
    none_accepted = False
    alg_none, bad_signature, expired = forged_tokens(header, claims, now, none_accepted=False)
    for check, forged in ((ALG_NONE, alg_none), (BAD_SIGNATURE, bad_signature)):
        ctx.step(f"jwt: {check.id} on {route}")
        response = await ctx.send("GET", path, headers=(("authorization", f"Bearer {forged}"),))
        accepted = response.status < 400
        none_accepted = none_accepted or (accepted and check is ALG_NONE)
        findings.append(
            check.result(
                not accepted,
                f"{route} answered {baseline.status} without a token and "
                f"{response.status} with the forged token",
                route,
            )
        )
    if ctx.token is not None and ctx.token.expired_token is not None:
        expired, how = ctx.token.expired_token, "signed by the issuer"
    elif none_accepted:
        _, _, expired = forged_tokens(header, claims, now, none_accepted=True)
        how = "unsigned (alg: none)"
    else:
        # A dead token with a made-up signature is refused for its signature
        # whether or not `exp` is checked: its answer would say nothing.
        ctx.skip(
            f"jwt: expired token on {route}: no issuer-signed expired token "
            "(TokenRecipe.expired_token) and alg: none refused, so `exp` cannot be tested"
        )
        return findings
    ctx.step(f"jwt: expired token on {route}")
    response = await ctx.send("GET", path, headers=(("authorization", f"Bearer {expired}"),))
    findings.append(
        EXPIRED.result(
            response.status >= 400,
            f"{route} answered {response.status} to an expired token ({how})",
            route,
        )
    )
    return findings


async def probe(ctx: ProbeContext) -> list[Finding]:
    paths: list[str] = []
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    now = time.time()
    claims = default_claims(now)
    try:
        token = await ctx.bearer_token()
    except TargetError as exc:  # no token: the 401 routes of the crawl are still tried
        ctx.cut_short("jwt", f"POST {ctx.token.path}" if ctx.token else "", exc)
        token = None
    if ctx.token is not None and token is not None:
        parts = split_token(token)
        if parts is not None:
            header, claims = parts
        paths.append(ctx.token.protected_path)
    paths += [
        route.path
        for route, response in ctx.crawl.items()
        if response.status == 401 and route.path not in paths
    ]
    paths = paths[:MAX_ROUTES]
    if not paths:
        ctx.skip("jwt: no bearer route (no 401 route found, no token recipe)")
        return []
    findings: list[Finding] = []
    for path in paths:
        try:
            findings += await _probe_path(ctx, path, header, claims, now)
        except TargetError as exc:  # ends this route's checks only; the gap is reported
            ctx.cut_short("jwt", f"GET {path}", exc)
    return findings
