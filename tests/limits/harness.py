"""A scripted ASGI peer for adapter tests that need exact control of the messages."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from bastion.types import Message, RawHeaders, Scope


def http_scope(
    method: str = "POST", path: str = "/submit", headers: RawHeaders | None = None
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "scheme": "http",
        "headers": list(headers or []),
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }


@dataclass
class ScriptedPeer:
    """Plays the server: hands out `chunks` as `http.request` messages, records sends.

    `delay_seconds` waits before each chunk (a slow client). After the last chunk,
    `receive` waits until the response is complete, then reports `http.disconnect`,
    as servers do. With `hang`, the last chunk announces more body that never comes.
    """

    chunks: Sequence[bytes] = ()
    delay_seconds: float = 0.0
    hang: bool = False
    sent: list[Message] = field(default_factory=list)
    received: list[Message] = field(default_factory=list)
    _index: int = 0
    _complete: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self) -> Message:
        if self._index < len(self.chunks):
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            chunk = self.chunks[self._index]
            self._index += 1
            message = {
                "type": "http.request",
                "body": chunk,
                "more_body": self.hang or self._index < len(self.chunks),
            }
        else:
            if self.hang:
                await asyncio.Event().wait()
            await self._complete.wait()
            message = {"type": "http.disconnect"}
        self.received.append(message)
        return message

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._complete.set()

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) <= 1, "two response starts"
        return int(starts[0]["status"]) if starts else None

    @property
    def response_complete(self) -> bool:
        return self._complete.is_set()

    @property
    def body_sent(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


@dataclass(frozen=True)
class Part:
    """One part of a multipart/form-data body, for building test bodies."""

    name: str
    data: bytes
    filename: str | None = None

    def header_lines(self) -> list[bytes]:
        disposition = f'Content-Disposition: form-data; name="{self.name}"'
        if self.filename is None:
            return [disposition.encode()]
        disposition += f'; filename="{self.filename}"'
        return [disposition.encode(), b"Content-Type: application/octet-stream"]


def multipart_body(parts: Sequence[Part], boundary: bytes, *, newline: bytes = b"\r\n") -> bytes:
    out = b""
    for part in parts:
        out += b"--" + boundary + newline + newline.join(part.header_lines())
        out += newline + newline + part.data + newline
    return out + b"--" + boundary + b"--" + newline
