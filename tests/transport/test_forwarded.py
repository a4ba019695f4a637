"""The RFC 7239 `Forwarded` grammar (how its elements are believed: test_proxies)."""

from __future__ import annotations

import pytest

from bastion.transport import parse_forwarded


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param('for="_gazonk"', ({"for": "_gazonk"},), id="rfc-obfuscated"),
        pytest.param('For="[2001:db8:cafe::17]:4711"', ({"for": "[2001:db8:cafe::17]:4711"},),
                     id="rfc-ipv6-name-case"),
        pytest.param("for=192.0.2.60;proto=http;by=203.0.113.43",
                     ({"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"},),
                     id="rfc-pairs"),
        pytest.param("for=192.0.2.43, for=198.51.100.17",
                     ({"for": "192.0.2.43"}, {"for": "198.51.100.17"}), id="rfc-list"),
        pytest.param('for=a; proto=https ,, for="b\\"c"',
                     ({"for": "a", "proto": "https"}, {"for": 'b"c'}), id="lenient-ows-empty"),
        pytest.param("", (), id="empty"),
        pytest.param("for", None, id="no-equals"),
        pytest.param("for=", None, id="no-value"),
        pytest.param("for = a", None, id="space-around-equals"),
        pytest.param("for=a b", None, id="two-tokens"),
        pytest.param('for="a', None, id="unterminated-quote"),
        pytest.param("for=[::1]", None, id="unquoted-ipv6"),
        pytest.param("for=a;for=b", None, id="duplicate-parameter"),
        pytest.param('for="a"x', None, id="junk-after-quote"),
    ],
)  # fmt: skip
def test_parse_forwarded(value: str, expected: tuple[dict[str, str], ...] | None) -> None:
    assert parse_forwarded(value) == expected
