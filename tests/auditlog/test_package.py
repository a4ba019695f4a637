"""The auditlog package: its public names, and a module docstring that says why."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bastion.auditlog

MODULES = sorted(info.name for info in pkgutil.iter_modules(bastion.auditlog.__path__))


def test_all_lists_every_public_name() -> None:
    public = {
        name
        for name in dir(bastion.auditlog)
        if not name.startswith("_")
        and type(getattr(bastion.auditlog, name)).__name__ not in ("module", "_Feature")
    }
    assert set(bastion.auditlog.__all__) == public
    assert len(bastion.auditlog.__all__) == len(public)


def test_the_package_is_what_the_docstring_lists() -> None:
    assert MODULES == ["records", "settings", "sink", "verify"]
    doc = bastion.auditlog.__doc__ or ""
    assert all(f"* `{name}`" in doc for name in MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_docstring_names_threat_defence_limits_and_references(name: str) -> None:
    module = importlib.import_module(f"bastion.auditlog.{name}")
    doc = module.__doc__ or ""
    for part in ("Threat", "Defence", "Not covered", "References"):
        assert part in doc, f"{name}: no {part!r}"
