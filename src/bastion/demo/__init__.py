"""The bundled demo, Bastion Bank, served by `bastion demo` and audited by `bastion audit`.

`create_app(settings=None, *, demo=None, **overrides)` is the bank behind Bastion's
full stack (a `Shield`); `create_unprotected_app(demo=None)` is the same bank with no
protection at all. Both keep their data in `DemoSettings.data_dir` (see
`bastion.demo.settings`); the bank itself is the `bastion.demo.bank` package.
"""

from __future__ import annotations

from bastion.demo.bank import create_app, create_unprotected_app

__all__ = ["create_app", "create_unprotected_app"]
