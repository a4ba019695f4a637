"""`bastion audit`: probe an app from outside, grade it, and fail CI on what matters.

    bastion audit                      the Bastion Bank demo, unprotected and protected
    bastion audit myapp.main:app       an ASGI app, imported and driven in-process
    bastion audit https://staging.example
    bastion audit --deps               installed packages against OSV (as `bastion deps`)

The probes, grading and writers are `bastion.audit`; this module reads options,
shows progress on stderr (stdout carries only the report) and sets the exit code.
Passwords for login recipes come from an environment variable, never an option, so
they stay out of shell history and process listings.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from bastion.cli.check import parse_severity
from bastion.cli.common import EXIT_CANNOT_CHECK, EXIT_FINDINGS

if TYPE_CHECKING:
    from bastion.audit.discovery import LoginRecipe, TokenRecipe
    from bastion.audit.findings import AuditReport

FORMATS: Final = ("table", "json", "sarif", "html")
PASSWORD_ENV: Final = "BASTION_AUDIT_PASSWORD"  # noqa: S105 - the variable's name


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str], None] | None]:
    """A transient spinner on stderr with the current probe step (only on a terminal).

    A step names routes the target chose (its OpenAPI paths): shown as plain text,
    never Rich markup (`[/x]` would end the audit, `[link=...]` add a link), with
    control and invisible characters escaped (`\\x1b`: an escape sequence would drive
    the terminal; `\\u202e`: a bidi override would reorder the line).
    """
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from bastion.audit.report.escape import printable

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=None)

        def step(text: str) -> None:
            progress.update(task, description=printable(text[:100]))

        yield step


@contextmanager
def _quiet_bastion_logs(verbose: bool) -> Iterator[None]:
    """An in-process target logs every refusal the probes provoke; hide that unless asked."""
    logger = logging.getLogger("bastion")
    saved = logger.level
    if not verbose:
        logger.setLevel(logging.CRITICAL + 1)  # every "bastion.*" logger inherits it
    try:
        yield
    finally:
        logger.setLevel(saved)


def _recipes(
    login_path: str | None, username: str | None, token_path: str | None, token_check: str
) -> tuple[LoginRecipe | None, TokenRecipe | None]:
    from bastion.audit.discovery import LoginRecipe, TokenRecipe

    if login_path is None and token_path is None:
        return None, None
    password = os.environ.get(PASSWORD_ENV)
    if not username or password is None:
        raise typer.BadParameter(
            f"a login recipe needs --username and the password in ${PASSWORD_ENV}"
        )
    login = LoginRecipe(login_path, username, password) if login_path else None
    token = (
        TokenRecipe(token_path, username, password, protected_path=token_check)
        if token_path
        else None
    )
    return login, token


def _check_routes(routes: list[str]) -> None:
    """Refuse a `--route` no request can carry before anything is sent."""
    from bastion.audit.discovery import parse_route
    from bastion.audit.report.escape import printable

    for text in routes:
        try:
            parse_route(text)
        except ValueError as exc:
            raise typer.BadParameter(printable(str(exc)), param_hint="--route") from None


def _render(reports: list[AuditReport], output_format: str, color: bool) -> str:
    from importlib.metadata import version

    from bastion.audit import report

    if output_format == "json":
        return report.render_json(reports)
    if output_format == "sarif":
        return report.render_sarif(reports, tool_version=version("bastion-asgi"))
    if output_format == "html":
        return report.render_html(reports)
    return report.render_table(reports, color=color)


def _audit_deps(
    osv: Path | None, output_format: str, threshold: str | None, output: Path | None
) -> None:
    """`bastion deps` under audit's rules: the report to stdout or `output`, and
    exit 1 only with --fail-on (`bastion deps` fails on any finding by default)."""
    from bastion.cli import parse_threshold, run_deps
    from bastion.deps import meets_threshold

    text, report = run_deps(osv, None, output_format, "https://api.osv.dev")
    _write(text, output)
    if threshold is None:
        return
    # Advisories have no "info" severity: it fails on anything, as "low" does.
    floor = parse_threshold("low" if threshold == "info" else threshold)
    if any(meets_threshold(f.severity, floor) for f in report.findings):
        raise typer.Exit(EXIT_FINDINGS)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    typer.echo(f"bastion: report written to {output}", err=True)


def audit(
    target: Annotated[
        str | None,
        typer.Argument(help="module:attribute (in-process) or an http(s):// URL; none: the demo."),
    ] = None,
    route: Annotated[
        list[str] | None,
        typer.Option(help='A route to probe, "GET /path" or "WS /ws" (repeatable).'),
    ] = None,
    login_path: Annotated[
        str | None, typer.Option(help="Form login route, e.g. /login (password from env).")
    ] = None,
    username: Annotated[str | None, typer.Option(help="User for the login recipe.")] = None,
    token_path: Annotated[
        str | None, typer.Option(help="Route that returns a bearer token for the user.")
    ] = None,
    token_check: Annotated[
        str, typer.Option(help="A bearer-protected route to try tokens on.")
    ] = "/",  # noqa: S107 - a path, not a password
    host: Annotated[str | None, typer.Option(help="Host header for in-process targets.")] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Do not verify the TLS certificate (dev certs); every report format says so.",
        ),
    ] = False,
    output_format: Annotated[
        str, typer.Option("--format", help="table, json, sarif or html")
    ] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to this file.")
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option(help="Exit 1 on a failed check at or above: critical, high, medium, low."),
    ] = None,
    max_requests: Annotated[
        int,
        typer.Option(
            min=50,
            max=10_000,
            help="Cap on requests sent to the target; a probe it leaves unrun fails "
            "as audit.incomplete.",
        ),
    ] = 1500,
    allow_writes: Annotated[
        bool,
        typer.Option(
            "--allow-writes",
            help="Let probes send state-changing requests with the signed-in session "
            "to a live URL (forged transfers the target may really make).",
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show the in-process app's own log lines.")
    ] = False,
    deps: Annotated[
        bool, typer.Option("--deps", help="Audit installed packages instead (as `bastion deps`).")
    ] = False,
    osv: Annotated[
        Path | None, typer.Option(help="With --deps: a local OSV export (directory or zip).")
    ] = None,
) -> None:
    """Probe an app from outside and grade it (no TARGET: the demo, without and with Bastion).

    Probes are bounded and non-destructive, and go only to the target: a live URL
    gets no state-changing request with the signed-in session unless
    --allow-writes is given (an app in-process always does). Exit 0: no
    failed check at or above --fail-on (or no --fail-on); 1: there is one (a
    check the target broke off or --max-requests left unrun, audit.incomplete,
    is a critical one); 2: the target could not be audited. With no TARGET,
    --fail-on judges the protected demo.
    """
    if output_format not in FORMATS:
        raise typer.BadParameter(f"format must be one of: {', '.join(FORMATS)}")
    threshold = parse_severity(fail_on) if fail_on is not None else None
    if deps:
        if target is not None:
            raise typer.BadParameter("--deps audits installed packages: give no TARGET with it")
        if output_format == "html":
            raise typer.BadParameter("--deps writes table, json or sarif")
        _audit_deps(osv, output_format, threshold, output)
        return
    login, token = _recipes(login_path, username, token_path, token_check)
    _check_routes(route or [])
    from bastion.audit.target import TargetError, redact_url

    show_progress = sys.stderr.isatty()
    try:
        with _quiet_bastion_logs(verbose), _progress(show_progress) as progress:
            if target is None:
                from bastion.audit.demo import audit_demo_sync

                reports = audit_demo_sync(progress=progress)
            else:
                from bastion.audit.runner import run_audit_sync

                reports = [
                    run_audit_sync(
                        target,
                        routes=route,
                        login=login,
                        token=token,
                        progress=progress,
                        max_requests=max_requests,
                        host=host,
                        verify_tls=not insecure,
                        allow_writes=allow_writes,
                    )
                ]
    except (TargetError, ValueError) as exc:
        from bastion.audit.report.escape import printable

        shown = "the demo" if target is None else redact_url(target) if "://" in target else target
        # The reason can quote the target (a route it named): shown inert.
        typer.echo(printable(f"bastion: cannot audit {shown}: {exc}"), err=True)
        raise typer.Exit(EXIT_CANNOT_CHECK) from None
    text = _render(reports, output_format, color=output is None and sys.stdout.isatty())
    _write(text, output)
    judged = reports[-1]
    if threshold is not None and judged.fails_at(threshold):
        raise typer.Exit(EXIT_FINDINGS)
