"""nnopt: the small, verified PyTorch library behind *nnopt-book*.

Modules are named after the ideas of the book:

* :mod:`nnopt.flows` — gradient descent and gradient flow on least squares (chapter 1)
* :mod:`nnopt.ntk` — empirical tangent kernels, κ_f, scaled and antisymmetric models (chapter 2)
* :mod:`nnopt.curvature` — certified sharpness (top Hessian eigenvalues), GD with sharpness tracking (chapter 3)
* :mod:`nnopt.hardness` — SUBSET-SUM reduction, parities, gradient variance, exact ReLU constructions (chapter 4)
* :mod:`nnopt.landscapes` — PCA, matrix completion, strict saddles, perturbed GD (chapters 5–7)
* :mod:`nnopt.pl` — local PL coefficients, the Lemma 1 / Lemma 11 bounds, kernel conditioning (chapter 8)
* :mod:`nnopt.dkm` — deep kernel machines: fully-connected, convolutional and recurrent kernels, rank tools (chapter 9)
* :mod:`nnopt.optim` — ADLER and its outer-product variant (chapter 10)
* :mod:`nnopt.propagation` — q-map, c-map, χ₁, depth scales, Jacobian spectra at initialisation (chapter 11)
* :mod:`nnopt.dense_hvp` — exact Hessian-vector products of dense networks, layer by layer (chapter 3)
* :mod:`nnopt.losses` — losses with their Hessian in the outputs in closed form (½‖f − y‖² averaged, softmax cross-entropy)
* :mod:`nnopt.autodiff` — parameter dicts, Hessian-vector, Jacobian-vector and vector-Jacobian products
* :mod:`nnopt.linalg` — matrix-free operators, Lanczos, power iteration, Gershgorin bounds
* :mod:`nnopt.symbolic` — sympy-checked derivation steps and the ledger of verified equations
* :mod:`nnopt.device` — device choice, seeding, threads, dtype policy and the ``NNOPT_SCALE`` switch
* :mod:`nnopt.plotting` — the book's figure style
* :mod:`nnopt.validation` — argument checks with messages that name the argument
"""

from . import (autodiff, curvature, dense_hvp, device, dkm, flows, hardness, landscapes, linalg, losses,
               ntk, optim, pl, plotting, propagation, symbolic, validation)

__version__ = "0.1.0"

__all__ = [
    "autodiff", "curvature", "dense_hvp", "device", "dkm", "flows", "hardness", "landscapes", "linalg", "losses", "ntk",
    "optim", "pl", "plotting", "propagation", "symbolic", "validation", "__version__",
]
