"""A 5xx whose JSON body carries traceback frames without the "Traceback" line (an
error handler answering `traceback.format_tb(...)`): inside JSON the frame's quotes are
escaped, `File \\"/srv/app.py\\"`, which the plain marker does not match."""

from __future__ import annotations

import traceback

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.errors import REASON_DEBUG_PAGE, ErrorsMiddleware, body_leaks_internals
from bastion.events import EventEmitter
from tests.conftest import RecordingSink, asgi_client

pytestmark = pytest.mark.anyio


def _frames() -> list[str]:
    settings: dict[str, str] = {}
    try:
        settings["db"]  # a real failure, for real frames
    except KeyError as exc:
        return traceback.format_tb(exc.__traceback__)
    raise AssertionError("unreachable")


async def _answer(payload: object) -> tuple[httpx.Response, RecordingSink]:
    async def handler(request: Request) -> Response:
        return JSONResponse(payload, status_code=500)

    sink = RecordingSink()
    app = ErrorsMiddleware(Starlette(routes=[Route("/", handler)]), events=EventEmitter([sink]))
    async with asgi_client(app) as client:
        return await client.get("/", headers={"accept": "application/json"}), sink


async def test_errors_json_frames_are_replaced() -> None:
    frames = _frames()
    assert 'File "/' in frames[0]
    assert "Traceback" not in "".join(frames)
    response, sink = await _answer({"error": "KeyError", "trace": frames})
    assert response.status_code == 500
    assert "File" not in response.text
    assert __file__ not in response.text
    assert set(response.json()) == {"error", "status", "request_id"}
    assert sink.reasons() == [REASON_DEBUG_PAGE]


async def test_errors_json_5xx_without_frames_passes() -> None:
    payload = {"error": "upstream timed out", "file": "/exports/report.csv"}
    response, sink = await _answer(payload)
    assert (response.status_code, response.json()) == (500, payload)
    assert sink.reasons() == []


@pytest.mark.parametrize(
    ("body", "leaks"),
    [
        pytest.param(b'["  File \\"/srv/app.py\\", line 3, in f\\n"]', True, id="json-frame"),
        pytest.param(b'{"error": "File \\"report.csv\\" not found"}', False, id="json-file-ok"),
    ],
)
def test_json_escaped_frame_marker(body: bytes, leaks: bool) -> None:
    assert body_leaks_internals(body) is leaks
