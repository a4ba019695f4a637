"""The deps package: its public names, and a module docstring that says why."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bastion.deps

MODULES = sorted(info.name for info in pkgutil.iter_modules(bastion.deps.__path__))


def test_all_lists_every_public_name() -> None:
    public = {
        name
        for name in dir(bastion.deps)
        if not name.startswith("_")
        and type(getattr(bastion.deps, name)).__name__ not in ("module", "_Feature")
    }
    assert set(bastion.deps.__all__) == public
    assert len(bastion.deps.__all__) == len(public)


def test_the_package_is_what_the_docstring_lists() -> None:
    assert MODULES == ["osv", "report", "severity", "sources"]
    doc = bastion.deps.__doc__ or ""
    assert all(f"* `{name}`" in doc for name in MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_docstring_names_threat_defence_limits_and_references(name: str) -> None:
    module = importlib.import_module(f"bastion.deps.{name}")
    doc = module.__doc__ or ""
    for part in ("Threat", "Defence", "Not covered", "References"):
        assert part in doc, f"{name}: no {part!r}"
