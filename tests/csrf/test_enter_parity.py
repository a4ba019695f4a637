"""`CSRFMiddleware.enter` inlines `check_common_request`: what it decides on its own
must be what the full decision (`check_request` on `RequestFacts.from_scope`) says.

For every request of the attack table and of the shortcut's edge cases, under each
policy: an allowed request goes on at once (None), with the `Vary` edit exactly
when the verdict varies; a request the headers do not allow goes to the token check
or the refusal (an awaitable). The awaitable is closed unawaited: nothing is sent.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import pytest

from bastion.csrf import CSRFMiddleware, RequestFacts, check_request
from bastion.csrf.middleware import _ADD_VARY
from bastion.stages import Flow
from tests.csrf.test_attacks import HEADER_CASES
from tests.csrf.test_fast_path import COOKIE, EDGE_CASES, POLICIES, _scope


async def _never(*_: Any) -> Any:
    raise AssertionError("not called")


def _layer(policy_name: str) -> CSRFMiddleware:
    layer = CSRFMiddleware(_never, secret_keys=["k" * 32])
    layer.policy = POLICIES[policy_name]
    return layer


def _enter_matches_full(layer: CSRFMiddleware, scope: dict[str, Any]) -> None:
    full = check_request(RequestFacts.from_scope(scope), layer.policy)
    flow = Flow(scope, _never, _never)
    pending = layer.enter(flow)
    if isinstance(pending, Coroutine):
        pending.close()
    assert scope["bastion.csrf"] is layer.tokens
    if full.allowed:
        assert pending is None
        assert flow.hooks == ([_ADD_VARY] if full.varies else [])
    else:  # refused, or the token to check: never let through by `enter` itself
        assert pending is not None
        assert flow.hooks == []


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize(("method", "target", "headers", "reason"), HEADER_CASES)
def test_enter_on_the_attack_table(
    policy_name: str, method: str, target: str, headers: dict[str, str], reason: str | None
) -> None:
    lines = [(name.encode(), value.encode()) for name, value in headers.items()]
    for extra in ([COOKIE], []):
        _enter_matches_full(_layer(policy_name), _scope(method, target, [*extra, *lines]))


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize(("method", "target", "lines", "decided"), EDGE_CASES)
def test_enter_on_the_edges(
    policy_name: str, method: str, target: str, lines: list[tuple[bytes, bytes]], decided: bool
) -> None:
    _enter_matches_full(_layer(policy_name), _scope(method, target, lines))


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/submit?a=1&b=2", id="enter-query-plain"),
        pytest.param("/submit?_Method=PUT", id="enter-query-override-case"),
        pytest.param("/submit?x=_method", id="enter-query-word-in-value"),
        pytest.param("/submit?%5fmethod=DELETE", id="enter-query-escaped-lower"),
        pytest.param("/submit?_method=", id="enter-query-override-empty"),
        pytest.param("/submit?_method=HEAD", id="enter-query-override-safe"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "TRACE", "POST", "get"])
def test_enter_on_query_overrides(method: str, target: str) -> None:
    for policy_name in POLICIES:
        _enter_matches_full(_layer(policy_name), _scope(method, target, []))


@pytest.mark.parametrize(
    "app_headers",
    [
        pytest.param([(b"x-vary", b"1"), (b"varyx", b"2")], id="vary-edit-name-inside"),
        pytest.param([(b"x\nvary", b"1")], id="vary-edit-newline-name"),
        pytest.param([(b"vary\n", b"Origin")], id="vary-edit-newline-after"),
        pytest.param([(b"a", b"1"), (b"vArY", b"sec-fetch-site")], id="vary-edit-mixed-case"),
        pytest.param([("vary", b"Origin")], id="vary-edit-str-name"),
        pytest.param(((b"content-type", b"text/plain"),), id="vary-edit-tuple"),
    ],
)
def test_vary_edit_on_odd_names(app_headers: Any) -> None:
    from bastion.csrf.middleware import VARY_NAMES, _vary_on_sources, append_vary

    before = list(app_headers)
    edited = _vary_on_sources(app_headers)
    assert edited == append_vary(app_headers, VARY_NAMES)
    assert edited is not app_headers
    assert list(app_headers) == before
