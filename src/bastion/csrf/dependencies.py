"""CSRF tokens as a FastAPI dependency.

    from bastion.csrf.dependencies import CSRFToken

    @app.get("/transfer", response_class=HTMLResponse)
    def form(token: CSRFToken) -> str:
        return f'<form method="post"><input type="hidden" name="csrf_token" value="{token}">'

Imports FastAPI, so it is a module of its own: `import bastion.csrf` stays light.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from bastion.csrf.middleware import issue_token

__all__ = ["CSRFToken", "csrf_token_dependency"]


def csrf_token_dependency(request: Request) -> str:
    """A new masked CSRF token for this request's session (see `issue_token`)."""
    return issue_token(request)


CSRFToken = Annotated[str, Depends(csrf_token_dependency)]
"""A route parameter annotated `CSRFToken` receives a token for the request's session."""
