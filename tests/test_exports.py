"""The public API is exactly what `bastion.__all__` lists, each name importable
from the package root (as httpx's tests/test_exported_members.py checks)."""

from __future__ import annotations

import bastion


def test_all_is_sorted_and_complete() -> None:
    assert bastion.__all__ == sorted(bastion.__all__)
    public = {name for name in dir(bastion) if not name.startswith("_")}
    # Submodules are reachable as attributes once imported; they are not API names.
    # and `from __future__ import annotations` leaves a feature object behind.
    not_api = {
        name for name in public if type(getattr(bastion, name)).__name__ in ("module", "_Feature")
    }
    assert set(bastion.__all__) == public - not_api


def test_every_name_belongs_to_bastion() -> None:
    for name in bastion.__all__:
        member = getattr(bastion, name)
        module = getattr(member, "__module__", "bastion")
        assert module.startswith("bastion"), name
