"""The settings `bastion check` judges: every source, without the production refusal.

Threat: production mode refuses to start on a missing or weak key, no allowed hosts
or plain HTTP, which is right for the app but leaves `bastion check` with nothing to
report: it would exit on the first refusal, with no finding and no JSON for CI.
Defence: `settings_for_check` reads the same sources as `Settings` (code, `BASTION_*`,
the secrets directory) and validates every value the same way, but lets a production
configuration that breaks a start-up rule through, so each rule becomes a finding
(secrets.E001/E002, transport.E001/E002/E003/E005, errors.E001/E002, sessions.E001,
mode.E002). `Settings()` itself, what an application builds, refuses exactly as
before. Development mode fills what it always fills.
Not covered: a value that does not validate at all (a malformed variable, a private
JWK in `auth.jwt.jwks`) is still a `ConfigurationError`: there is nothing to judge.

References: `bastion.settings.production_problems` (the start-up rules).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, cast

from pydantic import model_validator

from bastion.settings import Settings

# `Settings`' own mode validator, as the plain function pydantic keeps in the class
# dict: development's fill-in (hosts, plain HTTP, a per-process key) stays its own.
_SETTINGS_APPLY_MODE: Final = cast(
    "Callable[[Settings], Settings]", Settings.__dict__["_apply_mode"]
)


class _CheckedSettings(Settings):
    """`Settings` whose production refusal is left to the deploy checks.

    The validator has the parent's name, so pydantic runs it instead of the parent's.
    """

    @model_validator(mode="after")
    def _apply_mode(self) -> _CheckedSettings:
        if self.mode != "production":
            _SETTINGS_APPLY_MODE(self)
        # In production nothing is filled in and nothing refused: the refusals
        # become findings in `run_checks`.
        return self


def settings_for_check(**values: Any) -> Settings:
    """The effective settings (code `values` over the environment and the secrets
    directory) for judging, production refusals included as findings-to-be.

    Raises ConfigurationError for values that do not validate, never for a
    production refusal. Never use the result to run an application.
    """
    return _CheckedSettings(**values)
