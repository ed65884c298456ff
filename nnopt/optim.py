"""Learning rates from a positive semidefinite model of the loss: ADLER (Balboni ch. 7).

Notation (Balboni §7.2, eqs 7.1–7.2): the network maps a minibatch to its stacked outputs
F(θ) ∈ ℝ^{dn}; the loss 𝓛 is convex in those outputs; h = 𝓛 ∘ F. With J = ∂F/∂θ the
Jacobian, the Hessian of h splits into a kernel-driven term and a perturbation term
(eq. 7.3), ∇²h = Jᵀ ∇²𝓛 J + Σ_μ ∂_μ𝓛 ∇²F_μ. ADLER keeps the first term,

    Q(θ) = Jᵀ ∇²𝓛(F(θ)) J          (the generalised Gauss–Newton matrix, §7.7),

which is PSD whenever 𝓛 is convex, and picks the step size that minimises the quadratic
model of h along the gradient G = ∇h_I(θ) of the minibatch I (§7.7):

    η = GᵀG / (GᵀQG + ε GᵀG) = GᵀG / (uᵀ ∇²𝓛 u + ε GᵀG),     u = J G.

u is a Jacobian–vector product of the outputs along the gradient, so the curvature costs one
extra pass and no Hessian is ever formed. The per-minibatch estimates are combined by an
exponentially weighted average of their logarithms (§7.7 and Algorithm 1):

    s_{k+1} = β s_k + log η_k,   c_{k+1} = β c_k + 1,   η̂_k = exp(s_{k+1} / c_{k+1}).

* :class:`ADLER` — Algorithm 1 as a :class:`torch.optim.Optimizer`.
* :class:`OuterProductLR` — the thesis's comparison method (its footnotes 10 and 12, called
  "GN" there): ∇²𝓛 replaced by an outer product of loss gradients (per example by default,
  i.e. an empirical-Fisher-like matrix; *not* the generalised Gauss–Newton matrix, which is
  what ADLER uses) and plain averaging of the η_k.
* :func:`adler_step_size` and :func:`outer_product_step_size` — η_k at the current
  parameters, without changing anything.

How u = J G is computed. The gradient is obtained as G = Jᵀ r with r = ∂𝓛/∂F, by a backward
pass whose vector r is a leaf tensor and whose graph is kept; G is then linear in r, and
differentiating ⟨G(r), G⟩ with respect to r gives J G (the "double-vjp" form of a JVP). It
reuses the activations of the one forward pass, so a step costs one forward, one backward and
one backward-of-the-backward (about 1.6 SGD steps for an MLP; see
``benchmarks/bench_adler.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .validation import check_choice, check_positive, check_probability, check_tensor

__all__ = ["ADLER", "OuterProductLR", "adler_step_size", "outer_product_step_size"]

LossSpec = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_LOSSES = ("mse", "cross_entropy")
_ON_INVALID = ("raise", "skip")
# a computed uᵀ∇²𝓛u below -_CONVEX_TOL·(sum of the magnitudes of its terms) cannot be
# round-off: the loss is not convex in the outputs along u
_CONVEX_TOL_ULPS = 1024.0


# --------------------------------------------------------------------------- checks


def _unwrap(model: object) -> tuple[nn.Module, Any]:
    """The module to run and the process group to average over (None without DDP)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        group = model.process_group if dist.is_initialized() else None
        return model.module, group
    return model, None


def _check_loss(loss: object) -> LossSpec:
    if isinstance(loss, str):
        return check_choice(loss, "loss", _LOSSES)
    if callable(loss):
        return loss
    raise TypeError(
        f"loss must be 'mse', 'cross_entropy' or a callable loss(outputs, y), got "
        f"{type(loss).__name__}"
    )


def _trainable(module: nn.Module) -> list[torch.nn.Parameter]:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model must have at least one parameter with requires_grad=True")
    return params


def _check_batch(x: object, y: object, params: Sequence[torch.Tensor]) -> None:
    # non-finite entries of x are not looked for here: they make the loss non-finite,
    # which the step detects without a separate pass over x
    x = check_tensor(x, "x", ndim=range(1, 8), floating=False, finite=False)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    dev = params[0].device
    if x.device != dev:
        raise ValueError(f"x must be on the model's device {dev}, got {x.device}")
    if y.device != dev:
        raise ValueError(f"y must be on the model's device {dev}, got {y.device}")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y must have one target per example: x has {x.shape[0]} examples, "
            f"y has shape {tuple(y.shape)}"
        )


def _check_targets(out: torch.Tensor, y: torch.Tensor, loss: LossSpec, check_range: bool) -> None:
    if loss == "mse":
        if y.shape != out.shape:
            raise ValueError(
                f"y must have the shape of the model outputs {tuple(out.shape)} for loss='mse', "
                f"got {tuple(y.shape)}"
            )
        if not y.is_floating_point() or y.dtype != out.dtype:
            raise TypeError(f"y must have the outputs' dtype {out.dtype} for 'mse', got {y.dtype}")
    elif loss == "cross_entropy":
        if out.ndim != 2:
            raise ValueError(
                f"model outputs must be logits of shape (n, classes) for 'cross_entropy', "
                f"got {tuple(out.shape)}"
            )
        if y.shape != (out.shape[0],) or y.dtype != torch.long:
            raise ValueError(
                f"y must be int64 class indices of shape ({out.shape[0]},) for "
                f"'cross_entropy', got {y.dtype} of shape {tuple(y.shape)}"
            )
        if check_range and y.numel() and (int(y.min()) < 0 or int(y.max()) >= out.shape[1]):
            raise ValueError(f"y must hold class indices in [0, {out.shape[1]})")


# --------------------------------------------------------------------------- the core


def _loss_and_residual(
    out: torch.Tensor, y: torch.Tensor, loss: LossSpec
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The loss value, r = ∂𝓛/∂F (detached) and what the curvature term needs."""
    o = out.detach()
    if loss == "mse":
        # 𝓛 = mean over all entries of (F - y)², ∂𝓛/∂F = 2(F - y)/m, ∇²𝓛 = (2/m) I
        diff = o - y
        m = diff.numel()
        return (diff * diff).sum() / m, diff * (2.0 / m), m
    if loss == "cross_entropy":
        # 𝓛 = (1/n) Σ_k −log softmax(F_k)[y_k], ∂𝓛/∂F_k = (p_k − e_{y_k})/n
        logp = torch.log_softmax(o, dim=1)
        p = logp.exp()
        n = o.shape[0]
        value = F.nll_loss(logp, y)
        r = p.clone()
        r[torch.arange(n, device=o.device), y] -= 1.0
        return value, r / n, p
    o = o.requires_grad_(True)
    if not callable(loss):  # pragma: no cover - _check_loss admits only the names above
        raise ValueError(f"loss must be one of {list(_LOSSES)} or a callable, got {loss!r}")
    with torch.enable_grad():
        value = loss(o, y)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ValueError("loss must return a scalar tensor")
        value = value.reshape(())
        (r,) = torch.autograd.grad(value, o, create_graph=True)
    return value.detach(), r.detach(), (o, r)


def _curvature(u: torch.Tensor, loss: LossSpec, aux: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """uᵀ ∇²𝓛 u and the sum of the magnitudes of its terms (for the convexity check)."""
    if loss == "mse":
        q = (u * u).sum() * (2.0 / aux)
        return q, q
    if loss == "cross_entropy":
        # per example Σ_i p_i u_i² − (p·u)², averaged as the loss is (Balboni §7.7, Q of CE)
        p = aux
        n = p.shape[0]
        pos = (p * u * u).sum(dim=1)
        pu = (p * u).sum(dim=1)
        return (pos - pu * pu).sum() / n, pos.sum() / n
    o, r = aux
    if not r.requires_grad:  # ∂𝓛/∂F does not depend on F: the loss is linear, ∇²𝓛 = 0
        zero = torch.zeros((), dtype=u.dtype, device=u.device)
        return zero, zero
    (hv,) = torch.autograd.grad(r, o, grad_outputs=u, retain_graph=False, allow_unused=True)
    if hv is None:
        hv = torch.zeros_like(u)
    terms = u * hv
    return terms.sum(), terms.abs().sum()


def _outer_curvature(u: torch.Tensor, r: torch.Tensor, per_example: bool) -> torch.Tensor:
    """uᵀ Q_op u for the outer-product replacement of ∇²𝓛 (Balboni footnote 10).

    With 𝓛 = (1/n) Σ_k ℓ_k, per example: Q_op = (1/n) Σ_k ∇ℓ_k ∇ℓ_kᵀ (block diagonal) and
    ∇ℓ_k = n r_k, so uᵀ Q_op u = n Σ_k (r_k·u_k)². Whole batch: Q_op = r rᵀ, uᵀQ_op u = (r·u)².
    """
    n = r.shape[0]
    if per_example:
        ru = (r * u).reshape(n, -1).sum(dim=1)
        return n * (ru * ru).sum()
    ru = (r * u).sum()
    return ru * ru


class _StepQuantities:
    __slots__ = ("loss", "grads", "num", "den", "den_scale")

    def __init__(self, loss, grads, num, den, den_scale):
        self.loss, self.grads, self.num, self.den, self.den_scale = loss, grads, num, den, den_scale


def _step_quantities(
    module: nn.Module,
    params: Sequence[torch.Tensor],
    loss: LossSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    group: Any,
    curvature: str,
    check_range: bool,
) -> _StepQuantities:
    """Loss, gradient G, numerator GᵀG and denominator uᵀ ∇²𝓛 u with u = J G.

    Under DDP (``group`` not None) G is averaged over the ranks with one all-reduce and the
    scalars (GᵀG, uᵀ∇²𝓛u with the global G, loss) with a second one, so every rank gets the
    values of one process on the concatenated batch (equal per-rank batch sizes assumed, as
    DDP's own gradient averaging does).
    """
    with torch.enable_grad():
        out = module(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"model must return a tensor, got {type(out).__name__}")
        _check_targets(out, y, loss, check_range)
        value, r, aux = _loss_and_residual(out, y, loss)
        r_leaf = r.detach().requires_grad_(True)
        grads = torch.autograd.grad(
            out, params, grad_outputs=r_leaf, create_graph=True, allow_unused=True
        )
    used = [i for i, g in enumerate(grads) if g is not None]
    G = [grads[i].detach() if grads[i] is not None else torch.zeros_like(params[i])
         for i in range(len(params))]
    world = 1
    if group is not None:
        world = dist.get_world_size(group)
        flat = torch.cat([g.reshape(-1) for g in G])
        dist.all_reduce(flat, group=group)
        flat /= world
        G = list(torch.split(flat, [p.numel() for p in params]))
        G = [g.view_as(p) for g, p in zip(G, params)]
    num = torch.stack(torch._foreach_norm(G)).square().sum()
    if used:
        (u,) = torch.autograd.grad(
            [grads[i] for i in used], r_leaf, grad_outputs=[G[i] for i in used],
            allow_unused=True,
        )
        if u is None:
            u = torch.zeros_like(r)
    else:
        u = torch.zeros_like(r)
    if curvature == "ggn":
        den, den_scale = _curvature(u.detach(), loss, aux)
    else:
        if loss not in _LOSSES:  # free the callable's graph
            del aux
        den = _outer_curvature(u.detach(), r, curvature == "outer_example")
        den_scale = den.abs()
    if group is not None:
        scal = torch.stack([num, den, den_scale, value.to(num.dtype)])
        dist.all_reduce(scal, group=group)
        scal /= world
        num, den, den_scale, value = scal[0], scal[1], scal[2], scal[3]
    return _StepQuantities(value, G, num, den, den_scale)


def _eta(q: _StepQuantities, eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """η = GᵀG / (max(uᵀ∇²𝓛u, 0) + ε GᵀG) and the flags saying whether it may be used."""
    tiny = torch.finfo(q.num.dtype).eps * _CONVEX_TOL_ULPS
    finite = torch.isfinite(q.num) & torch.isfinite(q.den) & torch.isfinite(q.loss)
    nonconvex = q.den < -tiny * q.den_scale
    zero = q.num == 0
    eta = q.num / (q.den.clamp_min(0.0) + eps * q.num)
    ok = finite & ~nonconvex & ~zero & torch.isfinite(eta) & (eta > 0)
    return eta, {"ok": ok, "finite": finite, "nonconvex": nonconvex, "zero": zero}


def _raise_for(flags: dict[str, torch.Tensor], q: _StepQuantities) -> None:
    if not bool(flags["finite"]):
        raise ValueError(
            "loss is not finite (or its gradient or curvature is not): got loss = "
            f"{float(q.loss)}; the step was not taken and the optimizer state is unchanged"
        )
    if bool(flags["nonconvex"]):
        raise ValueError(
            "loss must be convex in the model outputs: the curvature along the step is "
            f"uᵀ∇²𝓛u = {float(q.den):.3e} < 0; the step was not taken"
        )
    if not bool(flags["zero"]):
        raise ValueError(
            "eps: the curvature along the gradient is 0 and eps = 0, so the step size is "
            "infinite; use eps > 0"
        )


# --------------------------------------------------------------------------- optimizers


class _CurvatureLR(torch.optim.Optimizer):
    """Shared machinery: SGD whose step size minimises a PSD quadratic model (Balboni §7.7)."""

    _curvature_kind = "ggn"

    def __init__(self, model: nn.Module, loss: LossSpec, beta: float, eps: float,
                 on_invalid: str) -> None:
        module, _ = _unwrap(model)
        self._model = model
        self._loss = _check_loss(loss)
        beta = check_probability(beta, "beta", allow_zero=True)
        if beta >= 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        eps = check_positive(eps, "eps", strict=False)
        on_invalid = check_choice(on_invalid, "on_invalid", _ON_INVALID)
        params = _trainable(module)
        self._on_invalid = on_invalid  # a policy, not a hyperparameter: not in state_dict()
        super().__init__(params, dict(lr=0.0, beta=beta, eps=eps))
        if len(self.param_groups) != 1:  # pragma: no cover - the constructor makes one group
            raise ValueError("ADLER uses a single parameter group")

    # the running state lives with the first parameter, so state_dict() carries it
    def _global_state(self) -> dict[str, Any]:
        p0 = self.param_groups[0]["params"][0]
        st = self.state[p0]
        if not st:
            z = torch.zeros((), dtype=p0.dtype, device=p0.device)
            st.update(step=z.clone(), eta=z.clone(), avg_num=z.clone(), avg_den=z.clone(),
                      n_skipped=z.clone())
        return st

    def _combine(self, st: dict[str, torch.Tensor], eta: torch.Tensor, beta: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _average(self, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """One minibatch step of Algorithm 1 on ``(x, y)``; returns the minibatch loss.

        Sets ``p.grad`` to the (DDP-averaged) gradient, ``param_groups[0]["lr"]`` to the
        step size η̂ it applied (a 0-dim tensor on the parameters' device) and
        ``state[...]["eta"]`` to the raw estimate η_k. With ``on_invalid="raise"`` a
        non-finite loss, a negative curvature (a loss that is not convex in the outputs) or
        an infinite η raise ``ValueError`` before anything is changed; with ``"skip"`` the
        step is skipped on the device (no host synchronisation), ``n_skipped`` counts it and
        the parameters and running average are left as they were. A zero gradient is
        always a no-op.
        """
        group = self.param_groups[0]
        params = group["params"]
        raising = self._on_invalid == "raise"
        module, pg = _unwrap(self._model)
        _check_batch(x, y, params)
        q = _step_quantities(module, params, self._loss, x, y, group=pg,
                             curvature=self._curvature_kind,
                             check_range=raising or y.device.type == "cpu")
        eta, flags = _eta(q, group["eps"])
        ok = flags["ok"]
        st = self._global_state()
        if raising and not bool(ok):
            _raise_for(flags, q)
            return q.loss  # zero gradient: nothing to do
        num, den = self._combine(st, eta, group["beta"])
        new_num = torch.where(ok, num, st["avg_num"])
        new_den = torch.where(ok, den, st["avg_den"])
        lr = torch.where(ok, self._average(new_num, new_den), torch.zeros_like(eta))
        st["avg_num"].copy_(new_num)
        st["avg_den"].copy_(new_den)
        st["eta"].copy_(torch.where(ok, eta, st["eta"]))
        st["step"].add_(ok.to(st["step"].dtype))
        st["n_skipped"].add_((~ok & ~flags["zero"]).to(st["n_skipped"].dtype))
        grads = q.grads
        if not raising:
            grads = [torch.where(ok, g, torch.zeros((), dtype=g.dtype, device=g.device))
                     for g in grads]
        if lr.device.type == "cpu":  # reading a CPU scalar costs no device synchronisation
            torch._foreach_add_(params, grads, alpha=-float(lr))
        else:
            torch._foreach_add_(params, torch._foreach_mul(grads, -lr))
        for p, g in zip(params, q.grads):
            p.grad = g
        group["lr"] = lr
        return q.loss


class ADLER(_CurvatureLR):
    """ADaptive LEarning Rate SGD (Balboni Algorithm 1, §7.7).

    ``ADLER(model, loss="mse" | "cross_entropy" | callable, beta=0.99, eps=1e-10)`` optimises
    ``model.parameters()``; ``opt.step(x, y)`` takes one minibatch step

        η_k = GᵀG / (GᵀQG + ε GᵀG),  Q = Jᵀ∇²𝓛J (generalised Gauss–Newton),
        s ← β s + log η_k,  c ← β c + 1,  θ ← θ − exp(s/c) G,

    and returns the minibatch loss. ``"mse"`` is ``F.mse_loss`` (mean over all entries),
    ``"cross_entropy"`` is ``F.cross_entropy`` with integer labels; both use the closed
    forms of uᵀ∇²𝓛u (MSE: 2‖u‖²/m; cross-entropy: per example Σᵢpᵢuᵢ² − (p·u)², averaged
    over the batch). A callable ``loss(outputs, y)`` must be convex in the outputs and a
    mean over examples; its curvature goes through autograd (a Hessian-vector product in
    output space). Works with a model wrapped in ``DistributedDataParallel`` (see
    the private helper ``_step_quantities``). The running log-average (``avg_num`` = s, ``avg_den`` = c)
    is optimizer state and round-trips through ``state_dict()``.
    """

    _curvature_kind = "ggn"

    def __init__(self, model: nn.Module, loss: LossSpec = "mse", beta: float = 0.99,
                 eps: float = 1e-10, on_invalid: str = "raise") -> None:
        super().__init__(model, loss, beta, eps, on_invalid)

    def _combine(self, st, eta, beta):
        return beta * st["avg_num"] + torch.log(eta), beta * st["avg_den"] + 1.0

    def _average(self, num, den):
        return torch.exp(num / den)


class OuterProductLR(_CurvatureLR):
    """The thesis's comparison method ("GN" in Balboni §7.8, footnotes 10 and 12).

    Same step as :class:`ADLER` but with ∇²𝓛 replaced by an outer product of loss
    gradients and the η_k averaged arithmetically, η̂_k = Σβ^{k−i}η_i / Σβ^{k−i}.
    ``per_example=True`` (default) uses (1/n)Σ_k ∇ℓ_k∇ℓ_kᵀ, an empirical-Fisher-like matrix
    (BHHH); ``per_example=False`` uses ∇𝓛∇𝓛ᵀ of the whole batch, for which uᵀQu = (GᵀG)²
    exactly and η_k = 1/(GᵀG + ε). Neither is the generalised Gauss–Newton matrix, which is
    ADLER's Q.
    """

    def __init__(self, model: nn.Module, loss: LossSpec = "mse", beta: float = 0.99,
                 eps: float = 1e-10, per_example: bool = True, on_invalid: str = "raise") -> None:
        if not isinstance(per_example, bool):
            raise TypeError(f"per_example must be a bool, got {type(per_example).__name__}")
        self._curvature_kind = "outer_example" if per_example else "outer_batch"
        super().__init__(model, loss, beta, eps, on_invalid)

    def _combine(self, st, eta, beta):
        return beta * st["avg_num"] + eta, beta * st["avg_den"] + 1.0

    def _average(self, num, den):
        return num / den


# --------------------------------------------------------------------------- functional


def _step_size(model, loss, x, y, eps, kind) -> torch.Tensor:
    module, pg = _unwrap(model)
    loss = _check_loss(loss)
    eps = check_positive(eps, "eps", strict=False)
    params = _trainable(module)
    _check_batch(x, y, params)
    q = _step_quantities(module, params, loss, x, y, group=pg, curvature=kind,
                         check_range=True)
    eta, flags = _eta(q, eps)
    if not bool(flags["ok"]):
        if bool(flags["zero"]) and bool(flags["finite"]):
            return torch.full_like(eta, math.nan)
        _raise_for(flags, q)
    return eta.detach()


def adler_step_size(model: nn.Module, loss: LossSpec, x: torch.Tensor, y: torch.Tensor,
                    eps: float = 1e-10) -> torch.Tensor:
    """η(θ) = GᵀG / (GᵀQG + ε GᵀG) at the current parameters (Balboni §7.7).

    The raw per-minibatch estimate ADLER would average, as a 0-dim tensor; NaN when the
    gradient is zero. Parameters and their ``.grad`` are left untouched.
    """
    return _step_size(model, loss, x, y, eps, "ggn")


def outer_product_step_size(model: nn.Module, loss: LossSpec, x: torch.Tensor,
                            y: torch.Tensor, eps: float = 1e-10,
                            per_example: bool = True) -> torch.Tensor:
    """η_k of :class:`OuterProductLR` at the current parameters (Balboni footnote 10)."""
    if not isinstance(per_example, bool):
        raise TypeError(f"per_example must be a bool, got {type(per_example).__name__}")
    return _step_size(model, loss, x, y, eps, "outer_example" if per_example else "outer_batch")
