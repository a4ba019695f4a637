"""Bastion Bank: the demo application, one codebase in two variants.

A small FastAPI and Jinja2 bank: seeded users with argon2 passwords, log in and log
out, transfers (a form), a JSON API with bearer JWTs, a WebSocket feed of balance
changes, an admin page, a search over transactions, notes with a little HTML, and a
live page of the security events Bastion raised, with a chart.

`create_app()` serves it behind Bastion's full stack; `create_unprotected_app()`
serves the very same routes with no protection at all, so that `bastion audit` can
show the difference side by side. Where the two differ is one small adapter
(`variants`) and what wraps the application (`protection`).

The package reads in this order: `db` (data and queries), `keys` (files in the data
directory), `live` (the events ring and the balance feed), `naive` (the unprotected
variant's plumbing), `variants` (the seam), `app` (the routes), `protection` (the
two factories and the Bastion settings).
"""

from __future__ import annotations

from bastion.demo.bank.protection import (
    ROUTE_POLICY,
    bank_defaults,
    bank_settings,
    create_app,
    create_unprotected_app,
)

__all__ = ["ROUTE_POLICY", "bank_defaults", "bank_settings", "create_app", "create_unprotected_app"]
