"""Apps whose factory raises, for `load_app` and `bastion audit` (never served).

The message holds a made-up secret: the auditor must name the exception's type
and never its message, which in a real app may quote a key or a database URL.
"""

from __future__ import annotations

from typing import Final

from bastion.types import ASGIApp

SECRET_IN_MESSAGE: Final = "secret-xyz"


def failing_factory() -> ASGIApp:
    raise RuntimeError(f"cannot connect to postgres://app:{SECRET_IN_MESSAGE}@db/bank")
