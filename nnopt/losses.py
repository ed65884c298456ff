"""Losses whose second derivative in the network's outputs is known in closed form.

A loss here is an ordinary ``loss_fn(outputs, targets)`` returning a scalar, as everywhere in
:mod:`nnopt`, that also carries an attribute

    ``output_hvp(outputs, targets, tangent)`` = ∇²_F loss_fn(F, targets)|_{F = outputs} · tangent,

the loss's Hessian in the outputs F applied to a tangent of F's shape. The layer-by-layer
Hessian-vector product of a dense network (:mod:`nnopt.dense_hvp`) needs exactly this product
once per ∇²L v, between its tangent forward and tangent backward passes; with ``output_hvp`` it
costs a few elementwise operations instead of a second backward pass through the loss's
autograd graph. A loss without the attribute still works everywhere (autograd provides the product).

* :func:`half_mse` — ½‖F − Y‖² averaged over the n examples (the rows of F), the loss of the
  book's networks from chapter 3 on and of Cohen et al.'s edge-of-stability experiments; its
  output Hessian is I/n.
* :func:`cross_entropy` — softmax cross-entropy averaged over the examples, with class indices as
  targets; its output Hessian is block diagonal, (diag p_i − p_i p_iᵀ)/n for example i with
  softmax probabilities p_i (the Q of Balboni §7.7 and of :mod:`nnopt.optim`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .validation import check_class_indices, check_same_device, check_tensor

__all__ = ["half_mse", "cross_entropy"]


def half_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L(F) = (1/n) Σ_i ½‖F_i − Y_i‖², F_i the output for example i (row i of ``outputs``).

    Its gradient in F is (F − Y)/n and its Hessian in F is I/n, a constant, so
    ``half_mse.output_hvp(F, Y, U)`` = U/n exactly. For a network f and data (x, y),
    L(w) = half_mse(f(x; w), y) is the loss of chapter 3 (Chiang eq. 10.56 with the ½ and the
    average of Cohen et al. 2021).
    """
    # no finiteness check: a NaN or infinite output gives a non-finite loss, which is how
    # gradient descent (e.g. :func:`nnopt.curvature.gd_with_sharpness`) detects divergence
    check_tensor(outputs, "outputs", ndim=range(1, 8), finite=False)
    check_tensor(targets, "targets", shape=tuple(outputs.shape), dtype=outputs.dtype,
                 finite=False)
    check_same_device(outputs=outputs, targets=targets)
    if outputs.shape[0] == 0:
        raise ValueError("outputs must hold at least one example (row)")
    return 0.5 * ((outputs - targets) ** 2).sum() / outputs.shape[0]


def _half_mse_output_hvp(outputs: torch.Tensor, targets: torch.Tensor,
                         tangent: torch.Tensor) -> torch.Tensor:
    """∇²_F half_mse(F, Y) · U = U/n: the Hessian I/n applied to the tangent U."""
    return tangent * (1.0 / outputs.shape[0])


half_mse.output_hvp = _half_mse_output_hvp  # type: ignore[attr-defined]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L(F) = (1/n) Σ_i −log softmax(F_i)[y_i] for logits F (n × classes) and class indices y.

    With p_i = softmax(F_i), the gradient in F_i is (p_i − e_{y_i})/n and the Hessian in F is
    block diagonal with blocks (diag p_i − p_i p_iᵀ)/n, so
    ``cross_entropy.output_hvp(F, y, U)`` has rows (p_i ⊙ U_i − p_i (p_i · U_i))/n. The value is
    that of ``torch.nn.functional.cross_entropy`` (mean reduction).
    """
    check_tensor(logits, "logits", ndim=2, finite=False)
    n, classes = logits.shape
    if n == 0:
        raise ValueError("logits must hold at least one example (row)")
    if isinstance(labels, torch.Tensor):
        check_same_device(logits=logits, labels=labels)
    check_class_indices(labels, "labels", n, classes)
    return F.cross_entropy(logits, labels)


def _cross_entropy_output_hvp(logits: torch.Tensor, labels: torch.Tensor,
                              tangent: torch.Tensor) -> torch.Tensor:
    """Rows (p_i ⊙ U_i − p_i (p_i · U_i))/n: the block-diagonal softmax Hessian applied to U."""
    p = torch.softmax(logits, dim=1)
    pu = p * tangent
    return (pu - p * pu.sum(dim=1, keepdim=True)) * (1.0 / logits.shape[0])


cross_entropy.output_hvp = _cross_entropy_output_hvp  # type: ignore[attr-defined]
