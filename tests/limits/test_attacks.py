"""Named attacks on the limits layer, each beside the legitimate request that must pass.

Every case runs against the raw ASGI, Starlette and FastAPI applications in-process.
A refused case must get its status and emit its reason; a legitimate case must reach
the application with its whole body (`/submit` answers with the byte count) and emit
nothing. No case may log an error: a refusal is a normal outcome.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bastion.events import EventEmitter
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.limits.reasons import (
    REASON_BODY_TIMEOUT,
    REASON_BODY_TOO_LARGE,
    REASON_CONTENT_LENGTH_INVALID,
    REASON_CONTENT_LENGTH_MISMATCH,
    REASON_CONTENT_LENGTH_TOO_LARGE,
    REASON_CONTENT_TYPE_INVALID,
    REASON_CONTENT_TYPE_NOT_ALLOWED,
    REASON_FORM_PART_HEADERS_TOO_LARGE,
    REASON_FORM_PART_TOO_LARGE,
    REASON_FORM_TOO_MANY_FIELDS,
    REASON_FORM_TOO_MANY_FILES,
    REASON_HEADERS_TOO_LARGE,
    REASON_HEADERS_TOO_MANY,
    REASON_JSON_NOT_UTF8,
    REASON_JSON_TOO_DEEP,
    REASON_JSON_TOO_LARGE,
    REASON_METHOD_NOT_ALLOWED,
    REASON_MULTIPART_MALFORMED,
    REASON_OVERLOADED,
    STATUS_BY_REASON,
)
from bastion.types import ASGIApp
from tests.conftest import RecordingSink, asgi_client
from tests.limits.harness import Part, multipart_body

MiB = 1024 * 1024
BOUNDARY = b"----b0undary"
MULTIPART = {"content-type": "multipart/form-data; boundary=" + BOUNDARY.decode()}
URLENCODED = {"content-type": "application/x-www-form-urlencoded"}
JSON = {"content-type": "application/json"}
TEXT = {"content-type": "text/plain; charset=utf-8"}
BINARY = {"content-type": "application/octet-stream"}
DEEP = b"[" * 100_000 + b"]" * 100_000
# Seeded, so a failure names the same bytes every run.
BLOB = random.Random(1729).randbytes(512 * 1024)
# A Windows tool's INI file: UTF-16 with a BOM, beginning with a bracket.
INI_UTF16 = "[General]\r\nName=x\r\n[Other]\r\nList=[1, [2]]\r\n".encode("utf-16")
QUICK_IDLE = {"body_idle_timeout_seconds": 0.05}

Content = bytes | Callable[[], AsyncIterator[bytes]]


def streamed(total: int, chunk: int = 64 * 1024) -> Callable[[], AsyncIterator[bytes]]:
    """A body without Content-Length (chunked), produced as it is sent."""

    async def generate() -> AsyncIterator[bytes]:
        for start in range(0, total, chunk):
            yield b"x" * min(chunk, total - start)

    return generate


def in_chunks(data: bytes, size: int) -> Callable[[], AsyncIterator[bytes]]:
    """`data` sent chunked, `size` bytes at a time."""

    async def generate() -> AsyncIterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    return generate


def stalls_after(first: bytes) -> Callable[[], AsyncIterator[bytes]]:
    """`first`, then nothing: the client stops sending mid-body and never resumes."""

    async def generate() -> AsyncIterator[bytes]:
        yield first
        await asyncio.Event().wait()  # never set: the layer's idle timeout must end this
        yield b"never sent"

    return generate


def files(count: int, size: int = 10) -> bytes:
    return multipart_body([Part(f"f{i}", b"d" * size, f"f{i}.txt") for i in range(count)], BOUNDARY)


def fields(count: int) -> bytes:
    return multipart_body([Part(f"f{i}", b"v") for i in range(count)], BOUNDARY)


@dataclass(frozen=True)
class Case:
    content: Content = b""
    headers: dict[str, str] | list[tuple[str, str]] = field(default_factory=dict)
    reason: str = ""  # "" for a legitimate request
    settings: dict[str, Any] = field(default_factory=dict)
    method: str = "POST"
    path: str = "/submit"


CASES = [
    # Body size, declared and streamed.
    pytest.param(Case(b"x" * MiB), id="body-at-limit-ok"),
    pytest.param(
        Case(b"x" * (MiB + 1), reason=REASON_CONTENT_LENGTH_TOO_LARGE),
        id="content-length-too-large",
    ),
    pytest.param(Case(streamed(MiB)), id="body-chunked-at-limit-ok"),
    pytest.param(
        Case(streamed(3 * MiB), reason=REASON_BODY_TOO_LARGE), id="body-too-large-chunked"
    ),
    pytest.param(
        Case(b"x" * 100, {"content-length": "5"}, REASON_CONTENT_LENGTH_MISMATCH),
        id="content-length-lies-smaller",
    ),
    pytest.param(
        Case(b"x" * 5, {"content-length": "100"}, REASON_CONTENT_LENGTH_MISMATCH),
        id="content-length-lies-larger",
    ),
    pytest.param(
        Case(b"x" * (2 * MiB), {"content-length": "10"}, REASON_CONTENT_LENGTH_MISMATCH),
        id="content-length-lies-smaller-huge",
    ),
    pytest.param(Case(b"12345", {"content-length": "5, 5"}), id="content-length-repeated-ok"),
    pytest.param(
        Case(b"12345", {"content-length": "5, 6"}, REASON_CONTENT_LENGTH_INVALID),
        id="content-length-invalid",
    ),
    pytest.param(
        Case(b"12345", {"content-length": "-5"}, REASON_CONTENT_LENGTH_INVALID),
        id="content-length-negative",
    ),
    pytest.param(
        Case(b"12345", {"content-length": "0x5"}, REASON_CONTENT_LENGTH_INVALID),
        id="content-length-hex",
    ),
    # Request headers.
    pytest.param(Case(headers=[(f"x-h{i}", "v") for i in range(90)]), id="headers-90-ok"),
    pytest.param(
        Case(headers=[(f"x-h{i}", "v") for i in range(150)], reason=REASON_HEADERS_TOO_MANY),
        id="headers-too-many",
    ),
    pytest.param(Case(headers={"x-big": "a" * 8000}), id="header-8k-ok"),
    pytest.param(
        Case(headers={"x-big": "a" * 20_000}, reason=REASON_HEADERS_TOO_LARGE),
        id="headers-too-large",
    ),
    pytest.param(
        Case(
            method="GET", path="/", headers={"x-big": "a" * 20_000}, reason=REASON_HEADERS_TOO_LARGE
        ),
        id="headers-too-large-get",
    ),
    # Methods that echo the request, credentials included (Cross-Site Tracing).
    pytest.param(Case(method="GET", path="/"), id="limits-get-ok"),
    pytest.param(
        Case(method="TRACE", path="/", reason=REASON_METHOD_NOT_ALLOWED),
        id="limits-trace-refused",
    ),
    pytest.param(
        Case(method="TRACK", path="/", reason=REASON_METHOD_NOT_ALLOWED),
        id="limits-track-refused",
    ),
    pytest.param(
        Case(b"x", method="TRACE", reason=REASON_METHOD_NOT_ALLOWED),
        id="limits-trace-with-body-refused",
    ),
    # Content types, when a route restricts them.
    pytest.param(
        Case(
            b"{}",
            {"content-type": "Application/JSON; charset=utf-8"},
            settings={"allowed_content_types": ["application/json"]},
        ),
        id="content-type-allowed-ok",
    ),
    pytest.param(
        Case(
            b"<x/>",
            {"content-type": "application/xml"},
            REASON_CONTENT_TYPE_NOT_ALLOWED,
            {"allowed_content_types": ["application/json"]},
        ),
        id="content-type-not-allowed",
    ),
    pytest.param(
        Case(
            b"x",
            [("content-type", "text/plain"), ("content-type", "application/json")],
            REASON_CONTENT_TYPE_INVALID,
        ),
        id="content-type-twice",
    ),
    pytest.param(
        Case(method="GET", path="/", settings={"allowed_content_types": ["application/json"]}),
        id="content-type-bodiless-get-ok",
    ),
    # JSON.
    pytest.param(Case(b"[" * 100 + b"]" * 100, JSON), id="json-depth-100-ok"),
    pytest.param(
        Case(b"[" * 100_000 + b"]" * 100_000, JSON, REASON_JSON_TOO_DEEP), id="json-depth-100000"
    ),
    pytest.param(
        Case(
            b'{"a":' * 5000 + b"1" + b"}" * 5000,
            {"content-type": "application/merge-patch+json"},
            REASON_JSON_TOO_DEEP,
        ),
        id="json-suffix-depth-5000",
    ),
    pytest.param(
        Case(b"[" * 100_000 + b"]" * 100_000, {}, REASON_JSON_TOO_DEEP),
        id="json-depth-no-content-type",
    ),
    pytest.param(
        Case(in_chunks(b"[" * 3000, 7), JSON, REASON_JSON_TOO_DEEP),
        id="json-depth-3000-chunked",
    ),
    pytest.param(
        Case('["\\"", '.encode("utf-16-le") + b"[\x00" * 5000, JSON, REASON_JSON_NOT_UTF8),
        id="json-utf16-hides-depth",
    ),
    pytest.param(
        Case(b"[" + b"1," * 600 + b"1]", JSON, REASON_JSON_TOO_LARGE, {"max_json_bytes": 1000}),
        id="json-too-large",
    ),
    pytest.param(Case(b"[1, 2]", JSON, settings={"max_json_bytes": 1000}), id="json-small-ok"),
    pytest.param(Case(b"", JSON), id="json-empty-body-ok"),
    # JSON under another label: `json.loads` (Starlette's `Request.json()`) ignores it.
    pytest.param(Case(b"[note] see [1] and {2}\n" * 100, TEXT), id="text-brackets-ok"),
    pytest.param(Case(b"[" * 100 + b"]" * 100, TEXT), id="text-json-depth-100-ok"),
    pytest.param(Case(DEEP, TEXT, REASON_JSON_TOO_DEEP), id="json-depth-text-plain"),
    pytest.param(Case(BLOB, BINARY), id="binary-blob-ok"),
    pytest.param(Case(b"{" + BLOB, BINARY), id="binary-blob-brace-first-ok"),
    pytest.param(Case(DEEP, BINARY, REASON_JSON_TOO_DEEP), id="json-depth-octet-stream"),
    pytest.param(Case(b'{"a": [1]}', {"content-type": "application/x-json"}), id="x-json-ok"),
    pytest.param(
        Case(DEEP, {"content-type": "application/x-bastion-unknown"}, REASON_JSON_TOO_DEEP),
        id="json-depth-unknown-type",
    ),
    pytest.param(
        Case(
            b" \r\n\t" * 1000 + DEEP, {"content-type": "application/x-json"}, REASON_JSON_TOO_DEEP
        ),
        id="json-depth-after-whitespace",
    ),
    pytest.param(Case(INI_UTF16, TEXT), id="text-utf16-ini-ok"),
    pytest.param(
        Case(("[" * 5000).encode("utf-16-le"), TEXT, REASON_JSON_TOO_DEEP),
        id="json-depth-text-plain-utf16",
    ),
    pytest.param(Case(b'{"a": [1, 2]}', URLENCODED), id="json-as-urlencoded-ok"),
    pytest.param(Case(DEEP, URLENCODED, REASON_JSON_TOO_DEEP), id="json-depth-urlencoded"),
    pytest.param(
        Case(("[" * 5000).encode("utf-16-le"), URLENCODED, REASON_JSON_NOT_UTF8),
        id="json-utf16-urlencoded",
    ),
    pytest.param(
        Case(b"[" * 5000 + b"\r\n" + files(1), MULTIPART, REASON_JSON_TOO_DEEP),
        id="json-depth-multipart-preamble",
    ),
    # Url-encoded forms.
    pytest.param(Case(b"&".join([b"f=1"] * 1000), URLENCODED), id="form-1000-fields-ok"),
    pytest.param(
        Case(b"&".join([b"f=1"] * 1001), URLENCODED, REASON_FORM_TOO_MANY_FIELDS),
        id="form-too-many-fields",
    ),
    pytest.param(
        Case(b";" * 50_000, URLENCODED, REASON_FORM_TOO_MANY_FIELDS),
        id="form-semicolons-count",
    ),
    pytest.param(
        Case(
            b"a=" + b"x" * 5000,
            URLENCODED,
            REASON_FORM_PART_TOO_LARGE,
            {"max_form_part_bytes": 4096},
        ),
        id="form-field-too-large",
    ),
    # Multipart forms.
    pytest.param(Case(files(100), MULTIPART), id="multipart-100-files-ok"),
    pytest.param(
        Case(files(101), MULTIPART, REASON_FORM_TOO_MANY_FILES), id="multipart-too-many-files"
    ),
    pytest.param(
        Case(fields(1001), MULTIPART, REASON_FORM_TOO_MANY_FIELDS), id="multipart-too-many-fields"
    ),
    pytest.param(
        Case(files(2, 4096), MULTIPART, settings={"max_form_part_bytes": 4096}),
        id="multipart-part-at-limit-ok",
    ),
    pytest.param(
        Case(files(2, 4097), MULTIPART, REASON_FORM_PART_TOO_LARGE, {"max_form_part_bytes": 4096}),
        id="multipart-part-too-large",
    ),
    pytest.param(
        Case(
            multipart_body([Part("a" * 10_000, b"v")], BOUNDARY),
            MULTIPART,
            REASON_FORM_PART_HEADERS_TOO_LARGE,
        ),
        id="multipart-part-headers-too-large",
    ),
    pytest.param(
        Case(files(1), {"content-type": "multipart/form-data"}, REASON_MULTIPART_MALFORMED),
        id="multipart-no-boundary",
    ),
    pytest.param(
        Case(
            files(1),
            {"content-type": "multipart/form-data; boundary=a; boundary=" + BOUNDARY.decode()},
            REASON_MULTIPART_MALFORMED,
        ),
        id="multipart-boundary-twice",
    ),
    pytest.param(
        Case(files(3)[:-30], MULTIPART, REASON_MULTIPART_MALFORMED), id="multipart-unclosed"
    ),
    # Pace: a client that stops sending mid-body holds a worker until the idle timeout.
    pytest.param(Case(in_chunks(b"x" * 1000, 100), settings=QUICK_IDLE), id="body-prompt-ok"),
    pytest.param(
        Case(stalls_after(b"x" * 10), reason=REASON_BODY_TIMEOUT, settings=QUICK_IDLE),
        id="body-timeout",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES)
async def test_attack(
    case: Case,
    framework_app: ASGIApp,
    events: EventEmitter,
    sink: RecordingSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    app = LimitsMiddleware(framework_app, LimitsSettings(**case.settings), events=events)
    content = case.content if isinstance(case.content, bytes) else case.content()
    async with asgi_client(app) as client:
        response = await client.request(
            case.method, case.path, headers=case.headers, content=content if content else None
        )
    if case.reason:
        assert response.status_code == STATUS_BY_REASON[case.reason]
        assert sink.reasons() == [case.reason]
        assert sink.records[0]["action"] == "blocked"
        assert "request id" in response.text
    else:
        assert response.status_code == 200, response.text
        assert sink.records == []
        if case.path == "/submit" and isinstance(case.content, bytes):
            assert response.text == str(len(case.content))
    assert app.in_flight == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


SHEDDING = [
    pytest.param(1, id="overloaded-below-cap-ok"),
    pytest.param(2, id="overloaded"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("held", SHEDDING)
async def test_overloaded(
    held: int,
    framework_app: ASGIApp,
    events: EventEmitter,
    sink: RecordingSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`held` requests sit in the application, waiting for a body that the test
    releases; one more request is shed when they fill the cap, and served otherwise."""
    caplog.set_level(logging.WARNING)
    settings = LimitsSettings(max_concurrent_requests=2, overload_retry_after_seconds=7)
    app = LimitsMiddleware(framework_app, settings, events=events)
    release = asyncio.Event()
    arrivals = [asyncio.Event() for _ in range(held)]

    def held_body(arrived: asyncio.Event) -> AsyncIterator[bytes]:
        async def generate() -> AsyncIterator[bytes]:
            arrived.set()  # the application asked for the body: the request holds a slot
            await release.wait()
            yield b"x"

        return generate()

    async with asgi_client(app) as client:
        holders = [
            asyncio.create_task(client.post("/submit", content=held_body(arrived)))
            for arrived in arrivals
        ]
        await asyncio.wait_for(asyncio.gather(*(a.wait() for a in arrivals)), timeout=5)
        assert app.in_flight == held
        extra = await client.post("/submit", content=b"yy")
        release.set()
        released = await asyncio.wait_for(asyncio.gather(*holders), timeout=5)
        after = await client.post("/submit", content=b"zzz")
    if held == settings.max_concurrent_requests:
        assert extra.status_code == STATUS_BY_REASON[REASON_OVERLOADED]
        assert extra.headers["retry-after"] == "7"
        assert "request id" in extra.text
        assert sink.reasons() == [REASON_OVERLOADED]
        assert (sink.records[0]["action"], sink.records[0]["kind"]) == (
            "blocked",
            "sys_availability",
        )
    else:
        assert (extra.status_code, extra.text) == (200, "2")
        assert sink.records == []
    assert [(r.status_code, r.text) for r in released] == [(200, "1")] * held
    assert (after.status_code, after.text) == (200, "3")
    assert app.in_flight == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
