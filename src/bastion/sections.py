"""Base models for the per-layer settings sections.

Each layer owns one section model (`TransportSettings`, `CORSSettings`, ...) defined
in its own module and accepted by its middleware alone; `Settings` composes them.
Sections are frozen, forbid unknown keys (a misspelt option is an error, not a silent
default) and validate their defaults too.

Every way to weaken a protection is visible by name: a field whose name starts with
`insecure_`, `enabled=False` on a layer, `monitor_only=True`, and a `*report_only`
switch (a policy that reports instead of enforcing). `opt_outs` finds them all
generically, inside per-route rule tables too, so a new opt-out can never be
forgotten by the start-up log or by `bastion check`.

Some weakenings are values rather than switches (an HSTS max-age of zero, a
Referrer-Policy of `unsafe-url`). A section names those itself by overriding
`Section.weakenings`, and `opt_outs` reports them beside the switches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, SecretStr


class Section(BaseModel):
    """A frozen, strictly validated settings section."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    def weakenings(self) -> list[str]:
        """Settings whose *value* weakens a protection, as `name=value` strings.

        Switches (`insecure_*`, `enabled`, `monitor_only`, `*report_only`) are found
        generically and must not be repeated here.
        """
        return []


class LayerSettings(Section):
    """Switches every layer has."""

    enabled: bool = True
    """Turn the layer off entirely. An opt-out: logged at start-up."""

    monitor_only: bool = False
    """Decide and emit the event, but let the request through (for safe roll-out)."""


def opt_outs(model: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of every enabled opt-out in `model` and its sub-sections.

    Per-route rule tables (a mapping of route pattern to a section model) are walked
    too: `headers.routes[/embed/*].insecure_disable_csp`.
    """
    found: list[str] = []
    if isinstance(model, Section):
        found.extend(prefix + weakening for weakening in model.weakenings())
    for name in type(model).model_fields:
        value = getattr(model, name)
        dotted = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            found.extend(opt_outs(value, dotted + "."))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    found.extend(opt_outs(item, f"{dotted}[{key}]."))
        elif name == "enabled" and value is False:
            found.append(dotted + "=false")
        elif (name == "monitor_only" or name.endswith("report_only")) and value is True:
            found.append(dotted + "=true")
        elif name.startswith("insecure_") and value:
            found.append(dotted)
    return found


_KEY_SEPARATORS: Final = re.compile(r"[\s,]+")


def split_keys(value: Any) -> Any:
    """Accept keys as a list, a JSON list, or one string of comma/space separated keys.

    Every key-list setting (`secret_keys`, `field_encryption.keys`) parses the same
    way, from code, a variable or a secrets file. Keys themselves never hold commas or
    white space (they are URL-safe base64).
    """
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("not a valid JSON list") from None
        return [key for key in _KEY_SEPARATORS.split(text) if key]
    return value
