"""The HTTPS redirect URL and the HSTS value."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from bastion.transport import (
    TransportSettings,
    build_hsts_value,
    build_https_url,
    hsts_header_value,
)

# --- HSTS -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({}, "max-age=31536000; includeSubDomains", id="default"),
        pytest.param({"hsts_preload": True}, "max-age=31536000; includeSubDomains; preload",
                     id="preload"),
        pytest.param({"monitor_only": True}, "", id="monitor-only-pins-nothing"),
        pytest.param({"enabled": False}, "", id="disabled"),
    ],
)  # fmt: skip
def test_hsts_header_value(values: dict[str, Any], expected: str) -> None:
    assert hsts_header_value(TransportSettings(**values)) == expected


@pytest.mark.parametrize(
    ("max_age", "subdomains", "preload", "expected"),
    [
        (31536000, True, False, b"max-age=31536000; includeSubDomains"),
        (600, False, False, b"max-age=600"),
        (0, False, False, b"max-age=0"),
        (63072000, True, True, b"max-age=63072000; includeSubDomains; preload"),
    ],
)
def test_hsts_value(max_age: int, subdomains: bool, preload: bool, expected: bytes) -> None:
    assert build_hsts_value(max_age, include_subdomains=subdomains, preload=preload) == expected


# --- the HTTPS URL of a redirect --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_path", "path", "query", "port", "expected"),
    [
        pytest.param(b"/a/b", "/a/b", b"x=1&y=%2F", 443, b"https://bank.example/a/b?x=1&y=%2F",
                     id="path-and-query"),
        pytest.param(b"//evil.com/x", "//evil.com/x", b"", 443, b"https://bank.example//evil.com/x",
                     id="protocol-relative-path-keeps-authority"),
        pytest.param(b"/\\evil.com", "/\\evil.com", b"", 443, b"https://bank.example/%5Cevil.com",
                     id="backslash"),
        pytest.param(b"/a%0d%0aSet-Cookie:x", "/a\r\nSet-Cookie:x", b"", 443,
                     b"https://bank.example/a%0d%0aSet-Cookie:x", id="encoded-crlf-kept-encoded"),
        pytest.param(b"/a\r\nb c", "/a\r\nb c", b"q=a b#c", 443,
                     b"https://bank.example/a%0D%0Ab%20c?q=a%20b%23c", id="raw-controls-encoded"),
        pytest.param(b"/p?q=1", "/p", b"q=1", 443, b"https://bank.example/p?q=1",
                     id="query-in-raw-path-cut"),
        pytest.param(b"/", "/", b"", 8443, b"https://bank.example:8443/", id="port"),
        pytest.param(b"*", "*", b"", 443, b"https://bank.example/", id="asterisk-form"),
        pytest.param(b"http://evil.com/x", "http://evil.com/x", b"", 443,
                     b"https://bank.example/", id="absolute-form"),
        pytest.param(None, "/caf\xe9 50%", b"", 443, b"https://bank.example/caf%C3%A9%2050%25",
                     id="decoded-path-encoded"),
        pytest.param(b"/\xff", "/\xff", b"\xfe", 443, b"https://bank.example/%FF?%FE",
                     id="non-ascii-bytes"),
    ],
)  # fmt: skip
def test_build_https_url(
    raw_path: bytes | None, path: str, query: bytes, port: int, expected: bytes
) -> None:
    url = build_https_url("bank.example", port, raw_path=raw_path, path=path, query_string=query)
    assert url == expected
    assert urlsplit(url.decode()).hostname == "bank.example"


def test_build_https_url_ipv6_host() -> None:
    url = build_https_url("[::1]", 8443, raw_path=b"/", path="/")
    assert url == b"https://[::1]:8443/"
