"""Attack audit: CR/LF through an IPv6 zone identifier in `permissions_policy`.

Permissions-Policy allowlists name origins, parsed by `bastion.hosts.parse_origin`.
Before the fix an origin such as `https://[::1%\\r\\nset-cookie: a=b]` validated
(`ipaddress` takes any text after `%`) and its CR/LF went into the header value
sent on every response. The bracketed literal without a zone must still work.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.headers import HeadersSettings, build_response_headers


@pytest.mark.parametrize(
    ("origin", "valid"),
    [
        pytest.param("https://[::1]", True, id="permissions-ipv6-origin-ok"),
        pytest.param("https://[::1%\r\nset-cookie: a=b]", False, id="permissions-zone-id-crlf"),
        pytest.param("https://[fe80::1%eth0]", False, id="permissions-zone-id"),
    ],
)
def test_permissions_policy_zone_id(origin: str, valid: bool) -> None:
    if not valid:
        with pytest.raises(ValidationError, match="permissions_policy"):
            HeadersSettings(permissions_policy={"geolocation": [origin]})
        return
    settings = HeadersSettings(permissions_policy={"geolocation": [origin]})
    values = [v for n, v in build_response_headers(settings) if n == "permissions-policy"]
    assert len(values) == 1
    assert f'geolocation=("{origin}")' in values[0]
