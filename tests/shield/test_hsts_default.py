"""The transport layer's HSTS line in `Shield`: one line, whoever sets it.

The transport layer adds `Strict-Transport-Security` to a secure response unless the
response has one. In `Shield` it checks the response as the application (or the
layer that answered) sent it (`bastion.stages.UNLESS_SENT`), since none of the
layers inside it adds or drops that line, unless the headers layer's settings name
it (`extra_headers`, `strip_headers`): then it checks the lines as the headers layer
left them (`DEFAULT`). Each case is a response the stack must end with exactly one
HSTS line, and says whose; the attack is a downgrade (no HSTS on a secure answer) or
two conflicting policies, of which browsers keep the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from bastion.events import EventEmitter
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.stages import DEFAULT, UNLESS_SENT
from bastion.transport import TransportMiddleware
from bastion.types import Message, Receive, Scope, Send
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio

HSTS = "strict-transport-security"
TRANSPORT_HSTS = "max-age=31536000; includeSubDomains"
HTTPS = "https://testserver"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the HSTS line the query asks for (none by default), its header
    lines as a generator when the path is `/generator` (ASGI allows any iterable)."""
    headers = [(b"content-type", b"text/plain")]
    query = scope["query_string"]
    if query.startswith(b"hsts="):
        headers.append((b"Strict-Transport-Security", query[5:]))
    lines: Iterable[tuple[bytes, bytes]] = headers
    if scope["path"] == "/generator":
        lines = (line for line in headers)
    message: Message = {"type": "http.response.start", "status": 200, "headers": lines}
    await send(message)
    await send({"type": "http.response.body", "body": b"ok"})


def shield(**sections: Any) -> Shield:
    defaults: dict[str, Any] = {
        "transport": {"allowed_hosts": ["testserver"]},
        "ratelimit": {"limits": {"/limited": ["1/minute"]}},
    }
    settings = Settings(mode="development", **(defaults | sections))
    return Shield(app, settings, events=EventEmitter([]))


def transport_op(stack: Shield) -> Any:
    layer: Any = stack._stack
    while not isinstance(layer, TransportMiddleware):
        layer = layer.app
    hook = layer._hsts_hook
    assert hook is not None
    return hook[0]


async def hsts_lines(stack: Shield, url: str, *, requests: int = 1) -> list[str]:
    async with asgi_client(stack) as client:
        for _ in range(requests):
            response = await client.get(url)
    return response.headers.get_list(HSTS)


@pytest.mark.parametrize(
    ("sections", "url", "expected"),
    [
        pytest.param({}, "/", [TRANSPORT_HSTS], id="hsts-default-added"),
        pytest.param({}, "/?hsts=max-age=5", ["max-age=5"], id="hsts-default-app-keeps-its-own"),
        pytest.param(
            {"headers": {"enabled": False}}, "/", [TRANSPORT_HSTS], id="hsts-default-no-headers"
        ),
        pytest.param(
            {"headers": {"extra_headers": {HSTS: "max-age=60"}}},
            "/",
            ["max-age=60"],
            id="hsts-extra-headers-one-line",
        ),
        pytest.param(
            {"headers": {"extra_headers": {HSTS: "max-age=60"}}},
            "/?hsts=max-age=5",
            ["max-age=5"],
            id="hsts-extra-headers-app-keeps-its-own",
        ),
        pytest.param(
            {"headers": {"strip_headers": [HSTS]}},
            "/?hsts=max-age=0",
            [TRANSPORT_HSTS],
            id="hsts-stripped-app-downgrade-replaced",
        ),
        pytest.param(
            {"headers": {"routes": {"/r": {"extra_headers": {HSTS: "max-age=70"}}}}},
            "/r",
            ["max-age=70"],
            id="hsts-route-extra-headers-one-line",
        ),
    ],
)
async def test_one_hsts_line(sections: dict[str, Any], url: str, expected: list[str]) -> None:
    assert await hsts_lines(shield(**sections), HTTPS + url) == expected


async def test_a_refusal_inside_gets_the_transport_line() -> None:
    """A 429 from the rate-limit layer, inside the transport layer, still gets HSTS."""
    stack = shield()
    async with asgi_client(stack) as client:
        await client.get(HTTPS + "/limited")
        refused = await client.get(HTTPS + "/limited")
    assert refused.status_code == 429
    assert refused.headers.get_list(HSTS) == [TRANSPORT_HSTS]


async def test_no_hsts_over_plain_http() -> None:
    stack = shield(transport={"allowed_hosts": ["testserver"], "insecure_allow_http": True})
    assert await hsts_lines(stack, "http://testserver/") == []


@pytest.mark.parametrize(
    ("sections", "op"),
    [
        pytest.param({}, UNLESS_SENT, id="hsts-op-default-stack"),
        pytest.param({"headers": {"enabled": False}}, UNLESS_SENT, id="hsts-op-no-headers"),
        pytest.param(
            {"headers": {"extra_headers": {"x-other": "1"}}}, UNLESS_SENT, id="hsts-op-other-extra"
        ),
        pytest.param(
            {"headers": {"extra_headers": {HSTS: "max-age=60"}}}, DEFAULT, id="hsts-op-extra"
        ),
        pytest.param({"headers": {"strip_headers": [HSTS]}}, DEFAULT, id="hsts-op-strip"),
        pytest.param(
            {"headers": {"routes": {"/r": {"extra_headers": {HSTS: "max-age=70"}}}}},
            DEFAULT,
            id="hsts-op-route-extra",
        ),
    ],
)
def test_shield_scans_only_the_sent_lines_unless_the_headers_layer_may_set_hsts(
    sections: dict[str, Any], op: Any
) -> None:
    assert transport_op(shield(**sections)) is op


def test_the_transport_layer_alone_checks_the_lines_as_left() -> None:
    """Unless told that no stage inside it edits HSTS, the full check (the safe one:
    alone, the lines it sees are the lines sent, and the two cost the same)."""
    layer = TransportMiddleware(app)
    assert layer._hsts_hook is not None
    assert layer._hsts_hook[0] is DEFAULT
    told = TransportMiddleware(app, inner_edits_hsts=False)
    assert told._hsts_hook is not None
    assert told._hsts_hook[0] is UNLESS_SENT


@pytest.mark.parametrize(
    ("layer", "url", "expected"),
    [
        pytest.param(
            lambda: shield(),
            "/generator?hsts=max-age=5",
            ["max-age=5"],
            id="headers-generator-stack",
        ),
        pytest.param(
            lambda: shield(cors={"enabled": False}),
            "/generator?hsts=max-age=5",
            ["max-age=5"],
            id="headers-generator-no-cors",
        ),
        pytest.param(
            lambda: shield(), "/generator", [TRANSPORT_HSTS], id="headers-generator-no-app-hsts"
        ),
        pytest.param(
            lambda: TransportMiddleware(app, inner_edits_hsts=False),
            "/generator?hsts=max-age=5",
            ["max-age=5"],
            id="headers-generator-transport-alone",
        ),
        pytest.param(
            lambda: TransportMiddleware(app),
            "/generator?hsts=max-age=5",
            ["max-age=5"],
            id="headers-generator-transport-alone-full-check",
        ),
    ],
)
async def test_header_lines_sent_as_a_generator_are_read_once(
    layer: Any, url: str, expected: list[str]
) -> None:
    """A generator of lines is read once, whatever the hooks: the application's lines
    all arrive, and the HSTS line is not doubled (browsers keep the first)."""
    async with asgi_client(layer()) as client:
        response = await client.get(HTTPS + url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain"
    assert response.headers.get_list(HSTS) == expected


async def failing(scope: Scope, receive: Receive, send: Send) -> None:
    """Raises, or sends a debug page's 500, which the errors layer replaces."""
    if scope["path"] == "/debug-page":
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"Traceback (most recent call last):"})
        return
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("transport", "url", "expected"),
    [
        pytest.param({}, f"{HTTPS}/raise", [TRANSPORT_HSTS], id="hsts-generic-500-dropped"),
        pytest.param({}, f"{HTTPS}/debug-page", [TRANSPORT_HSTS], id="hsts-debug-page-dropped"),
        pytest.param({}, "http://testserver/raise", [], id="hsts-generic-500-plain-http-ok"),
        pytest.param(
            {"monitor_only": True}, f"{HTTPS}/raise", [], id="hsts-generic-500-monitor-ok"
        ),
        pytest.param({"enabled": False}, f"{HTTPS}/raise", [], id="hsts-generic-500-off-ok"),
    ],
)
async def test_the_generic_error_page_keeps_hsts(
    transport: dict[str, Any], url: str, expected: list[str]
) -> None:
    """The errors layer's generic page is sent from outside every other layer, past
    the transport layer's hook: it carries the HSTS line itself on a secure request,
    and none where the transport layer would add none."""
    settings = Settings(
        mode="development",
        transport={"allowed_hosts": ["testserver"], **transport},
    )
    stack = Shield(failing, settings, events=EventEmitter([]))
    async with asgi_client(stack) as client:
        response = await client.get(url)
    assert response.status_code == 500
    assert "Traceback" not in response.text
    assert response.headers.get_list(HSTS) == expected
