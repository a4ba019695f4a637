"""The `bastion` command line.

* `bastion config`  prints the effective, resolved configuration as JSON (secrets
  masked, opt-outs listed, response headers rendered) so CI can diff security posture.
* `bastion audit`   probes an app (in-process or a URL) and grades it; no target: the demo.
* `bastion check`   deploy checks of the effective settings.
* `bastion deps`    checks installed distributions against OSV advisories.
* `bastion demo`    serves Bastion Bank, hardened, over HTTPS on 127.0.0.1.

The command line is an optional extra (`pip install bastion-asgi[cli]`).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

try:
    import typer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise SystemExit(
        "the bastion command needs its extra: pip install 'bastion-asgi[cli]'"
    ) from exc

from bastion.cli.audit import audit
from bastion.cli.check import check
from bastion.cli.common import (
    EXIT_CANNOT_CHECK,
    EXIT_CONFIGURATION_ERROR,
    EXIT_FINDINGS,
    load_secret_keys,
    load_settings,
    parse_mode,
)
from bastion.exceptions import ConfigurationError
from bastion.settings import Settings

if TYPE_CHECKING:
    from bastion.deps import Report as DepsReport
    from bastion.deps import Threshold

app = typer.Typer(
    name="bastion",
    help="Bastion: a security layer for ASGI applications.",
    no_args_is_help=True,
    add_completion=False,
)


def describe_configuration(settings: Settings) -> dict[str, Any]:
    """The resolved configuration: settings, opt-outs and rendered response headers."""
    from bastion.shield import LAYERS

    data: dict[str, Any] = {
        "settings": settings.public_dict(),
        "layers": [name for name, _ in LAYERS if getattr(settings, name).enabled],
        "opt_outs": settings.opt_outs(),
    }
    (
        data["response_headers"],
        data["resource_response_headers"],
        data["https_response_headers"],
    ) = _rendered_headers(settings)
    return data


def _rendered_headers(
    settings: Settings,
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Headers on pages (the nonce as `{nonce}`), on responses of
    `headers.resource_types`, and on HTTPS only."""
    from bastion import cors, headers, transport

    pages: dict[str, str] = {}
    resources: dict[str, str] = {}
    https_only: dict[str, str] = {}
    if settings.headers.enabled:
        pages.update(dict(headers.build_response_headers(settings.headers)))
        resources.update(dict(headers.build_response_headers(settings.headers, kind="resource")))
    if settings.cors.enabled and cors.grants_any_origin(cors.compile_policy(settings.cors)):
        pages["vary"] = resources["vary"] = "Origin"
    if settings.transport.enabled:
        hsts = transport.hsts_header_value(settings.transport)
        if hsts:
            https_only["strict-transport-security"] = hsts
    return pages, resources, https_only


@app.command()
def config(
    mode: Annotated[
        str | None, typer.Option(help="Override BASTION_MODE: development or production.")
    ] = None,
) -> None:
    """Print the effective configuration as JSON (secrets masked)."""
    settings = load_settings(parse_mode(mode))
    typer.echo(json.dumps(describe_configuration(settings), indent=2, sort_keys=True))


keys_app = typer.Typer(help="Generate and rotate signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

KEY_BYTES = 32  # 256 bits; prints 43 URL-safe characters, over MIN_SECRET_KEY_CHARS


JWT_ALGORITHMS = ("Ed25519", "ES256", "RS256", "PS256")
# NIST SP 800-57 part 1 table 2: 3072-bit RSA for protection beyond 2030.
RSA_KEY_BITS = 3072
JWT_PRIVATE_NOTE = (
    "bastion: standard output holds the PRIVATE JWK set: keep it with whatever issues "
    "tokens; never put it in auth.jwt.jwks (refused)"
)
JWT_PUBLIC_NOTE = "bastion: the PUBLIC JWK set, for auth.jwt.jwks (or to publish as the JWKS):"


def _new_jwk_set(alg: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A private JWK set with one signing key for `alg`, and its public twin.

    `Ed25519` (RFC 9864), not the polymorphic `EdDSA`, which bastion.auth.jwt refuses.
    The `kid` is the RFC 7638 thumbprint, so it is stable and reveals nothing.
    """
    from joserfc.jwk import ECKey, Key, KeyParameters, OKPKey, RSAKey

    parameters: KeyParameters = {"alg": alg, "use": "sig"}
    key: Key
    if alg == "Ed25519":
        key = OKPKey.generate_key("Ed25519", parameters=parameters, auto_kid=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", parameters=parameters, auto_kid=True)
    else:
        key = RSAKey.generate_key(RSA_KEY_BITS, parameters=parameters, auto_kid=True)
    return {"keys": [key.as_dict(private=True)]}, {"keys": [key.as_dict(private=False)]}


@keys_app.command("new")
def keys_new(
    kind: Annotated[
        str,
        typer.Option(
            help="signing (for secret_keys), aes (for field_encryption.keys) "
            "or jwt (a private JWK set for issuing tokens, its public set for auth.jwt.jwks)"
        ),
    ] = "signing",
    alg: Annotated[
        str | None, typer.Option(help="with --kind jwt: Ed25519 (default), ES256, RS256, PS256")
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="with --kind jwt: print only the public JWK set")
    ] = False,
) -> None:
    """Print a new random key.

    To rotate: put the new key first (it signs or encrypts) and keep the old ones
    after it (they still verify or decrypt) until everything they protect has expired
    or been re-encrypted, then remove them: BASTION_SECRET_KEYS="<new>,<old>".

    With --kind jwt the private JWK set goes to stdout (for whatever issues tokens,
    never for auth.jwt.jwks) and the public one, labelled, to stderr (for
    auth.jwt.jwks, or to publish as the JWKS), so `> private.json` never mixes them.
    """
    if kind != "jwt" and (alg is not None or public):
        raise typer.BadParameter("--alg and --public apply to --kind jwt only")
    if kind == "jwt":
        algorithm = alg or "Ed25519"
        if algorithm not in JWT_ALGORITHMS:
            raise typer.BadParameter(f"alg must be one of {', '.join(JWT_ALGORITHMS)}")
        private_set, public_set = _new_jwk_set(algorithm)
        if public:
            typer.echo(json.dumps(public_set, indent=2))
            return
        typer.echo(json.dumps(private_set, indent=2))
        typer.echo(JWT_PRIVATE_NOTE, err=True)
        typer.echo(JWT_PUBLIC_NOTE, err=True)
        typer.echo(json.dumps(public_set, indent=2), err=True)
        return
    if kind == "aes":
        from bastion.crypto import new_field_key

        typer.echo(new_field_key())
        return
    if kind != "signing":
        raise typer.BadParameter("kind must be signing, aes or jwt")
    typer.echo(secrets.token_urlsafe(KEY_BYTES))


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Print BASTION_SECRET_KEYS with a new signing key in front of the current ones.

    The current keys are read as the app reads them: BASTION_SECRET_KEYS or the
    secrets directory's bastion_secret_keys (write the result back where they came
    from). With none found it says so on standard error and prints the new key alone.

    The new key signs from the next start; the old ones keep verifying sessions'
    CSRF tokens, tickets and audit records, so nobody is logged out. Remove an old
    key once what it signed has expired (the longest: the session absolute timeout).
    """
    current = load_secret_keys()
    rotated = [secrets.token_urlsafe(KEY_BYTES), *current]
    typer.echo(f"BASTION_SECRET_KEYS={','.join(rotated)}")


log_app = typer.Typer(help="Audit log tools.", no_args_is_help=True)
app.add_typer(log_app, name="log")


@log_app.command("verify")
def log_verify(
    files: Annotated[list[str], typer.Argument(help="the audit log and its archives")],
) -> None:
    """Verify the audit log's hash chain with secret_keys (BASTION_SECRET_KEYS or the
    secrets directory, as the app reads them).

    Exit 0: intact; 1: tampering or loss found (each problem named by file, line and
    sequence number); 2: could not verify.
    """
    from bastion.auditlog import verify_command

    keys = load_secret_keys()
    code, text = verify_command(files, keys)
    typer.echo(text, err=code == 2)
    raise typer.Exit(code)


def parse_threshold(value: str) -> Threshold:
    if value == "low":
        return "low"
    if value == "medium":
        return "medium"
    if value == "high":
        return "high"
    if value == "critical":
        return "critical"
    raise typer.BadParameter("fail-on must be low, medium, high or critical")


def _is_loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    from bastion.hosts import is_loopback_host

    return is_loopback_host(urlsplit(url).hostname or "")


def run_deps(
    osv: Path | None, online: bool | None, output_format: str, osv_api: str
) -> tuple[str, DepsReport]:
    """Check installed packages against OSV; the rendered report and its findings.

    Warnings go to stderr (in the report itself for JSON); when nothing could be
    checked, the reason goes to stderr and `typer.Exit(EXIT_CANNOT_CHECK)` is raised.
    """
    from bastion import deps as deps_core

    if output_format not in ("table", "json", "sarif"):
        raise typer.BadParameter("format must be table, json or sarif")
    if not osv_api.startswith("https://") and not (
        osv_api.startswith("http://") and _is_loopback_url(osv_api)
    ):
        # Plain HTTP lets anyone on the path hide advisories; loopback is for mirrors.
        raise typer.BadParameter("osv-api must be https:// (http:// on loopback only)")
    use_online = osv is None if online is None else online
    if osv is None and not use_online:
        typer.echo("bastion: nothing to check against: give --osv PATH or --online", err=True)
        raise typer.Exit(EXIT_CANNOT_CHECK)
    report = deps_core.Report()
    packages = deps_core.installed_distributions()
    report.packages_checked = len(packages)
    advisories: dict[str, deps_core.Advisory] = {}
    if osv is not None:
        try:
            advisories.update(deps_core.load_export(osv, report))
        except (OSError, ValueError) as exc:
            typer.echo(f"bastion: cannot read the OSV export: {exc}", err=True)
            raise typer.Exit(EXIT_CANNOT_CHECK) from None
    if use_online:
        try:
            advisories.update(deps_core.query_osv(packages, report, base_url=osv_api))
        except deps_core.OSVUnavailable as exc:
            message = f"the OSV API at {osv_api} could not be queried ({exc})"
            if osv is None:
                typer.echo(f"bastion: {message}; nothing was checked", err=True)
                raise typer.Exit(EXIT_CANNOT_CHECK) from None
            report.warnings.append(f"{message}; results are from the local export only")
    report.advisories_loaded = len(advisories)
    report.findings = deps_core.match(packages, advisories.values())
    if output_format == "json":
        return deps_core.render_json(report), report
    for warning in report.warnings:
        typer.echo(f"bastion: warning: {warning}", err=True)
    if output_format == "sarif":
        return deps_core.render_sarif(report), report
    return deps_core.render_table(report), report


@app.command()
def deps(
    osv: Annotated[
        Path | None,
        typer.Option(help="A local OSV export: a directory of advisory JSON files, or a zip."),
    ] = None,
    online: Annotated[
        bool | None,
        typer.Option(
            "--online/--no-online",
            help="Query the OSV API (default: only when no --osv export is given).",
        ),
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="table, json or sarif")] = "table",
    fail_on: Annotated[
        str, typer.Option(help="Exit 1 when a finding is at or above: low, medium, high, critical")
    ] = "low",
    osv_api: Annotated[
        str, typer.Option(help="Base URL of the OSV API (https, or http on loopback).")
    ] = "https://api.osv.dev",
) -> None:
    """Check installed packages against OSV vulnerability advisories.

    Exit 0: nothing at or above --fail-on; 1: findings at or above it (a finding of
    unknown severity always counts); 2: could not check.
    """
    from bastion import deps as deps_core

    threshold = parse_threshold(fail_on)
    text, report = run_deps(osv, online, output_format, osv_api)
    typer.echo(text)
    if any(deps_core.meets_threshold(f.severity, threshold) for f in report.findings):
        raise typer.Exit(EXIT_FINDINGS)


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="Loopback address to bind.")] = None,
    https_port: Annotated[int | None, typer.Option(help="HTTPS port (0: any free).")] = None,
    http_port: Annotated[
        int | None, typer.Option(help="Plain-HTTP port that redirects to HTTPS.")
    ] = None,
    no_http_port: Annotated[
        bool, typer.Option("--no-http-port", help="Do not open the redirecting HTTP port.")
    ] = False,
    server: Annotated[
        str | None, typer.Option(help="hypercorn (default), granian or uvicorn.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Database, keys and development certificate.")
    ] = None,
    cert_file: Annotated[Path | None, typer.Option(help="PEM certificate chain.")] = None,
    key_file: Annotated[Path | None, typer.Option(help="PEM private key.")] = None,
    jwt_issuer: Annotated[str | None, typer.Option(help="The API tokens' issuer (iss).")] = None,
    jwt_audience: Annotated[
        str | None, typer.Option(help="The API tokens' audience (aud).")
    ] = None,
    jwks_file: Annotated[
        Path | None,
        typer.Option(help="Another provider's JWK set: the API accepts its tokens, issues none."),
    ] = None,
    header_timeout_seconds: Annotated[
        float | None, typer.Option(help="Cut a client whose request head is not complete by then.")
    ] = None,
    seed: Annotated[
        bool | None,
        typer.Option("--seed/--no-seed", help="Create the demo users in a new database."),
    ] = None,
) -> None:
    """Serve Bastion Bank, behind Bastion, over HTTPS on 127.0.0.1.

    Options override the BASTION_DEMO__* variables; Bastion's own settings come from
    BASTION_* as for any app. A development certificate is made on first run.
    """
    from bastion.demo.bank.db import DEMO_USERS
    from bastion.demo.serve import DemoLogin, run_demo
    from bastion.demo.settings import DemoSettings

    given: dict[str, Any] = {
        name: value
        for name, value in {
            "host": host,
            "https_port": https_port,
            "http_port": http_port,
            "server": server,
            "data_dir": data_dir,
            "cert_file": cert_file,
            "key_file": key_file,
            "jwt_issuer": jwt_issuer,
            "jwt_audience": jwt_audience,
            "jwks_file": jwks_file,
            "header_timeout_seconds": header_timeout_seconds,
            "seed": seed,
        }.items()
        if value is not None
    }
    if no_http_port:
        given["http_port"] = None
    logins = [DemoLogin(user.username, user.password, user.role) for user in DEMO_USERS]
    try:
        settings = DemoSettings(**given)
        run_demo(settings, "bastion.demo:served_app", logins=logins, echo=typer.echo)
    except ConfigurationError as exc:
        typer.echo(f"bastion: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION_ERROR) from None


app.command()(check)
app.command()(audit)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
