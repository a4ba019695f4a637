"""The remembered-host path of `TransportMiddleware.enter` against its full path.

A layer answers a request once with its host memo empty (the full path: facts read,
host checked) and then the same request again (the host remembered when it was
allowed): the messages sent, the events, the request context and the scope the
application got must be the same both times, over every scheme, client shape and
setting that path reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from bastion.context import SCOPE_KEY, get_context
from bastion.events import EventEmitter
from bastion.transport import TransportMiddleware, TransportSettings
from bastion.types import Receive, Scope, Send
from tests.conftest import RecordingSink
from tests.transport.support import make_scope, observe

pytestmark = pytest.mark.anyio

_CONTEXT_FIELDS = ("client", "scheme", "host", "port", "refused_by", "nonce_source")


@dataclass(frozen=True)
class Case:
    scope_type: str = "http"
    host: bytes = b"bank.example"
    scheme: Any = "https"
    client: Any = ("203.0.113.9", 5000)
    settings: dict[str, Any] = field(default_factory=dict)
    outer_context: bool = False
    """A context made before the layer (by an outer layer), from another client."""


CASES = [
    pytest.param(Case(), id="transport-remembered-https"),
    pytest.param(Case(host=b"api.bank.example:8443"), id="transport-remembered-port"),
    pytest.param(Case(host=b"BANK.Example"), id="transport-remembered-upper-case-host"),
    pytest.param(Case(host=b"bank.example:443"), id="transport-remembered-default-port"),
    pytest.param(Case(scheme="http"), id="transport-remembered-plain-http-redirected"),
    pytest.param(
        Case(scheme="http", settings={"insecure_allow_http": True}),
        id="transport-remembered-plain-http-allowed",
    ),
    pytest.param(
        Case(scheme="", settings={"insecure_allow_http": True}),
        id="transport-remembered-empty-scheme",
    ),
    pytest.param(
        Case(scheme=None, settings={"insecure_allow_http": True}),
        id="transport-remembered-no-scheme",
    ),
    pytest.param(Case(scheme=None), id="transport-remembered-no-scheme-redirected"),
    pytest.param(Case(client=None), id="transport-remembered-no-client"),
    pytest.param(Case(client=["203.0.113.9", "5000"]), id="transport-remembered-client-list"),
    pytest.param(Case(outer_context=True), id="transport-remembered-outer-context"),
    pytest.param(
        Case(outer_context=True, scheme="http", settings={"insecure_allow_http": True}),
        id="transport-remembered-outer-context-plain",
    ),
    pytest.param(Case(settings={"hsts_max_age_seconds": 0}), id="transport-remembered-no-hsts"),
    pytest.param(
        Case(scheme="http", settings={"monitor_only": True}),
        id="transport-remembered-monitor-only-plain",
    ),
    pytest.param(
        Case(settings={"trusted_proxies": ("10.0.0.0/8",)}),
        id="transport-remembered-proxies-trusted",
    ),
    pytest.param(Case(host=b"evil.example"), id="transport-remembered-refused-host"),
    pytest.param(Case(scope_type="websocket", scheme="wss"), id="transport-remembered-wss"),
    pytest.param(Case(scope_type="websocket", scheme="ws"), id="transport-remembered-ws-refused"),
    pytest.param(
        Case(scope_type="websocket", scheme="ws", settings={"insecure_allow_http": True}),
        id="transport-remembered-ws-allowed",
    ),
    pytest.param(
        Case(scope_type="websocket", scheme=None, settings={"insecure_allow_http": True}),
        id="transport-remembered-ws-no-scheme",
    ),
]


def _scope(case: Case) -> Scope:
    scope = make_scope(case.scope_type, headers=[(b"host", case.host)], client=case.client)
    if case.scheme is None:
        del scope["scheme"]
    else:
        scope["scheme"] = case.scheme
    if case.outer_context:
        outer = get_context({"type": case.scope_type, "client": ("198.51.100.1", 1)})
        outer.scheme = "wss"
        scope[SCOPE_KEY] = outer
    return scope


async def _answer(layer: TransportMiddleware, sink: RecordingSink, case: Case) -> Any:
    """Everything one request shows of the layer's decision."""
    scope = _scope(case)
    observed = await observe(
        layer, sink, scope, lambda context: tuple(getattr(context, n) for n in _CONTEXT_FIELDS)
    )
    app_view = [(app_scope is scope, fields) for app_scope, fields in observed.seen]
    return observed.messages, observed.events, app_view


def _layer(sink: RecordingSink, case: Case) -> TransportMiddleware:
    settings = TransportSettings(allowed_hosts=("bank.example", "*.bank.example"), **case.settings)
    return TransportMiddleware(_unset_app, settings, events=EventEmitter([sink]))


async def _unset_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("`_answer` sets the application")


@pytest.mark.parametrize("case", CASES)
async def test_remembered_host_answers_as_the_full_check(case: Case) -> None:
    """The same request, to a layer that never saw its host (the full path) and to
    one that allowed it before over a secure scheme (remembered, when allowed)."""
    sink = RecordingSink()
    fresh = _layer(sink, case)
    full = await _answer(fresh, sink, case)
    warm = _layer(sink, case)
    secure = "wss" if case.scope_type == "websocket" else "https"
    await _answer(warm, sink, Case(case.scope_type, case.host, secure, settings=case.settings))
    remembered = await _answer(warm, sink, case)
    assert remembered == full
    expected_in_memo = case.host != b"evil.example" and "trusted_proxies" not in case.settings
    assert (case.host in warm._allowed_host_memo) is expected_in_memo
