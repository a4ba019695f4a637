"""`merge_for_response`'s short path (a list whose every name is kept as it is,
remembered in `HeaderSet.plain`, or is `content-type`) against the merge it
replaced (`_reference_merge_for_response`, copied here unchanged from be819b2: one
pass, one lookup per line), on a table of header lists for every kind of header
set, with and without a request context, as a list, a tuple and an iterator, with
the memo cold and warm."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.context import RequestContext, get_context
from bastion.headers import policy
from bastion.headers.policy import (
    _MANAGED,
    _PLAIN_MEMO_ENTRIES,
    _PLAIN_MEMO_MAX_BYTES,
    _STRIP,
    HeaderSet,
    HeadersSettings,
    build_header_set,
    merge_for_response,
)
from bastion.types import RawHeaders, Scope


def _reference_merge_for_response(
    header_set: HeaderSet,
    nonce: str,
    context: RequestContext | None,
    app_headers: Iterable[Any],
) -> RawHeaders:
    """`merge_for_response` as it was before its short path (be819b2), unchanged."""
    resource_types = header_set.resource_types
    if resource_types is not None and header_set.enforce:
        # Enforcing drops the application's lines of the chosen set's names, so the
        # set is chosen first, in a pass of its own.
        if not isinstance(app_headers, list | tuple):
            app_headers = list(app_headers)  # read twice
        content_types = [value for name, value in app_headers if name.lower() == b"content-type"]
        if len(content_types) == 1 and resource_types.match(content_types[0]):
            header_set = header_set.resource or header_set
        resource_types = None
    result: RawHeaders = []
    present: set[bytes] | None = None
    kinds, enforce = header_set.kinds, header_set.enforce
    content_type: bytes | None = None
    content_types_seen = 0
    for name, value in app_headers:
        # Names come lower-case (as ASGI servers send them): looked up as they are,
        # and lower-cased (a copy) only when they are not.
        if name in kinds:
            kind: int | None = kinds[name]
        elif name.islower():
            kind = None
        else:
            kind = kinds.get(name.lower())
        if kind is not None:
            if kind == _STRIP:
                continue
            if kind == _MANAGED:
                if enforce:
                    continue
                if present is None:
                    present = {name.lower()}
                else:
                    present.add(name.lower())
            else:  # _CONTENT_TYPE
                content_type = value
                content_types_seen += 1
        result.append((name, value))
    # Two Content-Type lines are read by browsers in ways that differ (Fetch,
    # "extract a MIME type"): only a single, listed type gets the resource set. The
    # resource set's names are among the document set's, so `present` holds for both.
    if content_types_seen == 1 and content_type is not None and resource_types is not None:
        matched = resource_types.memo.get(content_type)  # `match`'s memo, inlined
        if matched is None:
            matched = resource_types.match(content_type)
        if matched:
            header_set = header_set.resource or header_set
    if present is None:
        lines = header_set.lines
        if lines is not None:
            result.extend(lines)
            return result
        result.extend(header_set.static)
    else:
        result.extend(item for item in header_set.static if item[0] not in present)
    csp = header_set.csp
    if csp is not None and (present is None or header_set.csp_name not in present):
        if context is not None and len(csp.parts) > 1:
            nonce = context.csp_nonce
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
    "enforce-no-resource-types": _set(enforce=True, resource_types=[]),
    "enforce-no-nonce": _set(enforce=True, csp_directives={"script-src": "'self'"}),
    "no-resource-types": _set(resource_types=[]),
    "no-csp": _set(insecure_disable_csp=True),
    "no-nonce": _set(csp_directives={"script-src": "'self'", "style-src": "'self'"}),
    "report-only": _set(csp_report_only=True),
    "no-report-path": _set(csp_report_path=None),
    "extra-content-type": _set(extra_headers={"content-type": "text/plain"}),
    "extra-content-type-enforced": _set(extra_headers={"content-type": "text/plain"}, enforce=True),
    "extra-vary": _set(extra_headers={"vary": "Accept"}),
    "strip-managed": _set(strip_headers=["server", "x-frame-options"]),
    "strip-content-type": _set(strip_headers=["content-type"]),
    "strip-vary": _set(strip_headers=["vary", "server"]),
}

_BENCH_GET = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"5"),
    (b"ratelimit-policy", b'"1000000-per-1s";q=1000000;w=1'),
    (b"ratelimit", b'"1000000-per-1s";r=999999;t=1'),
]
_BENCH_POST = [*_BENCH_GET[:2], (b"vary", b"Origin, Sec-Fetch-Site"), *_BENCH_GET[2:]]

HEADER_LISTS = [
    pytest.param([], id="headers-fast-none"),
    pytest.param(_BENCH_GET, id="headers-fast-bench-get"),
    pytest.param(_BENCH_POST, id="headers-fast-bench-post"),
    pytest.param([(b"content-type", b"text/html; charset=utf-8")], id="headers-fast-html"),
    pytest.param([(b"content-type", b"application/json")], id="headers-fast-json"),
    pytest.param([(b"content-type", b"Application/JSON ; x=1")], id="headers-fast-json-odd-value"),
    pytest.param([(b"content-type", b"font/woff2"), (b"etag", b'"1"')], id="headers-fast-font"),
    pytest.param([(b"content-type", b"image/svg+xml")], id="headers-fast-svg-document"),
    pytest.param([(b"content-length", b"0")], id="headers-fast-no-content-type"),
    pytest.param([(b"Content-Type", b"text/plain")], id="headers-fast-upper-content-type"),
    pytest.param(
        [(b"content-type", b"text/plain"), (b"X-Custom", b"1")], id="headers-fast-upper-other-name"
    ),
    pytest.param(
        [(b"content-type", b"text/plain"), (b"content-type", b"text/plain")],
        id="headers-fast-repeated-content-type",
    ),
    pytest.param(
        [(b"content-type", b"text/plain"), (b"Content-Type", b"text/html")],
        id="headers-fast-repeated-content-type-cases",
    ),
    pytest.param(
        [(b"content-type", b"application/json"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
        id="headers-fast-repeated-other-name",
    ),
    pytest.param(
        [(b"content-type", b"text/plain"), (b"x-frame-options", b"SAMEORIGIN")],
        id="headers-fast-managed-on-resource",
    ),
    pytest.param(
        [(b"content-type", b"text/html"), (b"X-Frame-Options", b"SAMEORIGIN")],
        id="headers-fast-managed-upper-on-document",
    ),
    pytest.param(
        [(b"content-security-policy", b"default-src *"), (b"content-type", b"text/html")],
        id="headers-fast-app-csp",
    ),
    pytest.param(
        [(b"content-type", b"application/json"), (b"referrer-policy", b"no-referrer")],
        id="headers-fast-document-only-name-on-resource",
    ),
    pytest.param(
        [(b"content-security-policy-report-only", b"default-src 'self'")],
        id="headers-fast-app-report-only-csp",
    ),
    pytest.param([(b"reporting-endpoints", b'a="/r"')], id="headers-fast-app-reporting"),
    pytest.param(
        [(b"server", b"gunicorn"), (b"content-type", b"text/plain"), (b"x-powered-by", b"PHP")],
        id="headers-fast-stripped",
    ),
    pytest.param(
        [(b"SERVER", b"gunicorn"), (b"content-type", b"text/plain")],
        id="headers-fast-stripped-upper",
    ),
    pytest.param(
        [(b"content-type", b"text/plain"), (b"vary", b"Accept"), (b"Vary", b"Cookie")],
        id="headers-fast-vary-lines",
    ),
    pytest.param(
        [(b"content-type", b"text/plain"), (b"access-control-allow-origin", b"*")],
        id="headers-fast-cors-line",
    ),
    pytest.param([(b"1", b"x"), (b"content-type", b"text/plain")], id="headers-fast-uncased-name"),
    pytest.param([(b"1", b"x")], id="headers-fast-only-uncased-name"),
    pytest.param([[b"content-type", b"text/plain"], [b"a", b"b"]], id="headers-fast-list-pairs"),
    pytest.param([("content-type", "text/plain"), ("x", "y")], id="headers-fast-text-names"),
]

_CONTAINERS: dict[str, Callable[[list[Any]], Iterable[Any]]] = {
    "list": list,
    "tuple": tuple,
    "iterator": lambda lines: iter(list(lines)),
}


def _context(nonce: str) -> RequestContext:
    scope: Scope = {"type": "http", "client": ("127.0.0.1", 1), "scheme": "https"}
    context = get_context(scope)
    context.nonce_source = lambda: nonce
    return context


@pytest.mark.parametrize("container", _CONTAINERS)
@pytest.mark.parametrize("set_name", SETS)
@pytest.mark.parametrize("app_headers", HEADER_LISTS)
def test_merge_for_response_matches_the_merge_it_replaced(
    set_name: str, app_headers: list[Any], container: str
) -> None:
    header_set = SETS[set_name]
    header_set.plain.clear()
    make = _CONTAINERS[container]
    for nonce, context in (("N0NCE", None), ("", _context("DRAWN"))) * 2:  # cold, then warm
        expected = _reference_merge_for_response(header_set, nonce, context, make(app_headers))
        result = merge_for_response(header_set, nonce, context, make(app_headers))
        assert result == expected
        assert [line.__class__ for line in result] == [line.__class__ for line in expected]


@pytest.mark.parametrize(
    "app_headers",
    [
        pytest.param([(b"content-type", b"text/plain", b"extra")], id="headers-fast-three-items"),
        pytest.param([(b"content-type",)], id="headers-fast-one-item"),
        pytest.param([([b"unhashable"], b"x")], id="headers-fast-unhashable-name"),
        pytest.param([None], id="headers-fast-not-a-pair"),
    ],
)
def test_malformed_lines_fail_as_before(app_headers: list[Any]) -> None:
    header_set = SETS["default"]
    with pytest.raises((TypeError, ValueError)) as expected:
        _reference_merge_for_response(header_set, "", None, app_headers)
    with pytest.raises(expected.type):
        merge_for_response(header_set, "", None, app_headers)


@pytest.mark.parametrize(
    "app_headers",
    [
        pytest.param(_BENCH_GET, id="headers-short-path-bench-get"),
        pytest.param(_BENCH_POST, id="headers-short-path-bench-post"),
        pytest.param([(b"content-type", b"text/html")], id="headers-short-path-document"),
        pytest.param(
            [(b"content-type", b"text/plain"), (b"content-type", b"text/html")],
            id="headers-short-path-two-content-types",
        ),
        pytest.param([[b"content-type", b"text/plain"]], id="headers-short-path-list-pair"),
    ],
)
def test_the_usual_answer_takes_the_short_path(
    app_headers: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The general pass is never called for a list of lower-case names the set
    keeps as they are, and `content-type` (the short path's reason to exist), and
    the result holds, with the memo cold or warm."""
    header_set = SETS["default"]
    header_set.plain.clear()
    expected = _reference_merge_for_response(header_set, "", _context("N"), app_headers)

    def general(*_: Any) -> RawHeaders:
        raise AssertionError("the general pass ran")

    monkeypatch.setattr(policy, "_merge_lines", general)
    assert merge_for_response(header_set, "", _context("N"), app_headers) == expected
    assert merge_for_response(header_set, "", _context("N"), app_headers) == expected


def test_the_memo_holds_only_names_kept_as_they_are() -> None:
    """headers-plain-memo-verdicts: after every table answer went through every set,
    each set's memo holds names the general pass keeps as they are, and no other."""
    for header_set in SETS.values():
        header_set.plain.clear()
        for param in HEADER_LISTS:
            lines = list(cast("list[Any]", param.values[0]))
            merge_for_response(header_set, "", None, lines)
        for name in header_set.plain:
            assert name not in header_set.kinds
            assert name.islower()


def test_plain_memo_bounded_spray() -> None:
    """headers-plain-memo-bounded-spray: an answer's names may echo a client's; a
    spray of distinct names leaves the memo bounded in entries and name length,
    and every answer merged as the general pass merges it."""
    header_set = _set()
    header_set.plain.clear()
    for index in range(3 * _PLAIN_MEMO_ENTRIES):
        lines = [
            (b"content-type", b"text/html"),
            (b"x-echo-%d" % index, b"1"),
            (b"x-" + b"long" * 20 + b"-%d" % index, b"2"),
            (b"x-frame-options", b"SAMEORIGIN") if index % 3 == 0 else (b"x-ok", b"3"),
        ]
        context = _context("S")
        expected = _reference_merge_for_response(header_set, "", context, lines)
        assert merge_for_response(header_set, "", context, lines) == expected
        assert len(header_set.plain) <= _PLAIN_MEMO_ENTRIES
    assert header_set.plain
    assert all(len(name) <= _PLAIN_MEMO_MAX_BYTES for name in header_set.plain)


_NAMES = st.sampled_from(
    [
        b"content-type",
        b"Content-Type",
        b"CONTENT-TYPE",
        b"content-length",
        b"server",
        b"Server",
        b"x-powered-by",
        b"content-security-policy",
        b"Content-Security-Policy-Report-Only",
        b"x-frame-options",
        b"referrer-policy",
        b"reporting-endpoints",
        b"x-content-type-options",
        b"cross-origin-resource-policy",
        b"vary",
        b"Vary",
        b"access-control-allow-origin",
        b"set-cookie",
        b"x-custom",
        b"1",
    ]
)
_VALUES = st.sampled_from(
    [b"text/plain", b"text/html", b"application/json; charset=utf-8", b"font/woff2", b"x", b""]
)


@given(
    st.sampled_from(sorted(SETS)),
    st.lists(st.tuples(_NAMES, _VALUES), max_size=7),
    st.booleans(),
)
def test_merge_for_response_matches_on_generated_headers(
    set_name: str, app_headers: list[tuple[bytes, bytes]], with_context: bool
) -> None:
    header_set = SETS[set_name]
    context = _context("GEN") if with_context else None
    assert merge_for_response(header_set, "N", context, app_headers) == (
        _reference_merge_for_response(header_set, "N", context, app_headers)
    )
