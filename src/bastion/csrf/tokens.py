"""The token fallback: signed, session-bound, masked CSRF tokens.

Threat: an attacker who can make the victim's browser send a request, but cannot read
our pages, must not be able to produce a token the server accepts; nor reuse one
from another session, an older session of the same user, or a retired key; nor
recover one from a compressed response (BREACH).

A token is built in three layers, each checked on the way back:

1. Binding: `HMAC-SHA256(session's CSRF secret, "bastion.csrf-token")`. The secret is
   drawn by the session layer, stored server-side, and replaced whenever the session
   rotates (login, privilege change), so a token dies with the session it was issued
   for. The token carries this digest, never the secret itself.
2. Signature: `bastion.signing.Signer` with purpose `csrf` (itsdangerous, timestamped):
   only we can make tokens, each expires after `token_max_age_seconds`, and removing
   a key from `secret_keys` revokes every token it signed.
3. Mask: a fresh random pad as long as the signed value, then `pad || signed XOR pad`,
   base64url without padding. Every response carries different bytes, so a
   compression side channel (BREACH) cannot learn the token byte by byte; unmasking
   needs no key. (Django masks its token the same way, with a cipher over letters.)

Verification unmasks, verifies the signature and age, and compares the binding with
the one computed from this request's session secret using `hmac.compare_digest`.

References: BREACH http://breachattack.com/ ; OWASP CSRF Prevention Cheat Sheet,
"Synchronizer Token Pattern" and "Signed Double-Submit Cookie"
https://cheatsheetseries.owasp.org/ (Cross-Site Request Forgery Prevention) ;
django/middleware/csrf.py (`_mask_cipher_secret`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Final

from pydantic import SecretStr

from bastion.csrf.reasons import (
    REASON_TOKEN_EXPIRED,
    REASON_TOKEN_INVALID,
    REASON_TOKEN_MISSING,
    REASON_TOKEN_WRONG_SESSION,
)
from bastion.signing import Signer

SIGNER_PURPOSE: Final = "csrf"
_BINDING_LABEL: Final = b"bastion.csrf-token"
# A token we issue is about 210 characters (a 43-character binding, timestamp and
# signature, doubled by the pad, in base64). Anything much longer is not ours, and is
# refused before any decoding work.
MAX_TOKEN_CHARS: Final = 512
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+\Z")


def session_binding(session_secret: str) -> bytes:
    """What a token proves about its session: a digest of the session's secret."""
    digest = hmac.new(session_secret.encode(), _BINDING_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=")


def mask(signed: bytes) -> str:
    """`pad || signed XOR pad` in base64url, with a fresh random pad each call."""
    pad = secrets.token_bytes(len(signed))
    xored = (int.from_bytes(signed, "big") ^ int.from_bytes(pad, "big")).to_bytes(
        len(signed), "big"
    )
    return base64.urlsafe_b64encode(pad + xored).rstrip(b"=").decode("ascii")


def unmask(untrusted_token: str) -> bytes | None:
    """The signed value inside a masked token, or None if it is not shaped like one."""
    if len(untrusted_token) > MAX_TOKEN_CHARS or not _BASE64URL.match(untrusted_token):
        return None
    try:
        raw = base64.urlsafe_b64decode(untrusted_token + "=" * (-len(untrusted_token) % 4))
    except (binascii.Error, ValueError):
        return None
    half, odd = divmod(len(raw), 2)
    if odd or not half:
        return None
    pad, xored = raw[:half], raw[half:]
    return (int.from_bytes(pad, "big") ^ int.from_bytes(xored, "big")).to_bytes(half, "big")


class CSRFTokens:
    """Issues and checks tokens for one set of keys. Built once per middleware."""

    __slots__ = ("_signer", "max_age_seconds")

    def __init__(
        self,
        secret_keys: Iterable[SecretStr | str],
        *,
        max_age_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = Signer(list(secret_keys), purpose=SIGNER_PURPOSE, clock=clock)
        self.max_age_seconds = max_age_seconds

    def issue(self, session_secret: str) -> str:
        """A new token for the session whose CSRF secret is `session_secret`."""
        return mask(self._signer.sign(session_binding(session_secret)))

    def check(self, untrusted_token: str | None, session_secret: str | None) -> str:
        """Check a token against this request's session secret (None: no session).

        Returns "" when the token is good, else a REASON_* constant.
        """
        if not untrusted_token:
            return REASON_TOKEN_MISSING
        signed = unmask(untrusted_token)
        if signed is None:
            return REASON_TOKEN_INVALID
        binding = self._signer.unsign(signed, max_age_seconds=self.max_age_seconds)
        if binding is None:
            # Only on failure, a second look without the age limit tells a stale tab
            # (ours, but old) from a forgery, for the event; the answer is the same.
            if self._signer.unsign(signed, max_age_seconds=None) is not None:
                return REASON_TOKEN_EXPIRED
            return REASON_TOKEN_INVALID
        if session_secret is None:
            return REASON_TOKEN_WRONG_SESSION
        if not hmac.compare_digest(binding, session_binding(session_secret)):
            return REASON_TOKEN_WRONG_SESSION
        return ""
