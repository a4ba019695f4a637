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
