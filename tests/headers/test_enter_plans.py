"""`HeadersMiddleware.enter` picks each route's plan (`_Plan`: the edit built once
for a set without a nonce slot, else the set's merge bound to the request's
context) and the hook it registers edits a response head exactly as
`merge_for_response` on the route's compiled set does."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.context import SCOPE_KEY, get_context
from bastion.headers import HeadersMiddleware, HeadersSettings, RouteHeadersSettings
from bastion.headers.policy import compile_header_sets, merge_for_response
from bastion.stages import EDIT, Flow
from bastion.types import Message, Receive, Scope, Send

SETTINGS = HeadersSettings(
    routes={
        "/no-csp": RouteHeadersSettings(insecure_disable_csp=True),
        "/no-nonce": RouteHeadersSettings(csp_directives={"script-src": "'self'"}),
        "POST /form": RouteHeadersSettings(referrer_policy="no-referrer"),
        "/api/*": RouteHeadersSettings(cross_origin_resource_policy="cross-origin"),
    },
)


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("not called")


async def _receive() -> Message:
    return {"type": "http.request", "body": b""}


async def _send(message: Message) -> None:
    return None


def _scope(method: str, path: str) -> Scope:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [],
        "client": ("127.0.0.1", 1),
        "scheme": "https",
    }


RESPONSES = [
    [(b"content-type", b"text/html; charset=utf-8")],
    [(b"content-type", b"application/json"), (b"content-length", b"2")],
    [(b"Content-Type", b"text/html"), (b"x-frame-options", b"SAMEORIGIN")],
]


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        pytest.param("GET", "/", None, id="headers-plan-default"),
        pytest.param("GET", "/no-csp", "/no-csp", id="headers-plan-no-csp-built-edit"),
        pytest.param("GET", "/no-nonce", "/no-nonce", id="headers-plan-no-nonce-built-edit"),
        pytest.param("POST", "/form", "POST /form", id="headers-plan-method-route"),
        pytest.param("GET", "/form", None, id="headers-plan-method-route-other-method"),
        pytest.param("GET", "/api/items", "/api/*", id="headers-plan-prefix-route"),
    ],
)
@pytest.mark.parametrize("with_context", [False, True], ids=["fresh-context", "outer-context"])
def test_enter_registers_the_routes_edit(
    method: str, path: str, route: str | None, *, with_context: bool
) -> None:
    middleware = HeadersMiddleware(_app, SETTINGS)
    default, routes = compile_header_sets(SETTINGS)
    header_set = default if route is None else routes[route]
    for response in RESPONSES:
        scope = _scope(method, path)
        if with_context:  # an outer layer made the context, with its own nonce source
            get_context(scope).nonce_source = lambda: "OUTER"
        flow = Flow(scope, _receive, _send)
        assert middleware.enter(flow) is None
        assert len(flow.hooks) == 1
        hook = flow.hooks[0]
        assert hook[0] is EDIT
        edit = hook[1]
        headers: Any = list(response)
        result = edit(headers)
        assert headers == response  # the application's list is left as it was
        context = scope.get(SCOPE_KEY)
        if header_set.needs_nonce:
            assert context is not None
            assert context.nonce_source is not None
        else:  # the edit built once, and no context made for it
            again = Flow(_scope(method, path), _receive, _send)
            middleware.enter(again)
            assert again.hooks[0] is flow.hooks[0]
            assert with_context or context is None
        assert result == merge_for_response(header_set, "", context, response)
        if context is not None and header_set.needs_nonce and b"text/html" in response[0][1]:
            nonce = context.csp_nonce
            assert nonce
            if with_context:
                assert nonce == "OUTER"
            assert any(f"'nonce-{nonce}'".encode() in value for _, value in result)
