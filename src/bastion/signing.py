"""Signed, timestamped values, with key rotation: the one signer every layer uses.

Threat: a client forges or alters a value the server handed out (a CSRF token, a
WebSocket ticket), or replays one long after it was issued.
Defence: itsdangerous's `TimestampSigner` (HMAC-SHA256 over value and timestamp, no
hand-written format), one instance per purpose with the purpose as its salt, so a
value signed for one use never verifies for another. `secret_keys[0]` signs; every
key verifies, so adding a new key in front rotates keys without logging anyone out,
and removing an old key revokes everything it signed.

Every failure (bad signature, unknown key, expired, malformed) is the same outcome,
`None`, as Fernet raises one `InvalidToken` for every failure: callers have nothing
to branch on, and nothing to leak.

References: itsdangerous https://itsdangerous.palletsprojects.com/en/stable/timed/ ;
key rotation https://itsdangerous.palletsprojects.com/en/stable/concepts/#key-rotation
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

from itsdangerous import BadData, TimestampSigner
from itsdangerous.encoding import base64_decode, base64_encode
from pydantic import SecretStr

from bastion.exceptions import ConfigurationError


class _ClockedSigner(TimestampSigner):
    """A TimestampSigner whose clock is injected (tests move time, never sleep)."""

    clock: Callable[[], float] = time.time

    def get_timestamp(self) -> int:
        return int(self.clock())


class Signer:
    """Sign and verify byte strings for one purpose (`purpose` is the salt)."""

    __slots__ = ("_signer",)

    def __init__(
        self,
        secret_keys: Sequence[SecretStr | str],
        *,
        purpose: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        keys = [k.get_secret_value() if isinstance(k, SecretStr) else k for k in secret_keys]
        if not keys or not all(keys):
            raise ConfigurationError("secret_keys: at least one non-empty key is required")
        # itsdangerous signs with the last key of the list; ours signs with the first.
        self._signer = _ClockedSigner(
            list(reversed(keys)), salt=f"bastion.{purpose}", digest_method=hashlib.sha256
        )
        self._signer.clock = clock

    def sign(self, value: bytes) -> bytes:
        return self._signer.sign(value)

    def unsign(self, untrusted_token: bytes | str, *, max_age_seconds: int | None) -> bytes | None:
        """The signed value, or None for any failure, expiry included.

        Only the canonical spelling of a token verifies. The last base64 character
        of a signature carries padding bits that decoding ignores, so several
        spellings decode to one signature; accepting them all would let a client
        mint "new" tokens from one, defeating anything that remembers tokens it has
        seen (single-use tickets, revocation lists).
        """
        try:
            token = (
                untrusted_token.encode("ascii")
                if isinstance(untrusted_token, str)
                else untrusted_token
            )
            signature = token.rpartition(b".")[2]
            if base64_encode(base64_decode(signature)) != signature:
                return None
            value = self._signer.unsign(token, max_age=max_age_seconds)
        except BadData:
            return None
        except (UnicodeError, ValueError, TypeError):  # garbage that is not even a token
            return None
        return value if isinstance(value, bytes) else None
