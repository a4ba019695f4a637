"""The whole OIDC dance over real HTTP: the relying party and the test provider each
run in uvicorn on 127.0.0.1, and an httpx client follows the redirects by hand.

Every attack case sits beside the legitimate login, and names the reason code the
relying party must emit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from bastion.auth.jwt import REASON_JWT_ID_TOKEN, REASON_JWT_TYP_WRONG
from bastion.auth.middleware import AuthenticationMiddleware
from bastion.auth.settings import AuthSettings, JWTSettings
from bastion.events import EventEmitter
from tests.auth.apps import call, make_protected_app
from tests.auth.oidc.provider import TEST_USER
from tests.auth.oidc.rp_app import CLIENT_ID, CLIENT_SECRET
from tests.conftest import RecordingSink
from tests.support.servers import serve

COOKIE = "session"  # `__Host-session` without its prefix over plain HTTP
TIMEOUT = httpx.Timeout(10.0)


@dataclass(frozen=True)
class Peers:
    rp: str
    op: str


@pytest.fixture(scope="module")
def peers() -> Iterator[Peers]:
    with (
        serve("tests.auth.oidc.provider:create_app") as op,
        serve("tests.auth.oidc.rp_app:create_app") as rp,
    ):
        yield Peers(rp.url, op.url)


@pytest.fixture
def configured(peers: Peers) -> Peers:
    """Fresh RP state (new OIDCLogin, new nonce store) and a well-behaved provider."""
    configure_op(peers)
    redirect_uri = f"{peers.rp}/auth/callback"
    body = {"issuer": peers.op, "redirect_uri": redirect_uri, "op_port": urlsplit(peers.op).port}
    httpx.post(f"{peers.rp}/_test/configure", json=body, timeout=TIMEOUT).raise_for_status()
    return peers


def configure_op(peers: Peers, **options: object) -> None:
    body = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": f"{peers.rp}/auth/callback",
        "next_token": "ok",
        **options,
    }
    httpx.post(f"{peers.op}/_test/configure", json=body, timeout=TIMEOUT).raise_for_status()


def events(peers: Peers) -> list[str]:
    reasons: list[str] = httpx.get(f"{peers.rp}/_test/events", timeout=TIMEOUT).json()
    return reasons


def whoami(client: httpx.Client, peers: Peers) -> str:
    return client.get(f"{peers.rp}/whoami").text


def start(client: httpx.Client, peers: Peers, next_path: str = "/dashboard") -> str:
    """login -> provider authorize; returns the callback URL the provider redirects to."""
    login = client.get(f"{peers.rp}/auth/login", params={"next": next_path})
    assert login.status_code == 302, login.text
    authorize = login.headers["location"]
    assert authorize.startswith(f"{peers.op}/authorize?")
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"][0]
    assert query["nonce"][0]
    approved = client.get(authorize)
    assert approved.status_code == 302, approved.text
    callback = approved.headers["location"]
    assert callback.startswith(f"{peers.rp}/auth/callback?")
    return callback


def with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as c:
        yield c


def login(client: httpx.Client, peers: Peers, next_path: str = "/dashboard") -> httpx.Response:
    return client.get(start(client, peers, next_path))


# --- the legitimate login ------------------------------------------------------------


def test_oidc_login_ok(configured: Peers, client: httpx.Client) -> None:
    callback = start(client, configured)
    before = client.cookies.get(COOKIE)
    assert before  # the pending login made a session
    done = client.get(callback)
    assert done.status_code == 303
    assert done.headers["location"] == "/dashboard"
    after = client.cookies.get(COOKIE)
    assert after
    assert after != before  # session fixation: login rotated the id
    assert whoami(client, configured) == TEST_USER
    assert events(configured) == []

    out = client.post(f"{configured.rp}/auth/logout")
    assert out.status_code == 303
    target = urlsplit(out.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{configured.op}/logout"
    assert "id_token_hint" in parse_qs(target.query)
    assert whoami(client, configured) == "anonymous"


def test_oidc_logout_needs_post(configured: Peers, client: httpx.Client) -> None:
    login(client, configured)
    assert client.get(f"{configured.rp}/auth/logout").status_code == 405
    assert whoami(client, configured) == TEST_USER


# --- state -----------------------------------------------------------------------------


def test_oidc_forged_state(configured: Peers, client: httpx.Client) -> None:
    callback = start(client, configured)
    forged = client.get(with_query(callback, state="attacker-chosen-state"))
    assert forged.status_code == 403
    assert events(configured) == ["oidc-state-mismatch"]
    # The pending login was single use: even the genuine callback now fails.
    assert client.get(callback).status_code == 400
    assert events(configured)[-1] == "oidc-no-pending-login"
    assert whoami(client, configured) == "anonymous"


def test_oidc_missing_state(configured: Peers, client: httpx.Client) -> None:
    callback = start(client, configured)
    assert client.get(with_query(callback, state=None)).status_code == 400
    assert events(configured) == ["oidc-missing-state"]
    assert whoami(client, configured) == "anonymous"


def test_oidc_callback_without_login(configured: Peers, client: httpx.Client) -> None:
    # Login CSRF: the attacker's own code and state, delivered to a fresh victim.
    attacker = httpx.Client(timeout=TIMEOUT, follow_redirects=False)
    with attacker:
        callback = start(attacker, configured)
    assert client.get(callback).status_code == 400
    assert events(configured) == ["oidc-no-pending-login"]
    assert whoami(client, configured) == "anonymous"


def test_oidc_code_exchange_failed(configured: Peers, client: httpx.Client) -> None:
    callback = start(client, configured)
    assert client.get(with_query(callback, code="not-a-real-code")).status_code == 400
    assert events(configured) == ["oidc-code-exchange-failed"]
    assert whoami(client, configured) == "anonymous"


# --- nonce -------------------------------------------------------------------------------


def test_oidc_replayed_nonce_callback_after_success(
    configured: Peers, client: httpx.Client
) -> None:
    callback = start(client, configured)
    before = client.cookies.get(COOKIE)
    assert client.get(callback).status_code == 303
    # Replayed with the new session, and with the pre-login (now deleted) session.
    assert client.get(callback).status_code == 400
    stale = httpx.get(callback, headers={"cookie": f"{COOKIE}={before}"}, timeout=TIMEOUT)
    assert stale.status_code == 400
    assert events(configured) == ["oidc-no-pending-login", "oidc-no-pending-login"]


def test_oidc_replayed_nonce_concurrent_callbacks(configured: Peers, client: httpx.Client) -> None:
    # Two callbacks racing with the same session both read the pending login before
    # either saves; a provider that (wrongly) lets the code be reused mints two ID
    # tokens with one nonce. The nonce store lets exactly one log in.
    configure_op(configured, allow_code_reuse=True, token_delay_seconds=0.5)
    callback = start(client, configured)
    cookie = {"cookie": f"{COOKIE}={client.cookies.get(COOKIE)}"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(httpx.get, callback, headers=cookie, timeout=TIMEOUT) for _ in range(2)
        ]
        statuses = sorted(f.result(timeout=15).status_code for f in futures)
    assert statuses == [303, 403]
    assert events(configured) == ["oidc-nonce-replayed"]


def test_oidc_replayed_nonce_from_earlier_login(configured: Peers, client: httpx.Client) -> None:
    login(client, configured)
    configure_op(configured, next_token="stale-nonce")
    with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as other:
        assert login(other, configured).status_code == 403
        assert whoami(other, configured) == "anonymous"
    assert events(configured) == ["oidc-nonce-mismatch"]


# --- the ID token ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("wrong-audience", id="oidc-wrong-audience"),
        pytest.param("expired", id="oidc-expired-id-token"),
        pytest.param("tampered", id="oidc-tampered-id-token"),
        pytest.param("other-key", id="oidc-id-token-unknown-signer"),
    ],
)
def test_oidc_bad_id_token(configured: Peers, client: httpx.Client, mode: str) -> None:
    configure_op(configured, next_token=mode)
    assert login(client, configured).status_code == 403
    assert events(configured) == ["oidc-id-token-invalid"]
    assert whoami(client, configured) == "anonymous"
    # The provider behaves again: the same browser logs in.
    assert login(client, configured).status_code == 303
    assert whoami(client, configured) == TEST_USER


# --- return path -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("next_path", "expected"),
    [
        pytest.param("/reports?year=2024", "/reports?year=2024", id="oidc-return-path-ok"),
        pytest.param("https://evil.example", "/", id="oidc-open-redirect-return-path"),
        pytest.param("//evil.example", "/", id="oidc-open-redirect-protocol-relative"),
        pytest.param("/\\evil.example", "/", id="oidc-open-redirect-backslash"),
        pytest.param("/\t/evil.example", "/", id="oidc-open-redirect-tab"),
    ],
)
def test_oidc_return_path(
    configured: Peers, client: httpx.Client, next_path: str, expected: str
) -> None:
    done = login(client, configured, next_path)
    assert done.status_code == 303
    assert done.headers["location"] == expected
    assert whoami(client, configured) == TEST_USER


# --- the ID token is no access token -------------------------------------------------


@pytest.mark.parametrize(
    ("allow_untyped", "reason"),
    [
        pytest.param(False, REASON_JWT_TYP_WRONG, id="jwt-id-token-as-access-token"),
        pytest.param(True, REASON_JWT_ID_TOKEN, id="jwt-id-token-as-access-token-untyped-allowed"),
    ],
)
def test_oidc_id_token_refused_as_bearer_token(
    configured: Peers, client: httpx.Client, allow_untyped: bool, reason: str
) -> None:
    """A real ID token from the provider, as it leaks (here from the logout URL's
    `id_token_hint`), presented to an API whose audience is the OIDC client id and
    whose keys are the provider's JWKS: signature, issuer, audience and times all
    check out; only its kind tells it apart."""
    login(client, configured)
    out = client.post(f"{configured.rp}/auth/logout")
    (id_token,) = parse_qs(urlsplit(out.headers["location"]).query)["id_token_hint"]
    settings = JWTSettings(
        issuer=configured.op,
        audience=CLIENT_ID,
        jwks_url=f"{configured.op}/jwks",
        insecure_jwks_over_http=True,  # the test provider is plain HTTP on 127.0.0.1
        algorithms=("ES256",),
        insecure_allow_untyped_tokens=allow_untyped,
    )
    sink = RecordingSink()
    hits: list[str] = []
    app = AuthenticationMiddleware(
        make_protected_app("raw", hits), AuthSettings(jwt=settings), events=EventEmitter([sink])
    )
    status, _, _ = asyncio.run(
        call(app, "/admin", [(b"authorization", f"Bearer {id_token}".encode())])
    )
    assert (status, hits) == (401, [])
    assert sink.reasons() == [reason]
