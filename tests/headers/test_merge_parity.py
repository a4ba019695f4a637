"""`merge_headers` with its precomputed tables (`HeaderSet.kinds`, `HeaderSet.lines`)
against the merge it replaced (`_reference_merge`, kept here unchanged), on named
cases and generated header lists, for every kind of header set."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.context import get_context
from bastion.headers.policy import (
    _RESOURCE_MEMO_ENTRIES,
    HeaderSet,
    HeadersSettings,
    build_header_set,
    merge_headers,
)
from bastion.types import RawHeaders, Scope


def _reference_merge(
    app_headers: Iterable[Any], header_set: HeaderSet, nonce: str = ""
) -> RawHeaders:
    """The merge before `kinds` and `lines`: each name tested against each set."""
    resource_types = header_set.resource_types
    if resource_types is not None and header_set.enforce:
        app_headers = list(app_headers)
        content_types = [value for name, value in app_headers if name.lower() == b"content-type"]
        if len(content_types) == 1 and resource_types.match(content_types[0]):
            header_set = header_set.resource or header_set
        resource_types = None
    result: RawHeaders = []
    present: set[bytes] | None = None
    strip, managed = header_set.strip, header_set.managed
    content_type: bytes | None = None
    content_types_seen = 0
    for name, value in app_headers:
        lowered = name.lower()
        if lowered in strip:
            continue
        if lowered in managed:
            if header_set.enforce:
                continue
            if present is None:
                present = {lowered}
            else:
                present.add(lowered)
        elif lowered == b"content-type":
            content_type = value
            content_types_seen += 1
        result.append((name, value))
    if (
        content_types_seen == 1
        and content_type is not None
        and resource_types is not None
        and resource_types.match(content_type)
    ):
        header_set = header_set.resource or header_set
    if present is None:
        result.extend(header_set.static)
    else:
        result.extend(item for item in header_set.static if item[0] not in present)
    csp = header_set.csp
    if csp is not None and (present is None or header_set.csp_name not in present):
        result.append((header_set.csp_name, csp.render(nonce)))
    result.extend(header_set.appended)
    return result


def _set(**options: Any) -> HeaderSet:
    settings = HeadersSettings.model_validate(options)
    return build_header_set(
        settings,
        report_path=settings.csp_report_path,
        strip=settings.strip_headers,
        resource_types=settings.resource_types,
    )


SETS = {
    "default": _set(),
    "enforce": _set(enforce=True),
    "no-resource-types": _set(resource_types=[]),
    "no-csp": _set(insecure_disable_csp=True),
    "no-nonce": _set(csp_directives={"script-src": "'self'", "style-src": "'self'"}),
    "report-only": _set(csp_report_only=True),
    "no-report-path": _set(csp_report_path=None),
    "extra-content-type": _set(extra_headers={"content-type": "text/plain"}),
    "extra-content-type-enforced": _set(extra_headers={"content-type": "text/plain"}, enforce=True),
    "strip-managed": _set(strip_headers=["server", "x-frame-options"]),
    "strip-content-type": _set(strip_headers=["content-type"]),
}

APP_HEADERS = [
    pytest.param([], id="headers-none"),
    pytest.param([(b"content-type", b"text/plain; charset=utf-8")], id="headers-plain-text"),
    pytest.param([(b"content-type", b"text/html; charset=utf-8")], id="headers-html"),
    pytest.param([(b"Content-Type", b"Application/JSON")], id="headers-json-mixed-case"),
    pytest.param(
        [(b"content-type", b"text/plain"), (b"content-type", b"text/html")],
        id="headers-two-content-types",
    ),
    pytest.param([(b"Server", b"gunicorn/1"), (b"X-Powered-By", b"PHP/5")], id="headers-strip"),
    pytest.param(
        [(b"content-security-policy", b"default-src *"), (b"content-type", b"text/plain")],
        id="headers-app-csp-resource",
    ),
    pytest.param(
        [(b"Content-Security-Policy", b"default-src *"), (b"X-Frame-Options", b"ALLOWALL")],
        id="headers-app-csp-and-xfo",
    ),
    pytest.param([(b"referrer-policy", b"unsafe-url")], id="headers-app-referrer"),
    pytest.param(
        [(b"content-type", b"application/json"), (b"referrer-policy", b"no-referrer")],
        id="headers-app-document-only-on-resource",
    ),
    pytest.param([(b"reporting-endpoints", b'default="/r"')], id="headers-app-reporting"),
    pytest.param(
        [(b"content-security-policy-report-only", b"default-src 'self'")],
        id="headers-app-report-only-csp",
    ),
    pytest.param([[b"server", b"x"], [b"a", b"b"]], id="headers-list-pairs"),
]


@pytest.mark.parametrize("set_name", SETS)
@pytest.mark.parametrize("app_headers", APP_HEADERS)
def test_merge_matches_the_reference(set_name: str, app_headers: list[Any]) -> None:
    header_set = SETS[set_name]
    expected = _reference_merge(list(app_headers), header_set, "N0NCE")
    assert merge_headers(list(app_headers), header_set, "N0NCE") == expected
    assert merge_headers(iter(list(app_headers)), header_set, "N0NCE") == expected
    assert merge_headers(tuple(app_headers), header_set, "N0NCE") == expected


def test_merge_with_context_draws_the_nonce_only_for_a_page() -> None:
    header_set = SETS["default"]
    scope: Scope = {"type": "http", "client": ("127.0.0.1", 1), "scheme": "https"}
    context = get_context(scope)
    context.nonce_source = lambda: "DRAWN"
    resource = merge_headers([(b"content-type", b"text/plain")], header_set, context=context)
    assert resource == _reference_merge([(b"content-type", b"text/plain")], header_set, "")
    page = merge_headers([(b"content-type", b"text/html")], header_set, context=context)
    assert page == _reference_merge([(b"content-type", b"text/html")], header_set, "DRAWN")


_NAMES = st.sampled_from(
    [
        b"content-type",
        b"Content-Type",
        b"server",
        b"SERVER",
        b"x-powered-by",
        b"content-security-policy",
        b"Content-Security-Policy-Report-Only",
        b"x-frame-options",
        b"referrer-policy",
        b"reporting-endpoints",
        b"x-content-type-options",
        b"cross-origin-resource-policy",
        b"vary",
        b"x-custom",
    ]
)
_VALUES = st.sampled_from(
    [b"text/plain", b"text/html", b"application/json; charset=utf-8", b"font/woff2", b"x", b""]
)


@given(
    st.sampled_from(sorted(SETS)),
    st.lists(st.tuples(_NAMES, _VALUES), max_size=6),
)
def test_merge_matches_the_reference_on_generated_headers(
    set_name: str, app_headers: list[tuple[bytes, bytes]]
) -> None:
    header_set = SETS[set_name]
    assert merge_headers(app_headers, header_set, "N") == _reference_merge(
        app_headers, header_set, "N"
    )


def test_merge_memo_bounded_spray() -> None:
    """headers-merge-memo-bounded-spray: `merge_headers` reads the Content-Type memo
    directly; sprayed types (an echoed client value) still leave it bounded, and each
    decides as the unmemoised matcher does."""
    header_set = _set()
    types = header_set.resource_types
    assert types is not None
    for index in range(2000):
        for value in (b"application/json; x=%d" % index, b"text/html; x=%d" % index):
            app = [(b"content-type", value)]
            assert merge_headers(app, header_set) == _reference_merge(app, header_set)
    long_value = b"text/plain; " + b"x" * 10_000
    assert merge_headers([(b"content-type", long_value)], header_set) == _reference_merge(
        [(b"content-type", long_value)], header_set
    )
    assert 0 < len(types.memo) <= _RESOURCE_MEMO_ENTRIES
    assert all(len(value) <= 128 for value in types.memo)


def test_precomputed_lines_are_what_the_set_adds() -> None:
    for header_set in SETS.values():
        for each in (header_set, header_set.resource):
            if each is None:
                continue
            if each.csp is not None and each.csp.has_nonce:
                assert each.lines is None
                continue
            csp = () if each.csp is None else ((each.csp_name, each.csp.render("")),)
            assert each.lines == (*each.static, *csp, *each.appended)
