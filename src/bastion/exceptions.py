"""Bastion's exceptions.

Exceptions are for misconfiguration and broken infrastructure, never for attackers:
a refused request is a normal outcome, answered by `bastion.responses.Refuser` and
reported as a `SecurityEvent`.

    BastionError
     +-- ConfigurationError      invalid or unsafe settings, raised at construction
     +-- StoreError              a storage backend failed; layers apply their fail mode
"""

from __future__ import annotations


class BastionError(Exception):
    """Base class of every exception Bastion raises."""


class ConfigurationError(BastionError):
    """Settings are invalid, or unsafe for the selected mode.

    The message names the setting and the rule it breaks, never a secret's value.
    """


class StoreError(BastionError):
    """A storage backend failed (unreachable, timed out, or returned garbage)."""
