"""`CSRFSettings`, the section users type, and the `CSRFPolicy` compiled from it."""

from __future__ import annotations

import re
from typing import Final

from pydantic import Field, field_validator

from bastion.csrf.core import CSRFPolicy, parse_trusted_origin, validate_exempt_path
from bastion.limits.settings import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_FORM_FIELDS
from bastion.sections import LayerSettings
from bastion.sessions import DEFAULT_ABSOLUTE_TIMEOUT_SECONDS

# A token lives as long as the longest session may (the session layer's absolute
# timeout): a form left open all day still posts, and a token copied out of a page
# (a cached copy, a screenshot, a log) stops working within a working day even if
# the session's secret were never rotated. Django's tokens live as long as the
# CSRF cookie (a year); shorter is safer at no cost, since the session ends first.
DEFAULT_TOKEN_MAX_AGE_SECONDS: Final = DEFAULT_ABSOLUTE_TIMEOUT_SECONDS
# The header name AngularJS, Laravel and Rails' UJS send the token in.
DEFAULT_TOKEN_HEADER: Final = "x-csrf-token"  # noqa: S105 - a header name, not a secret
# Django's form field is `csrfmiddlewaretoken`; Flask-WTF, Starlette-CSRF and
# FastAPI examples use `csrf_token`.
DEFAULT_TOKEN_FIELD: Final = "csrf_token"  # noqa: S105 - a field name, not a secret

# RFC 9110 section 5.6.2 token, for header names; form fields are kept to the
# characters that need no escaping in url-encoded bodies or multipart headers.
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+\Z")
_FIELD_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


class CSRFSettings(LayerSettings):
    """Cross-site request forgery defence (see the README's settings reference)."""

    trusted_origins: tuple[str, ...] = ()
    """Other origins whose pages may send unsafe requests (`https://app.example`):
    exact origins only, stored canonical (lower case, default port omitted)."""

    insecure_allow_same_site: bool = False
    """Let sibling subdomains (`Sec-Fetch-Site: same-site`) send unsafe requests. An
    opt-out: any subdomain an attacker can take over (a forgotten CNAME, user
    content) could then forge requests."""

    insecure_exempt_paths: tuple[str, ...] = ()
    """Paths never checked (webhooks that authenticate by signature), compared
    exactly with the decoded `scope["path"]`: no prefixes, no case folding."""

    exempt_bearer_without_cookies: bool = True
    """Skip requests that carry `Authorization: Bearer` and no cookie at all: no
    ambient credential, so nothing to forge. Turn off if the app trusts client
    certificates, client addresses or browser-cached HTTP authentication."""

    token_max_age_seconds: int = Field(default=DEFAULT_TOKEN_MAX_AGE_SECONDS, ge=60)
    """How long an issued token stays valid."""

    token_header: str = DEFAULT_TOKEN_HEADER
    """The request header the token may come in (case-insensitive)."""

    token_field: str = DEFAULT_TOKEN_FIELD
    """The form field the token may come in (url-encoded or multipart bodies)."""

    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    """The most body this layer buffers to find a form token (then replays it)."""

    max_form_fields: int = Field(default=DEFAULT_MAX_FORM_FIELDS, gt=0)
    """The most form fields looked through to find the token."""

    @field_validator("trusted_origins")
    @classmethod
    def _parse_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(parse_trusted_origin(text).serialise() for text in value))

    @field_validator("insecure_exempt_paths")
    @classmethod
    def _check_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(validate_exempt_path(text) for text in value))

    @field_validator("token_header")
    @classmethod
    def _check_header(cls, value: str) -> str:
        name = value.strip().lower()
        if not _HEADER_NAME.match(name):
            raise ValueError(f"token_header {value!r} is not a header name")
        return name

    @field_validator("token_field")
    @classmethod
    def _check_field(cls, value: str) -> str:
        if not _FIELD_NAME.match(value):
            raise ValueError(f"token_field {value!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        return value


def compile_policy(settings: CSRFSettings) -> CSRFPolicy:
    return CSRFPolicy(
        trusted_origins=frozenset(parse_trusted_origin(text) for text in settings.trusted_origins),
        exempt_paths=frozenset(settings.insecure_exempt_paths),
        allow_same_site=settings.insecure_allow_same_site,
        exempt_bearer_without_cookies=settings.exempt_bearer_without_cookies,
    )
