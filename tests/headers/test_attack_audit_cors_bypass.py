"""Attack audit: a CORS grant through `headers.extra_headers`, past the cors layer.

The headers layer sits outside the cors layer and adds its lines after the cors
layer has stripped the application's `Access-Control-*` lines. Before the fix,
`extra_headers={"access-control-allow-origin": "null",
"access-control-allow-credentials": "true"}` validated and was sent on every
response: any sandboxed iframe (`Origin: null`) on any site could read credentialed
answers, though the cors section refuses `null`, and nothing reported it. The
legitimate way, the cors section's allowlist, must still grant through `Shield`.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion.events import EventEmitter
from bastion.exceptions import ConfigurationError
from bastion.headers import HeadersSettings
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.types import Receive, Scope, Send
from tests.conftest import asgi_client


@pytest.mark.parametrize(
    ("extra", "valid"),
    [
        pytest.param({"x-robots-tag": "noindex"}, True, id="extra-headers-ok"),
        pytest.param({"access-control-allow-origin": "null"}, False, id="extra-headers-acao-null"),
        pytest.param({"Access-Control-Allow-Origin": "*"}, False, id="extra-headers-acao-any"),
        pytest.param({"access-control-allow-credentials": "true"}, False, id="extra-headers-acac"),
        pytest.param(
            {"access-control-allow-private-network": "true"}, False, id="extra-headers-acapn"
        ),
    ],
)
def test_extra_headers_cannot_grant_cors(extra: dict[str, str], valid: bool) -> None:
    if valid:
        assert HeadersSettings(extra_headers=extra).extra_headers == extra
        return
    with pytest.raises(ValidationError, match="cors section"):
        HeadersSettings(extra_headers=extra)
    with pytest.raises(ValidationError, match="cors section"):
        HeadersSettings(routes={"/api/*": {"extra_headers": extra}})


async def _account(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"balance": 100}'})


def _settings(**sections: Any) -> Settings:
    return Settings(mode="development", transport={"allowed_hosts": ["testserver"]}, **sections)


def test_settings_refuse_the_bypass() -> None:
    with pytest.raises(ConfigurationError, match=r"headers\.extra_headers"):
        _settings(
            headers={
                "extra_headers": {
                    "access-control-allow-origin": "null",
                    "access-control-allow-credentials": "true",
                }
            }
        )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("origin", "acao"),
    [
        pytest.param("https://app.example", "https://app.example", id="cors-section-grant-ok"),
        pytest.param("null", None, id="cors-section-null-origin"),
    ],
)
async def test_cors_section_grants_through_shield(origin: str, acao: str | None) -> None:
    settings = _settings(
        cors={"allow_origins": ["https://app.example"], "allow_credentials": True},
        headers={"extra_headers": {"x-robots-tag": "noindex"}},
    )
    stack = Shield(_account, settings, events=EventEmitter([]))
    async with asgi_client(stack) as client:
        response = await client.get("https://testserver/", headers={"origin": origin})
    assert response.status_code == 200
    assert response.headers.get("access-control-allow-origin") == acao
    assert response.headers["x-robots-tag"] == "noindex"
    assert "Origin" in response.headers.get_list("vary")
