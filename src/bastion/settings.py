"""`Settings`: the one validated model users configure Bastion with.

Values come, highest priority first, from code (`Settings(...)` or `Shield(app,
...)`), from `BASTION_*` environment variables (sections nest with `__`, so
`BASTION_TRANSPORT__ALLOWED_HOSTS='["bank.example"]'`), and from files in a secrets
directory (`/run/secrets` style: one file per top-level setting, named like its
variable in lower case, e.g. `bastion_secret_keys`, or a whole section as JSON in
`bastion_transport`), taken from `BASTION_SECRETS_DIR` or `/run/secrets` when it
exists. A `BASTION_*` variable that names no setting is an error, not ignored, and
so are two variables that differ only in case (which one wins would depend on the
order of the environment) and a `bastion_*` file in the secrets directory that names
no top-level setting (a misspelt file, or one per nested setting, which is never
read).
An application that ships its own configuration (the demo bank) adds it below all
of these with `with_defaults`.

`mode` is `production` unless said otherwise, so a forgotten setting makes Bastion
refuse to start rather than run unprotected. Production refuses, naming the setting
and the rule and never a secret's value:

* no `secret_keys`, or a key shorter than `MIN_SECRET_KEY_CHARS`, of too few
  distinct characters, or holding white space, a comma or angle brackets (a
  placeholder pasted from documentation, never a generated key);
* no `transport.allowed_hosts`, or a bare `*` in it;
* `transport.insecure_allow_http` or `sessions.insecure_cookie_over_http` (HTTPS not
  required);
* the transport or errors layer disabled or in monitor-only mode (hosts unchecked,
  HTTPS not required, debug pages passed through);
* `debug`.

`development` mode fills what a laptop needs and says so at start-up: loopback host
names, plain HTTP (and session cookies without `Secure`), and a random per-process
secret key when none is given.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from bastion.auditlog import AuditLogSettings
from bastion.auth.settings import AuthSettings, PolicySettings
from bastion.cors import CORSSettings
from bastion.crypto import FieldEncryptionSettings
from bastion.csrf import CSRFSettings
from bastion.errors import ErrorSettings
from bastion.events import EventSettings
from bastion.exceptions import ConfigurationError
from bastion.headers import HeadersSettings
from bastion.limits import LimitsSettings
from bastion.ratelimit import RateLimitSettings
from bastion.sections import opt_outs, split_keys
from bastion.sessions import SessionSettings
from bastion.stores.settings import StoreSettings
from bastion.transport import LOCAL_HOSTS, TransportSettings
from bastion.websocket import WebSocketSettings

logger = logging.getLogger("bastion")

Mode = Literal["development", "production"]

# 32 characters of a URL-safe random token carry 192 bits; `secrets.token_urlsafe(32)`
# (what `bastion keys new` prints) gives 43. Django's check W009 asks for 50 characters
# with 5 distinct; we ask for fewer characters but more distinct ones.
MIN_SECRET_KEY_CHARS: Final = 32
MIN_SECRET_KEY_DISTINCT: Final = 10
# No generated key (`bastion keys new`, `openssl rand -base64 32` or `-hex 32`) holds
# these. A key that does is a placeholder pasted from documentation (the README's
# `"<output of: python -c '...'>"` is long and varied enough for the two rules above,
# and public) or a phrase that a variable or secrets file would split into several keys.
_NOT_IN_A_KEY: Final = re.compile(r"[\s,<>]")
DEFAULT_SECRETS_DIR: Final = "/run/secrets"
ENV_PREFIX: Final = "BASTION_"
# Variables with our prefix that are not settings fields.
_ENV_NOT_SETTINGS: Final = frozenset({"BASTION_SECRETS_DIR"})
# Prefixes of other settings models that check their own names (`bastion.demo.settings`).
_ENV_OTHER_PREFIXES: Final = ("BASTION_DEMO__",)


class Settings(BaseSettings):
    """Everything Bastion can be told; see the settings reference in the README."""

    model_config = SettingsConfigDict(
        env_prefix="BASTION_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )
    app_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    """Values read below every source; set through `with_defaults`, never by hand."""

    mode: Mode = "production"
    """`production` refuses unsafe settings at start-up; `development` relaxes them."""

    debug: bool = False
    """Show exception details in 500 pages. Development only; production refuses it."""

    secret_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """Signing keys: the first signs, every key verifies, so keys rotate without
    logging anyone out. In development a random per-process key is used if empty."""

    errors: ErrorSettings = Field(default_factory=ErrorSettings)
    transport: TransportSettings = Field(default_factory=TransportSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    headers: HeadersSettings = Field(default_factory=HeadersSettings)
    cors: CORSSettings = Field(default_factory=CORSSettings)
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    csrf: CSRFSettings = Field(default_factory=CSRFSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    websocket: WebSocketSettings = Field(default_factory=WebSocketSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    audit_log: AuditLogSettings = Field(default_factory=AuditLogSettings)
    field_encryption: FieldEncryptionSettings = Field(default_factory=FieldEncryptionSettings)

    def __init__(self, **values: Any) -> None:
        check_environment_names(os.environ, type(self).model_fields)
        check_secret_file_names(secrets_dir(), type(self).model_fields)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # pydantic's message quotes the offending input, which may be a secret.
            raise ConfigurationError(describe_validation_error(exc)) from None
        except SettingsError as exc:
            # A variable or secret file that does not parse (e.g. broken JSON).
            raise ConfigurationError(f"invalid Bastion settings source: {exc}") from None

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _parse_secret_keys(cls, value: Any) -> Any:
        return split_keys(value)

    @model_validator(mode="after")
    def _apply_mode(self) -> Settings:
        if self.mode == "production":
            problems = production_problems(self)
            if problems:
                raise ConfigurationError(
                    "refusing to start in production mode: "
                    + "; ".join(problems)
                    + " (set mode='development' only on a developer's machine)"
                )
            return self
        # Development: fill what a laptop needs, in the open (start-up log, config).
        # Frozen models are rebuilt field by field with object.__setattr__ because
        # this runs inside validation, before anyone holds a reference.
        transport_updates: dict[str, Any] = {}
        if not self.transport.allowed_hosts:
            transport_updates["allowed_hosts"] = LOCAL_HOSTS
        if "insecure_allow_http" not in self.transport.model_fields_set:
            transport_updates["insecure_allow_http"] = True
        if transport_updates:
            merged = self.transport.model_dump() | transport_updates
            object.__setattr__(self, "transport", TransportSettings.model_validate(merged))
        if (
            self.transport.insecure_allow_http
            and "insecure_cookie_over_http" not in self.sessions.model_fields_set
        ):
            # Browsers drop `Secure` and `__Host-` cookies over plain HTTP.
            merged = self.sessions.model_dump() | {"insecure_cookie_over_http": True}
            object.__setattr__(self, "sessions", SessionSettings.model_validate(merged))
        if not self.secret_keys:
            object.__setattr__(self, "secret_keys", (SecretStr(secrets.token_urlsafe(32)),))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        sources += secrets_sources(settings_cls)
        if cls.app_defaults:
            sources.append(_FixedSource(settings_cls, cls.app_defaults))
        return tuple(sources)

    def opt_outs(self) -> list[str]:
        """Every protection this configuration weakens, by dotted setting name."""
        found = opt_outs(self)
        if self.debug:
            found.insert(0, "debug")
        return found

    def public_dict(self) -> dict[str, Any]:
        """The resolved settings as JSON-ready data, secrets masked."""
        data: dict[str, Any] = self.model_dump(mode="json")
        data["secret_keys"] = [f"********** (key {i + 1})" for i in range(len(self.secret_keys))]
        return data


class _FixedSource(PydanticBaseSettingsSource):
    """A settings source that only supplies fixed values (read below every other)."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = dict(values)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._values


def with_defaults(defaults: Mapping[str, Any]) -> type[Settings]:
    """`Settings` whose unset fields come from `defaults`, read below code, the
    environment and the secrets directory, so an operator can still override each."""

    class SettingsWithDefaults(Settings):
        app_defaults = MappingProxyType(dict(defaults))

    return SettingsWithDefaults


def secrets_dir() -> str | None:
    """The secrets directory: `BASTION_SECRETS_DIR`, else `/run/secrets` when it exists."""
    directory = os.environ.get("BASTION_SECRETS_DIR")
    if directory is None and Path(DEFAULT_SECRETS_DIR).is_dir():
        directory = DEFAULT_SECRETS_DIR
    return directory


def secrets_sources(settings_cls: type[BaseSettings]) -> list[PydanticBaseSettingsSource]:
    """The secrets-directory source every Bastion settings model reads: one file per
    setting in `secrets_dir()`."""
    directory = secrets_dir()
    if directory is None:
        return []
    return [SecretsSettingsSource(settings_cls, secrets_dir=directory)]


def check_environment_names(environ: Mapping[str, str], fields: Mapping[str, object]) -> None:
    """Refuse `BASTION_*` variables that name no setting.

    pydantic-settings reads only the variables it expects, so a misspelt one
    (`BASTION_ALLOWED_HOST`, `BASTION_TRANSPORT_ALLOWED_HOSTS` with one underscore)
    would be ignored silently and the protection left at its default.
    """
    ours = sorted(name for name in environ if name.upper().startswith(ENV_PREFIX))
    unknown = [
        name
        for name in ours
        if name.upper() not in _ENV_NOT_SETTINGS
        and not name.upper().startswith(_ENV_OTHER_PREFIXES)
        and name[len(ENV_PREFIX) :].lower().split("__", 1)[0] not in fields
    ]
    if unknown:
        raise ConfigurationError(
            f"unknown Bastion environment variable {unknown[0]} (settings are "
            f"BASTION_<SETTING>, sections nest with '__': BASTION_TRANSPORT__ALLOWED_HOSTS)"
        )
    # Names are read without regard to case, so `BASTION_MODE=production` and
    # `bastion_mode=development` both name `mode`, and pydantic-settings keeps
    # whichever the environment lists last: an operator's explicit value could lose,
    # without a word, to a forgotten one.
    _refuse_case_duplicates(ours, "environment variables")


def _refuse_case_duplicates(names: list[str], kind: str) -> None:
    """Refuse two names that differ only in case: both name one setting, and which
    one is read depends on an order nobody chose (of the environment, of a listing)."""
    seen: dict[str, str] = {}
    for name in names:
        first = seen.setdefault(name.upper(), name)
        if first != name:
            raise ConfigurationError(
                f"Bastion {kind} {first} and {name} differ only in case "
                f"(both name one setting): keep one"
            )


def check_secret_file_names(directory: str | None, fields: Mapping[str, object]) -> None:
    """Refuse files in the secrets directory named `bastion_*` that name no setting.

    pydantic-settings reads one file per top-level setting (any case) and passes over
    every other file, so a misspelt one (`bastion_secret_key`) or one per nested
    setting (`bastion_policy__deny_by_default`, which it never reads) would leave the
    protection at its default without a word, as a misspelt variable would.
    """
    if directory is None:
        return
    try:
        names = os.listdir(directory)
    except OSError:
        return  # no readable directory: pydantic-settings reads no file from it either
    ours = sorted(name for name in names if name.upper().startswith(ENV_PREFIX))
    unknown = [
        name
        for name in ours
        if not name.upper().startswith(_ENV_OTHER_PREFIXES)
        and name[len(ENV_PREFIX) :].lower() not in fields
    ]
    if unknown:
        raise ConfigurationError(
            f"unknown Bastion secrets file {unknown[0]} (one file per top-level setting, "
            f"bastion_<setting>; a section as JSON in one file: bastion_transport)"
        )
    _refuse_case_duplicates(ours, "secrets files")


def weak_secret_key(key: str) -> str | None:
    """Why `key` is too weak to sign with, or None. Never mentions the key itself."""
    if len(key) < MIN_SECRET_KEY_CHARS:
        return f"shorter than {MIN_SECRET_KEY_CHARS} characters"
    if len(set(key)) < MIN_SECRET_KEY_DISTINCT:
        return f"fewer than {MIN_SECRET_KEY_DISTINCT} distinct characters"
    if _NOT_IN_A_KEY.search(key):
        return "not a generated key (white space, a comma or '<' '>': a placeholder?)"
    return None


def production_problems(settings: Settings) -> list[str]:
    """Each rule the settings break for production, naming the setting only."""
    problems: list[str] = []
    if not settings.secret_keys:
        problems.append("secret_keys is empty (generate one with `bastion keys new`)")
    for index, key in enumerate(settings.secret_keys):
        weakness = weak_secret_key(key.get_secret_value())
        if weakness:
            problems.append(f"secret_keys[{index}] is {weakness}")
    for section in ("transport", "errors"):
        layer = getattr(settings, section)
        if not layer.enabled:
            problems.append(f"{section}.enabled is false (production requires this layer)")
        elif layer.monitor_only:
            problems.append(f"{section}.monitor_only is set (production requires enforcement)")
    hosts = settings.transport.allowed_hosts
    if not hosts:
        problems.append("transport.allowed_hosts is empty (list the host names you serve)")
    elif "*" in hosts:
        problems.append("transport.allowed_hosts contains '*' (list the host names you serve)")
    if settings.transport.insecure_allow_http:
        problems.append("transport.insecure_allow_http is set (production requires HTTPS)")
    if settings.sessions.insecure_cookie_over_http:
        problems.append("sessions.insecure_cookie_over_http is set (production requires HTTPS)")
    if settings.debug:
        problems.append("debug is on")
    return problems


def log_opt_outs(settings: Settings, log: logging.Logger = logger) -> list[str]:
    """Log, once, every weakened protection; returns what was logged."""
    found = settings.opt_outs()
    if settings.mode == "development":
        log.warning("bastion: development mode: not for production (plain HTTP, local hosts)")
    for name in found:
        log.warning("bastion: protection weakened by configuration: %s", name)
    return found


def describe_validation_error(exc: ValidationError) -> str:
    """A validation error as `setting: rule` lines, without the submitted values."""
    lines = [
        f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    ]
    return "invalid Bastion settings: " + "; ".join(lines)
