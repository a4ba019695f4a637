"""Finding the token field in url-encoded and multipart bodies, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.csrf.forms import parse_content_type, token_from_form, token_from_multipart
from tests.csrf.harness import multipart

FIELD = "csrf_token"
URLENCODED = b"application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        pytest.param(b"csrf_token=abc", URLENCODED, "abc", id="urlencoded"),
        pytest.param(b"a=1&csrf_token=a%2Db&c=3", URLENCODED, "a-b", id="urlencoded-escaped"),
        pytest.param(b"csrf_token=first&csrf_token=second", URLENCODED, "first", id="first-wins"),
        pytest.param(b"csrf_token=", URLENCODED, "", id="urlencoded-empty"),
        pytest.param(b"csrf_tokenx=abc", URLENCODED, None, id="urlencoded-other-field"),
        pytest.param(
            b"memo=caf%C3%A9&csrf_token=abc", URLENCODED, "abc", id="urlencoded-escaped-utf8"
        ),
        pytest.param(
            "memo=café&csrf_token=abc".encode(), URLENCODED, "abc", id="urlencoded-raw-utf8"
        ),
        pytest.param(b"memo=\xff\xfe&csrf_token=abc", URLENCODED, "abc", id="urlencoded-bad-utf8"),
        pytest.param(
            b"csrf_token=abc",
            b"Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            "abc",
            id="urlencoded-type-case",
        ),
        pytest.param(b"csrf_token=abc", b"text/plain", None, id="text-plain-not-read"),
        pytest.param(b'{"csrf_token": "abc"}', b"application/json", None, id="json-not-read"),
        pytest.param(b"csrf_token=abc", None, None, id="no-content-type"),
        pytest.param(b"csrf_token=abc", b"multipart/form-data", None, id="multipart-no-boundary"),
    ],
)
def test_token_from_form(body: bytes, content_type: bytes | None, expected: str | None) -> None:
    assert token_from_form(body, content_type, FIELD, 1000) == expected


def test_urlencoded_field_bound() -> None:
    body = b"a=1&" * 10 + b"csrf_token=abc"
    assert token_from_form(body, URLENCODED, FIELD, 11) == "abc"
    assert token_from_form(body, URLENCODED, FIELD, 10) is None


def test_multipart_like_a_browser() -> None:
    body, content_type = multipart([("amount", b"100"), (FIELD, b"tok-en_1"), ("memo", b"x")])
    assert token_from_form(body, content_type.encode(), FIELD, 1000) == "tok-en_1"


def test_multipart_quoted_boundary() -> None:
    body, _ = multipart([(FIELD, b"abc")], boundary="a'b(c)+_,-./:=?")
    content_type = b'multipart/form-data; boundary="a\'b(c)+_,-./:=?"'
    assert token_from_form(body, content_type, FIELD, 1000) == "abc"


def part(headers: bytes, value: bytes, boundary: bytes = b"XyZ") -> bytes:
    return b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + value + b"\r\n"


CLOSE = b"--XyZ--\r\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            part(b'Content-Disposition: form-data; name="csrf_token"', b"abc") + CLOSE,
            "abc",
            id="quoted-name",
        ),
        pytest.param(
            part(b"content-disposition: FORM-DATA; name=csrf_token", b"abc") + CLOSE,
            "abc",
            id="token-name-and-case",
        ),
        pytest.param(
            b"preamble\r\n"
            + part(b'Content-Disposition: form-data; name="csrf_token"', b"abc")
            + CLOSE,
            "abc",
            id="preamble",
        ),
        pytest.param(
            part(
                b'Content-Type: text/plain\r\nContent-Disposition: form-data; name="csrf_token"',
                b"abc",
            )
            + CLOSE,
            "abc",
            id="second-header",
        ),
        pytest.param(
            part(b'Content-Disposition: form-data; name="csrf_token"; filename="t.txt"', b"abc")
            + CLOSE,
            None,
            id="file-part-ignored",
        ),
        pytest.param(
            part(b'Content-Disposition: form-data; name="csrf_token"; name="x"', b"abc") + CLOSE,
            None,
            id="ambiguous-name",
        ),
        pytest.param(
            part(b'Content-Disposition: attachment; name="csrf_token"', b"abc") + CLOSE,
            None,
            id="not-form-data",
        ),
        pytest.param(
            part(b'Content-Disposition: form-data; name="csrf_token"', b"abc"),
            None,
            id="unterminated-part",
        ),
        pytest.param(
            part(b'Content-Disposition: form-data; name="csrf_token"', b"\xff") + CLOSE,
            None,
            id="non-ascii-value",
        ),
        pytest.param(
            CLOSE + part(b'Content-Disposition: form-data; name="csrf_token"', b"abc") + CLOSE,
            None,
            id="after-close",
        ),
        pytest.param(
            b'x--XyZ\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\nabc\r\n' + CLOSE,
            None,
            id="delimiter-mid-line",
        ),
        pytest.param(
            part(b"", b"anonymous")
            + part(b'Content-Disposition: form-data; name="csrf_token"', b"abc")
            + CLOSE,
            "abc",
            id="part-without-headers",
        ),
    ],
)
def test_multipart_scan(body: bytes, expected: str | None) -> None:
    assert token_from_multipart(body, b"XyZ", FIELD, 1000) == expected


def test_multipart_part_bound() -> None:
    filler = b"".join(part(b'Content-Disposition: form-data; name="f"', b"1") for _ in range(5))
    body = filler + part(b'Content-Disposition: form-data; name="csrf_token"', b"abc") + CLOSE
    assert token_from_multipart(body, b"XyZ", FIELD, 6) == "abc"
    assert token_from_multipart(body, b"XyZ", FIELD, 5) is None


def test_invalid_boundary() -> None:
    assert token_from_multipart(b"--a\r\n", b"bad\x00boundary", FIELD, 10) is None
    assert token_from_multipart(b"--a\r\n", b"x" * 71, FIELD, 10) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, (b"", {}), id="none"),
        pytest.param(b"Text/Plain", (b"text/plain", {}), id="case"),
        pytest.param(
            b"multipart/form-data; boundary=abc",
            (b"multipart/form-data", {b"boundary": b"abc"}),
            id="boundary",
        ),
        pytest.param(
            b'multipart/form-data; BOUNDARY="a\\"b"',
            (b"multipart/form-data", {b"boundary": b'a"b'}),
            id="quoted-escape",
        ),
        pytest.param(b"text/plain; junk", (b"text/plain", {}), id="junk-parameters"),
    ],
)
def test_parse_content_type(
    value: bytes | None, expected: tuple[bytes, dict[bytes, bytes]]
) -> None:
    assert parse_content_type(value) == expected


@given(st.binary(max_size=2000), st.binary(min_size=1, max_size=70))
def test_multipart_scan_never_raises(body: bytes, boundary: bytes) -> None:
    result = token_from_multipart(body, boundary, FIELD, 50)
    assert result is None or result.isascii()


@given(st.binary(max_size=2000), st.binary(max_size=100))
def test_form_scan_never_raises(body: bytes, content_type: bytes) -> None:
    token_from_form(body, content_type, FIELD, 50)
