"""nnopt: the small, verified PyTorch library behind *nnopt-book*.

Modules are named after the ideas of the book:

* :mod:`nnopt.flows` — gradient descent and gradient flow on least squares (chapter 1)
* :mod:`nnopt.symbolic` — sympy-checked derivation steps and the ledger of verified equations
* :mod:`nnopt.device` — device choice, seeding, dtype policy and the ``NNOPT_SCALE`` switch
* :mod:`nnopt.plotting` — the book's figure style
* :mod:`nnopt.validation` — argument checks with messages that name the argument
"""

from . import device, flows, plotting, symbolic, validation

__version__ = "0.1.0"

__all__ = ["device", "flows", "plotting", "symbolic", "validation", "__version__"]
