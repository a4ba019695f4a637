"""`bastion check`: deploy checks of the effective settings, for people and CI.

The checks themselves are `bastion.audit.deploy` (pure, over the settings and the
facts about the deployment given here); this module only reads options and prints.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from bastion.audit.findings import SEVERITIES, Severity
from bastion.cli.common import EXIT_CANNOT_CHECK, load_settings_for_check, parse_mode


def parse_severity(value: str) -> Severity:
    for severity in SEVERITIES:
        if value == severity:
            return severity
    raise typer.BadParameter(f"must be one of: {', '.join(SEVERITIES)}")


def check(
    mode: Annotated[
        str | None, typer.Option(help="Override BASTION_MODE: development or production.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes the app runs in.")
    ] = None,
    behind_proxy: Annotated[
        bool | None,
        typer.Option("--behind-proxy/--no-proxy", help="Whether a reverse proxy is in front."),
    ] = None,
    uvicorn: Annotated[
        bool, typer.Option(help="Check against uvicorn's defaults (proxy headers, ws max size).")
    ] = False,
    output_format: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    fail_on: Annotated[
        str, typer.Option(help="Exit 1 on a finding at or above: critical, high, medium, low, info")
    ] = "medium",
    ignore: Annotated[
        list[str] | None, typer.Option(help="A check id to silence (repeatable).")
    ] = None,
) -> None:
    """Check the effective settings for deployment (like Django's `check --deploy`).

    What production refuses at start-up (no or weak keys, no allowed hosts, plain
    HTTP) is reported as high findings, not as a refusal.
    Exit 0: nothing at or above --fail-on; 1: findings at or above it; 2: the settings
    cannot be loaded or an --ignore id does not exist.
    """
    from bastion.audit import deploy

    if output_format not in ("text", "json"):
        raise typer.BadParameter("format must be text or json")
    threshold = parse_severity(fail_on)
    settings = load_settings_for_check(parse_mode(mode))
    context = deploy.DeployContext(workers=workers)
    if uvicorn:
        context = deploy.DeployContext.uvicorn_defaults(workers=workers)
    context = dataclasses.replace(context, behind_proxy=behind_proxy)
    try:
        findings = deploy.run_checks(settings, context=context, ignore=ignore or ())
    except ValueError as exc:
        typer.echo(f"bastion: {exc}", err=True)
        raise typer.Exit(EXIT_CANNOT_CHECK) from None
    if output_format == "json":
        typer.echo(deploy.render_json(findings))
    else:
        typer.echo(deploy.render_text(findings), nl=False)
    raise typer.Exit(deploy.exit_code(findings, threshold))
