"""Attack audit: IPv6 zone identifiers in `Host`, `X-Forwarded-Host` and `allowed_hosts`.

`ipaddress.IPv6Address` accepts any text after a `%` (a zone identifier), CR, LF
and non-ASCII included. Before the fix, the shared host parser kept it: a `Host`
such as `[::1%\\xff]` passed `allowed_hosts=*`, and building its HTTPS redirect (or
the app's rewritten `Host` line) raised `UnicodeEncodeError`; `[::1%eth0]` was
redirected to `https://[::1%eth0]/`. Each attack sits beside the bracketed literal
that must still pass.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.events import EventEmitter
from bastion.hosts import HostPort, parse_host_header
from bastion.transport import (
    REASON_HOST_MALFORMED,
    REASON_INSECURE_HTTP,
    TransportMiddleware,
    TransportSettings,
)
from tests.conftest import RecordingSink
from tests.transport.support import RecordingApp, make_scope, run

PROXY = ("10.0.0.1", 4000)

PARSE_CASES = [
    pytest.param("[::1]", HostPort("[::1]", None), id="host-ipv6-literal-ok"),
    pytest.param("[fe80::1]:8443", HostPort("[fe80::1]", 8443), id="host-ipv6-port-ok"),
    pytest.param("[fe80::1%eth0]", None, id="host-ipv6-zone-id"),
    pytest.param("[fe80::1%25eth0]:8443", None, id="host-ipv6-zone-id-rfc6874"),
    pytest.param("[::1%\xff]", None, id="host-ipv6-zone-id-non-ascii"),
    pytest.param("[::1%\r\nset-cookie: a=b]", None, id="host-ipv6-zone-id-crlf"),
]


@pytest.mark.parametrize(("value", "expected"), PARSE_CASES)
def test_parse_host_header(value: str, expected: HostPort | None) -> None:
    assert parse_host_header(value) == expected


# (raw Host, expected status, expected Location or None, expected reason)
REDIRECT_CASES = [
    pytest.param(b"[::1]", 308, b"https://[::1]/", REASON_INSECURE_HTTP, id="redirect-ipv6-ok"),
    pytest.param(b"[::1%eth0]", 400, None, REASON_HOST_MALFORMED, id="redirect-zone-id"),
    pytest.param(b"[::1%\xff]", 400, None, REASON_HOST_MALFORMED, id="redirect-zone-id-crash"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("host", "status", "location", "reason"), REDIRECT_CASES)
async def test_zone_id_never_reaches_redirect(
    events: EventEmitter,
    sink: RecordingSink,
    host: bytes,
    status: int,
    location: bytes | None,
    reason: str,
) -> None:
    # `*` is the weakest host setting: nothing but the parser stands in the way.
    layer = TransportMiddleware(
        RecordingApp(), TransportSettings(allowed_hosts=["*"]), events=events
    )
    sent = await run(layer, make_scope(headers=[(b"host", host)], scheme="http"))
    assert sent[0]["status"] == status
    assert dict(sent[0]["headers"]).get(b"location") == location
    assert sink.reasons() == [reason]


XFHOST_CASES = [
    pytest.param(b"[::1]:8443", 200, b"[::1]:8443", id="xfhost-ipv6-ok"),
    pytest.param(b"[::1%\xff]", 400, None, id="xfhost-zone-id-crash"),
    pytest.param(b"[::1%eth0]", 400, None, id="xfhost-zone-id"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("forwarded_host", "status", "app_host"), XFHOST_CASES)
async def test_zone_id_never_reaches_app_host(
    events: EventEmitter, forwarded_host: bytes, status: int, app_host: bytes | None
) -> None:
    app = RecordingApp()
    settings = TransportSettings(
        allowed_hosts=["*"],
        trusted_proxies=["10.0.0.0/8"],
        proxy_headers=["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"],
    )
    headers = [(b"host", b"backend"), (b"x-forwarded-host", forwarded_host)]
    sent = await run(
        TransportMiddleware(app, settings, events=events),
        make_scope(headers=headers, client=PROXY),
    )
    assert sent[0]["status"] == status
    if app_host is None:
        assert app.scopes == []
    else:
        assert [v for n, v in app.scopes[0]["headers"] if n == b"host"] == [app_host]


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [
        pytest.param("[fe80::1]", True, id="allowed-hosts-ipv6-ok"),
        pytest.param("[fe80::1%eth0]", False, id="allowed-hosts-zone-id"),
        pytest.param("[::1%\r\nx]", False, id="allowed-hosts-zone-id-crlf"),
    ],
)
def test_allowed_hosts_zone_id(pattern: str, valid: bool) -> None:
    if valid:
        assert TransportSettings(allowed_hosts=[pattern]).allowed_hosts == (pattern,)
    else:
        with pytest.raises(ValidationError, match="allowed_hosts"):
            TransportSettings(allowed_hosts=[pattern])
