"""A store lacking a method of the `Store` protocol is refused at start-up.

* `store-missing-delete-if-equal-refused-at-start`: a user's own store (a wrapper
  that adds metrics, delegating each method it names to a real store) written
  against the protocol before `Store.delete_if_equal` passed construction, then
  failed with an `AttributeError` on the first login that succeeded: after the
  application had answered, its unit of the client's budget never given back, the
  pair's claim held to its expiry (the next login 429).
  `store-missing-replace-refused-at-start`: the same for `Store.replace`.
  `Shield`, and the rate-limit layer and login guard alone, now refuse it with a
  `ConfigurationError` naming the missing methods (`check_store`).

Beside them, the legitimate stores that must still start: the same wrapper with
every method, and the real stores (memory, SQLite, Redis, Redis Cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from bastion.auth.apikeys import APIKeyStore
from bastion.auth.middleware import AuthenticationMiddleware
from bastion.auth.settings import APIKeySettings, AuthSettings
from bastion.events import EventEmitter
from bastion.exceptions import ConfigurationError
from bastion.ratelimit import RateLimitMiddleware, RateLimitSettings
from bastion.ratelimit.keys import ClientGrouping, client_key
from bastion.ratelimit.login import LoginGuard
from bastion.sessions import SessionMiddleware, SessionSettings
from bastion.shield import Shield
from bastion.stores import MemoryStore, Store
from bastion.types import ASGIApp, Receive, Scope, Send
from bastion.websocket import WebSocketGuardMiddleware, WebSocketSettings
from tests.ratelimit.harness import USER, request
from tests.stores.conftest import Backend
from tests.support.apps import make_app

pytestmark = pytest.mark.anyio

KEY = "k" * 43  # a key of test strength: the layers need one to start

# The protocol's methods, listed here rather than read from it: a method added to
# `Store` and missed by the check would pass unnoticed if the test used its list.
PROTOCOL = (
    "add_to_owner",
    "close",
    "delete",
    "delete_if_equal",
    "delete_owned",
    "gcra",
    "gcra_unless",
    "get",
    "incr",
    "ping",
    "replace",
    "set",
    "set_if_absent",
    "touch",
)


def delegating(inner: Store, without: tuple[str, ...] = (), **attributes: object) -> Any:
    """A store of the user's own: every protocol method but `without`, each one
    delegating explicitly to `inner` (a metrics wrapper, as users write them), and
    `attributes`."""

    def forward(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        async def method(self: object, *args: Any, **kwargs: Any) -> Any:
            return await getattr(inner, name)(*args, **kwargs)

        method.__name__ = name
        return method

    methods = {name: forward(name) for name in PROTOCOL if name not in without}
    return type("MeteredStore", (), methods | attributes)()


async def login(scope: Scope, receive: Receive, send: Send) -> None:
    """`POST /login`: 200 for the password "right", 401 otherwise."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    ok = b"password=right" in body
    await send({"type": "http.response.start", "status": 200 if ok else 401, "headers": []})
    await send({"type": "http.response.body", "body": b""})


LOGIN_SETTINGS = RateLimitSettings(limits={}, login_routes=("POST /login",))

LAYERS: dict[str, Callable[[Any], object]] = {
    "shield": lambda store: Shield(make_app("raw"), mode="development", store=store),
    "ratelimit": lambda store: RateLimitMiddleware(
        login, LOGIN_SETTINGS, store=store, events=EventEmitter()
    ),
    "login-guard": lambda store: LoginGuard(store),
    "sessions": lambda store: SessionMiddleware(
        make_app("raw"), SessionSettings(), store=store, secret_keys=[KEY], events=EventEmitter()
    ),
    "auth": lambda store: AuthenticationMiddleware(
        make_app("raw"), AuthSettings(), store=store, events=EventEmitter()
    ),
    "websocket": lambda store: WebSocketGuardMiddleware(
        make_app("raw"), WebSocketSettings(), store=store, events=EventEmitter()
    ),
    "api-keys": lambda store: APIKeyStore(store, APIKeySettings(peppers=[KEY])),
}


@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize(
    ("without", "missing"),
    [
        pytest.param(
            ("delete_if_equal",),
            "delete_if_equal",
            id="store-missing-delete-if-equal-refused-at-start",
        ),
        pytest.param(("replace",), "replace", id="store-missing-replace-refused-at-start"),
        pytest.param(
            ("replace", "delete_if_equal"),
            "delete_if_equal, replace",
            id="store-missing-two-methods-refused-at-start",
        ),
        pytest.param(PROTOCOL, ", ".join(PROTOCOL), id="store-not-a-store-refused-at-start"),
    ],
)
def test_a_store_missing_a_method_is_refused_at_start(
    layer: str, without: tuple[str, ...], missing: str
) -> None:
    store = delegating(MemoryStore(), without)
    with pytest.raises(ConfigurationError) as refused:
        LAYERS[layer](store)
    assert str(refused.value) == (
        f"store MeteredStore does not implement the Store protocol: missing {missing}"
    )


def test_a_method_that_is_not_callable_is_missing() -> None:
    """`store-method-not-callable-refused-at-start`: present is not enough."""
    store = delegating(MemoryStore(), ("delete_if_equal",), delete_if_equal=None)
    with pytest.raises(ConfigurationError, match=r"missing delete_if_equal$"):
        Shield(make_app("raw"), mode="development", store=store)


@pytest.mark.parametrize("layer", list(LAYERS))
def test_a_complete_store_of_ones_own_starts(layer: str) -> None:
    """`store-own-complete-ok`."""
    assert LAYERS[layer](delegating(MemoryStore())) is not None


async def test_a_complete_store_of_ones_own_serves_a_login() -> None:
    """`store-own-complete-login-ok`: the login that failed after the application
    answered (the missing method) succeeds, and gives its unit back."""
    inner = MemoryStore()
    app = LAYERS["ratelimit"](delegating(inner))
    assert isinstance(app, RateLimitMiddleware)
    form = {"username": "alice", "password": "right"}
    for _ in range(3):
        assert (await request(app, "POST", "/login", USER, data=form)).status_code == 200
    assert await inner.get(f"login:c:{client_key(USER[0], ClientGrouping())}") == b"0"


async def test_every_real_store_passes(backend: Backend) -> None:
    """`store-real-stores-ok`: memory, SQLite, Redis and Redis Cluster."""
    from bastion.stores.base import STORE_METHODS, check_store

    assert STORE_METHODS == PROTOCOL
    check_store(backend.store)
    assert isinstance(backend.store, Store)
    shield = Shield(make_app("raw"), mode="development", store=backend.store)
    assert shield.store is backend.store
    layer: ASGIApp = RateLimitMiddleware(
        login, LOGIN_SETTINGS, store=backend.store, events=EventEmitter()
    )
    form = {"username": "alice", "password": "right"}
    assert (await request(layer, "POST", "/login", USER, data=form)).status_code == 200
