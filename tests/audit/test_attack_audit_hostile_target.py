"""Attacks on the auditor by the server it audits: `bastion audit URL` against a
hostile (or compromised) target, run on a laptop or in CI.

The target is a real server on 127.0.0.1 written for each attack (raw HTTP/1.1 over
asyncio streams, so it can say what no framework would: a drip-fed body, a path
that names another host, an unclosed IPv6 literal). A second listener stands for
an internal service the auditor must never be steered to; it records every
connection it gets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.server import ServerConnection, serve

from bastion.audit.discovery import routes_from_openapi
from bastion.audit.probes.transport import hsts_max_age
from bastion.audit.runner import run_audit
from bastion.audit.target import HTTPResponse, TargetError, URLTarget

pytestmark = pytest.mark.anyio

Answer = tuple[int, tuple[tuple[str, str], ...], bytes]
RESET: bytes = b""
"""A handler's answer that resets the connection (TCP RST) instead of answering."""
Handler = Callable[[str, str], Answer | bytes | None]
"""(method, path) -> the answer, raw bytes to write as they are (`RESET`: none, the
connection reset), or None for the default `200 ok`."""


@dataclass
class Listener:
    host: str
    port: int
    connections: int = 0
    requests: list[str] = field(default_factory=list)

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


def _head(status: int, headers: tuple[tuple[str, str], ...], length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@asynccontextmanager
async def hostile_server(
    handler: Handler | None = None,
    *,
    drip: tuple[str, float, float] | None = None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Listener]:
    """A raw HTTP/1.1 server on 127.0.0.1 (over TLS with `tls`). `drip` = (path,
    interval, for how long): that path's body comes one byte per interval, each
    inside any per-read timeout."""
    listener = Listener("127.0.0.1", 0)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            listener.requests.append(f"{method} {path}")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            if drip is not None and path == drip[0]:
                writer.write(_head(200, (), None))
                deadline = time.monotonic() + drip[2]
                while time.monotonic() < deadline:
                    writer.write(b"x")
                    await writer.drain()
                    await asyncio.sleep(drip[1])
            else:
                answer = handler(method, path) if handler is not None else None
                if answer is None:
                    answer = (200, (), b"ok")
                if answer == RESET:
                    # Linger 0: close() sends RST, as a crashing server or a middlebox does.
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if isinstance(answer, bytes):
                    writer.write(answer)
                else:
                    status, headers, body = answer
                    writer.write(_head(status, headers, len(body)) + body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, listener.host, 0, ssl=tls)
    listener.port = server.sockets[0].getsockname()[1]
    async with server:
        yield listener
        server.close()


@asynccontextmanager
async def internal_service() -> AsyncIterator[Listener]:
    """Where a hostile target would like the auditor to go: it only counts visitors."""
    async with hostile_server() as listener:
        yield listener


# ---------------------------------------------------------------------------
# Steered to another host


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param("@{internal}/latest/meta-data", id="path-userinfo-names-another-host"),
        pytest.param(":{port}/admin", id="path-names-another-port"),
        pytest.param(".{internal}/x", id="path-extends-the-host-name"),
    ],
)
async def test_a_path_cannot_name_another_host(shape: str) -> None:
    async with hostile_server() as target, internal_service() as internal:
        path = shape.format(internal=internal.authority, port=internal.port)
        async with URLTarget(f"http://{target.authority}", timeout_seconds=5) as client:
            with pytest.raises(TargetError):
                await client.request("GET", path)
            legit = await client.request("GET", "/latest/meta-data")
        assert legit.status == 200
        assert target.requests == ["GET /latest/meta-data"]
        assert internal.connections == 0


async def test_openapi_paths_off_the_target_are_not_probed() -> None:
    """The target's own OpenAPI document lists `@internal/...`: the audit, which
    crawls every GET and sends the session along, must not go there."""
    async with internal_service() as internal:
        document = {
            "openapi": "3.1.0",
            "paths": {
                f"@{internal.authority}/steal": {"get": {}, "post": {}},
                "/real": {"get": {}},
            },
        }

        def handler(method: str, path: str) -> Answer | None:
            if path == "/openapi.json":
                return 200, (("content-type", "application/json"),), json.dumps(document).encode()
            return None

        async with hostile_server(handler) as target:
            report = await run_audit(
                URLTarget(f"http://{target.authority}", timeout_seconds=5), max_requests=300
            )
        assert internal.connections == 0
        assert "GET /real" in report.routes
        assert "GET /real" in target.requests
        assert not [r for r in report.routes if "steal" in r]


def test_openapi_paths_must_start_with_a_slash() -> None:
    routes = routes_from_openapi(
        {"paths": {"@evil.example/x": {"get": {}}, "x": {"get": {}}, "/ok/{id}": {"get": {}}}}
    )
    assert [str(r) for r in routes] == ["GET /ok/1"]


async def test_a_websocket_redirect_is_not_followed() -> None:
    """A handshake answered `302 Location: ws://internal/...`: websockets' client
    follows it by default (to any host), and would report the socket there as
    accepted for the target."""
    async with internal_service() as internal:

        def handler(method: str, path: str) -> Answer | None:
            if path == "/ws":
                return 302, (("location", f"ws://{internal.authority}/ws"),), b""
            return None

        async with (
            hostile_server(handler) as target,
            URLTarget(f"http://{target.authority}", timeout_seconds=5) as client,
        ):
            result = await client.websocket("/ws", headers=(("origin", "https://evil.example"),))
        assert not result.accepted
        assert result.status == 302
        assert internal.connections == 0


async def test_a_websocket_that_accepts_is_still_accepted() -> None:
    async def handler(connection: ServerConnection) -> None:
        await connection.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with URLTarget(f"http://127.0.0.1:{port}", timeout_seconds=5) as client:
            result = await client.websocket("/ws")
    assert result.accepted


# ---------------------------------------------------------------------------
# Held forever


async def test_a_drip_fed_body_is_cut_at_the_timeout() -> None:
    """One byte every 0.2 s never trips a 1 s read timeout; the whole answer must
    still end within the timeout (the server would go on for 6 s here, for days
    in a real attack)."""
    async with (
        hostile_server(drip=("/slow", 0.2, 6.0)) as target,
        URLTarget(f"http://{target.authority}", timeout_seconds=1) as client,
    ):
        started = time.monotonic()
        with pytest.raises(TargetError, match="GET /slow"):
            await client.request("GET", "/slow")
        elapsed = time.monotonic() - started
        legit = await client.request("GET", "/fast")
    assert elapsed < 3, elapsed
    assert legit.status == 200
    assert legit.body == b"ok"


async def test_a_slow_but_finished_answer_is_read() -> None:
    async with (
        hostile_server(drip=("/slow", 0.1, 0.5)) as target,
        URLTarget(f"http://{target.authority}", timeout_seconds=3) as client,
    ):
        response = await client.request("GET", "/slow")
    assert response.status == 200
    assert 3 <= len(response.body) <= 6


# ---------------------------------------------------------------------------
# Answers that used to end the whole audit with a traceback or "cannot audit"

_DEEP = b"[" * 200_000
_HOSTILE_ANSWERS: Mapping[str, Mapping[str, Answer]] = {
    "openapi-nested-past-the-stack": {
        "/openapi.json": (200, (("content-type", "application/json"),), _DEEP),
    },
    "openapi-wrong-types": {
        "/openapi.json": (
            200,
            (("content-type", "application/json"),),
            json.dumps(
                {
                    "components": [],
                    "paths": {
                        "/a": {"post": {"requestBody": "x"}},
                        "/b": {"post": {"requestBody": {"content": {"application/json": 1}}}},
                        "/c": {
                            "post": {
                                "requestBody": {
                                    "content": {
                                        "application/json": {
                                            "schema": {
                                                "properties": [],
                                                "required": 5,
                                                "anyOf": [[], {"type": "string"}],
                                            }
                                        }
                                    }
                                }
                            }
                        },
                        "/d": {
                            "post": {
                                "requestBody": {
                                    "content": {
                                        "application/json": {
                                            "schema": {"type": "object", "required": [{}, "x"]}
                                        }
                                    }
                                }
                            }
                        },
                    },
                }
            ).encode(),
        ),
    },
    "openapi-path-lone-surrogate": {
        # JSON may escape half a surrogate pair; httpx cannot encode the path and
        # raised UnicodeEncodeError through the whole audit.
        "/openapi.json": (
            200,
            (("content-type", "application/json"),),
            b'{"paths": {"/a\\ud800": {"get": {}}, "/b\\udfff/c": {"post": {}}}}',
        ),
    },
    "openapi-path-with-a-newline": {
        "/openapi.json": (
            200,
            (("content-type", "application/json"),),
            json.dumps({"paths": {"/a\nb": {"get": {}}, "/c\x00": {"get": {}}}}).encode(),
        ),
    },
    "script-src-unclosed-ipv6": {
        "/": (
            200,
            (("content-type", "text/html"),),
            b'<html><head><script src="http://[x/a.js"></script>'
            b'<script src="https://[evil]/b.js"></script></head></html>',
        ),
    },
    "location-unclosed-ipv6": {
        "/": (302, (("location", "http://[x/"),), b""),
    },
    "set-cookie-max-age-double-minus": {
        "/": (200, (("set-cookie", "sid=1; Max-Age=--1"),), b"ok"),
    },
    "set-cookie-max-age-superscript-digit": {
        "/": (200, (("set-cookie", "sid=1; Max-Age=\u00b2"),), b"ok"),
    },
    "set-cookie-max-age-5000-digits": {
        "/": (200, (("set-cookie", "sid=1; Max-Age=" + "9" * 5000),), b"ok"),
    },
}


@pytest.mark.parametrize("answers", _HOSTILE_ANSWERS.values(), ids=_HOSTILE_ANSWERS.keys())
async def test_a_hostile_answer_does_not_end_the_audit(answers: Mapping[str, Answer]) -> None:
    def handler(method: str, path: str) -> Answer | None:
        return answers.get(path)

    async with hostile_server(handler) as target:
        report = await run_audit(
            URLTarget(f"http://{target.authority}", timeout_seconds=5), max_requests=300
        )
    assert report.findings
    assert "GET /" in report.routes


@pytest.mark.parametrize(
    ("value", "max_age"),
    [
        pytest.param("max-age=" + "9" * 5000, int("9" * 20), id="hsts-max-age-5000-digits"),
        pytest.param("max-age=\u0661\u0662", None, id="hsts-max-age-arabic-indic-digits"),
        pytest.param('max-age="31536000"; includeSubDomains', 31536000, id="hsts-max-age-ok"),
    ],
)
def test_hsts_max_age_is_read_as_ascii_digits(value: str, max_age: int | None) -> None:
    """Over HTTPS the transport probe reads the target's HSTS max-age: `int()` of
    5000 digits raised and ended the audit."""
    response = HTTPResponse(200, (("strict-transport-security", value),), b"")
    assert hsts_max_age(response) == max_age


async def test_a_well_formed_target_is_audited_as_before() -> None:
    document = {"openapi": "3.1.0", "paths": {"/items/{id}": {"get": {}}}}

    def handler(method: str, path: str) -> Answer | None:
        if path == "/openapi.json":
            return 200, (("content-type", "application/json"),), json.dumps(document).encode()
        if path == "/":
            return (
                200,
                (
                    ("content-type", "text/html"),
                    ("set-cookie", "sid=1; Max-Age=0"),
                    ("strict-transport-security", "max-age=31536000"),
                ),
                b'<html><script src="/app.js"></script></html>',
            )
        return None

    async with hostile_server(handler) as target:
        report = await run_audit(
            URLTarget(f"http://{target.authority}", timeout_seconds=5), max_requests=300
        )
    assert "GET /items/1" in report.routes
    assert "GET /items/1" in target.requests
