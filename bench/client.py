"""What a legitimate client sends: the benchmark's requests, the same for every stack.

Every stack gets byte-for-byte the same requests, so no stack is measured on a
smaller request than another. Each request carries what every stack needs to accept
it legitimately, as a real browser or API client would send it:

* `GET /api`: `Authorization: Bearer <JWT>`, an HS256 token signed with
  `JWT_SECRET` (PyJWT), which the peer stacks check with PyJWT and Bastion with its
  authentication layer (an inline JWKS holding the same key).
* `POST /submit`: what a same-origin form post from a page of the site carries:
  `Origin` and `Sec-Fetch-Site: same-origin` (Bastion's CSRF check, Django's origin
  check), and the double-submit pairs of starlette-csrf (`csrftoken` cookie and
  `x-csrftoken` header, signed as starlette-csrf signs them) and of Django
  (`django_csrftoken` cookie and `X-Django-CSRFToken` header: Django's names are
  changed only so that the two double-submit cookies do not collide).

The secrets here are fixed benchmark-only values: they protect nothing.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Final

import jwt
from itsdangerous.url_safe import URLSafeSerializer

JWT_SECRET: Final = "bench-only-jwt-secret-not-for-production-0123456789"  # noqa: S105  # protects nothing
JWT_KID: Final = "bench"
JWT_ISSUER: Final = "https://issuer.bench.invalid"
JWT_AUDIENCE: Final = "bench-api"
# The token is made when the run starts; a day covers any run.
JWT_LIFETIME_SECONDS: Final = 24 * 3600

PEER_SECRET: Final = "bench-only-peer-secret-not-for-production-0123456789"  # noqa: S105  # as above
# Django's CSRF secret: 32 characters of [a-zA-Z0-9] (django.middleware.csrf.CSRF_SECRET_LENGTH).
DJANGO_CSRF_TOKEN: Final = "BenchOnlyCsrfToken0123456789abcd"  # noqa: S105  # as above
DJANGO_CSRF_COOKIE: Final = "django_csrftoken"
DJANGO_CSRF_HEADER: Final = "X-Django-CSRFToken"
# starlette-csrf's own defaults.
STARLETTE_CSRF_COOKIE: Final = "csrftoken"
STARLETTE_CSRF_HEADER: Final = "x-csrftoken"

FORM_BODY: Final = b"name=alice&email=alice%40example.com&comment=hello+world"
WS_MESSAGE: Final = "hello over websocket"


def bearer_token(now: float | None = None) -> str:
    """A fresh HS256 access token for `GET /api`."""
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": "bench-user",
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "iat": issued,
        "exp": issued + JWT_LIFETIME_SECONDS,
    }
    return jwt.encode(
        claims, JWT_SECRET, algorithm="HS256", headers={"kid": JWT_KID, "typ": "at+jwt"}
    )


def jwks() -> dict[str, object]:
    """The JWKS holding the HS256 key (RFC 7518 section 6.4: `oct` keys)."""
    key = base64.urlsafe_b64encode(JWT_SECRET.encode()).rstrip(b"=").decode()
    return {"keys": [{"kty": "oct", "kid": JWT_KID, "alg": "HS256", "use": "sig", "k": key}]}


def starlette_csrf_token() -> str:
    """A token as starlette-csrf issues it (signed with the peer's secret)."""
    return str(URLSafeSerializer(PEER_SECRET, "csrftoken").dumps("bench-csrf-value"))


@dataclass(frozen=True, slots=True)
class Request:
    """One benchmark request: name, method, path, headers (without `host`) and body."""

    name: str
    method: str
    path: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def build_requests(origin: str, token: str) -> tuple[Request, ...]:
    """The three HTTP requests, for a site at `origin` (`https://localhost`)."""
    csrf = starlette_csrf_token()
    cookie = f"{STARLETTE_CSRF_COOKIE}={csrf}; {DJANGO_CSRF_COOKIE}={DJANGO_CSRF_TOKEN}"
    post_headers = (
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", b"%d" % len(FORM_BODY)),
        (b"origin", origin.encode()),
        (b"sec-fetch-site", b"same-origin"),
        (b"cookie", cookie.encode()),
        (STARLETTE_CSRF_HEADER.encode(), csrf.encode()),
        (DJANGO_CSRF_HEADER.lower().encode(), DJANGO_CSRF_TOKEN.encode()),
    )
    api_headers = (
        (b"accept", b"application/json"),
        (b"authorization", b"Bearer " + token.encode()),
    )
    return (
        Request("GET /hello", "GET", "/hello", (), b""),
        Request("POST /submit", "POST", "/submit", post_headers, FORM_BODY),
        Request("GET /api", "GET", "/api", api_headers, b""),
    )
