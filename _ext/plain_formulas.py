"""Sphinx extension: let nnopt docstrings write formulas in plain Unicode.

Docstrings state formulas the way a reader types them, with absolute values and norms such
as ``|λ₂/λ₁|``. In reStructuredText ``|name|`` is a substitution reference, so autodoc would
fail on them. This escapes every ``|`` outside inline literals before the docstring is parsed.
"""

from __future__ import annotations

import re
from typing import Any

_LITERAL = re.compile(r"(``.*?``)")


def _escape_pipes(line: str) -> str:
    parts = _LITERAL.split(line)
    return "".join(p if p.startswith("``") else p.replace("|", r"\|") for p in parts)


def _process(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    lines[:] = [_escape_pipes(line) for line in lines]


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", _process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
