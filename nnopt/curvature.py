"""Sharpness: the top eigenvalues of a loss Hessian, certified, in few Hessian-vector products.

A twice-differentiable loss L is β-smooth (∇L is β-Lipschitz, Chiang Def. 10.1) exactly when
every eigenvalue of ∇²L lies in [−β, β] (the remark after the definition says "at most β"; the
book's chapter 3 gives the erratum). The descent lemma uses only the upper half: if every
eigenvalue is at most β, one step of gradient descent with step η < 2/β is guaranteed to
decrease L (Chiang Lemma 10.2, eqs 10.48–10.55). The *sharpness*
λmax(∇²L(w)) is the local value of β, and Cohen et al. (2021) observed that along full-batch
gradient descent on a network it rises until it reaches about 2/η and then hovers there
("the edge of stability").

* :class:`HessianOperator` — ∇²L(w) as a matrix-free operator (:mod:`nnopt.linalg`
  protocol) whose ``matvec`` is a Hessian-vector product; what does not depend on the
  direction is computed once per point and reused by every product (layer by layer for a
  dense network, :mod:`nnopt.dense_hvp`; by double backward otherwise), and the loss and
  gradient at the point are kept for a gradient step.
* :func:`top_hessian_eigenvalue` — λmax(∇²L(w)) by Lanczos, the *algebraically* largest
  eigenvalue (a negative eigenvalue of larger magnitude does not fool it), with the
  residual bound: some eigenvalue lies within ‖∇²L u − θ u‖ of the estimate θ.
* :func:`top_hessian_eigenvalues` — the k largest.
* :func:`gd_with_sharpness` — full-batch gradient descent that estimates the sharpness every
  few steps, warm-starting Lanczos from the previous eigenvector.
* :func:`hvp_to_gradient_macs` — what an exact Hessian-vector product costs against a gradient
  on a dense network, counted in multiply-adds; :func:`matmul_macs` measures the count of a call.
* :func:`nnopt.autodiff.hvp` — a single Hessian-vector product (re-exported from :mod:`nnopt.autodiff`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from . import linalg
from .dense_hvp import DenseNetworkHessian, dense_layers
from .autodiff import (
    Params,
    _check_data,
    _check_on_params_device,
    _check_loss_fn,
    _resolve,
    _scalar_loss,
    flatten,
    hvp,
    num_params,
    unflatten,
)
from .validation import (
    all_finite,
    check_choice,
    check_int,
    check_positive,
    check_tensor,
)

__all__ = [
    "HessianOperator",
    "SharpnessResult",
    "top_hessian_eigenvalue",
    "top_hessian_eigenvalues",
    "GDTrace",
    "gd_with_sharpness",
    "hvp",
    "hvp_to_gradient_macs",
    "matmul_macs",
    "COLD_MIN_HVP",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_METHODS = ("auto", "layerwise", "double-backward", "forward-over-reverse")


class HessianOperator(linalg.StoredShapeOperator):
    """∇²L(w) of L(w) = loss_fn(f(x; w), y) as a matrix-free symmetric operator.

    ``matvec(v)`` returns ∇²L(w) v for a flat vector v of length P (the number of
    parameters). Three ways to compute it, all exact:

    * ``"layerwise"`` — for a dense network (``nn.Sequential`` of ``nn.Linear`` and tanh,
      sigmoid, ReLU or identity activations, see :func:`nnopt.dense_hvp.dense_layers`) with a
      2-D input: Pearlmutter's R-operator written out per layer
      (:class:`nnopt.dense_hvp.DenseNetworkHessian`). The activations, their derivatives and
      the backward signals at w are computed once; a product is then only the bilinear
      products of eq. ch03-eq-hvp-cost and elementwise multiply-adds.
    * ``"double-backward"`` — any model: the gradient ∇L(w) is computed once with its graph
      kept, and each product differentiates ⟨∇L(w), v⟩ again: ∇²L(w) v = ∇_w ⟨∇L(w), v⟩.
    * ``"forward-over-reverse"`` — any model: each product is d/dt ∇L(w + t v)|_{t=0} by
      :func:`torch.func.jvp` (no stored graph, more work per product).

    ``"auto"`` (the default) takes ``"layerwise"`` when the model qualifies and
    ``"double-backward"`` otherwise; ``method`` holds the choice made.
    ``benchmarks/bench_curvature.py`` times them against a gradient.

    Attributes ``loss`` (L(w)) and ``grad`` (∇L(w), flat) are computed on construction and
    detached; ``n_matvecs`` counts products. The module's parameters are not changed.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                 params: Mapping[str, torch.Tensor] | None = None, *,
                 method: str = "auto") -> None:
        model, p = _resolve(model, params)
        loss_fn = _check_loss_fn(loss_fn)
        _check_data(x, y, p)
        method = check_choice(method, "method", _METHODS)
        self.model, self.loss_fn, self.x, self.y = model, loss_fn, x, y
        self.params: Params = {k: t.detach() for k, t in p.items()}
        first = next(iter(self.params.values()))
        self._set_shape(num_params(self.params), first.dtype, first.device)
        if method in ("auto", "layerwise"):
            layers = dense_layers(model)
            obstacle = _layerwise_obstacle(layers, x, first.dtype)
            if method == "layerwise" and obstacle is not None:
                raise obstacle
            method = "double-backward" if obstacle is not None else "layerwise"
        self.method = method
        if method == "layerwise":
            assert layers is not None
            in_features = self.params[layers[0].weight].shape[1]
            if x.shape[1] != in_features:
                raise ValueError(f"x must have {in_features} columns (the first layer's "
                                 f"inputs), got shape {tuple(x.shape)}")
            self._dense = DenseNetworkHessian(layers, loss_fn, x, y, self.params)
            self.loss = float(self._dense.loss)
            self.grad = self._dense.grad
            self._check_finite()
            return
        with torch.enable_grad():
            leaves = {k: t.clone().requires_grad_(True) for k, t in self.params.items()}
            loss = _scalar_loss(loss_fn(torch.func.functional_call(model, leaves, (x,)), y))
            keep = self.method == "double-backward"
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=keep,
                                        allow_unused=True)
        grads = tuple(torch.zeros_like(t) if g is None else g
                      for g, t in zip(grads, leaves.values()))
        self.loss = float(loss.detach())
        self.grad = torch.cat([g.detach().reshape(-1) for g in grads])
        self._check_finite()
        if keep:
            self._leaves = list(leaves.values())
            self._grads = grads
            self._live = [i for i, g in enumerate(grads) if g.requires_grad]

    def _check_finite(self) -> None:
        if not math.isfinite(self.loss) or not all_finite(self.grad):
            raise FloatingPointError("the loss or its gradient is not finite at these params")

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """∇²L(w) v for a flat vector v of length P."""
        _check_on_params_device(self.params, v=check_tensor(v, "v", shape=(self._size,)))
        self.n_matvecs += 1
        if self.method == "layerwise":
            return self._dense.hvp(v.to(self._dtype).contiguous())
        if self.method == "forward-over-reverse":
            out = hvp(self.model, self.loss_fn, self.x, self.y, v.to(self._dtype), self.params)
            return out  # type: ignore[return-value]
        pieces = unflatten(v.to(self._dtype), self.params)
        vs = list(pieces.values())
        if not self._live:  # the gradient does not depend on w: the Hessian is zero
            return torch.zeros_like(v)
        with torch.enable_grad():
            outs = torch.autograd.grad([self._grads[i] for i in self._live], self._leaves,
                                       grad_outputs=[vs[i] for i in self._live],
                                       retain_graph=True, allow_unused=True)
        return torch.cat([(torch.zeros_like(t) if o is None else o).reshape(-1)
                          for o, t in zip(outs, self._leaves)])


def _layerwise_obstacle(layers: object, x: torch.Tensor, dtype: torch.dtype) -> Exception | None:
    """Why ``method="layerwise"`` cannot be used, as the error to raise; None if it can."""
    if layers is None:
        return ValueError("method='layerwise' needs an nn.Sequential of nn.Linear layers, "
                          "each followed by at most one Tanh, Sigmoid, ReLU or Identity")
    if x.ndim != 2:
        return ValueError(f"method='layerwise' needs x of shape (n, d), got shape "
                          f"{tuple(x.shape)}")
    if x.dtype != dtype:
        return TypeError(f"method='layerwise' needs x of the parameters' dtype {dtype}, got "
                         f"{x.dtype}")
    return None


def hvp_to_gradient_macs(widths: Sequence[int]) -> Fraction:
    """Multiply-adds of an exact Hessian-vector product over those of a gradient, dense network.

    For layer widths d_0, …, d_L let m_l = d_{l−1} d_l (the n examples cancel). A gradient needs
    the forward product, the weight gradient and, from layer 2 on, the input gradient: 2 m_1 + 3 m_l.
    A product ∇²L v with the point's activations and backward signals reused (as
    :class:`HessianOperator` does) turns each of these bilinear products into two, except in the
    first layer, whose input has no tangent (Pearlmutter 1994; book eq. ch03-eq-hvp-cost):

        ratio = (2 m_1 + 6 Σ_{l≥2} m_l) / (2 m_1 + 3 Σ_{l≥2} m_l),

    between 1 (the first layer dominates) and 2 (the later layers dominate). Returned exactly.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"widths must be a sequence of ints, got {type(widths).__name__}")
    if len(widths) < 2:
        raise ValueError(f"widths must name at least an input and an output width, got {list(widths)}")
    d = [check_int(w, f"widths[{i}]", minimum=1) for i, w in enumerate(widths)]
    m = [a * b for a, b in zip(d[:-1], d[1:])]
    return Fraction(2 * m[0] + 6 * sum(m[1:]), 2 * m[0] + 3 * sum(m[1:]))


_aten = torch.ops.aten
# (operator, positions of the two factors in its arguments): the dense products whose
# multiply-adds matmul_macs counts
_PRODUCTS = {_aten.mm: (0, 1), _aten.addmm: (1, 2), _aten.addmm_: (1, 2), _aten.bmm: (0, 1),
             _aten.baddbmm: (1, 2), _aten.baddbmm_: (1, 2), _aten.mv: (0, 1), _aten.addmv: (1, 2),
             _aten.addmv_: (1, 2), _aten.dot: (0, 1)}


class _CountProducts(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        where = _PRODUCTS.get(func.overloadpacket)
        if where is not None:
            a, b = args[where[0]], args[where[1]]
            # (…, n, k) @ (…, k, m): batch · n · k · m; a vector factor counts as m = 1
            m = b.shape[-1] if b.ndim >= 2 else 1
            self.macs += math.prod(a.shape) * m
        return func(*args, **(kwargs or {}))


def matmul_macs(fn: Callable[[], object]) -> int:
    """Multiply-adds of the dense matrix products that one call of ``fn()`` performs.

    Counts every ``mm``, ``addmm`` (also in place and with ``out=``), ``bmm``, ``baddbmm``,
    ``mv``, ``addmv`` and ``dot`` dispatched while ``fn`` runs, backward passes included, as
    n·k·m for an (n × k)·(k × m) product. It measures what an implementation computes, to check
    a count such as :func:`hvp_to_gradient_macs` against the code (the book's chapter 3 does).
    Products done in other ways (``einsum`` lowers to ``bmm``; convolutions are not counted) and
    elementwise work are outside the count.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    with _CountProducts() as counter:
        fn()
    return counter.macs


@dataclass
class SharpnessResult:
    """Top Hessian eigenvalue(s) with a residual-based certificate.

    Attributes
    ----------
    value
        θ, the top Ritz value: an estimate of λmax(∇²L(w)) that never exceeds it.
    vector
        The unit Ritz vector u (flat, length P) with θ = uᵀ ∇²L(w) u.
    residual
        A bound on ‖∇²L(w) u − θ u‖ (Lanczos's recurrence value plus a rounding allowance, see
        :func:`nnopt.linalg.lanczos`); some eigenvalue of ∇²L(w) lies within this of θ.
    error_bound
        The certified absolute error (equal to ``residual``).
    n_hvp
        Hessian-vector products used (``n_matvecs`` is the same number).
    converged
        ``error_bound <= tol * |value|``; never True with a larger bound.
    values, vectors, residuals
        The top-k Ritz values (descending), unit Ritz vectors (columns) and residuals.
    loss, grad
        L(w) and ∇L(w) (flat) at the point, computed on the way.
    """

    value: float
    vector: torch.Tensor
    residual: float
    error_bound: float
    n_hvp: int
    converged: bool
    tol: float
    values: torch.Tensor = field(repr=False)
    vectors: torch.Tensor = field(repr=False)
    residuals: torch.Tensor = field(repr=False)
    loss: float = field(repr=False, default=math.nan)
    grad: torch.Tensor | None = field(repr=False, default=None)

    @property
    def n_matvecs(self) -> int:
        return self.n_hvp

    @property
    def relative_error_bound(self) -> float:
        """error_bound / |value|."""
        return self.error_bound / abs(self.value) if self.value != 0 else math.inf


def _warm_vector(warm_start: object, size: int) -> torch.Tensor | None:
    if warm_start is None:
        return None
    if isinstance(warm_start, SharpnessResult):
        return warm_start.vector
    if isinstance(warm_start, Mapping):
        return flatten(warm_start)
    if isinstance(warm_start, torch.Tensor):
        return check_tensor(warm_start, "warm_start", shape=(size,))
    raise TypeError("warm_start must be None, a flat tensor, a parameter dict or a "
                    f"SharpnessResult, got {type(warm_start).__name__}")


COLD_MIN_HVP = 20
"""Smallest Krylov dimension before a cold (random) start may stop (ARPACK's default ncv is 20).

A random start vector can have an unusually small component along the top eigenvector; then
a Ritz pair for the *second* eigenvalue converges first and passes the residual test. Not
testing before 20 products gives the top eigenvector time to emerge. On the benchmark network
a stop at the first passing test certified λ₂ instead of λmax for one seed in six; with this
minimum all seeds tried were right."""


def _top_k(op: HessianOperator, k: int, tol: float, warm_start: object, seed: int | None,
           max_hvp: int, min_hvp: int | None = None) -> SharpnessResult:
    tol = check_positive(tol, "tol")
    max_hvp = check_int(max_hvp, "max_hvp", minimum=1)
    if seed is not None:
        check_int(seed, "seed", minimum=0)
    v0 = _warm_vector(warm_start, op.size)
    if v0 is not None:
        v0 = v0.to(dtype=op.dtype, device=op.device)
        if float(torch.linalg.vector_norm(v0)) == 0.0:
            raise ValueError("warm_start must be a nonzero vector")
    if min_hvp is None:
        min_hvp = COLD_MIN_HVP if v0 is None else 1
    min_hvp = min(check_int(min_hvp, "min_hvp", minimum=1), max_hvp, op.size)
    r = linalg.lanczos(op, k, v0=v0, tol=tol, max_iter=max_hvp, seed=seed, min_iter=min_hvp)
    # the certificate: converged only if every reported residual is within tol (relative)
    ok = bool((r.residuals <= tol * r.values.abs()).all()) and r.values.numel() == k
    return SharpnessResult(value=r.value, vector=r.vector, residual=r.residual,
                           error_bound=r.residual, n_hvp=op.n_matvecs, converged=ok, tol=tol,
                           values=r.values, vectors=r.vectors, residuals=r.residuals,
                           loss=op.loss, grad=op.grad)


def top_hessian_eigenvalue(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                           *, tol: float = 1e-3, warm_start: object = None,
                           seed: int | None = None, params: Mapping[str, torch.Tensor] | None = None,
                           max_hvp: int = 100, min_hvp: int | None = None,
                           method: str = "auto") -> SharpnessResult:
    """The sharpness λmax(∇²L(w)) of L(w) = loss_fn(f(x; w), y), the local β of Chiang Def. 10.1.

    Runs :func:`nnopt.linalg.lanczos` on :class:`HessianOperator` and stops as soon as the
    top Ritz pair (θ, u) has ‖∇²L u − θ u‖ ≤ tol · |θ|. Because ∇²L is symmetric, some
    eigenvalue then lies within tol · |θ| of θ (the certificate ``error_bound``), and
    θ ≤ λmax always (Rayleigh–Ritz). Lanczos targets the algebraically largest eigenvalue,
    so an indefinite Hessian with a more negative eigenvalue of larger magnitude is
    handled (power iteration would return that negative eigenvalue).

    What is certified is that θ ≤ λmax and that *an* eigenvalue lies within ``error_bound``
    of θ. That this eigenvalue is λmax relies on the start vector having a fair component
    along the top eigenvector: with start components c₁, c₂ on the top two eigenvectors,
    a Ritz vector that cannot yet separate them has λmax − θ ≈ ``error_bound`` · |c₂/c₁|.
    A random start can be unlucky that way, which is why a cold start does not test for
    convergence before :data:`COLD_MIN_HVP` products (as ARPACK's minimum basis of 20).
    A warm start inherits the previous top direction; when two top eigenvalues cross between
    estimates it can certify the one that was on top before. No Krylov method can exclude
    this without knowing the spectrum.

    Parameters
    ----------
    model, loss_fn, x, y
        The network f, ``loss_fn(outputs, targets)`` → scalar, inputs and targets.
    tol
        Relative error to certify (> 0).
    warm_start
        A start vector: a previous :class:`SharpnessResult`, a flat tensor of length P or a
        parameter dict (for tracking the sharpness along training).
    seed
        Seed of the random start vector when there is no warm start (default 0).
    params
        The point w (default: detached copies of the module's parameters).
    max_hvp
        Most Hessian-vector products to spend (the Krylov dimension).
    min_hvp
        Products before the first convergence test; default :data:`COLD_MIN_HVP` (20) for a
        random start and 1 for a warm start.
    method
        ``"auto"`` (default), ``"layerwise"``, ``"double-backward"`` or
        ``"forward-over-reverse"``: how each product is computed (see :class:`HessianOperator`).
    """
    op = HessianOperator(model, loss_fn, x, y, params, method=method)
    return _top_k(op, 1, tol, warm_start, seed, max_hvp, min_hvp)


def top_hessian_eigenvalues(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                            k: int, *, tol: float = 1e-3, warm_start: object = None,
                            seed: int | None = None,
                            params: Mapping[str, torch.Tensor] | None = None,
                            max_hvp: int = 100, min_hvp: int | None = None,
                            method: str = "auto") -> SharpnessResult:
    """The k largest eigenvalues of ∇²L(w) (descending), each certified to ``tol`` (relative).

    Same as :func:`top_hessian_eigenvalue`, but Lanczos runs until all k top Ritz pairs have
    relative residual ≤ tol; ``values``, ``vectors`` and ``residuals`` hold them.
    """
    k = check_int(k, "k", minimum=1)
    op = HessianOperator(model, loss_fn, x, y, params, method=method)
    if k > op.size:
        raise ValueError(f"k must be at most the number of parameters ({op.size}), got {k}")
    return _top_k(op, k, tol, warm_start, seed, max_hvp, min_hvp)


@dataclass
class GDTrace:
    """The record of :func:`gd_with_sharpness`.

    ``loss[t]`` is L(w_t) for t = 0, …, steps − 1 (before step t), ``grad_sq[t]`` is
    ‖∇L(w_t)‖²; ``sharpness_steps`` the
    steps at which the sharpness was estimated, ``sharpness`` the estimates, ``n_hvp`` the
    products each used, ``converged`` their flags, ``params`` the final parameters and
    ``seconds`` the wall time.
    """

    loss: list[float]
    grad_sq: list[float]
    sharpness_steps: list[int]
    sharpness: list[float]
    error_bounds: list[float]
    n_hvp: list[int]
    converged: list[bool]
    params: Params
    seconds: float
    diverged: bool = False


def gd_with_sharpness(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *,
                      lr: float, steps: int, every: int | None = 25, tol: float = 1e-3,
                      seed: int = 0, warm: bool = True, max_hvp: int = 100,
                      params: Mapping[str, torch.Tensor] | None = None,
                      callback: Callable[[int, Params, SharpnessResult], None] | None = None
                      ) -> GDTrace:
    """Full-batch gradient descent w_{t+1} = w_t − η ∇L(w_t) (Chiang eq. 10.5), tracking sharpness.

    Every ``every`` steps (``None``: never) it estimates λmax(∇²L(w_t)) with
    :func:`top_hessian_eigenvalue`, warm-started from the previous eigenvector when
    ``warm``; the gradient computed for the Hessian operator is reused for that step, so a
    tracked step costs one gradient plus the Hessian-vector products. Works on a copy of
    the parameters (the module is not changed); stops early, with ``diverged=True``, if the
    loss stops being finite. ``callback(t, w_t, result)``, if given, is called after each estimate
    with the step, the parameters at that step (the live tensors, updated in place by later steps:
    copy what you keep) and the :class:`SharpnessResult`, for example to check the estimates
    against an independent reference.
    """
    model, p = _resolve(model, params)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    loss_fn = _check_loss_fn(loss_fn)
    _check_data(x, y, p)
    lr = check_positive(lr, "lr")
    steps = check_int(steps, "steps", minimum=0)
    if every is not None:
        every = check_int(every, "every", minimum=1)
    w = {k: t.detach().clone() for k, t in p.items()}
    trace = GDTrace([], [], [], [], [], [], [], w, 0.0)
    prev: SharpnessResult | None = None
    start = time.perf_counter()
    for t in range(steps):
        if every is not None and t % every == 0:
            try:
                op = HessianOperator(model, loss_fn, x, y, w)
            except FloatingPointError:
                trace.loss.append(math.nan)
                trace.grad_sq.append(math.nan)
                trace.diverged = True
                break
            res = _top_k(op, 1, tol, prev if warm else None, seed, max_hvp)
            prev = res
            trace.sharpness_steps.append(t)
            trace.sharpness.append(res.value)
            trace.error_bounds.append(res.error_bound)
            trace.n_hvp.append(res.n_hvp)
            trace.converged.append(res.converged)
            if callback is not None:
                callback(t, w, res)
            loss_t, grads = op.loss, list(unflatten(op.grad, w).values())
            del op
        else:
            with torch.enable_grad():
                leaves = {k: v.requires_grad_(True) for k, v in w.items()}
                loss = loss_fn(torch.func.functional_call(model, leaves, (x,)), y)
                grads = list(torch.autograd.grad(loss, list(leaves.values())))
            loss_t = float(loss.detach())
            for v in w.values():
                v.requires_grad_(False)
        trace.loss.append(loss_t)
        trace.grad_sq.append(float(sum((g.detach() ** 2).sum() for g in grads)))
        if not math.isfinite(loss_t):
            trace.diverged = True
            break
        with torch.no_grad():
            for v, g in zip(w.values(), grads):
                v.sub_(lr * g)
    trace.seconds = time.perf_counter() - start
    trace.params = w
    return trace
