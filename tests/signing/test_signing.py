from __future__ import annotations

import pytest

from bastion.exceptions import ConfigurationError
from bastion.signing import Signer
from tests.support.clock import FakeClock as Clock

OLD = "old-key-" + "abcdefghijklmnopqrstuvwxyz012345"
NEW = "new-key-" + "abcdefghijklmnopqrstuvwxyz012345"


def test_round_trip() -> None:
    signer = Signer([NEW], purpose="csrf")
    assert signer.unsign(signer.sign(b"value"), max_age_seconds=60) == b"value"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda t: t[:-2] + (b"A" if t[-2:-1] != b"A" else b"B") + t[-1:], id="sig-tampered"
        ),
        pytest.param(lambda t: b"other" + t[5:], id="sig-value-changed"),
        pytest.param(lambda t: t.rsplit(b".", 1)[0], id="sig-stripped"),
        pytest.param(lambda t: b"", id="sig-empty"),
        pytest.param(lambda t: b"x", id="sig-one-char"),
        pytest.param(lambda t: b"\xff\xfe.\x00", id="sig-garbage-bytes"),
        pytest.param(lambda t: "\udcff", id="sig-unencodable-str"),
    ],
)
def test_forgeries_are_refused(tamper: object) -> None:
    signer = Signer([NEW], purpose="csrf")
    token = signer.sign(b"value")
    assert callable(tamper)
    assert signer.unsign(tamper(token), max_age_seconds=60) is None


def test_purposes_are_separated() -> None:
    token = Signer([NEW], purpose="csrf").sign(b"value")
    assert Signer([NEW], purpose="ticket").unsign(token, max_age_seconds=60) is None


def test_rotation_first_key_signs_all_verify() -> None:
    old_token = Signer([OLD], purpose="p").sign(b"v")
    rotated = Signer([NEW, OLD], purpose="p")
    assert rotated.unsign(old_token, max_age_seconds=60) == b"v"
    new_token = rotated.sign(b"v")
    assert Signer([NEW], purpose="p").unsign(new_token, max_age_seconds=60) == b"v"
    # A key rotated out no longer verifies what it signed.
    assert Signer([NEW], purpose="p").unsign(old_token, max_age_seconds=60) is None


def test_expiry_uses_the_injected_clock() -> None:
    clock = Clock()
    signer = Signer([NEW], purpose="p", clock=clock)
    token = signer.sign(b"v")
    clock.now += 60
    assert signer.unsign(token, max_age_seconds=60) == b"v"
    clock.now += 1
    assert signer.unsign(token, max_age_seconds=60) is None


def test_keys_are_required() -> None:
    with pytest.raises(ConfigurationError, match="secret_keys"):
        Signer([], purpose="p")


def test_non_canonical_spelling_of_a_valid_signature_is_refused() -> None:
    from itsdangerous.encoding import base64_decode

    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    signer = Signer([NEW], purpose="ticket")
    token = signer.sign(b"value")
    value_part, _, signature = token.rpartition(b".")
    # Flip a padding bit of the last character: the decoded signature is unchanged.
    twin = signature[:-1] + bytes([alphabet[alphabet.index(signature[-1]) ^ 1]])
    assert twin != signature
    assert base64_decode(twin) == base64_decode(signature)
    assert signer.unsign(value_part + b"." + twin, max_age_seconds=60) is None
    assert signer.unsign(token, max_age_seconds=60) == b"value"
