"""CSRF tokens in templates (Jinja2, with or without Starlette).

A form that posts to this app carries the token in a hidden field, for the browsers
that send neither Fetch Metadata nor `Origin`:

    <form method="post" action="/transfer">
      <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
      ...
    </form>

Each call issues a differently masked token (BREACH), and the first one drawn for a
visitor creates the session that binds it. `csrf_token()` raises ConfigurationError
when no CSRF layer, or no Bastion session layer, serves the request: a form that
could never post is a bug to see at once, not a blank field. jinja2 is an optional
dependency, imported only by `install_csrf_token`.
"""

from __future__ import annotations

from typing import Any

from bastion.csrf.middleware import issue_token
from bastion.templating import install_request_global


def install_csrf_token(target: Any) -> None:
    """Make `csrf_token()` available in every template of a Jinja2 environment.

    `target` is a `jinja2.Environment` or anything holding one as `.env`, such as
    Starlette's `Jinja2Templates`. Templates find the request in their context
    (Starlette puts it there as `request`), or a raw ASGI `scope`.
    """
    install_request_global(target, "csrf_token", issue_token, caller="install_csrf_token")


def csrf_token_processor(request: Any) -> dict[str, Any]:
    """A Starlette `Jinja2Templates(context_processors=[...])` entry giving `csrf_token()`.

    The token is issued only when a template calls it, so pages without forms do
    not create sessions.
    """
    return {"csrf_token": lambda: issue_token(request)}
