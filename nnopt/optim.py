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

Host synchronisation. On an accelerator a step never reads a device value on the host: η, the
running average and the validity flags stay on the device, and an invalid step (non-finite
loss, loss not convex in the outputs, infinite η, class index out of range) is skipped there
with a mask. With the default ``on_invalid="raise"`` the error is then deferred: each step
starts a non-blocking copy of a few flags to pinned host memory, a later ``step()`` raises
``ValueError`` (naming the step) once that copy has landed, and ``check_invalid()`` waits for
all of them, which is what to call at the end of training or at a logging point. On the CPU
reading a scalar is free, and an invalid step raises at once, before anything is changed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .validation import (check_choice, check_class_indices, check_positive, check_probability,
                         check_tensor)

__all__ = ["ADLER", "OuterProductLR", "adler_step_size", "outer_product_step_size"]

LossSpec = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_LOSSES = ("mse", "cross_entropy")
_ON_INVALID = ("raise", "skip")
# a computed uᵀ∇²𝓛u below -_CONVEX_TOL·(sum of the magnitudes of its terms) cannot be
# round-off: the loss is not convex in the outputs along u
_CONVEX_TOL_ULPS = 1024.0


def _sync_free(device: torch.device) -> bool:
    """Whether a step on ``device`` must not read device values on the host.

    True off the CPU. The tests replace this function to run the accelerator's code path
    (masking, deferred errors) on the CPU.
    """
    return device.type != "cpu"


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
        check_class_indices(y, "y", out.shape[0], out.shape[1], check_range=check_range)


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
        # subtract e_{y_k} with a scatter: no advanced indexing, no host read
        r = p.scatter_add(1, y.unsqueeze(1), p.new_full((n, 1), -1.0))
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
    __slots__ = ("loss", "grads", "num", "den", "den_scale", "bad_labels", "n_classes")

    def __init__(self, loss, grads, num, den, den_scale, bad_labels=None, n_classes=None):
        self.loss, self.grads, self.num, self.den, self.den_scale = loss, grads, num, den, den_scale
        # a 0-dim bool tensor when the class indices were checked on the device, else None
        self.bad_labels: torch.Tensor | None = bad_labels
        self.n_classes: int | None = n_classes


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

    With ``check_range`` the class indices of ``"cross_entropy"`` are checked on the host (a
    read of y); without it they are checked on the device: out-of-range indices are clamped
    so that the computation stays defined, and ``bad_labels`` flags the step as invalid.
    """
    bad_labels = None
    n_classes = None
    with torch.enable_grad():
        out = module(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"model must return a tensor, got {type(out).__name__}")
        _check_targets(out, y, loss, check_range)
        if loss == "cross_entropy" and not check_range:
            n_classes = out.shape[1]
            bad_labels = ((y < 0) | (y >= n_classes)).any()
            y = y.clamp(0, n_classes - 1)
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
        parts = [num, den, den_scale, value.to(num.dtype)]
        if bad_labels is not None:  # every rank must skip the same steps
            parts.append(bad_labels.to(num.dtype))
        scal = torch.stack(parts)
        dist.all_reduce(scal, group=group)
        scal /= world
        num, den, den_scale, value = scal[0], scal[1], scal[2], scal[3]
        if bad_labels is not None:
            bad_labels = scal[4] > 0
    return _StepQuantities(value, G, num, den, den_scale, bad_labels, n_classes)


def _eta(q: _StepQuantities, eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """η = GᵀG / (max(uᵀ∇²𝓛u, 0) + ε GᵀG) and the flags saying whether it may be used."""
    tiny = torch.finfo(q.num.dtype).eps * _CONVEX_TOL_ULPS
    finite = torch.isfinite(q.num) & torch.isfinite(q.den) & torch.isfinite(q.loss)
    nonconvex = q.den < -tiny * q.den_scale
    zero = q.num == 0
    eta = q.num / (q.den.clamp_min(0.0) + eps * q.num)
    ok = finite & ~nonconvex & ~zero & torch.isfinite(eta) & (eta > 0)
    flags = {"ok": ok, "finite": finite, "nonconvex": nonconvex, "zero": zero}
    if q.bad_labels is not None:
        flags["ok"] = ok & ~q.bad_labels
        flags["labels"] = q.bad_labels
    else:
        flags["labels"] = torch.zeros_like(ok)
    return eta, flags


def _invalid_reason(ok: bool, finite: bool, nonconvex: bool, zero: bool, bad_labels: bool,
                    loss: float, den: float, n_classes: int | None) -> str | None:
    """Why a step was refused, from host values of its flags; None if it was not.

    A zero gradient is not an error: the step is a no-op.
    """
    if ok:
        return None
    if bad_labels:
        return f"y must hold class indices in [0, {n_classes})"
    if not finite:
        return ("loss is not finite (or its gradient or curvature is not): got loss = "
                f"{loss}; the step was not taken (parameters and running average unchanged)")
    if nonconvex:
        return ("loss must be convex in the model outputs: the curvature along the step is "
                f"uᵀ∇²𝓛u = {den:.3e} < 0; the step was not taken")
    if not zero:
        return ("eps: the curvature along the gradient is 0 and eps = 0, so the step size is "
                "infinite; use eps > 0")
    return None


def _at_step(reason: str, index: int | None) -> str:
    return reason if index is None else f"{reason} (at step {index})"


def _raise_for(flags: dict[str, torch.Tensor], q: _StepQuantities,
               index: int | None = None) -> None:
    """Raise the error of an invalid step at once (reads the flags on the host)."""
    reason = _invalid_reason(bool(flags["ok"]), bool(flags["finite"]),
                             bool(flags["nonconvex"]), bool(flags["zero"]),
                             bool(flags["labels"]), float(q.loss), float(q.den), q.n_classes)
    if reason is not None:
        raise ValueError(_at_step(reason, index))


class _PendingCheck:
    """The flags of one step on their way to the host, for a deferred ``ValueError``."""

    __slots__ = ("index", "host", "event", "n_classes")

    def __init__(self, index: int, host: torch.Tensor, event: Any, n_classes: int | None):
        self.index, self.host, self.event, self.n_classes = index, host, event, n_classes

    def ready(self, block: bool) -> bool:
        """Whether the copy has landed; with ``block`` wait for it. Never blocks otherwise."""
        if self.event is None:
            return True
        if block:
            self.event.synchronize()
            return True
        return bool(self.event.query())

    def reason(self) -> str | None:
        ok, finite, nonconvex, zero, labels, loss, den = self.host.tolist()
        return _invalid_reason(bool(ok), bool(finite), bool(nonconvex), bool(zero), bool(labels),
                               loss, den, self.n_classes)


def _to_host_async(t: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Start copying ``t`` to host memory without waiting; returns (host tensor, event).

    The host tensor may be read once the event has completed. On the CPU there is nothing to
    copy (event None: ready at once). On CUDA the copy goes to pinned memory and a CUDA event
    on the current stream marks its end; other accelerators use the generic ``torch.Event``
    where this torch has it, and otherwise fall back to a copy that may synchronise.
    """
    if t.device.type == "cpu":
        return t, None
    if t.device.type == "cuda":
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(t.device))
        return host, event
    event_cls = getattr(torch, "Event", None)
    if event_cls is not None:
        try:
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            host.copy_(t, non_blocking=True)
            event = event_cls(device=t.device)
            event.record()
            return host, event
        except (RuntimeError, TypeError, NotImplementedError):
            pass
    return t.to("cpu"), None


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
        self._n_steps = 0  # calls of step() that returned: the index "at step k" of errors
        self._pending: deque[_PendingCheck] = deque()  # deferred checks, oldest first
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

    def _check_pending(self, block: bool) -> None:
        """Raise ``ValueError`` for the earliest invalid step whose flags have reached the host.

        Without ``block`` only the records whose copy has completed are read (never waits);
        with it, all of them. The records read are dropped, so each error is raised once.
        """
        reasons: list[str] = []
        while self._pending and self._pending[0].ready(block):
            rec = self._pending.popleft()
            reason = rec.reason()
            if reason is not None:
                reasons.append(_at_step(reason, rec.index))
        if reasons:
            more = len(reasons) - 1
            tail = f"; {more} later step(s) were invalid too" if more else ""
            raise ValueError(reasons[0] + tail)

    def check_invalid(self) -> None:
        """Wait for the deferred validity checks of all past steps; raise if one failed.

        On an accelerator with ``on_invalid="raise"``, :meth:`~nnopt.optim.ADLER.step` does not wait to learn
        whether its step was valid: an invalid step is skipped on the device and its error
        is raised by a later ``step()`` once the flags have reached the host. Call this at
        the end of training, or at a logging point where a synchronisation is paid anyway,
        to raise the ``ValueError`` (which names the step) of any step not yet reported.
        It blocks until the device has finished those steps; on the CPU, where errors are
        raised at once, it returns immediately.
        """
        self._check_pending(block=True)

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """One minibatch step of Algorithm 1 on ``(x, y)``; returns the minibatch loss.

        Sets ``p.grad`` to the (DDP-averaged) gradient, ``param_groups[0]["lr"]`` to the
        step size η̂ it applied (a 0-dim tensor on the parameters' device) and
        ``state[...]["eta"]`` to the raw estimate η_k. A zero gradient is always a no-op.

        Invalid steps (a non-finite loss, a negative curvature, that is a loss not convex in
        the outputs, an infinite η, or class indices out of range) never change the
        parameters or the running average:

        * on the CPU with ``on_invalid="raise"`` (default): ``ValueError`` at once, before
          anything is changed;
        * on an accelerator with ``on_invalid="raise"``: no host synchronisation. The step
          is skipped on the device as with ``"skip"``, and the ``ValueError``, naming the
          step ("at step k", k counting from 0 the calls of ``step()`` that returned), is
          raised by a later ``step()`` as soon as the flags have reached the host (that
          call then does nothing), or by :meth:`~nnopt.optim.ADLER.check_invalid`, which waits for them;
        * with ``"skip"`` (CPU or accelerator): skipped and counted in ``n_skipped``,
          silently. On the CPU, class indices out of range still raise at once.
        """
        self._check_pending(block=False)
        group = self.param_groups[0]
        params = group["params"]
        raising = self._on_invalid == "raise"
        sync_free = _sync_free(params[0].device)
        module, pg = _unwrap(self._model)
        _check_batch(x, y, params)
        q = _step_quantities(module, params, self._loss, x, y, group=pg,
                             curvature=self._curvature_kind, check_range=not sync_free)
        eta, flags = _eta(q, group["eps"])
        ok = flags["ok"]
        st = self._global_state()
        index = self._n_steps
        if raising and not sync_free and not bool(ok):  # a CPU scalar: reading it is free
            _raise_for(flags, q, index)
            self._n_steps += 1
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
        if sync_free or not raising:  # ok was not checked on the host: mask NaN gradients
            grads = [torch.where(ok, g, g.new_zeros(())) for g in grads]
        if sync_free:
            torch._foreach_add_(params, torch._foreach_mul(grads, -lr))
        else:  # reading a CPU scalar costs no device synchronisation
            torch._foreach_add_(params, grads, alpha=-float(lr))
        for p, g in zip(params, q.grads):
            p.grad = g
        group["lr"] = lr
        if raising and sync_free:
            dtype = torch.promote_types(q.num.dtype, torch.float32)
            diag = torch.stack([t.to(dtype) for t in (ok, flags["finite"], flags["nonconvex"],
                                                       flags["zero"], flags["labels"], q.loss,
                                                       q.den)])
            host, event = _to_host_async(diag)
            self._pending.append(_PendingCheck(index, host, event, q.n_classes))
        self._n_steps += 1
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

    On an accelerator a step does not synchronise with the host. An invalid step (see
    :meth:`~nnopt.optim.ADLER.step`) is then skipped on the device, and with the default ``on_invalid="raise"``
    its ``ValueError`` is deferred: a later ``step()`` raises it, naming the step, once the
    device has got that far, and :meth:`~nnopt.optim.ADLER.check_invalid` waits for every past step and raises;
    call it at the end of training or at logging points. On the CPU the error is raised at
    once. ``on_invalid="skip"`` skips invalid steps silently and counts them in
    ``state[...]["n_skipped"]``.
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
