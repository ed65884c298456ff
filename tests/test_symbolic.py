"""nnopt.symbolic: checks pass on true steps, fail on false ones, and are collected from notebooks."""

from __future__ import annotations

import json

import nbformat
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from nnopt.symbolic import METADATA_KEY, DerivationError, Ledger, collect_ledgers, is_zero

x, y = sp.symbols("x y", real=True)


def test_true_identity_is_recorded():
    ledger = Ledger("test")
    ledger.check("1.1", (x + y) ** 2, x**2 + 2 * x * y + y**2, note="binomial")
    assert ledger.labels == ["1.1"] and ledger.checks[0].kind == "identity"


def test_false_identity_raises_with_residual():
    ledger = Ledger("test")
    with pytest.raises(DerivationError, match=r"eq. 1.2 does not hold.*2\*x\*y"):
        ledger.check("1.2", (x + y) ** 2, x**2 + y**2)
    assert ledger.checks == []


def test_matrix_identities():
    A = sp.Matrix(2, 2, sp.symbols("a:4"))
    ledger = Ledger("test")
    ledger.check("M", (A * A.T).T, A * A.T)
    with pytest.raises(DerivationError):
        ledger.check("M2", A * A.T, A.T * A)
    with pytest.raises(DerivationError, match="cannot be compared"):
        ledger.check("M3", A, sp.Matrix([1, 2, 3]))


@given(st.integers(-50, 50), st.integers(-50, 50))
def test_is_zero_on_integer_polynomials(a, b):
    expr = (x - a) * (x - b) - (x**2 - (a + b) * x + a * b)
    assert is_zero(expr)
    assert is_zero(expr + 1) is False


def test_statement_and_numeric_checks():
    ledger = Ledger("test")
    ledger.check_statement("pos", sp.Ge(x**2 + 1, 0))
    with pytest.raises(DerivationError):
        ledger.check_statement("neg", sp.Gt(x, 0))
    ledger.check_numeric("num", 1.0 + 1e-12, 1.0, rtol=1e-10)
    with pytest.raises(DerivationError, match="differs"):
        ledger.check_numeric("num2", 1.1, 1.0, rtol=1e-3)
    with pytest.raises(TypeError, match="label"):
        ledger.check("", x, x)
    assert [c.kind for c in ledger.checks] == ["statement", "numeric"]


def test_report_round_trips_through_a_stored_notebook(tmp_path):
    ledger = Ledger("Chapter 0")
    ledger.check("0.1", x * (x + 1), x**2 + x, note="expand")
    md, meta = ledger.report()._repr_markdown_()
    assert "| (0.1) | identity | expand |" in md
    output = nbformat.v4.new_output("display_data", data={"text/markdown": md},
                                    metadata={"text/markdown": meta})
    cell = nbformat.v4.new_code_cell("ledger.report()", outputs=[output])
    path = tmp_path / "nb.ipynb"
    path.write_text(nbformat.writes(nbformat.v4.new_notebook(cells=[cell])))
    found = collect_ledgers([path])
    assert len(found) == 1 and found[0]["chapter"] == "Chapter 0"
    assert found[0]["checks"][0]["label"] == "0.1"
    assert METADATA_KEY in json.dumps(json.loads(path.read_text()))


def test_is_zero_on_matrix_expressions():
    from nnopt.symbolic import is_zero

    A, B = sp.MatrixSymbol("A", 2, 2), sp.MatrixSymbol("B", 2, 2)
    assert is_zero((A * B).T - B.T * A.T)
    assert is_zero(A + B - (B + A))
    assert not is_zero(A * B - B * A)
    E = sp.Matrix(2, 2, sp.symbols("e0:4"))
    assert is_zero(sp.BlockMatrix([[E]]) - E)
    assert not is_zero(sp.BlockMatrix([[E]]) - 2 * E)
    n = sp.Symbol("n", integer=True, positive=True)
    C = sp.MatrixSymbol("C", n, n)
    assert is_zero(C - C) and not is_zero(C * C - C)  # symbolic shape: no explicit fallback


def test_ledger_report_repr_counts_the_steps():
    ledger = Ledger("Chapter 0")
    x = sp.Symbol("x")
    ledger.check("a", (x + 1) ** 2, x**2 + 2 * x + 1)
    assert repr(ledger.report()) == "1 derivation steps verified in Chapter 0"
