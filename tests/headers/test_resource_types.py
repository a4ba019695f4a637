"""The document set and the resource set: which responses get which headers.

A response that renders no page (JSON, plain text, CSS, fonts, downloads) gets the
resource set: nosniff, CORP, X-Frame-Options and `default-src 'none'` with the
policy's `frame-ancestors`. Everything else, and anything ambiguous (no type, two
types, a type that runs script), gets the full document set.
"""

from __future__ import annotations

import re

import httpx
import pytest
from pydantic import ValidationError

from bastion.context import SCOPE_KEY, RequestContext, get_context
from bastion.headers import HeadersMiddleware, HeadersSettings, RouteHeadersSettings
from bastion.headers.policy import (
    _RESOURCE_MEMO_ENTRIES,
    DOCUMENT_ONLY_HEADERS,
    ResourceTypes,
    build_response_headers,
)
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio

RESOURCE_CSP = "default-src 'none'; frame-ancestors 'none'"
RESOURCE_HEADERS = {
    "x-content-type-options": "nosniff",
    "cross-origin-resource-policy": "same-origin",
    "x-frame-options": "DENY",
    "content-security-policy": RESOURCE_CSP,
}


def _answering(*content_types: bytes) -> ASGIApp:
    """A raw ASGI app answering with these `Content-Type` lines (none: no header)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", value) for value in content_types]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"<script>alert(1)</script>"})

    return app


async def _get(app: ASGIApp, settings: HeadersSettings | None = None) -> httpx.Response:
    async with asgi_client(HeadersMiddleware(app, settings)) as client:
        return await client.get("/")


def _is_document(response: httpx.Response) -> bool:
    policy = response.headers.get("content-security-policy", "")
    return (
        policy.startswith("default-src 'self'; script-src 'nonce-")
        and response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        and "camera=()" in response.headers["permissions-policy"]
        and response.headers["cross-origin-opener-policy"] == "same-origin"
        and "reporting-endpoints" in response.headers
    )


def _is_resource(response: httpx.Response) -> bool:
    ours = {name: response.headers[name] for name in RESOURCE_HEADERS if name in response.headers}
    return ours == RESOURCE_HEADERS and not any(
        name in response.headers for name in (*DOCUMENT_ONLY_HEADERS, "reporting-endpoints")
    )


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param(b"application/json", id="resource-json"),
        pytest.param(b"application/json; charset=utf-8", id="resource-json-with-parameter"),
        pytest.param(b"Application/JSON", id="resource-json-upper-case"),
        pytest.param(b"application/problem+json", id="resource-json-suffix"),
        pytest.param(b"text/plain; charset=utf-8", id="resource-text"),
        pytest.param(b"text/css", id="resource-css"),
        pytest.param(b"font/woff2", id="resource-font-wildcard"),
        pytest.param(b"application/octet-stream", id="resource-download"),
    ],
)
async def test_resources_get_the_resource_set(content_type: bytes) -> None:
    response = await _get(_answering(content_type))
    assert _is_resource(response), dict(response.headers)


@pytest.mark.parametrize(
    "content_types",
    [
        pytest.param((b"text/html; charset=utf-8",), id="document-html"),
        pytest.param((b"application/xhtml+xml",), id="document-xhtml"),
        pytest.param((b"image/svg+xml",), id="document-svg-runs-script"),
        pytest.param((b"text/xml",), id="document-xml"),
        pytest.param((b"application/pdf",), id="document-pdf-viewer"),
        pytest.param((b"text/javascript",), id="document-script-worker-policy"),
        pytest.param((b"image/png",), id="document-image-media-document"),
        pytest.param((), id="document-missing-content-type"),
        pytest.param((b"",), id="document-empty-content-type"),
        # An application tricked into echoing a type: only the essence counts.
        pytest.param((b"text/html; x=application/json",), id="attack-json-in-parameter"),
        pytest.param((b"text/html, application/json",), id="attack-type-list"),
        pytest.param((b"application/jsonx",), id="attack-json-prefix"),
        pytest.param((b"text/plain/../html",), id="attack-text-prefix"),
        # Two lines: browsers combine them differently; the page set stays.
        pytest.param((b"application/json", b"text/html"), id="attack-two-content-types"),
    ],
)
async def test_pages_and_anything_ambiguous_get_the_document_set(
    content_types: tuple[bytes, ...],
) -> None:
    response = await _get(_answering(*content_types))
    assert _is_document(response), dict(response.headers)


async def test_framework_answers_are_resources(framework_app: ASGIApp) -> None:
    async with asgi_client(HeadersMiddleware(framework_app)) as client:
        text = await client.get("/")
        json = await client.get("/json")
        missing = await client.get("/missing")
    assert _is_resource(text)
    assert _is_resource(json)
    assert "content-security-policy" in missing.headers  # whichever set, a CSP


async def test_no_resource_types_sends_the_document_set_everywhere() -> None:
    response = await _get(_answering(b"application/json"), HeadersSettings(resource_types=()))
    assert _is_document(response)


async def test_custom_resource_types() -> None:
    settings = HeadersSettings(resource_types=("image/*",))
    image = await _get(_answering(b"image/png"), settings)
    json = await _get(_answering(b"application/json"), settings)
    assert _is_resource(image)
    assert _is_document(json)


async def test_resource_set_keeps_the_routes_frame_ancestors() -> None:
    settings = HeadersSettings(
        routes={
            "/": RouteHeadersSettings(
                csp_directives={"frame-ancestors": ("https://partner.example",)},
                cross_origin_resource_policy="cross-origin",
            )
        }
    )
    response = await _get(_answering(b"application/json"), settings)
    assert response.headers["content-security-policy"] == (
        "default-src 'none'; frame-ancestors https://partner.example"
    )
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"
    assert "x-frame-options" not in response.headers  # no equivalent for an allowlist


async def test_resource_set_follows_report_only_and_extra_headers() -> None:
    settings = HeadersSettings(
        csp_report_only=True,
        extra_headers={"x-robots-tag": "noindex", "x-xss-protection": None},
    )
    response = await _get(_answering(b"application/json"), settings)
    assert "content-security-policy" not in response.headers
    assert response.headers["content-security-policy-report-only"] == RESOURCE_CSP
    assert response.headers["x-robots-tag"] == "noindex"


async def test_resource_set_without_csp_when_csp_is_off() -> None:
    response = await _get(
        _answering(b"application/json"), HeadersSettings(insecure_disable_csp=True)
    )
    assert "content-security-policy" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_the_applications_own_headers_are_kept_on_resources() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-security-policy", b"sandbox"),
            (b"referrer-policy", b"no-referrer"),
            (b"server", b"leaky/1.0"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    response = await _get(app)
    assert response.headers.get_list("content-security-policy") == ["sandbox"]
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "server" not in response.headers
    enforced = await _get(app, HeadersSettings(enforce=True))
    assert enforced.headers.get_list("content-security-policy") == [RESOURCE_CSP]


async def test_resource_set_headers_come_from_a_generator() -> None:
    """ASGI allows any iterable of header pairs: it is read twice, so it is listed."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        lines = ((b"content-type", b"application/json"), (b"x-app", b"1"))
        message = {"type": "http.response.start", "status": 200, "headers": iter(lines)}
        await send(message)
        await send({"type": "http.response.body", "body": b"{}"})

    response = await _get(app)
    assert _is_resource(response)
    assert response.headers["x-app"] == "1"


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("json", id="no-slash"),
        pytest.param("*/*", id="everything"),
        pytest.param("*/json", id="wildcard-type"),
        pytest.param("text/html\r\nx: y", id="header-injection"),
        pytest.param("text/*+json", id="suffix-on-a-type"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_resource_types_are_refused(pattern: str) -> None:
    with pytest.raises(ValidationError, match="resource_types"):
        HeadersSettings(resource_types=(pattern,))


def test_resource_types_are_normalised() -> None:
    settings = HeadersSettings(resource_types=(" Application/JSON ", "application/json"))
    assert settings.resource_types == ("application/json",)


def test_matcher() -> None:
    types = ResourceTypes.compile(("application/json", "font/*", "*/*+json"))
    assert types.match(b"application/json;charset=utf-8")
    assert types.match(b"font/woff")
    assert types.match(b"application/vnd.api+json")
    assert not types.match(b"fontx/woff")
    assert not types.match(b"application/json+xml")


def test_resource_headers_shown_by_config() -> None:
    shown = dict(build_response_headers(kind="resource"))
    assert shown == RESOURCE_HEADERS
    pages = dict(build_response_headers())
    assert "permissions-policy" in pages


# The nonce is drawn on its first read: a resource never draws one.


class _NotDrawn(Exception):
    pass


def _refuse_to_draw() -> str:
    raise _NotDrawn


def _nonce_drawn(context: RequestContext) -> bool:
    """Whether the nonce was drawn: reading it asks a source that refuses only when it
    was not (however the context keeps it)."""
    source, context.nonce_source = context.nonce_source, _refuse_to_draw
    try:
        _ = context.csp_nonce
    except _NotDrawn:
        return False
    finally:
        context.nonce_source = source
    return True


def _recording(content_type: bytes, contexts: list[RequestContext], *, read: int) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        context = scope[SCOPE_KEY]
        contexts.append(context)
        nonces = {context.csp_nonce for _ in range(read)}
        body = "".join(f'<script nonce="{nonce}"></script>' for nonce in nonces).encode()
        headers = [(b"content-type", content_type)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_a_resource_draws_no_nonce() -> None:
    contexts: list[RequestContext] = []
    response = await _get(_recording(b"application/json", contexts, read=0))
    assert _is_resource(response)
    [context] = contexts
    assert not _nonce_drawn(context)


async def test_a_page_draws_its_nonce_for_the_header() -> None:
    contexts: list[RequestContext] = []
    response = await _get(_recording(b"text/html", contexts, read=0))
    assert _is_document(response)
    [context] = contexts
    assert _nonce_drawn(context)
    assert f"'nonce-{context.csp_nonce}'" in response.headers["content-security-policy"]


async def test_a_template_and_the_header_share_one_nonce() -> None:
    contexts: list[RequestContext] = []
    app = _recording(b"text/html", contexts, read=3)
    first, second = await _get(app), await _get(app)
    nonces = []
    for response in (first, second):
        [nonce] = re.findall(r'nonce="([^"]+)"', response.text)
        assert response.headers["content-security-policy"].count(f"'nonce-{nonce}'") == 2
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


async def test_no_headers_layer_means_an_empty_nonce() -> None:
    scope: Scope = {"type": "http", "client": ("127.0.0.1", 1), "scheme": "https"}
    context = get_context(scope)
    assert context.csp_nonce == ""
    assert not _nonce_drawn(context)  # an inner headers layer can still ask for one


def test_matcher_memo_is_bounded() -> None:
    """headers-content-type-memo-spray: an echoed Content-Type cannot grow the memo."""
    types = ResourceTypes.compile(("application/json",))
    for index in range(2000):
        assert types.match(b"application/json; x=%d" % index)
        assert not types.match(b"text/html; x=%d" % index)
    assert 0 < len(types.memo) <= _RESOURCE_MEMO_ENTRIES
    assert not types.match(b"text/html; " + b"x" * 10_000)
    assert all(len(value) <= 128 for value in types.memo)


async def test_enforced_resource_set_drops_only_its_own_names() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"x-frame-options", b"SAMEORIGIN"),
            (b"referrer-policy", b"no-referrer"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    response = await _get(app, HeadersSettings(enforce=True))
    assert response.headers.get_list("x-frame-options") == ["DENY"]
    assert response.headers["referrer-policy"] == "no-referrer"  # not ours to replace here
