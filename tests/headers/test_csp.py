"""The pure CSP builder: defaults, overrides, validation and the nonce template."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.headers import HeadersSettings
from bastion.headers.csp import (
    DEFAULT_DIRECTIVES,
    NONCE_BYTES,
    NONCE_SOURCE,
    NONCE_VALUE,
    compile_policy,
    frame_options_for,
    new_nonce,
    parse_sources,
    resolve_directives,
    serialize_policy,
)

DEFAULT_POLICY = (
    "default-src 'self'; "
    "script-src 'nonce-N0NCE' 'strict-dynamic' 'unsafe-inline' https:; "
    "style-src 'self' 'nonce-N0NCE'; "
    "img-src 'self' data:; "
    "object-src 'none'; "
    "base-uri 'none'; "
    "frame-ancestors 'none'; "
    "form-action 'self'; "
    "report-uri /.bastion/csp-report; "
    "report-to bastion-csp"
)


def _policy(settings: HeadersSettings, nonce: str = "N0NCE") -> str:
    directives = resolve_directives(
        settings.csp_directives,
        settings.csp_extra_sources,
        report_uri=settings.csp_report_path,
        report_to="bastion-csp" if settings.csp_report_path else None,
    )
    return serialize_policy(directives, nonce)


def test_default_policy_exact() -> None:
    assert _policy(HeadersSettings()) == DEFAULT_POLICY


def test_default_policy_without_report_endpoint() -> None:
    policy = _policy(HeadersSettings(csp_report_path=None))
    assert "report-uri" not in policy
    assert "report-to" not in policy
    assert policy.endswith("form-action 'self'")


OVERRIDES = [
    pytest.param(
        {"csp_directives": {"img-src": "'self' https://cdn.example"}},
        "img-src 'self' https://cdn.example;",
        id="replace-in-place",
    ),
    pytest.param(
        {"csp_directives": {"IMG-SRC": ["'self'", "https://cdn.example"]}},
        "img-src 'self' https://cdn.example;",
        id="list-form-and-case-folded-name",
    ),
    pytest.param(
        {"csp_directives": {"upgrade-insecure-requests": ""}},
        "form-action 'self'; upgrade-insecure-requests; report-uri",
        id="valueless-directive-added-before-reporting",
    ),
    pytest.param(
        {"csp_directives": {"img-src": None}},
        "object-src 'none'",
        id="remove-directive",
    ),
    pytest.param(
        {"csp_extra_sources": {"img-src": ["https://cdn.example"]}},
        "img-src 'self' data: https://cdn.example;",
        id="append-source",
    ),
    pytest.param(
        {"csp_extra_sources": {"connect-src": "https://api.example"}},
        "connect-src 'self' https://api.example;",
        id="append-to-absent-starts-from-default-src",
    ),
    pytest.param(
        {"csp_extra_sources": {"script-src-elem": "https://cdn.example"}},
        "script-src-elem 'nonce-N0NCE' 'strict-dynamic' 'unsafe-inline' https: "
        "https://cdn.example;",
        id="append-to-absent-starts-from-script-src",
    ),
    pytest.param(
        {"csp_extra_sources": {"frame-ancestors": "https://partner.example"}},
        "frame-ancestors https://partner.example;",
        id="append-drops-none",
    ),
    pytest.param(
        {"csp_directives": {"report-uri": "https://collector.example/csp", "report-to": None}},
        "report-uri https://collector.example/csp",
        id="user-report-uri-wins",
    ),
    pytest.param(
        {"csp_directives": {"trusted-types": "default", "require-trusted-types-for": "'script'"}},
        "trusted-types default; require-trusted-types-for 'script';",
        id="trusted-types",
    ),
    pytest.param(
        {"csp_directives": {"script-src": "'self' 'sha256-abc+/def=' 'unsafe-eval'"}},
        "script-src 'self' 'sha256-abc+/def=' 'unsafe-eval';",
        id="hash-and-keywords",
    ),
]


@pytest.mark.parametrize(("options", "expected_fragment"), OVERRIDES)
def test_overrides(options: Mapping[str, object], expected_fragment: str) -> None:
    assert expected_fragment in _policy(HeadersSettings.model_validate(options))


def test_removed_directive_is_gone() -> None:
    policy = _policy(HeadersSettings(csp_directives={"img-src": None}))
    assert "img-src" not in policy


INVALID = [
    pytest.param("script-src", "'self'; script-src *", id="csp-directive-injection-semicolon"),
    pytest.param("script-src", "'self', script-src *", id="csp-directive-injection-comma"),
    pytest.param("img-src", "'self'\r\nX-Evil: 1", id="csp-value-newline"),
    pytest.param("img-src", "'self'\nX-Evil: 1", id="csp-value-line-feed"),
    pytest.param("img-src", "'self'\x00", id="csp-value-nul"),
    pytest.param("img-src", "'self'\thttps:", id="csp-value-tab"),
    pytest.param("img-src", "https://ex\u00e4mple.example", id="csp-value-non-ascii"),
    pytest.param("img-src", ["'self'", "a b"], id="csp-list-source-with-space"),
    pytest.param("img-src", ["'self';x"], id="csp-list-source-with-semicolon"),
    pytest.param("scirpt-src", "'self'", id="csp-directive-name-misspelt"),
    pytest.param("script-src; x", "'self'", id="csp-directive-name-injection"),
    pytest.param("script-src", "self", id="csp-keyword-unquoted"),
    pytest.param("script-src", "'unsafe-inlin'", id="csp-keyword-unknown"),
    pytest.param("script-src", "'nonce-abc123'", id="csp-fixed-nonce"),
    pytest.param("object-src", "'none' https:", id="csp-none-with-sources"),
    pytest.param("upgrade-insecure-requests", "https:", id="csp-valueless-with-value"),
]


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_invalid_directive_rejected(name: str, value: object) -> None:
    with pytest.raises(ValidationError, match="csp_directives") as caught:
        HeadersSettings(csp_directives={name: value})
    # Our message names the rule, never the submitted value (it may carry CR/LF);
    # `Settings` reports errors without pydantic's echo of the input.
    messages = " ".join(error["msg"] for error in caught.value.errors(include_input=False))
    assert "CSP directive" in messages
    assert "X-Evil" not in messages


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_invalid_extra_source_rejected(name: str, value: object) -> None:
    with pytest.raises(ValidationError, match="csp_extra_sources"):
        HeadersSettings(csp_extra_sources={name: value})


def test_extra_sources_need_a_value() -> None:
    with pytest.raises(ValidationError, match="csp_extra_sources"):
        HeadersSettings(csp_extra_sources={"img-src": None})


def test_nonce_placeholder_accepted_in_other_directives() -> None:
    assert parse_sources("script-src-elem", NONCE_SOURCE) == (NONCE_SOURCE,)
    policy = _policy(HeadersSettings(csp_directives={"script-src-elem": NONCE_SOURCE}))
    assert "script-src-elem 'nonce-N0NCE'" in policy


def test_new_nonce_is_fresh_long_and_matches_the_grammar() -> None:
    nonces = {new_nonce() for _ in range(50)}
    assert len(nonces) == 50
    for nonce in nonces:
        assert NONCE_VALUE.match(nonce)
        assert len(base64.urlsafe_b64decode(nonce)) == NONCE_BYTES
    assert NONCE_BYTES * 8 >= 128


FRAME_OPTIONS = [
    pytest.param({"frame-ancestors": ("'none'",)}, "DENY", id="none-is-deny"),
    pytest.param({"frame-ancestors": ("'self'",)}, "SAMEORIGIN", id="self-is-sameorigin"),
    pytest.param({"frame-ancestors": ("'self'", "https://p.example")}, None, id="allowlist"),
    pytest.param({}, None, id="absent"),
]


@pytest.mark.parametrize(("directives", "expected"), FRAME_OPTIONS)
def test_frame_options_for(directives: dict[str, tuple[str, ...]], expected: str | None) -> None:
    assert frame_options_for(directives) == expected


def test_template_splits_around_each_nonce() -> None:
    template = compile_policy(DEFAULT_DIRECTIVES)
    assert len(template.parts) == 3
    assert template.has_nonce
    assert not compile_policy({"default-src": ("'self'",)}).has_nonce


_source = st.one_of(
    st.sampled_from(
        [NONCE_SOURCE, "'self'", "'none'", "https:", "data:", "'strict-dynamic'", "*.example"]
    ),
    st.from_regex(r"[a-z0-9.:/-]{1,20}", fullmatch=True),
)
_directives = st.dictionaries(
    st.sampled_from(["default-src", "script-src", "style-src", "img-src", "report-to"]),
    st.lists(_source, max_size=5).map(tuple),
    max_size=5,
)


@given(directives=_directives, nonce=st.from_regex(NONCE_VALUE, fullmatch=True))
def test_template_renders_exactly_the_builders_output(
    directives: dict[str, tuple[str, ...]], nonce: str
) -> None:
    rendered = compile_policy(directives).render(nonce)
    assert rendered == serialize_policy(directives, nonce).encode("ascii")


@given(nonce=st.from_regex(NONCE_VALUE, fullmatch=True))
def test_default_template_renders_exactly_the_builders_output(nonce: str) -> None:
    expected = serialize_policy(DEFAULT_DIRECTIVES, nonce)
    assert compile_policy(DEFAULT_DIRECTIVES).render(nonce).decode() == expected
    assert expected.count(f"'nonce-{nonce}'") == 2
