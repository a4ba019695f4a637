"""`DemoSettings` sources, and the demo pointed at another identity provider's keys.

The foreign provider is played by a key pair made here (joserfc, Ed25519): the bank
gets only its public JWK set, through a file in the secrets directory, and must then
accept that provider's tokens, refuse tokens signed with its own former key, and
issue none itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import Key, OKPKey

from bastion.auth.jwt import TokenIssuer
from bastion.demo import create_app
from bastion.demo.bank.keys import jwt_keys
from bastion.demo.settings import DemoSettings
from bastion.exceptions import ConfigurationError
from bastion.stores.memory import MemoryStore
from tests.support.secret_watch import never_logged

pytestmark = pytest.mark.anyio

BASE = "https://localhost"
FOREIGN_ISSUER = "https://idp.example"
FOREIGN_AUDIENCE = "bank-api-at-idp"


@pytest.fixture
def secrets_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    monkeypatch.setenv("BASTION_SECRETS_DIR", str(directory))
    for name in ("JWKS_FILE", "JWT_ISSUER", "JWT_AUDIENCE", "SEED"):
        monkeypatch.delenv(f"BASTION_DEMO__{name}", raising=False)
    return directory


def test_values_come_from_the_secrets_directory(secrets_dir: Path, tmp_path: Path) -> None:
    (secrets_dir / "bastion_demo__jwt_issuer").write_text(FOREIGN_ISSUER + "\n")
    (secrets_dir / "bastion_demo__jwks_file").write_text(str(tmp_path / "jwks.json"))
    (secrets_dir / "bastion_demo__header_timeout_seconds").write_text("5")
    settings = DemoSettings(data_dir=tmp_path)
    assert settings.jwt_issuer == FOREIGN_ISSUER
    assert settings.jwks_file == tmp_path / "jwks.json"
    assert settings.header_timeout_seconds == 5.0


def test_environment_and_code_rank_above_the_secrets_directory(
    secrets_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (secrets_dir / "bastion_demo__jwt_issuer").write_text("https://from-file.example")
    (secrets_dir / "bastion_demo__jwt_audience").write_text("from-file")
    monkeypatch.setenv("BASTION_DEMO__JWT_ISSUER", "https://from-env.example")
    settings = DemoSettings(data_dir=tmp_path, jwt_audience="from-code")
    assert settings.jwt_issuer == "https://from-env.example"
    assert settings.jwt_audience == "from-code"


def test_a_bad_value_in_the_secrets_directory_is_an_error(
    secrets_dir: Path, tmp_path: Path
) -> None:
    (secrets_dir / "bastion_demo__header_timeout_seconds").write_text("-1")
    with pytest.raises(ConfigurationError, match="header_timeout_seconds"):
        DemoSettings(data_dir=tmp_path)


def _foreign_provider(directory: Path) -> tuple[OKPKey, Path]:
    """Another provider's signing key, and the file with its public JWK set."""
    key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519", "use": "sig"}, auto_kid=True)
    path = directory / "idp-jwks.json"
    path.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    return key, path


def _token(key: Key, *, issuer: str = FOREIGN_ISSUER, audience: str = FOREIGN_AUDIENCE) -> str:
    return never_logged(
        TokenIssuer(
            key=key, algorithm="Ed25519", issuer=issuer, audience=audience, store=MemoryStore()
        ).issue_access_token("alice", roles=["customer"])
    )


def _unsigned_like(key: OKPKey) -> str:
    """The provider's claims signed by a stranger's key with the provider's `kid`."""
    stranger = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"})
    now = int(time.time())
    claims = {
        "iss": FOREIGN_ISSUER,
        "aud": FOREIGN_AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
    }
    header = {"alg": "Ed25519", "kid": key.kid, "typ": "JWT"}
    return never_logged(jwt.encode(header, claims, stranger, algorithms=["Ed25519"]))


@pytest.mark.parametrize(
    ("case", "status"),
    [
        pytest.param("foreign", 200, id="demo-foreign-jwks-token-ok"),
        pytest.param("own-key", 401, id="demo-foreign-jwks-own-key-refused"),
        pytest.param("stranger", 401, id="demo-foreign-jwks-forged-kid-refused"),
        pytest.param("issuer", 401, id="demo-foreign-jwks-wrong-issuer-refused"),
    ],
)
async def test_foreign_jwks_from_the_secrets_directory(
    secrets_dir: Path, tmp_path: Path, case: str, status: int
) -> None:
    data_dir = tmp_path / "bank"
    # The demo's own key pair exists from an earlier run: it must stop counting.
    own = jwt_keys(data_dir, None).signing_key
    assert own is not None
    key, jwks = _foreign_provider(tmp_path)
    (secrets_dir / "bastion_demo__jwks_file").write_text(str(jwks))
    (secrets_dir / "bastion_demo__jwt_issuer").write_text(FOREIGN_ISSUER)
    (secrets_dir / "bastion_demo__jwt_audience").write_text(FOREIGN_AUDIENCE)
    demo = DemoSettings(data_dir=data_dir)
    assert demo.jwks_file == jwks
    shield = create_app(demo=demo)
    token = {
        "foreign": lambda: _token(key),
        "own-key": lambda: _token(own),
        "stranger": lambda: _unsigned_like(key),
        "issuer": lambda: _token(key, issuer="https://bank.bastion.localhost"),
    }[case]()
    transport = httpx.ASGITransport(app=shield, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as api:
        answer = await api.get("/api/accounts", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == status
    if status == 200:
        assert answer.json()["user"] == "alice"


async def test_the_bank_issues_no_tokens_with_foreign_keys(
    secrets_dir: Path, tmp_path: Path
) -> None:
    _, jwks = _foreign_provider(tmp_path)
    (secrets_dir / "bastion_demo__jwks_file").write_text(str(jwks))
    demo = DemoSettings(data_dir=tmp_path / "bank")
    assert jwt_keys(demo.data_dir, demo.jwks_file).signing_key is None
    bank = create_app(demo=demo).app
    assert isinstance(bank, FastAPI)
    assert bank.state.bank.issuer is None
