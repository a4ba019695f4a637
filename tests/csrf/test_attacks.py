"""Named CSRF attacks, each beside the legitimate request that must still work.

Every case runs through `SessionMiddleware(CSRFMiddleware(app))` with the real session
layer and memory store, against the raw ASGI, Starlette and FastAPI apps of
`tests.csrf.apps`, served as `https://bank.example`. The victim has a session (the
cookie a browser would attach), unless the case is about having none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from bastion.csrf import (
    REASON_CROSS_SITE,
    REASON_METHOD_OVERRIDE,
    REASON_NULL_ORIGIN,
    REASON_ORIGIN_MISMATCH,
    REASON_SAME_SITE,
    REASON_TOKEN_EXPIRED,
    REASON_TOKEN_INVALID,
    REASON_TOKEN_MISSING,
    REASON_TOKEN_WRONG_SESSION,
    CSRFSettings,
)
from bastion.sessions import SessionSettings
from tests.csrf.apps import FRAMEWORKS
from tests.csrf.harness import (
    CSRF_KEY,
    LONG_SESSIONS,
    NEW_CSRF_KEY,
    Stack,
    build,
    multipart,
    send_raw,
)

pytestmark = pytest.mark.anyio

SETTINGS = CSRFSettings(
    trusted_origins=("https://partner.example",), insecure_exempt_paths=("/hook/",)
)
VARY = "Origin, Sec-Fetch-Site"
CROSS = {"sec-fetch-site": "cross-site"}
FORM = "application/x-www-form-urlencoded"
MULTIPART_BODY, MULTIPART_TYPE = multipart([("to", b"mallory"), ("amount", b"1000")])

# The bodies a cross-site page can send without a CORS preflight (text/plain,
# url-encoded, multipart; `fetch` with no-cors may also omit the type), and JSON,
# which a page can send as text/plain or with a lax server that ignores the type.
BODIES = {
    "text-plain": (b'{"to": "mallory", "amount": 1000}', "text/plain"),
    "Text-Plain": (b'{"to": "mallory", "amount": 1000}', "Text/Plain"),
    "urlencoded-params": (b"to=mallory&amount=1000", FORM),
    "multipart": (MULTIPART_BODY, MULTIPART_TYPE),
    "json": (b'{"to": "mallory", "amount": 1000}', "application/json"),
    "no-content-type": (b"to=mallory&amount=1000", None),
}


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def assert_refused(stack: Stack, response_status: int, text: str, reason: str) -> None:
    assert response_status == 403
    assert "Forbidden" in text
    assert "mallory" not in text  # the generic body, not the app's echo
    assert stack.csrf_reasons() == [reason]


# (method, path, headers, expected reason; None: must pass and reach the app)
HEADER_CASES = [
    pytest.param(
        "POST", "/transfer", {"sec-fetch-site": "same-origin"}, None, id="csrf-same-origin-ok"
    ),
    pytest.param(
        "POST", "/transfer", {"sec-fetch-site": "none"}, None, id="csrf-sec-fetch-none-ok"
    ),
    pytest.param(
        "POST", "/transfer", {"origin": "https://bank.example"}, None, id="csrf-origin-matches-ok"
    ),
    pytest.param(
        "POST",
        "/transfer",
        {"sec-fetch-site": "cross-site", "origin": "https://partner.example"},
        None,
        id="csrf-trusted-origin-ok",
    ),
    pytest.param(
        "POST",
        "/transfer",
        {"origin": "https://partner.example"},
        None,
        id="csrf-trusted-no-meta-ok",
    ),
    pytest.param(
        "POST",
        "/transfer",
        {"sec-fetch-site": "cross-site", "origin": "https://evil.example"},
        REASON_CROSS_SITE,
        id="csrf-cross-site",
    ),
    pytest.param(
        "POST", "/transfer", {"origin": "null"}, REASON_NULL_ORIGIN, id="csrf-null-origin"
    ),
    pytest.param(
        "POST",
        "/transfer",
        {"sec-fetch-site": "same-site", "origin": "https://evil.bank.example"},
        REASON_SAME_SITE,
        id="csrf-sibling-subdomain",
    ),
    pytest.param(
        "POST",
        "/transfer",
        {"origin": "https://evil.bank.example"},
        REASON_ORIGIN_MISMATCH,
        id="csrf-sibling-subdomain-origin-only",
    ),
    pytest.param(
        "POST",
        "/transfer",
        {"origin": "http://bank.example"},
        REASON_ORIGIN_MISMATCH,
        id="csrf-scheme-downgrade",
    ),
    pytest.param(
        "POST",
        "/transfer",
        {"origin": "https://bank.example:8443"},
        REASON_ORIGIN_MISMATCH,
        id="csrf-port-mismatch",
    ),
    pytest.param(
        "POST",
        "/transfer",
        {"origin": "https://evil.example"},
        REASON_ORIGIN_MISMATCH,
        id="csrf-origin-mismatch",
    ),
    pytest.param(
        "PUT", "/transfer", {"sec-fetch-site": "cross-site"}, REASON_CROSS_SITE, id="csrf-put"
    ),
    pytest.param(
        "DELETE", "/transfer", {"sec-fetch-site": "cross-site"}, REASON_CROSS_SITE, id="csrf-delete"
    ),
    pytest.param(
        "GET", "/transfer", {"sec-fetch-site": "cross-site"}, None, id="csrf-cross-site-get-ok"
    ),
    pytest.param(
        "GET",
        "/transfer",
        {"sec-fetch-site": "cross-site", "x-http-method-override": "DELETE"},
        REASON_METHOD_OVERRIDE,
        id="csrf-method-override-header",
    ),
    pytest.param(
        "GET",
        "/transfer",
        {"sec-fetch-site": "cross-site", "x-http-method": "PUT"},
        REASON_METHOD_OVERRIDE,
        id="csrf-method-override-x-http-method",
    ),
    pytest.param(
        "GET",
        "/transfer",
        {"sec-fetch-site": "cross-site", "x-method-override": "PATCH"},
        REASON_METHOD_OVERRIDE,
        id="csrf-method-override-x-method-override",
    ),
    pytest.param(
        "GET",
        "/transfer?_method=DELETE",
        {"sec-fetch-site": "cross-site"},
        REASON_METHOD_OVERRIDE,
        id="csrf-method-override-query",
    ),
    pytest.param(
        "GET",
        "/transfer?%5Fmethod=delete",
        {"sec-fetch-site": "cross-site"},
        REASON_METHOD_OVERRIDE,
        id="csrf-method-override-query-encoded",
    ),
    pytest.param(
        "POST",
        "/transfer",
        {"sec-fetch-site": "cross-site", "x-http-method-override": "GET"},
        REASON_CROSS_SITE,
        id="csrf-method-override-to-safe",
    ),
    pytest.param(
        "GET",
        "/transfer?_method=DELETE",
        {"sec-fetch-site": "same-origin"},
        None,
        id="csrf-method-override-same-origin-ok",
    ),
    pytest.param(
        "GET",
        "/transfer?" + "a=1&" * 1000 + "_method=DELETE",
        {"sec-fetch-site": "cross-site"},
        REASON_METHOD_OVERRIDE,
        id="csrf-method-override-query-past-scan-cap",
    ),
    pytest.param(
        "GET",
        "/transfer?" + "a=1&" * 1000 + "_method=DELETE",
        {"sec-fetch-site": "same-origin"},
        None,
        id="csrf-method-override-query-past-scan-cap-same-origin-ok",
    ),
    pytest.param(
        "POST", "/hook/", {"sec-fetch-site": "cross-site"}, None, id="csrf-exempt-path-ok"
    ),
    pytest.param(
        "POST",
        "/hook",
        {"sec-fetch-site": "cross-site"},
        REASON_CROSS_SITE,
        id="csrf-exempt-no-trailing-slash",
    ),
    pytest.param(
        "POST",
        "/hook/sub",
        {"sec-fetch-site": "cross-site"},
        REASON_CROSS_SITE,
        id="csrf-exempt-not-a-prefix",
    ),
    pytest.param(
        "POST", "/transfer", {}, REASON_TOKEN_MISSING, id="csrf-missing-metadata-missing-token"
    ),
]


@pytest.mark.parametrize(("method", "path", "headers", "reason"), HEADER_CASES)
async def test_header_cases(
    framework: str, method: str, path: str, headers: dict[str, str], reason: str | None
) -> None:
    stack = build(framework, SETTINGS)
    _, session_id = await stack.token_and_session()
    body = b"to=mallory&amount=1000"
    response = await stack.request(
        method,
        path,
        session_id=session_id,
        headers={**headers, "content-type": FORM},
        content=body,
    )
    if reason is None:
        assert response.status_code == 200
        assert stack.csrf_reasons() == []
        if method != "GET":
            assert response.content == body  # the app received the body unchanged
    else:
        assert_refused(stack, response.status_code, response.text, reason)
        assert response.headers["vary"] == VARY


@pytest.mark.parametrize("kind", list(BODIES))
@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param(CROSS, REASON_CROSS_SITE, id="csrf-cross-site"),
        pytest.param({"origin": "https://evil.example"}, REASON_ORIGIN_MISMATCH, id="csrf-origin"),
        pytest.param({}, REASON_TOKEN_MISSING, id="csrf-no-headers"),
    ],
)
async def test_content_type_never_matters(
    framework: str, headers: dict[str, str], reason: str, kind: str
) -> None:
    """csrf-cross-site-text-plain, -Text-Plain, -urlencoded-params, -multipart, -json,
    -no-content-type (and the same bodies without metadata): all refused alike."""
    stack = build(framework, SETTINGS)
    _, session_id = await stack.token_and_session()
    body, content_type = BODIES[kind]
    all_headers = dict(headers)
    if content_type is not None:
        all_headers["content-type"] = content_type
    response = await stack.request(
        "POST", "/transfer", session_id=session_id, headers=all_headers, content=body
    )
    assert_refused(stack, response.status_code, response.text, reason)


@pytest.mark.parametrize(
    ("path", "raw_path", "allowed"),
    [
        pytest.param("/hook/", b"/hook/", True, id="csrf-exempt-ok"),
        pytest.param("//hook/", b"//hook/", False, id="csrf-exempt-double-slash"),
        pytest.param("/HOOK/", b"/HOOK/", False, id="csrf-exempt-case"),
        pytest.param("/hook/../admin", b"/hook/../admin", False, id="csrf-exempt-dot-segment"),
        pytest.param("/hook/./", b"/hook/./", False, id="csrf-exempt-dot"),
        pytest.param(
            "/hook/../admin", b"/hook%2f..%2fadmin", False, id="csrf-exempt-encoded-slash"
        ),
        pytest.param(
            "/hook/%2e%2e/admin", b"/hook/%252e%252e/admin", False, id="csrf-exempt-double-encoded"
        ),
        pytest.param("/hook/\x00", b"/hook/%00", False, id="csrf-exempt-nul"),
    ],
)
async def test_exempt_paths_match_exactly(
    framework: str, path: str, raw_path: bytes, allowed: bool
) -> None:
    """Raw scopes: httpx would normalise these paths before sending them."""
    stack = build(framework, SETTINGS)
    result = await send_raw(
        stack.app,
        path=path,
        raw_path=raw_path,
        headers=[(b"sec-fetch-site", b"cross-site"), (b"content-type", b"text/plain")],
        body=b"to=mallory",
    )
    if allowed:
        assert result.status == 200
        assert result.body == b"to=mallory"
        assert stack.csrf_reasons() == []
    else:
        assert_refused(stack, result.status, result.body.decode(), REASON_CROSS_SITE)


# --- Flows: tokens, bearer requests and logins ----------------------------------
#
# Each scenario plays a short story against a fresh stack and returns the stack, the
# final response and, for a legitimate request, the body the app must have received
# unchanged (None for a refusal). The table pairs each with its expected reason.

Outcome = tuple[Stack, httpx.Response, bytes | None]


async def token_header_ok(framework: str) -> Outcome:
    stack = build(framework, SETTINGS)
    token, session_id = await stack.token_and_session()
    body = b'{"amount": 1}'
    response = await stack.request(
        "POST",
        "/transfer",
        session_id=session_id,
        headers={"x-csrf-token": token, "content-type": "application/json"},
        content=body,
    )
    return stack, response, body


async def token_form_ok(framework: str) -> Outcome:
    stack = build(framework, SETTINGS)
    token, session_id = await stack.token_and_session()
    body = f"to=bob&amount=10&csrf_token={token}&memo=caf%C3%A9".encode()
    response = await stack.request(
        "POST", "/transfer", session_id=session_id, headers={"content-type": FORM}, content=body
    )
    return stack, response, body


async def multipart_token_ok(framework: str) -> Outcome:
    stack = build(framework, SETTINGS)
    token, session_id = await stack.token_and_session()
    body, content_type = multipart(
        [("to", b"bob"), ("csrf_token", token.encode()), ("note", b"\x00\xff binary")]
    )
    response = await stack.request(
        "POST",
        "/transfer",
        session_id=session_id,
        headers={"content-type": content_type},
        content=body,
    )
    return stack, response, body


async def token_other_session(framework: str) -> Outcome:
    """The attacker's own, valid token, sent with the victim's cookie."""
    stack = build(framework, SETTINGS)
    attacker_token, _ = await stack.token_and_session()
    _, victim_session = await stack.token_and_session()
    response = await stack.request(
        "POST",
        "/transfer",
        session_id=victim_session,
        headers={"content-type": FORM},
        content=f"to=mallory&csrf_token={attacker_token}".encode(),
    )
    return stack, response, None


async def token_tampered(framework: str) -> Outcome:
    stack = build(framework, SETTINGS)
    token, session_id = await stack.token_and_session()
    middle = len(token) // 2
    tampered = token[:middle] + ("B" if token[middle] != "B" else "C") + token[middle + 1 :]
    response = await stack.request(
        "POST", "/transfer", session_id=session_id, headers={"x-csrf-token": tampered}
    )
    return stack, response, None


async def token_expired(framework: str) -> Outcome:
    settings = CSRFSettings(token_max_age_seconds=600)
    stack = build(framework, settings, session_settings=LONG_SESSIONS)
    token, session_id = await stack.token_and_session()
    stack.clock.now += 600
    fresh = await stack.request(
        "POST", "/transfer", session_id=session_id, headers={"x-csrf-token": token}
    )
    assert fresh.status_code == 200  # still valid at exactly its maximum age
    stack.clock.now += 1
    response = await stack.request(
        "POST", "/transfer", session_id=session_id, headers={"x-csrf-token": token}
    )
    return stack, response, None


async def token_after_rotation(framework: str) -> Outcome:
    stack = build(framework, SETTINGS)
    token, first_id = await stack.token_and_session()
    rotated = await stack.request(
        "POST", "/rotate", session_id=first_id, headers={"x-csrf-token": token}
    )
    assert rotated.status_code == 200
    second_id = stack.session_cookie(rotated)
    assert second_id is not None
    assert second_id != first_id
    # The page served after rotation carries a token that works...
    new_token, _ = await stack.token_and_session(second_id)
    ok = await stack.request(
        "POST", "/transfer", session_id=second_id, headers={"x-csrf-token": new_token}
    )
    assert ok.status_code == 200
    # ...and the one from before rotation does not.
    response = await stack.request(
        "POST", "/transfer", session_id=second_id, headers={"x-csrf-token": token}
    )
    return stack, response, None


async def _token_under_keys(framework: str, keys: tuple[str, ...]) -> Outcome:
    """A token signed with CSRF_KEY, checked by a worker that has `keys`."""
    old = build(framework, SETTINGS, csrf_keys=(CSRF_KEY,))
    token, session_id = await old.token_and_session()
    new = build(framework, SETTINGS, csrf_keys=keys, store=old.store, clock=old.clock)
    response = await new.request(
        "POST", "/transfer", session_id=session_id, headers={"x-csrf-token": token}
    )
    return new, response, b""


async def token_key_rotation_ok(framework: str) -> Outcome:
    return await _token_under_keys(framework, (NEW_CSRF_KEY, CSRF_KEY))


async def token_key_rotated_out(framework: str) -> Outcome:
    stack, response, _ = await _token_under_keys(framework, (NEW_CSRF_KEY,))
    return stack, response, None


async def token_cookie_tossed_sibling(framework: str) -> Outcome:
    """A sibling subdomain plants its own session cookie beside the victim's (possible
    over plain HTTP, without the `__Host-` prefix) and forges a form with the token
    of the planted session. The session layer trusts neither of two same-named
    cookies, so the request has no session and the token cannot match."""
    plain = SessionSettings(insecure_cookie_over_http=True)
    stack = build(framework, SETTINGS, session_settings=plain, base_url="http://bank.example")
    attacker_token, attacker_session = await stack.token_and_session()
    _, victim_session = await stack.token_and_session()
    # The attacker's session alone is only the attacker posting to themself.
    own = await stack.request(
        "POST",
        "/transfer",
        session_id=attacker_session,
        headers={"content-type": FORM},
        content=f"to=mallory&csrf_token={attacker_token}".encode(),
    )
    assert own.status_code == 200
    name = stack.cookie_name
    response = await stack.request(
        "POST",
        "/transfer",
        headers={
            "cookie": f"{name}={victim_session}; {name}={attacker_session}",
            "content-type": FORM,
        },
        content=f"to=mallory&csrf_token={attacker_token}".encode(),
    )
    return stack, response, None


async def token_without_session_cookie(framework: str) -> Outcome:
    """A token lifted from a page is useless without the session it is bound to."""
    stack = build(framework, SETTINGS)
    token, _ = await stack.token_and_session()
    response = await stack.request("POST", "/transfer", headers={"x-csrf-token": token})
    assert stack.session_cookie(response) is None  # the refusal created no session
    return stack, response, None


async def tokens_shared_by_workers_ok(framework: str) -> Outcome:
    """Two workers (two stacks, one store, one key list) accept each other's tokens."""
    first = build(framework, SETTINGS)
    second = build(framework, SETTINGS, store=first.store, clock=first.clock)
    token, session_id = await first.token_and_session()
    response = await second.request(
        "POST", "/transfer", session_id=session_id, headers={"x-csrf-token": token}
    )
    return second, response, b""


async def bearer_no_cookie_ok(framework: str) -> Outcome:
    stack = build(framework, SETTINGS)
    response = await stack.request(
        "POST",
        "/transfer",
        headers={**CROSS, "authorization": "Bearer api-token-123", "content-type": FORM},
        content=b"amount=1",
    )
    return stack, response, b"amount=1"


async def bearer_with_cookie(framework: str) -> Outcome:
    """A forger cannot add a bearer header to a cookie-carrying request to pass."""
    stack = build(framework, SETTINGS)
    _, session_id = await stack.token_and_session()
    response = await stack.request(
        "POST",
        "/transfer",
        session_id=session_id,
        headers={**CROSS, "authorization": "Bearer junk", "content-type": FORM},
        content=b"to=mallory",
    )
    return stack, response, None


async def basic_auth_not_exempt(framework: str) -> Outcome:
    """Browsers cache Basic credentials and send them by themselves: ambient."""
    stack = build(framework, SETTINGS)
    response = await stack.request(
        "POST", "/transfer", headers={**CROSS, "authorization": "Basic dTpw"}, content=b"x"
    )
    return stack, response, None


async def login_same_origin_ok(framework: str) -> Outcome:
    stack = build(framework, SETTINGS)
    response = await stack.request(
        "POST", "/login?u=alice", headers={"sec-fetch-site": "same-origin"}, content=b""
    )
    assert stack.session_cookie(response) is not None
    return stack, response, b"logged in"


async def login_with_token_ok(framework: str) -> Outcome:
    """An old browser logs in with the token its login page carried; the id rotates."""
    stack = build(framework, SETTINGS)
    token, session_id = await stack.token_and_session()
    response = await stack.request(
        "POST",
        "/login?u=alice",
        session_id=session_id,
        headers={"content-type": FORM},
        content=f"user=alice&csrf_token={token}".encode(),
    )
    assert stack.session_cookie(response) not in (None, session_id)
    return stack, response, b"logged in"


FLOWS = [
    pytest.param(token_header_ok, None, id="csrf-token-header-ok"),
    pytest.param(token_form_ok, None, id="csrf-token-form-ok"),
    pytest.param(multipart_token_ok, None, id="csrf-multipart-token-ok"),
    pytest.param(token_other_session, REASON_TOKEN_WRONG_SESSION, id="csrf-token-other-session"),
    pytest.param(token_tampered, REASON_TOKEN_INVALID, id="csrf-token-tampered"),
    pytest.param(token_expired, REASON_TOKEN_EXPIRED, id="csrf-token-expired"),
    pytest.param(token_after_rotation, REASON_TOKEN_WRONG_SESSION, id="csrf-token-after-rotation"),
    pytest.param(token_key_rotation_ok, None, id="csrf-token-key-rotation-ok"),
    pytest.param(token_key_rotated_out, REASON_TOKEN_INVALID, id="csrf-token-key-rotated-out"),
    pytest.param(
        token_cookie_tossed_sibling,
        REASON_TOKEN_WRONG_SESSION,
        id="csrf-token-cookie-tossed-sibling",
    ),
    pytest.param(
        token_without_session_cookie,
        REASON_TOKEN_WRONG_SESSION,
        id="csrf-token-without-session-cookie",
    ),
    pytest.param(tokens_shared_by_workers_ok, None, id="csrf-token-shared-by-workers-ok"),
    pytest.param(bearer_no_cookie_ok, None, id="csrf-bearer-no-cookie-ok"),
    pytest.param(bearer_with_cookie, REASON_CROSS_SITE, id="csrf-bearer-with-cookie"),
    pytest.param(basic_auth_not_exempt, REASON_CROSS_SITE, id="csrf-basic-auth-not-exempt"),
    pytest.param(login_same_origin_ok, None, id="csrf-login-same-origin-ok"),
    pytest.param(login_with_token_ok, None, id="csrf-login-with-token-ok"),
]


@pytest.mark.parametrize(("scenario", "reason"), FLOWS)
async def test_flows(
    framework: str,
    scenario: Callable[[str], Awaitable[Outcome]],
    reason: str | None,
) -> None:
    stack, response, received = await scenario(framework)
    if reason is None:
        assert response.status_code == 200
        assert stack.csrf_reasons() == []
        if received:
            assert response.content == received  # the app got the body byte for byte
    else:
        assert received is None
        assert_refused(stack, response.status_code, response.text, reason)


@pytest.mark.parametrize("where", ["header", "form"])
@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param("", REASON_TOKEN_MISSING, id="csrf-token-empty"),
        pytest.param("A", REASON_TOKEN_INVALID, id="csrf-token-one-char"),
        pytest.param("null", REASON_TOKEN_INVALID, id="csrf-token-null"),
    ],
)
async def test_degenerate_tokens(framework: str, token: str, reason: str, where: str) -> None:
    stack = build(framework, SETTINGS)
    _, session_id = await stack.token_and_session()
    headers = {"content-type": FORM}
    if where == "header":
        headers["x-csrf-token"] = token
    body = f"to=mallory&csrf_token={token}".encode() if where == "form" else b"to=mallory"
    response = await stack.request(
        "POST", "/transfer", session_id=session_id, headers=headers, content=body
    )
    assert_refused(stack, response.status_code, response.text, reason)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param(CROSS, REASON_CROSS_SITE, id="csrf-login-cross-site-no-cookie"),
        pytest.param(
            {"origin": "https://evil.example"},
            REASON_ORIGIN_MISMATCH,
            id="csrf-login-origin-no-cookie",
        ),
        pytest.param({}, REASON_TOKEN_MISSING, id="csrf-login-no-headers-no-cookie"),
    ],
)
async def test_login_csrf(framework: str, headers: dict[str, str], reason: str) -> None:
    """No cookie at all is no reason to skip: a forged login needs none."""
    stack = build(framework, SETTINGS)
    response = await stack.request(
        "POST",
        "/login?u=mallory",
        headers={**headers, "content-type": FORM},
        content=b"user=mallory&password=mallory-password",
    )
    assert_refused(stack, response.status_code, response.text, reason)
    assert stack.session_cookie(response) is None  # no session was created either
