"""WebSocket route patterns that name a method.

Gap: the guard looks every socket up under the method `WEBSOCKET`, but its route
patterns (`settings.routes`, which give access and observer labels, and the
`schemas` argument) were parsed as HTTP route patterns, which take any method. A
pattern written `GET /ws` (a handshake is a GET) therefore never matched: its access
rule silently gave way to `default_access`, its label to `default`, and a schema so
keyed validated no message at all. Such a pattern is now refused at start-up (a
settings error, or ConfigurationError for `schemas`), naming the two spellings that
work, `WEBSOCKET /ws` and `/ws`.

Each refusal is named `ws-...-under-<method>-pattern` beside the legitimate
spellings, which must still apply: an anonymous socket opens on a `public` route
(under `default_access = authenticated`), the observer sees the pattern as its label,
and a schema closes a socket on an invalid message (1007) and lets a valid one
through. The sockets are real ASGI websocket calls (the `Client` of
`test_middleware`) on the memory store; the CLI cases run `bastion config` and
`bastion check`.
"""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from bastion.cli import app as cli
from bastion.events import EventEmitter
from bastion.exceptions import ConfigurationError
from bastion.settings import Settings
from bastion.stores.memory import MemoryStore
from bastion.websocket import WebSocketGuardMiddleware, WebSocketSettings
from bastion.websocket import reasons as r
from bastion.websocket.settings import parse_websocket_route
from tests.conftest import RecordingSink
from tests.support.clock import FakeClock
from tests.support.secret_watch import never_logged
from tests.websocket.test_middleware import (
    OK,
    Chat,
    FakeSession,
    connected,
    echo_app,
    refused,
    ws_scope,
)

pytestmark = pytest.mark.anyio

STRONG_KEY = never_logged("r0ute-" + "abcdefghijklmnopqrstuvwxyz0123456789")

# (pattern, path of a socket it must cover, the fix the error must name or None)
PATTERNS = [
    pytest.param("WEBSOCKET /ws", "/ws", None, id="ws-websocket-pattern-ok"),
    pytest.param("/ws", "/ws", None, id="ws-bare-pattern-ok"),
    pytest.param("websocket /ws/*", "/ws/room", None, id="ws-lower-case-websocket-prefix-ok"),
    pytest.param("WEBSOCKET /ws/{room}", "/ws/room", None, id="ws-websocket-param-pattern-ok"),
    pytest.param("*", "/anything", None, id="ws-any-pattern-ok"),
    pytest.param("GET /ws", "/ws", "'WEBSOCKET /ws' or '/ws'", id="ws-access-under-get-pattern"),
    pytest.param(
        "GET,HEAD /ws/*",
        "/ws/room",
        "'WEBSOCKET /ws/*' or '/ws/*'",
        id="ws-access-under-get-head-prefix-pattern",
    ),
    pytest.param(
        "GET,WEBSOCKET /ws",
        "/ws",
        "'WEBSOCKET /ws' or '/ws'",
        id="ws-access-under-get-and-websocket-pattern",
    ),
    pytest.param(
        "POST /ws/{room}",
        "/ws/room",
        "'WEBSOCKET /ws/{room}' or '/ws/{room}'",
        id="ws-access-under-post-pattern",
    ),
    pytest.param("GET *", "/anything", "'WEBSOCKET *' or '*'", id="ws-access-under-get-any"),
]


class Labels:
    """A connection observer: the route label of each socket opened and closed."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []

    def websocket_opened(self, route: str) -> None:
        self.opened.append(route)

    def websocket_closed(self, route: str) -> None:
        self.closed.append(route)


def guard(
    events: EventEmitter,
    settings: WebSocketSettings,
    *,
    schemas: dict[str, type[Chat]] | None = None,
    observers: list[Labels] | None = None,
) -> WebSocketGuardMiddleware:
    clock = FakeClock()
    return WebSocketGuardMiddleware(
        echo_app,
        settings,
        store=MemoryStore(clock=clock),
        events=events,
        clock=clock,
        schemas=schemas,
        observers=observers,
    )


# --- settings.routes: access and labels -----------------------------------------------


@pytest.mark.parametrize(("pattern", "path", "fix"), PATTERNS)
async def test_routes_apply_or_are_refused_at_start_up(
    pattern: str, path: str, fix: str | None, events: EventEmitter
) -> None:
    if fix is not None:
        with pytest.raises(ValidationError) as refusal:
            WebSocketSettings(routes={pattern: "public"})
        message = str(refusal.value)
        assert f"write {fix}" in message
        assert "routes" in message
        return
    labels = Labels()
    app = guard(events, WebSocketSettings(routes={pattern: "public"}), observers=[labels])
    # Anonymous, under `default_access = authenticated`: only the rule lets it in.
    async with connected(app, ws_scope(path=path)) as client:
        await client.say(OK)
        assert await client.next() == {"type": "websocket.send", "text": OK}
    assert labels.opened == labels.closed == [pattern]


@pytest.mark.parametrize(("pattern", "path", "fix"), PATTERNS)
def test_the_settings_error_names_the_setting_and_the_fix(
    pattern: str, path: str, fix: str | None
) -> None:
    websocket = {"routes": {pattern: "public"}}
    if fix is None:
        assert Settings(mode="development", websocket=websocket).websocket.routes == {
            pattern: "public"
        }
        return
    with pytest.raises(ConfigurationError) as refusal:
        Settings(mode="development", websocket=websocket)
    assert str(refusal.value).startswith("invalid Bastion settings: websocket.routes: ")
    assert f"write {fix}" in str(refusal.value)


async def test_a_bare_pattern_still_loses_to_default_access_elsewhere(
    sink: RecordingSink, events: EventEmitter
) -> None:
    """The legitimate patterns cover their own paths only: another path keeps
    `default_access`, and its label is `default`."""
    labels = Labels()
    app = guard(events, WebSocketSettings(routes={"WEBSOCKET /ws": "public"}), observers=[labels])
    assert await refused(app, ws_scope(path="/ws/other")) == 1008
    assert r.REASON_UNAUTHENTICATED in sink.reasons()
    async with connected(app, ws_scope(path="/ws/other", session=FakeSession("bob"))):
        pass
    assert labels.opened == ["default"]


def test_parse_websocket_route_keeps_the_parsed_pattern() -> None:
    assert parse_websocket_route("websocket /ws/*").methods == frozenset({"WEBSOCKET"})
    assert parse_websocket_route("/ws").methods == frozenset()
    with pytest.raises(ValueError, match="unknown method"):
        parse_websocket_route("FETCH /ws")


# --- schemas --------------------------------------------------------------------------

SCHEMAS = [
    pytest.param("WEBSOCKET /ws/chat", "/ws/chat", True, id="ws-schema-under-websocket-ok"),
    pytest.param("/ws/chat", "/ws/chat", True, id="ws-schema-under-bare-pattern-ok"),
    pytest.param("WEBSOCKET /ws/*", "/ws/chat", True, id="ws-schema-under-websocket-prefix-ok"),
    pytest.param("GET /ws/chat", "/ws/chat", False, id="ws-schema-under-get-pattern"),
    pytest.param("GET,HEAD /ws/*", "/ws/chat", False, id="ws-schema-under-get-head-pattern"),
    pytest.param("POST /ws/chat", "/ws/chat", False, id="ws-schema-under-post-pattern"),
]


@pytest.mark.parametrize(("pattern", "path", "valid"), SCHEMAS)
async def test_schemas_validate_or_are_refused_at_construction(
    pattern: str, path: str, valid: bool, sink: RecordingSink, events: EventEmitter
) -> None:
    if not valid:
        with pytest.raises(ConfigurationError) as refusal:
            guard(events, WebSocketSettings(), schemas={pattern: Chat})
        message = str(refusal.value)
        assert message.startswith("websocket schemas: route pattern ")
        assert "write 'WEBSOCKET /ws" in message
        return
    app = guard(events, WebSocketSettings(), schemas={pattern: Chat})
    async with connected(app, ws_scope(path=path, session=FakeSession("bob"))) as client:
        await client.say(OK)
        assert await client.next() == {"type": "websocket.send", "text": OK}
        await client.say('{"text": 1}')
        assert await client.next() == {"type": "websocket.close", "code": 1007}
        await client.finish()
    assert sink.reasons() == [r.REASON_INVALID_MESSAGE]


def test_a_schema_pattern_that_does_not_parse_is_a_configuration_error(
    events: EventEmitter,
) -> None:
    with pytest.raises(ConfigurationError, match=r"^websocket schemas: .*must start with '/'"):
        guard(events, WebSocketSettings(), schemas={"ws/chat": Chat})


# --- the CLI --------------------------------------------------------------------------


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("BASTION_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BASTION_SECRET_KEYS", STRONG_KEY)
    monkeypatch.setenv("BASTION_TRANSPORT__ALLOWED_HOSTS", '["bank.example"]')
    return monkeypatch


@pytest.mark.parametrize("command", ["config", "check"])
@pytest.mark.parametrize(
    ("routes", "refused_pattern"),
    [
        pytest.param('{"WEBSOCKET /ws": "public", "/ws/*": "public"}', None, id="ws-cli-ok"),
        pytest.param('{"GET /ws": "public"}', "GET /ws", id="ws-cli-access-under-get-pattern"),
    ],
)
def test_the_cli_reports_the_refusal_as_a_settings_error(
    command: str, routes: str, refused_pattern: str | None, production_env: pytest.MonkeyPatch
) -> None:
    production_env.setenv("BASTION_WEBSOCKET__ROUTES", routes)
    result = CliRunner().invoke(cli, [command])
    if refused_pattern is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2
    assert result.output.startswith("bastion: invalid Bastion settings: websocket.routes: ")
    assert f"route pattern '{refused_pattern}'" in result.output
    assert "write 'WEBSOCKET /ws' or '/ws'" in result.output
    assert "Traceback" not in result.output
    assert STRONG_KEY not in result.output
