"""The API page documents every public module of nnopt."""

from __future__ import annotations

import types

import nnopt
from scripts.book_files import ROOT


def test_every_public_module_has_an_automodule_section():
    page = (ROOT / "back" / "api.md").read_text(encoding="utf-8")
    modules = [name for name in nnopt.__all__ if isinstance(getattr(nnopt, name), types.ModuleType)]
    assert len(modules) >= 15
    missing = [m for m in modules if f".. automodule:: nnopt.{m}\n" not in page]
    assert not missing, f"back/api.md has no automodule section for {missing}"
