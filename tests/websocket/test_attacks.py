"""The WebSocket guard against a real `websockets` client, on uvicorn and hypercorn.

Each named attack sits beside the legitimate connection that must still work. The
server process owns the memory store (sessions, tickets, counters), so every test
uses its own client address (127.0.0.x) and its own users: caps and rates of one
test never touch another's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bastion.websocket import (
    REASON_BEARER_INVALID,
    REASON_FOREIGN_ORIGIN,
    REASON_NO_ORIGIN_WITH_SESSION,
    REASON_NULL_ORIGIN,
    REASON_TICKET_EXPIRED,
    REASON_TICKET_INVALID,
    REASON_TICKET_REUSED,
    REASON_UNAUTHENTICATED,
    WebSocketTickets,
)
from tests.support.servers import RunningServer, serve
from tests.websocket.app_factory import KEY, SETTINGS_ENV

pytestmark = [pytest.mark.server, pytest.mark.anyio]

SETTINGS = {
    "routes": {"/ws/public": "public"},
    "max_connections_per_client": 5,
    "max_connections_per_principal": 5,
    "messages_per_second": 5,
    "message_burst": 5,
    "max_message_bytes": 1024,
    "revocation_check_seconds": 0.2,
}
OPEN_TIMEOUT = 5.0
RECV_TIMEOUT = 5.0
BEARER = "token-for-carol-0123456789"


@pytest.fixture(
    scope="module",
    params=[
        ("uvicorn", "create_app"),
        ("hypercorn", "create_app"),
        ("uvicorn", "create_channels_app"),
    ],
    ids=["uvicorn-raw", "hypercorn-raw", "uvicorn-channels"],
)
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    name, factory = request.param
    extra = ("--no-proxy-headers",) if name == "uvicorn" else ()
    with serve(
        f"tests.websocket.app_factory:{factory}",
        server=name,
        env={SETTINGS_ENV: json.dumps(SETTINGS)},
        extra_args=extra,
    ) as running:
        yield running


def ws_url(server: RunningServer, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


def own_origin(server: RunningServer) -> str:
    return f"http://{server.host}:{server.port}"


@asynccontextmanager
async def ws(
    server: RunningServer,
    path: str,
    *,
    local: str = "127.0.0.1",
    origin: str | None = None,
    cookie: str | None = None,
    subprotocols: list[str] | None = None,
) -> AsyncIterator[ClientConnection]:
    headers = {"cookie": f"session={cookie}"} if cookie else None
    async with connect(
        ws_url(server, path),
        origin=origin,  # type: ignore[arg-type]  # websockets types Origin as a NewType
        additional_headers=headers,
        subprotocols=subprotocols,  # type: ignore[arg-type]  # Subprotocol NewType
        open_timeout=OPEN_TIMEOUT,
        local_addr=(local, 0),
    ) as connection:
        yield connection


async def login(server: RunningServer, user: str) -> str:
    async with httpx.AsyncClient(base_url=server.url) as client:
        answer = await client.post(f"/login?user={user}")
        assert answer.status_code == 200
        return answer.cookies["session"]


async def fetch_ticket(server: RunningServer, cookie: str) -> str:
    async with httpx.AsyncClient(base_url=server.url, cookies={"session": cookie}) as client:
        answer = await client.get("/ticket")
        assert answer.status_code == 200
        return answer.text


async def echo(connection: ClientConnection, content: object) -> dict[str, Any]:
    await connection.send(json.dumps(content))
    reply = await asyncio.wait_for(connection.recv(), RECV_TIMEOUT)
    result: dict[str, Any] = json.loads(reply)
    return result


async def _close_or_status(**kwargs: Any) -> int:
    """Open, wait for a message; the HTTP status or close code that ended it."""
    try:
        async with ws(**kwargs) as connection:
            await asyncio.wait_for(connection.recv(), RECV_TIMEOUT)
    except InvalidStatus as refused:
        return refused.response.status_code
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else -1
    return 0


async def assert_refused(status: int, **kwargs: Any) -> None:
    """The handshake is refused: an HTTP status (denial extension) or a close."""
    assert await _close_or_status(**kwargs) in (status, 1013 if status == 429 else 1008)


async def _next_close(connection: ClientConnection) -> int:
    deadline = time.monotonic() + RECV_TIMEOUT
    try:
        while time.monotonic() < deadline:  # bounded: drains echoes until the close
            await asyncio.wait_for(connection.recv(), RECV_TIMEOUT)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else -1
    return 0


async def expect_close(connection: ClientConnection, code: int) -> None:
    assert await _next_close(connection) == code


# --- handshake: attacks beside the legitimate connections ---------------------------


HANDSHAKE_ATTACKS = [
    pytest.param("foreign", id="ws-" + REASON_FOREIGN_ORIGIN),
    pytest.param("null", id="ws-" + REASON_NULL_ORIGIN),
    pytest.param("no-origin", id="ws-" + REASON_NO_ORIGIN_WITH_SESSION),
    pytest.param("anonymous", id="ws-" + REASON_UNAUTHENTICATED),
    pytest.param("ticket-forged", id="ws-" + REASON_TICKET_INVALID),
    pytest.param("ticket-expired", id="ws-" + REASON_TICKET_EXPIRED),
    pytest.param("bearer-wrong", id="ws-" + REASON_BEARER_INVALID),
]


@pytest.mark.parametrize("attack", HANDSHAKE_ATTACKS)
async def test_handshake_attack_refused(server: RunningServer, attack: str) -> None:
    cookie = await login(server, f"victim-{attack}")
    same = own_origin(server)
    kwargs: dict[str, Any] = {"server": server, "path": "/ws/echo", "local": "127.0.0.10"}
    if attack == "foreign":
        kwargs |= {"origin": "http://evil.example", "cookie": cookie}
    elif attack == "null":
        kwargs |= {"origin": "null", "cookie": cookie}
    elif attack == "no-origin":
        kwargs |= {"cookie": cookie}
    elif attack == "anonymous":
        kwargs |= {"origin": same}
    elif attack == "ticket-forged":
        kwargs["path"] = "/ws/echo?ticket=" + "eyJ4In0.AAAAAA.forged"
    elif attack == "ticket-expired":
        # Signed with the server's key, two minutes ago: a ticket someone kept.
        old = WebSocketTickets([KEY], max_age_seconds=30, clock=lambda: time.time() - 120)
        kwargs["path"] = "/ws/echo?ticket=" + old.issue(f"victim-{attack}")
    elif attack == "bearer-wrong":
        kwargs["subprotocols"] = ["bearer", "token-for-nobody-00000000"]
    await assert_refused(403, **kwargs)
    # The legitimate twin: same user, same-origin, with the session cookie.
    async with ws(server, "/ws/echo", origin=same, cookie=cookie, local="127.0.0.10") as ok:
        assert (await echo(ok, "hi"))["user"] == f"victim-{attack}"


async def test_legit_ticket_then_reuse_refused(server: RunningServer) -> None:
    cookie = await login(server, "dave")
    ticket = await fetch_ticket(server, cookie)
    async with ws(server, f"/ws/echo?ticket={ticket}", local="127.0.0.11") as first:
        assert (await echo(first, "hi"))["user"] == "dave"
    # ws-ticket-reused: the same ticket never opens a second connection.
    await assert_refused(403, server=server, path=f"/ws/echo?ticket={ticket}", local="127.0.0.11")


test_legit_ticket_then_reuse_refused.__doc__ = "ws-" + REASON_TICKET_REUSED


async def test_legit_bearer_subprotocol(server: RunningServer) -> None:
    async with ws(
        server, "/ws/echo", subprotocols=["bearer", BEARER], local="127.0.0.12"
    ) as connection:
        assert connection.subprotocol == "bearer"  # never the token
        assert (await echo(connection, "hi"))["user"] == "carol"


async def test_legit_public_route_without_credentials(server: RunningServer) -> None:
    async with ws(server, "/ws/public", origin=own_origin(server), local="127.0.0.13") as c:
        assert (await echo(c, "hi"))["user"] is None


# --- messages -------------------------------------------------------------------------


async def test_ws_flood_throttled(server: RunningServer) -> None:
    same = own_origin(server)
    flooder, other = await login(server, "flooder"), await login(server, "bystander")
    async with (
        ws(server, "/ws/echo", origin=same, cookie=flooder, local="127.0.0.20") as flood,
        ws(server, "/ws/echo", origin=same, cookie=other, local="127.0.0.21") as calm,
    ):
        for index in range(40):
            try:
                await flood.send(json.dumps(index))
            except ConnectionClosed:
                break
        await expect_close(flood, 1008)
        for index in range(3):
            assert (await echo(calm, index))["echo"] == index


async def test_ws_message_too_big(server: RunningServer) -> None:
    cookie = await login(server, "big")
    async with ws(
        server, "/ws/echo", origin=own_origin(server), cookie=cookie, local="127.0.0.22"
    ) as c:
        assert (await echo(c, "x" * 1022))["user"] == "big"  # 1024 bytes: at the limit
        await c.send(json.dumps("x" * 1023))
        await expect_close(c, 1009)


async def test_ws_invalid_message(server: RunningServer) -> None:
    cookie = await login(server, "chatty")
    async with ws(
        server, "/ws/chat", origin=own_origin(server), cookie=cookie, local="127.0.0.23"
    ) as c:
        assert (await echo(c, {"text": "hello"}))["user"] == "chatty"
        await c.send(json.dumps({"text": 42}))
        await expect_close(c, 1007)


# --- connection caps ------------------------------------------------------------------


async def _open_many(server: RunningServer, local: str, count: int) -> list[ClientConnection]:
    opened: list[ClientConnection] = []
    for _ in range(count):
        try:
            connection = await connect(
                ws_url(server, "/ws/public"), open_timeout=OPEN_TIMEOUT, local_addr=(local, 0)
            )
        except (InvalidStatus, ConnectionClosed):
            continue
        try:
            await connection.send('"ping"')
            await asyncio.wait_for(connection.recv(), RECV_TIMEOUT)
        except ConnectionClosed:
            continue
        opened.append(connection)
    return opened


async def test_ws_connection_cap(server: RunningServer) -> None:
    opened = await _open_many(server, "127.0.0.30", 20)
    try:
        assert len(opened) == 5
        async with ws(server, "/ws/public", local="127.0.0.31") as other_client:
            assert (await echo(other_client, "hi"))["user"] is None
    finally:
        for connection in opened:
            await connection.close()


async def test_abrupt_disconnects_leak_no_slots(server: RunningServer) -> None:
    opened = await _open_many(server, "127.0.0.32", 5)
    assert len(opened) == 5
    for connection in opened:
        connection.transport.abort()  # RST, no close frame
    deadline = time.monotonic() + 5.0
    again: list[ClientConnection] = []
    while len(again) < 5 and time.monotonic() < deadline:  # bounded in time and count
        again += await _open_many(server, "127.0.0.32", 5 - len(again))
        if len(again) < 5:
            await asyncio.sleep(0.05)
    try:
        assert len(again) == 5
    finally:
        for connection in again:
            await connection.close()


# --- revocation -----------------------------------------------------------------------


async def test_ws_session_revoked_closes_socket(server: RunningServer) -> None:
    cookie = await login(server, "erin")
    async with ws(
        server, "/ws/echo", origin=own_origin(server), cookie=cookie, local="127.0.0.40"
    ) as c:
        assert (await echo(c, "hi"))["user"] == "erin"
        async with httpx.AsyncClient(base_url=server.url, cookies={"session": cookie}) as h:
            assert (await h.post("/revoke")).text == "1"
        await expect_close(c, 1008)


@pytest.mark.parametrize(
    "when",
    [
        pytest.param("live", id="ws-ticket-socket-after-revoke-user"),
        pytest.param("handshake", id="ws-ticket-after-revoke-user"),
    ],
)
async def test_ws_ticket_ends_with_its_session(server: RunningServer, when: str) -> None:
    """A ticket is bound to the session it was fetched with: the socket it opened is
    closed (1008) when that session is revoked, and an unused one is refused after."""
    user = f"grace-{when}"
    cookie = await login(server, user)
    ticket, spare = await fetch_ticket(server, cookie), await fetch_ticket(server, cookie)
    async with ws(server, f"/ws/echo?ticket={ticket}", local="127.0.0.41") as c:
        # The legitimate twin: the ticket socket works while its session lives.
        assert (await echo(c, "hi"))["user"] == user
        async with httpx.AsyncClient(base_url=server.url, cookies={"session": cookie}) as h:
            assert (await h.post("/revoke")).text == "1"
        if when == "live":
            await expect_close(c, 1008)
            return
    await assert_refused(403, server=server, path=f"/ws/echo?ticket={spare}", local="127.0.0.41")
