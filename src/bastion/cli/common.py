"""What the `bastion` commands share: exit codes and loading the settings."""

from __future__ import annotations

from typing import Any, Final

import typer

from bastion.exceptions import ConfigurationError
from bastion.settings import Mode, Settings

EXIT_FINDINGS: Final = 1
"""Findings at or above `--fail-on`."""
EXIT_CANNOT_CHECK: Final = 2
"""Nothing could be checked: bad input, unreadable settings, unreachable target."""
EXIT_CONFIGURATION_ERROR: Final = 2


def parse_mode(value: str | None) -> Mode | None:
    if value is None:
        return None
    if value == "development":
        return "development"
    if value == "production":
        return "production"
    raise typer.BadParameter("mode must be development or production")


def load_settings(mode: Mode | None) -> Settings:
    overrides: dict[str, Any] = {"mode": mode} if mode else {}
    try:
        return Settings(**overrides)
    except ConfigurationError as exc:
        typer.echo(f"bastion: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION_ERROR) from None


def load_settings_for_check(mode: Mode | None) -> Settings:
    """The settings with production's start-up refusals left to the deploy checks."""
    from bastion.audit.deploy import settings_for_check

    overrides: dict[str, Any] = {"mode": mode} if mode else {}
    try:
        return settings_for_check(**overrides)
    except ConfigurationError as exc:
        typer.echo(f"bastion: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION_ERROR) from None


def load_secret_keys() -> list[str]:
    """`secret_keys` as the app reads them (code defaults, `BASTION_SECRET_KEYS`, the
    secrets directory's `bastion_secret_keys`), whatever the mode: production mode
    without its refusal, so nothing is filled in and a weak key is still returned.
    Says so on standard error when there are none. Never prints a key."""
    settings = load_settings_for_check("production")
    keys = [key.get_secret_value() for key in settings.secret_keys]
    if not keys:
        typer.echo(
            "bastion: no secret_keys found (BASTION_SECRET_KEYS or bastion_secret_keys "
            "in the secrets directory)",
            err=True,
        )
    return keys
