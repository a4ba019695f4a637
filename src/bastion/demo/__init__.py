"""The bundled demo, Bastion Bank, served by `bastion demo` and audited by `bastion audit`.

`create_app(settings=None, *, demo=None, **overrides)` is the bank behind Bastion's
full stack (a `Shield`); `create_unprotected_app(demo=None)` is the same bank with no
protection at all. Both keep their data in `DemoSettings.data_dir` (see
`bastion.demo.settings`); the bank itself is the `bastion.demo.bank` package, and
`bastion.demo.serve` serves it (HTTPS, an HTTP port that redirects, slow clients cut).
"""

from __future__ import annotations

from bastion.demo.bank import create_app, create_unprotected_app
from bastion.demo.settings import DemoSettings
from bastion.types import ASGIApp

__all__ = ["create_app", "create_unprotected_app", "served_app"]


def served_app(demo: DemoSettings) -> ASGIApp:
    """The protected bank as `bastion demo` serves it (the factory `serve` calls)."""
    return create_app(demo=demo)
