"""`bastion audit` with no target: Bastion Bank audited bare and behind Bastion, side by side.

Threat: a demonstration that proves nothing, or harms the user: an audit run
against a developer-mode Bastion (weaker than what ships), one whose probes
could not reach the routes that matter (no login, no token), or one that writes
into the user's real demo data directory.
Defence: both banks are built in this process from the same code
(`bastion.demo.create_unprotected_app`, `bastion.demo.create_app`), over a
temporary data directory unless the caller names one, and audited one after the
other by the ordinary auditor, with:

* the protected bank in `production` mode whatever the environment says, so the
  grade is that of Bastion's real defaults;
* a login recipe for the demo user `DEMO_USER`, so the session probes run;
* a token recipe for `POST /api/token`, which issues a JWT to a signed-in
  session (not to a username and password), checked on `GET /api/accounts`;
* an expired token really signed with the demo's own JWT key, minted here with
  Bastion's `TokenIssuer` at a past time: the auditor cannot forge a signature,
  and only such a token shows the unprotected bank's signature-only check
  accepting a dead token;
* the audited origin `https://localhost`, with the bank's HTTPS port set to
  443 so its HTTP-to-HTTPS redirect stays on that origin (in-process there are
  no ports; `bastion demo` serves 8443, which a live audit judges by host name).

Not covered: the demo's TLS and its HTTP listener (`bastion demo` serves them;
audit the running demo by URL for those).

References: issue 7, "Must show"; `bastion.audit.runner` for what one audit does.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from bastion.audit.discovery import LoginRecipe, TokenRecipe
from bastion.audit.findings import AuditReport
from bastion.audit.probes.base import ProgressCallback
from bastion.audit.runner import run_audit
from bastion.audit.target import InProcessTarget
from bastion.auth.jwt import TokenIssuer
from bastion.demo import create_app, create_unprotected_app
from bastion.demo.bank.db import DEMO_USERS
from bastion.demo.bank.keys import JWT_ALGORITHM, jwt_keys
from bastion.demo.settings import DemoSettings
from bastion.stores.memory import MemoryStore

UNPROTECTED_LABEL: Final = "Bastion Bank (unprotected)"
PROTECTED_LABEL: Final = "Bastion Bank (protected by Bastion)"
# The host the auditor claims; the protected bank allows it (`DEMO_HOSTS`).
DEMO_HOST: Final = "localhost"
# The default HTTPS port, so `http://localhost/` redirects to `https://localhost/`,
# the audited origin, rather than to a port an in-process target does not have.
AUDIT_HTTPS_PORT: Final = 443
DEMO_USER: Final = "alice"
LOGIN_PATH: Final = "/login"
TOKEN_PATH: Final = "/api/token"  # noqa: S105 - a route, not a token
TOKEN_CHECK_PATH: Final = "/api/accounts"  # noqa: S105 - a route, not a token
# How long ago the expired token was issued: far past the issuer's access-token
# lifetime and any clock-skew leeway a verifier allows, so `exp` alone condemns it.
EXPIRED_TOKEN_AGE_SECONDS: Final = 3600


def demo_settings(data_dir: Path) -> DemoSettings:
    """The demo's settings for an in-process audit: its own keys, no listener."""
    return DemoSettings(
        data_dir=data_dir,
        https_port=AUDIT_HTTPS_PORT,
        http_port=None,
        jwks_file=None,  # the demo's own key set, so it issues tokens (and we can)
        seed=True,
    )


def login_recipe() -> LoginRecipe:
    password = next(user.password for user in DEMO_USERS if user.username == DEMO_USER)
    return LoginRecipe(LOGIN_PATH, DEMO_USER, password)


def expired_token(demo: DemoSettings, *, now: float) -> str:
    """An access token for `DEMO_USER`, signed with the demo's key, long expired."""
    keys = jwt_keys(demo.data_dir, demo.jwks_file)
    if keys.signing_key is None:  # pragma: no cover - demo_settings always uses its own keys
        raise ValueError("the demo's JWT key set has no signing key")
    issued_at = now - EXPIRED_TOKEN_AGE_SECONDS
    issuer = TokenIssuer(
        key=keys.signing_key,
        algorithm=JWT_ALGORITHM,
        issuer=demo.jwt_issuer,
        audience=demo.jwt_audience,
        store=MemoryStore(),  # access tokens only: nothing is stored
        clock=lambda: issued_at,
    )
    return issuer.issue_access_token(DEMO_USER)


def token_recipe(demo: DemoSettings, *, now: float) -> TokenRecipe:
    return TokenRecipe(
        TOKEN_PATH,
        protected_path=TOKEN_CHECK_PATH,
        from_session=True,
        expired_token=expired_token(demo, now=now),
    )


@asynccontextmanager
async def _data_dir(given: Path | None) -> AsyncIterator[Path]:
    if given is not None:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="bastion-audit-demo-") as created:
        yield Path(created)


def _labelled(progress: ProgressCallback | None, label: str) -> ProgressCallback | None:
    if progress is None:
        return None
    return lambda step: progress(f"{label}: {step}")


async def audit_demo(
    *, progress: ProgressCallback | None = None, data_dir: Path | None = None
) -> list[AuditReport]:
    """Audit Bastion Bank unprotected, then protected: `[unprotected, protected]`.

    `data_dir` holds both banks' databases and keys; by default a temporary
    directory, removed afterwards (never the user's demo data directory).
    """
    async with _data_dir(data_dir) as directory:
        demo = demo_settings(directory)
        login = login_recipe()
        token = token_recipe(demo, now=time.time())
        variants = (
            (UNPROTECTED_LABEL, create_unprotected_app(demo)),
            (PROTECTED_LABEL, create_app(demo=demo, mode="production")),
        )
        reports = []
        for label, app in variants:
            target = InProcessTarget(app, label=label, host=DEMO_HOST)
            reports.append(
                await run_audit(
                    target, login=login, token=token, progress=_labelled(progress, label)
                )
            )
        return reports


def audit_demo_sync(
    *, progress: ProgressCallback | None = None, data_dir: Path | None = None
) -> list[AuditReport]:
    """`audit_demo` for the command line."""
    return asyncio.run(audit_demo(progress=progress, data_dir=data_dir))
