"""The CSP nonce in templates (Jinja2, with or without Starlette).

Threat: under a strict CSP an inline `<script>` runs only if it carries this
response's nonce; a template that cannot reach the nonce either breaks the page or
tempts its author to weaken the policy with 'unsafe-inline'.
Defence: templates read the nonce the headers layer drew for this request, the same
value the `Content-Security-Policy` header carries:

    <script nonce="{{ csp_nonce() }}">...</script>

Not covered: put the nonce only on scripts and styles you wrote. A nonce on a tag
whose content comes from the user hands that content the page's authority.

`csp_nonce()` renders an empty string when no headers layer ran (a template rendered
outside a request, or CSP turned off for the route): scripts are then simply not
trusted, which fails closed. jinja2 is an optional dependency, imported only by
`install_csp_nonce`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bastion.context import SCOPE_KEY, RequestContext

__all__ = ["csp_nonce", "csp_nonce_processor", "install_csp_nonce", "install_request_global"]


def csp_nonce(request: Any) -> str:
    """This request's CSP nonce, from a Starlette `Request` or a raw ASGI scope."""
    scope = request if isinstance(request, Mapping) else getattr(request, "scope", None)
    if not isinstance(scope, Mapping):
        return ""
    context = scope.get(SCOPE_KEY)
    return context.csp_nonce if isinstance(context, RequestContext) else ""


def install_request_global(
    target: Any, name: str, from_request: Callable[[Any], str], *, caller: str
) -> None:
    """Make `name()` a Jinja2 global computed from the request being rendered.

    `target` is a `jinja2.Environment` or anything holding one as `.env`, such as
    Starlette's `Jinja2Templates`. The template's `request` (Starlette puts it in the
    context) or a raw ASGI `scope` is handed to `from_request`.
    """
    try:
        import jinja2
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError(f"{caller} needs jinja2: pip install jinja2") from None
    env = getattr(target, "env", target)
    if not isinstance(env, jinja2.Environment):
        raise TypeError(f"{caller} expects a jinja2.Environment or Jinja2Templates")

    def from_template(template_context: Any) -> str:
        request = template_context.get("request")
        if request is None:
            request = template_context.get("scope")
        return from_request(request)

    env.globals[name] = jinja2.pass_context(from_template)


def install_csp_nonce(target: Any) -> None:
    """Make `csp_nonce()` available in every template of a Jinja2 environment.

    Templates read the nonce from the `request` in their context (Starlette puts it
    there), or from a raw ASGI `scope`; outside a request it renders empty.
    """
    install_request_global(
        target,
        "csp_nonce",
        lambda request: csp_nonce(request) if request is not None else "",
        caller="install_csp_nonce",
    )


def csp_nonce_processor(request: Any) -> dict[str, Any]:
    """A Starlette `Jinja2Templates(context_processors=[...])` entry giving `csp_nonce()`."""
    nonce = csp_nonce(request)
    return {"csp_nonce": lambda: nonce}
