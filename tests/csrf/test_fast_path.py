"""The shortcuts of the hot path decide exactly as the full decision does.

`check_common_request` answers safe methods and browsers' same-origin posts from the
header index; every request it answers must get the very verdict `check_request`
gives on the facts, and every request it leaves (None) goes to `check_request`
anyway. The named attack table of `test_attacks` runs through both, under each
policy, with the extra spellings that sit on the shortcut's edges. The Vary edit
must give what `append_vary` gives.
"""

from __future__ import annotations

from typing import Any

import pytest

from bastion.csrf import CSRFPolicy, CSRFSettings, RequestFacts, check_request, compile_policy
from bastion.csrf.core import ALLOW, ALLOW_VARIES, check_common_request
from bastion.csrf.middleware import VARY_NAMES, _vary_on_sources, append_vary
from bastion.stages import Flow
from tests.csrf.test_attacks import HEADER_CASES, SETTINGS

POLICIES = {
    "attack-settings": compile_policy(SETTINGS),
    "defaults": compile_policy(CSRFSettings()),
    "same-site-allowed": compile_policy(CSRFSettings(insecure_allow_same_site=True)),
    "bearer-exemption-off": compile_policy(CSRFSettings(exempt_bearer_without_cookies=False)),
    "exempt-submit": compile_policy(CSRFSettings(insecure_exempt_paths=("/submit",))),
}

SAME = (b"sec-fetch-site", b"same-origin")
COOKIE = (b"cookie", b"session=abc")
BEARER = (b"authorization", b"Bearer abc")
# (method, path with query, header lines, whether the shortcut must answer under
# the default policy): the edges of `check_common_request`.
EDGE_CASES = [
    pytest.param("POST", "/submit", [SAME, COOKIE], True, id="fast-same-origin-post"),
    pytest.param("POST", "/submit", [(b"sec-fetch-site", b"none")], True, id="fast-site-none"),
    pytest.param(
        "POST", "/submit", [(b"Sec-Fetch-Site", b"same-origin")], True, id="fast-name-case"
    ),
    pytest.param(
        "POST",
        "/submit",
        [SAME, (b"origin", b"https://evil.example")],
        True,
        id="fast-metadata-wins-over-origin",
    ),
    pytest.param(
        "DELETE", "/submit?_method=GET", [SAME], True, id="fast-override-never-makes-safe"
    ),
    pytest.param("GET", "/submit", [], True, id="fast-get"),
    pytest.param("HEAD", "/submit?a=1", [(b"sec-fetch-site", b"cross-site")], True, id="fast-head"),
    pytest.param("POST", "/submit", [SAME, SAME], False, id="slow-site-twice"),
    pytest.param(
        "POST",
        "/submit",
        [SAME, (b"sec-fetch-site", b"cross-site")],
        False,
        id="slow-site-two-values",
    ),
    pytest.param("POST", "/submit", [(b"sec-fetch-site", b"Same-Origin")], False, id="slow-case"),
    pytest.param("POST", "/submit", [(b"sec-fetch-site", b"same-origin ")], False, id="slow-space"),
    pytest.param("POST", "/submit", [(b"sec-fetch-site", b"")], False, id="slow-empty-site"),
    pytest.param("POST", "/submit", [(b"sec-fetch-site", b"cross-site")], False, id="slow-cross"),
    pytest.param("POST", "/submit", [SAME, BEARER], False, id="slow-bearer-no-cookie"),
    pytest.param("POST", "/submit", [SAME, BEARER, COOKIE], False, id="slow-bearer-cookie"),
    pytest.param("post", "/submit", [(b"origin", b"null")], False, id="slow-lower-case-post"),
    pytest.param("POST", "/submit", [], False, id="slow-token"),
    pytest.param("GET", "/submit?_method=DELETE", [], False, id="slow-query-override"),
    pytest.param("GET", "/submit?_METHOD=put", [], False, id="slow-query-override-case"),
    pytest.param("GET", "/submit?%5Fmethod=put", [], False, id="slow-query-escaped"),
    pytest.param("GET", "/submit?x=%41", [], False, id="slow-query-any-escape"),
    pytest.param(
        "GET",
        "/submit",
        [(b"X-HTTP-Method-Override", b"DELETE"), (b"sec-fetch-site", b"cross-site")],
        False,
        id="slow-override-header",
    ),
    pytest.param(
        "GET", "/submit", [(b"x-http-method", b"GET")], False, id="slow-override-header-safe"
    ),
]


def _scope(method: str, target: str, lines: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "method": method,
        "scheme": "https",
        "path": path,
        "query_string": query.encode(),
        "headers": [(b"host", b"bank.example"), *lines],
        "client": ("127.0.0.1", 1),
    }


def _both(scope: dict[str, Any], policy: CSRFPolicy) -> tuple[Any, Any]:
    """The shortcut's verdict (or None) and the full decision's, on one request."""

    async def nothing(*_: Any) -> Any:
        raise AssertionError("not called")

    flow = Flow(scope, nothing, nothing)
    fast = check_common_request(
        scope["method"], scope["path"], scope["query_string"], flow.headers, policy
    )
    full = check_request(RequestFacts.from_index(scope, flow.headers), policy)
    assert full == check_request(RequestFacts.from_scope(scope), policy)
    return fast, full


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize(("method", "target", "headers", "reason"), HEADER_CASES)
def test_attack_table_parity(
    policy_name: str, method: str, target: str, headers: dict[str, str], reason: str | None
) -> None:
    lines = [(name.encode(), value.encode()) for name, value in headers.items()]
    fast, full = _both(_scope(method, target, [COOKIE, *lines]), POLICIES[policy_name])
    if fast is not None:
        assert fast == full
        assert fast.allowed
    if policy_name == "attack-settings" and reason is not None:
        assert fast is None  # every refusal of the attack table is the full decision's


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize(("method", "target", "lines", "decided"), EDGE_CASES)
def test_edge_parity(
    policy_name: str,
    method: str,
    target: str,
    lines: list[tuple[bytes, bytes]],
    decided: bool,
) -> None:
    fast, full = _both(_scope(method, target, lines), POLICIES[policy_name])
    if fast is not None:
        assert fast == full
    if policy_name == "defaults":
        assert (fast is not None) is decided  # the shortcut takes what it should, no more
        if decided:
            assert fast in (ALLOW, ALLOW_VARIES)


def test_exempt_path_is_left_to_the_full_decision() -> None:
    # Exempt: allowed without Vary, which only the full decision says.
    fast, full = _both(_scope("POST", "/submit", [SAME]), POLICIES["exempt-submit"])
    assert fast is None
    assert full == ALLOW


@pytest.mark.parametrize(
    "app_headers",
    [
        pytest.param([], id="none"),
        pytest.param([(b"content-type", b"text/plain")], id="no-vary"),
        pytest.param([(b"vary", b"Accept-Encoding")], id="other-vary"),
        pytest.param([(b"Vary", b"origin")], id="partly-there"),
        pytest.param([(b"VARY", b"Origin, Sec-Fetch-Site")], id="all-there"),
        pytest.param([(b"vary", b"*")], id="star"),
    ],
)
def test_vary_edit_matches_append_vary(app_headers: list[tuple[bytes, bytes]]) -> None:
    before = list(app_headers)
    edited = _vary_on_sources(app_headers)
    assert edited == append_vary(app_headers, VARY_NAMES)
    assert edited is not app_headers  # a new list: the flow may extend it in place
    assert app_headers == before
