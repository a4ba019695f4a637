"""The `bastion` command line.

* `bastion config`  prints the effective, resolved configuration as JSON (secrets
  masked, opt-outs listed, response headers rendered) so CI can diff security posture.
* `bastion demo`    serves the bundled example application, hardened, on 127.0.0.1.

The command line is an optional extra (`pip install bastion-asgi[cli]`).
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Annotated, Any

try:
    import typer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise SystemExit(
        "the bastion command needs its extra: pip install 'bastion-asgi[cli]'"
    ) from exc

from bastion.exceptions import ConfigurationError
from bastion.sections import split_keys
from bastion.settings import Mode, Settings

app = typer.Typer(
    name="bastion",
    help="Bastion: a security layer for ASGI applications.",
    no_args_is_help=True,
    add_completion=False,
)

EXIT_CONFIGURATION_ERROR = 2


def _parse_mode(value: str | None) -> Mode | None:
    if value is None:
        return None
    if value == "development":
        return "development"
    if value == "production":
        return "production"
    raise typer.BadParameter("mode must be development or production")


def _load_settings(mode: Mode | None) -> Settings:
    overrides: dict[str, Any] = {"mode": mode} if mode else {}
    try:
        return Settings(**overrides)
    except ConfigurationError as exc:
        typer.echo(f"bastion: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION_ERROR) from None


def describe_configuration(settings: Settings) -> dict[str, Any]:
    """The resolved configuration: settings, opt-outs and rendered response headers."""
    from bastion.shield import LAYERS

    data: dict[str, Any] = {
        "settings": settings.public_dict(),
        "layers": [name for name, _ in LAYERS if getattr(settings, name).enabled],
        "opt_outs": settings.opt_outs(),
    }
    data["response_headers"], data["https_response_headers"] = _rendered_headers(settings)
    return data


def _rendered_headers(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """Headers on every response (the nonce as `{nonce}`), and those on HTTPS only."""
    from bastion import headers, transport

    every: dict[str, str] = {}
    https_only: dict[str, str] = {}
    if settings.headers.enabled:
        every.update(dict(headers.build_response_headers(settings.headers)))
    if settings.cors.enabled:
        every["vary"] = "Origin"
    if settings.transport.enabled:
        hsts = transport.hsts_header_value(settings.transport)
        if hsts:
            https_only["strict-transport-security"] = hsts
    return every, https_only


@app.command()
def config(
    mode: Annotated[
        str | None, typer.Option(help="Override BASTION_MODE: development or production.")
    ] = None,
) -> None:
    """Print the effective configuration as JSON (secrets masked)."""
    settings = _load_settings(_parse_mode(mode))
    typer.echo(json.dumps(describe_configuration(settings), indent=2, sort_keys=True))


keys_app = typer.Typer(help="Generate and rotate signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

KEY_BYTES = 32  # 256 bits; prints 43 URL-safe characters, over MIN_SECRET_KEY_CHARS


@keys_app.command("new")
def keys_new(
    kind: Annotated[
        str, typer.Option(help="signing (for secret_keys) or aes (for field_encryption.keys)")
    ] = "signing",
) -> None:
    """Print a new random key.

    To rotate: put the new key first (it signs or encrypts) and keep the old ones
    after it (they still verify or decrypt) until everything they protect has expired
    or been re-encrypted, then remove them: BASTION_SECRET_KEYS="<new>,<old>".
    """
    if kind == "aes":
        from bastion.crypto import new_field_key

        typer.echo(new_field_key())
        return
    if kind != "signing":
        raise typer.BadParameter("kind must be signing or aes")
    typer.echo(secrets.token_urlsafe(KEY_BYTES))


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Print BASTION_SECRET_KEYS with a new signing key in front of the current ones.

    The new key signs from the next start; the old ones keep verifying sessions'
    CSRF tokens, tickets and audit records, so nobody is logged out. Remove an old
    key once what it signed has expired (the longest: the session absolute timeout).
    """
    current = [str(key) for key in split_keys(os.environ.get("BASTION_SECRET_KEYS", ""))]
    rotated = [secrets.token_urlsafe(KEY_BYTES), *current]
    typer.echo(f"BASTION_SECRET_KEYS={','.join(rotated)}")


log_app = typer.Typer(help="Audit log tools.", no_args_is_help=True)
app.add_typer(log_app, name="log")


@log_app.command("verify")
def log_verify(
    files: Annotated[list[str], typer.Argument(help="the audit log and its archives")],
) -> None:
    """Verify the audit log's hash chain with the keys in BASTION_SECRET_KEYS.

    Exit 0: intact; 1: tampering or loss found (each problem named by file, line and
    sequence number); 2: could not verify.
    """
    from bastion.auditlog import verify_command

    keys = [str(key) for key in split_keys(os.environ.get("BASTION_SECRET_KEYS", ""))]
    code, text = verify_command(files, keys)
    typer.echo(text, err=code == 2)
    raise typer.Exit(code)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to bind (loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
) -> None:
    """Serve the bundled example application behind Bastion on 127.0.0.1."""
    import ipaddress

    import uvicorn

    if not ipaddress.ip_address(host).is_loopback:
        raise typer.BadParameter("the demo binds to a loopback address only")
    from bastion.demo import create_app

    application = create_app(mode="development")
    typer.echo(f"Bastion demo on http://{host}:{port}/ (development mode; Ctrl+C stops)")
    # server_header=False: the headers layer strips `Server` from the app's response,
    # but uvicorn adds its own after the app. proxy_headers=False: uvicorn would
    # otherwise trust X-Forwarded-For from 127.0.0.1 before Bastion sees the request;
    # the transport layer is the one place that resolves proxies.
    uvicorn.run(
        application,
        host=host,
        port=port,
        server_header=False,
        proxy_headers=False,
        log_level="info",
    )


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
