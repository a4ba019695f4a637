"""Attacks on the demo's keys through its data directory.

The development certificate's directory was checked (refused when others may write
to it), but the bank's own keys were created and read there whatever the directory:
with `--cert-file/--key-file` given (so no development certificate is made), or with
the app built directly (`bastion.demo.create_app`), a `secret-key` planted by another
local user in a shared directory signed the sessions and CSRF tokens, and a
`jwks.json` of theirs verified the API's bearer tokens.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bastion.demo import create_app
from bastion.demo.bank.keys import JWKS_FILE, SECRET_KEY_FILE, field_key, jwt_keys, secret_key
from bastion.demo.settings import DemoSettings
from bastion.exceptions import ConfigurationError

PLANTED_KEY = "planted-by-another-user-who-now-forges-sessions-0123456789"


@pytest.fixture(autouse=True)
def _development(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BASTION_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BASTION_MODE", "development")


def _planted(tmp_path: Path, mode: int) -> Path:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / SECRET_KEY_FILE).write_text(PLANTED_KEY + "\n", encoding="utf-8")
    (shared / JWKS_FILE).write_text('{"keys": []}\n', encoding="utf-8")
    os.chmod(shared, mode)
    return shared


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(0o777, id="demo-data-dir-world-writable"),
        pytest.param(0o770, id="demo-data-dir-group-writable"),
        pytest.param(0o1777, id="demo-data-dir-sticky-tmp-like"),
    ],
)
def test_keys_are_never_read_from_a_directory_others_may_write_to(
    tmp_path: Path, mode: int
) -> None:
    shared = _planted(tmp_path, mode)
    with pytest.raises(ConfigurationError, match=r"demo\.data_dir"):
        create_app(demo=DemoSettings(data_dir=shared))
    for read in (secret_key, field_key, lambda d: jwt_keys(d, None)):
        with pytest.raises(ConfigurationError, match=r"demo\.data_dir"):
            read(shared)


def test_a_private_directory_still_holds_the_keys(tmp_path: Path) -> None:
    private = tmp_path / "private"
    create_app(demo=DemoSettings(data_dir=private))
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE((private / SECRET_KEY_FILE).stat().st_mode) == 0o600
    assert secret_key(private) != PLANTED_KEY
    # A directory the user made by hand, readable by others but writable by no one
    # else, is still accepted.
    mine = tmp_path / "mine"
    mine.mkdir()
    os.chmod(mine, 0o755)  # noqa: S103 - readable by others, writable by no one else
    assert secret_key(mine)
