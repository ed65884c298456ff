"""scripts/seed_audit.py: literal seeds move, everything else stays as written."""

from __future__ import annotations

from scripts.seed_audit import shift_seeds


def test_shift_seeds_moves_global_and_generator_seeds():
    src = ("generator = seed_everything(6)\n"
           "g = torch.Generator().manual_seed(21)\n"
           "h = torch.Generator(device=device).manual_seed(1000 + seed)\n"
           "torch.manual_seed(len(x))\n"
           "top_hessian_eigenvalue(model, loss, x, y, seed=0)\n")
    out, n = shift_seeds(src, 2)
    assert n == 4
    assert out == ("generator = seed_everything(2006)\n"
                   "g = torch.Generator().manual_seed((21) + 2000)\n"
                   "h = torch.Generator(device=device).manual_seed((1000 + seed) + 2000)\n"
                   "torch.manual_seed((len(x)) + 2000)\n"
                   "top_hessian_eigenvalue(model, loss, x, y, seed=0)\n")


def test_shift_seeds_leaves_seedless_code_alone():
    src = "x = torch.randn(3, generator=gen)\nprint('manual_seed is not called here')\n"
    assert shift_seeds(src, 1) == (src, 0)


def test_failed_cells_lists_every_error_output():
    import nbformat

    from scripts.seed_audit import failed_cells
    nb = nbformat.v4.new_notebook()
    ok = nbformat.v4.new_code_cell("x = 1")
    bad = nbformat.v4.new_code_cell("assert x == 2")
    bad.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="",
                                          traceback=["\x1b[36mCell In[2], line 1\x1b[39m\n\x1b[31m---> 1\x1b[39m assert x == 2",
                                                     "AssertionError: "])]
    nb.cells = [ok, bad, nbformat.v4.new_markdown_cell("text")]
    assert failed_cells(nb) == ["  cell 1: AssertionError:   ---> 1 assert x == 2"]
    nb.cells = [ok]
    assert failed_cells(nb) == []
