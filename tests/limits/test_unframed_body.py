"""Every request keeps its body check, even one whose head declares no body.

An HTTP/1.0 or 1.1 head with neither `Content-Length` nor `Transfer-Encoding` has a
zero-length body (RFC 9112 section 6.3), and the HTTP/1 servers frame it so (h11,
httptools, hyper): the bytes after such a head are the next request. The layer does
not rely on that. Whatever delivers the ASGI messages (a lenient server, an outer
middleware that rewrote the head, a decompressing one that dropped its
`Content-Length`) may still hand the application body bytes, and those are checked
as every body is: the same verdict as the same bytes under `Transfer-Encoding:
chunked`, on every HTTP version.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from bastion.events import EventEmitter
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.limits.middleware import _Exchange, _InFlight
from bastion.limits.reasons import (
    REASON_BODY_TOO_LARGE,
    REASON_CONTENT_TYPE_NOT_ALLOWED,
    REASON_FORM_TOO_MANY_FIELDS,
    REASON_JSON_TOO_DEEP,
    STATUS_BY_REASON,
)
from bastion.types import RawHeaders, Scope
from tests.conftest import RecordingSink
from tests.limits.harness import ScriptedPeer, http_scope
from tests.limits.test_attacks import Case
from tests.limits.test_middleware import RecordingApp
from tests.limits.test_shortcuts import BODY_CASES

pytestmark = pytest.mark.anyio

FORM = (b"content-type", b"application/x-www-form-urlencoded")
JSON = (b"content-type", b"application/json")
CHUNKED = (b"transfer-encoding", b"chunked")


def scope_of(version: str, headers: RawHeaders, method: str = "POST") -> Scope:
    scope = http_scope(method=method, headers=headers)
    scope["http_version"] = version
    return scope


async def serve(
    settings: LimitsSettings, scope: Scope, chunks: list[bytes]
) -> tuple[int | None, list[str], list[bytes], int]:
    """The status, the reported reasons, what the application read, and the in-flight
    count after the request."""
    sink = RecordingSink()
    app = RecordingApp()
    middleware = LimitsMiddleware(app, settings, events=EventEmitter([sink]))
    peer = ScriptedPeer(chunks)
    await asyncio.wait_for(middleware(scope, peer.receive, peer.send), timeout=10)
    return peer.status, sink.reasons(), app.bodies, middleware.in_flight


def unframed(
    chunks: list[bytes],
    reason: str,
    headers: RawHeaders | None = None,
    read: bytes = b"",
    **settings: Any,
) -> tuple[list[bytes], str, RawHeaders, bytes, dict[str, Any]]:
    """An attack: the chunks delivered, the reason ("" when none), the head's lines,
    and the bytes the application reads before the refusal."""
    return chunks, reason, headers or [], read, settings


UNFRAMED_ATTACKS = [
    pytest.param(*unframed([b"x" * 10], "", max_body_bytes=10), id="limits-unframed-body-ok"),
    pytest.param(
        *unframed([b"x" * 11], REASON_BODY_TOO_LARGE, max_body_bytes=10),
        id="limits-unframed-oversized-one-message",
    ),
    pytest.param(
        *unframed([b"x" * 6, b"x" * 6], REASON_BODY_TOO_LARGE, read=b"x" * 6, max_body_bytes=10),
        id="limits-unframed-oversized-streamed",
    ),
    pytest.param(
        *unframed([b"[" * 50], REASON_JSON_TOO_DEEP, max_json_depth=10),
        id="limits-unframed-deep-json-unlabelled",
    ),
    pytest.param(
        *unframed([b"[" * 50], REASON_JSON_TOO_DEEP, [JSON], max_json_depth=10),
        id="limits-unframed-deep-json-labelled",
    ),
    pytest.param(
        *unframed([b"a=1&b=2&c=3"], REASON_FORM_TOO_MANY_FIELDS, [FORM], max_form_fields=2),
        id="limits-unframed-form-too-many-fields",
    ),
    pytest.param(
        *unframed(
            [b"hi"],
            REASON_CONTENT_TYPE_NOT_ALLOWED,
            [(b"content-type", b"text/plain")],
            allowed_content_types=["application/json"],
        ),
        id="limits-unframed-content-type-not-allowed",
    ),
]


@pytest.mark.parametrize("version", ["1.0", "1.1", "2"])
@pytest.mark.parametrize(("chunks", "reason", "headers", "read", "settings"), UNFRAMED_ATTACKS)
async def test_body_bytes_under_a_head_without_length_fields_are_checked(
    version: str,
    chunks: list[bytes],
    reason: str,
    headers: RawHeaders,
    read: bytes,
    settings: dict[str, Any],
) -> None:
    """A head that declares no body, and bytes delivered anyway: refused as any body."""
    status, reasons, bodies, in_flight = await serve(
        LimitsSettings(**settings), scope_of(version, headers), chunks
    )
    if reason:
        assert (status, reasons) == (STATUS_BY_REASON[reason], [reason])
        assert b"".join(bodies) == read  # no refused byte reached the application
    else:
        assert (status, reasons, bodies) == (200, [], [b"".join(chunks)])
    assert in_flight == 0


def client_headers_without_length(case: Case) -> RawHeaders:
    pairs = case.headers.items() if isinstance(case.headers, dict) else case.headers
    return [
        (name.lower().encode(), value.encode())
        for name, value in pairs
        if name.lower() not in ("content-length", "transfer-encoding")
    ]


# A chunked head declares a body even when no byte follows, and is refused for its
# content type on the head alone: parity holds for bodies with a byte.
BODIES_WITH_A_BYTE = [
    case for case in BODY_CASES if isinstance(case.values[0], Case) and case.values[0].content
]


@pytest.mark.parametrize("case", BODIES_WITH_A_BYTE)
async def test_an_unframed_body_gets_the_verdict_of_a_chunked_one(case: Case) -> None:
    """Parity over the attack table's bodies: sent whole under a head without length
    fields, each gets the status and the reasons it gets under `Transfer-Encoding:
    chunked`, and the application never reads more."""
    assert isinstance(case.content, bytes)
    settings = LimitsSettings(**case.settings)
    headers = client_headers_without_length(case)
    status, reasons, bodies, in_flight = await serve(
        settings, scope_of("1.1", headers, case.method), [case.content]
    )
    framed = await serve(
        settings, scope_of("1.1", [*headers, CHUNKED], case.method), [case.content]
    )
    assert (status, reasons, in_flight) == (framed[0], framed[1], framed[3])
    assert b"".join(bodies) in (b"", b"".join(framed[2]))


def test_the_exits_are_plain_functions() -> None:
    """The layer's exits await nothing: plain functions, so the flow makes no
    coroutine to leave the in-flight count (`bastion.stages.Exit`)."""
    assert not inspect.iscoroutinefunction(_InFlight.leave)
    assert not inspect.iscoroutinefunction(_Exchange.on_exit)
