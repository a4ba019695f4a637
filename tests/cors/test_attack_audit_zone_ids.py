"""Attack audit: IPv6 zone identifiers in `allow_origins` and in `Origin`.

`ipaddress.IPv6Address` accepts any text after a `%`. Before the fix,
`allow_origins=["http://[::1%\\r\\nset-cookie: a=b]"]` validated, and the exact
origin's grant, sent as it was configured, put CR/LF into the
`Access-Control-Allow-Origin` value: a second header line written from a setting
(`BASTION_CORS__ALLOW_ORIGINS` is an environment variable). The bracketed literal
without a zone must still be allowed and granted.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.cors import CORSMiddleware, CORSSettings
from tests.conftest import asgi_client
from tests.transport.support import RecordingApp, make_scope, run


@pytest.mark.parametrize(
    ("rule", "valid"),
    [
        pytest.param("http://[::1]:3000", True, id="cors-ipv6-origin-ok"),
        pytest.param("http://[::1%\r\nset-cookie: a=b]", False, id="cors-zone-id-crlf-setting"),
        pytest.param("http://[fe80::1%eth0]:3000", False, id="cors-zone-id-setting"),
    ],
)
def test_allow_origins_zone_id(rule: str, valid: bool) -> None:
    if valid:
        assert CORSSettings(allow_origins=[rule]).allow_origins[0].serialise() == rule
    else:
        with pytest.raises(ValidationError, match="allow_origins"):
            CORSSettings(allow_origins=[rule])


# (request Origin, ACAO expected; None: no grant). The policy allows `[::1]:3000`.
ORIGINS = [
    pytest.param(b"http://[::1]:3000", b"http://[::1]:3000", id="cors-ipv6-ok"),
    pytest.param(b"http://[::1%25eth0]:3000", None, id="cors-zone-id-origin"),
    pytest.param(b"http://[::1%\xff]:3000", None, id="cors-zone-id-origin-non-ascii"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("origin", "acao"), ORIGINS)
async def test_zone_id_origin_gets_no_grant(origin: bytes, acao: bytes | None) -> None:
    layer = CORSMiddleware(RecordingApp(), CORSSettings(allow_origins=["http://[::1]:3000"]))
    sent = await run(layer, make_scope(headers=[(b"host", b"[::1]:8000"), (b"origin", origin)]))
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"]).get(b"access-control-allow-origin") == acao


@pytest.mark.anyio
async def test_zone_id_preflight_refused() -> None:
    layer = CORSMiddleware(RecordingApp(), CORSSettings(allow_origins=["http://[::1]:3000"]))
    async with asgi_client(layer) as client:
        ok = await client.options(
            "/", headers={"origin": "http://[::1]:3000", "access-control-request-method": "GET"}
        )
        zoned = await client.options(
            "/",
            headers={"origin": "http://[::1%25x]:3000", "access-control-request-method": "GET"},
        )
    assert ok.status_code == 204
    assert zoned.status_code == 403
    assert "access-control-allow-origin" not in zoned.headers
