"""State a derivation step, check it with sympy, and keep a ledger of what was checked.

A chapter creates one :class:`Ledger` and passes every algebraic step through it::

    ledger = Ledger("Chapter 1")
    ledger.check("10.10", lhs, rhs, note="error ODE")

:meth:`Ledger.check` raises :class:`DerivationError` (an ``AssertionError``) when
``lhs - rhs`` does not simplify to zero, so a wrong step stops the notebook, and nbval
with it. At the end of the chapter ``ledger.report()`` shows the table of verified
equations. The table carries its records as output metadata, so the book's
"Verified equations" page can collect every chapter's ledger from the stored notebooks
(:func:`collect_ledgers`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sympy as sp

__all__ = [
    "DerivationError",
    "Check",
    "Ledger",
    "LedgerReport",
    "is_zero",
    "collect_ledgers",
    "METADATA_KEY",
]

METADATA_KEY = "nnopt_ledger"


class DerivationError(AssertionError):
    """A derivation step that sympy could not confirm."""


def is_zero(expr: Any) -> bool:
    """True when ``expr`` (a scalar or a matrix expression) simplifies to zero.

    Matrices are checked entry by entry after ``doit()``, so block and explicit
    matrices both work. Returns ``False`` (never raises) when sympy cannot decide.
    """
    if isinstance(expr, sp.MatrixBase):
        return all(sp.simplify(sp.expand(e)) == 0 for e in expr)
    if isinstance(expr, sp.MatrixExpr):
        expr = expr.doit()
        if isinstance(expr, sp.MatrixBase):
            return is_zero(expr)
        if sp.simplify(expr).is_ZeroMatrix:
            return True
        if all(isinstance(n, (int, sp.Integer)) for n in expr.shape):  # e.g. a block matrix
            return is_zero(expr.as_explicit())
        return False
    return bool(sp.simplify(sp.expand(sp.sympify(expr))) == 0)


@dataclass(frozen=True)
class Check:
    """One verified step: the equation label, how it was checked, and a note."""

    label: str
    kind: str  # "identity", "statement" or "numeric"
    note: str = ""
    detail: str = ""


@dataclass
class Ledger:
    """The derivation steps one chapter has verified."""

    chapter: str
    checks: list[Check] = field(default_factory=list)

    def check(self, label: str, lhs: Any, rhs: Any, *, note: str = "") -> None:
        """Assert the identity ``lhs == rhs`` (``lhs - rhs`` simplifies to 0) and record it."""
        self._require_label(label)
        try:
            diff = lhs - rhs
        except (TypeError, sp.ShapeError) as exc:
            raise DerivationError(f"eq. {label}: sides cannot be compared: {exc}") from exc
        if not is_zero(diff):
            raise DerivationError(
                f"eq. {label} does not hold: lhs - rhs simplifies to {sp.simplify(diff)}"
            )
        self.checks.append(Check(label, "identity", note, sp.sstr(rhs)[:200]))

    def check_statement(self, label: str, statement: Any, *, note: str = "") -> None:
        """Assert a sympy relation or boolean (e.g. ``sp.Ge(expr, 0)``) that must be True."""
        self._require_label(label)
        value = sp.simplify(statement) if isinstance(statement, sp.Basic) else statement
        if value is not True and value != sp.true:
            raise DerivationError(f"eq. {label}: statement is not identically true: {value}")
        self.checks.append(Check(label, "statement", note, sp.sstr(statement)[:200]))

    def check_numeric(self, label: str, value: float, expected: float, *, rtol: float,
                      atol: float = 0.0, note: str = "") -> None:
        """Assert ``|value - expected| <= atol + rtol * |expected|`` and record it.

        For steps that are not pure algebra (an integral form, a limit) and are checked
        by evaluating both sides numerically.
        """
        self._require_label(label)
        value, expected = float(value), float(expected)
        if not abs(value - expected) <= atol + rtol * abs(expected):
            raise DerivationError(
                f"eq. {label}: {value!r} differs from {expected!r} beyond rtol={rtol}, atol={atol}"
            )
        self.checks.append(Check(label, "numeric", note, f"{value:.6g} vs {expected:.6g}"))

    @staticmethod
    def _require_label(label: str) -> None:
        if not isinstance(label, str) or not label.strip():
            raise TypeError("label must be a non-empty string naming the equation")

    @property
    def labels(self) -> list[str]:
        """Labels of the verified steps, in order, without repeats."""
        return list(dict.fromkeys(c.label for c in self.checks))

    def report(self) -> LedgerReport:
        """A table of the verified steps that renders in Jupyter and in the book."""
        return LedgerReport(self.chapter, list(self.checks))


@dataclass(frozen=True)
class LedgerReport:
    """Rendered form of a ledger; its metadata carries the records for collection."""

    chapter: str
    checks: list[Check]

    def markdown(self) -> str:
        lines = [
            f"**{len(self.checks)} derivation steps verified in {self.chapter}**",
            "",
            "| equation | check | note |",
            "|---|---|---|",
        ]
        for c in self.checks:
            lines.append(f"| ({c.label}) | {c.kind} | {c.note} |")
        return "\n".join(lines)

    def _repr_markdown_(self) -> tuple[str, dict[str, Any]]:
        records = {"chapter": self.chapter, "checks": [asdict(c) for c in self.checks]}
        return self.markdown(), {METADATA_KEY: records}

    def __repr__(self) -> str:
        return f"{len(self.checks)} derivation steps verified in {self.chapter}"


def collect_ledgers(notebooks: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read the ledger records stored in executed notebooks' outputs.

    Returns one ``{"notebook", "chapter", "checks"}`` dict per ledger report found.
    """
    found: list[dict[str, Any]] = []
    for path in notebooks:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            for out in cell.get("outputs", []):
                meta = out.get("metadata", {})
                for value in [meta, *meta.values()]:
                    if isinstance(value, dict) and METADATA_KEY in value:
                        rec = value[METADATA_KEY]
                        found.append({"notebook": str(path), **rec})
    return found
