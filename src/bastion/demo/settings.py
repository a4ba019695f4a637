"""Settings of the Bastion Bank demo, read the way Bastion reads its own.

Everything about the demo that an operator may want to point elsewhere (bind address,
ports, certificate and key, the JWT issuer, audience and key set, where its data
lives) comes from code, `BASTION_DEMO__*` environment variables or files in the
secrets directory, exactly like `bastion.Settings`: the directory is
`BASTION_SECRETS_DIR`, else `/run/secrets` when it exists, and each file is named
like the variable in lower case (`bastion_demo__jwks_file` holds the path of a JWK
set), code first, then the environment, then the files. The Bastion layers themselves
(trusted proxies, limits, hosts, ...) keep their own `BASTION_<SECTION>__*` names.
So the demo can be given another certificate or another identity provider's keys
without a code change:

    BASTION_DEMO__CERT_FILE=/etc/tls/bank.pem BASTION_DEMO__KEY_FILE=/etc/tls/bank.key \
    BASTION_DEMO__JWKS_FILE=/etc/idp/jwks.json BASTION_DEMO__JWT_ISSUER=https://idp.example \
    bastion demo

A `BASTION_DEMO__*` variable that names no demo setting is an error, as for Bastion.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bastion.exceptions import ConfigurationError
from bastion.hosts import is_loopback_host
from bastion.settings import secrets_sources

DEMO_ENV_PREFIX: Final = "BASTION_DEMO__"

Server = Literal["granian", "hypercorn", "uvicorn"]


def default_data_dir() -> Path:
    """The per-user data directory: `$XDG_DATA_HOME/bastion-demo` or `~/.local/share/...`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bastion-demo"


class DemoSettings(BaseSettings):
    """Where and how `bastion demo` serves Bastion Bank."""

    model_config = SettingsConfigDict(
        env_prefix=DEMO_ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    host: str = "127.0.0.1"
    """Bind address; the demo refuses anything but a loopback address."""
    https_port: int = Field(default=8443, ge=0, le=65535)
    """The HTTPS port (0 picks a free one)."""
    http_port: int | None = Field(default=8080, ge=0, le=65535)
    """A plain-HTTP port that only redirects to HTTPS; None turns it off."""
    server: Server = "hypercorn"
    """The server the demo runs on: hypercorn (default) and granian cut clients that
    trickle their request headers, uvicorn does not (docs/deployment-servers.md);
    granian needs `pip install granian`."""
    data_dir: Path = Field(default_factory=default_data_dir)
    """Database, development certificate and keys live here (created 0700)."""
    cert_file: Path | None = None
    """PEM certificate chain; None: a development certificate in `data_dir`."""
    key_file: Path | None = None
    """PEM private key for `cert_file`."""
    jwt_issuer: str = "https://bank.bastion.localhost"
    jwt_audience: str = "bastion-bank-api"
    jwks_file: Path | None = None
    """A JWK set (public keys) for the API; None: the demo's own key set in `data_dir`,
    which it also signs with. Pointing it at another provider's keys makes the API
    accept that provider's tokens (and the demo no longer issues tokens)."""
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """A client that has not sent its whole request head by then is cut off."""
    seed: bool = True
    """Create the demo users and accounts when the database is new."""

    def __init__(self, **values: Any) -> None:
        unknown = sorted(
            name
            for name in os.environ
            if name.upper().startswith(DEMO_ENV_PREFIX)
            and name[len(DEMO_ENV_PREFIX) :].lower().split("__", 1)[0]
            not in type(self).model_fields
        )
        if unknown:
            raise ConfigurationError(f"unknown demo environment variable {unknown[0]}")
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid demo settings: {exc}") from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The same directory and order as `bastion.Settings`, so one secrets mount
        # configures both.
        return (init_settings, env_settings, *secrets_sources(settings_cls))

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        ipaddress.ip_address(value)  # an address, not a name: refused with pydantic's error
        if not is_loopback_host(value):
            raise ValueError("the demo binds to a loopback address only")
        return value
