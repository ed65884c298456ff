"""Tests for nnopt.optim: ADLER and the outer-product comparison (Balboni §7.7, Algorithm 1).

References are dense and in float64: the loss Hessian from ``torch.func.hessian``, Jacobians
from ``torch.func.jacrev``, and the running average from its closed formula.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev
from torch.utils._python_dispatch import TorchDispatchMode

import nnopt.optim as optim_module
from nnopt.optim import ADLER, OuterProductLR, adler_step_size, outer_product_step_size

DT = torch.float64


def _linear(seed: int, d: int, c: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(d, c).to(DT)


def _mlp(seed: int, act=nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 7), act(), nn.Linear(7, 3)).to(DT)


def _data(seed: int, n: int, d: int, c: int, kind: str):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    if kind == "mse":
        y = torch.randn(n, c, generator=g, dtype=DT)
    else:
        y = torch.randint(0, c, (n,), generator=g)
    return x, y


def _torch_loss(kind: str):
    return F.mse_loss if kind == "mse" else F.cross_entropy


def _flat_problem(model: nn.Module, kind: str, x, y):
    """h(θ) as a function of the flat parameter vector, and θ itself."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    loss = _torch_loss(kind)

    def unflat(v):
        out, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            out[n] = v[i:i + k].reshape(s)
            i += k
        return out

    def h(v):
        return loss(functional_call(model, unflat(v), (x,)), y)

    def outputs(v):
        return functional_call(model, unflat(v), (x,))

    return h, outputs, theta


def _flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("kind", ["mse", "cross_entropy"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_model_first_step_is_exact_line_minimiser(kind, seed):
    """On a linear model Q = ∇²h, so η₀ = gᵀg/(gᵀHg) and θ₁ = θ₀ − η₀ g (Balboni §7.7)."""
    model = _linear(seed, 5, 3)
    x, y = _data(seed + 10, 11, 5, 3, kind)
    h, _, theta0 = _flat_problem(model, kind, x, y)
    g = torch.func.grad(h)(theta0)
    H = hessian(h)(theta0)
    eta_exact = (g @ g) / (g @ H @ g)

    opt = ADLER(model, kind, eps=0.0)
    opt.step(x, y)
    lr = opt.param_groups[0]["lr"]
    assert torch.allclose(lr, eta_exact, rtol=1e-10, atol=0)
    st = opt.state[opt.param_groups[0]["params"][0]]
    assert torch.allclose(st["eta"], eta_exact, rtol=1e-10, atol=0)
    theta1 = _flat(model.parameters())
    assert torch.allclose(theta1, theta0 - eta_exact * g, rtol=0, atol=1e-12)
    # the exact minimiser of the quadratic h along −g: its slope there is zero for MSE
    if kind == "mse":
        assert abs(float(torch.func.grad(h)(theta1) @ g)) < 1e-10 * float(g @ g)


@pytest.mark.parametrize("kind", ["mse", "cross_entropy"])
def test_step_size_matches_dense_ggn_on_mlp(kind):
    """η = GᵀG/(GᵀJᵀ∇²𝓛 J G) with J and ∇²𝓛 formed densely (Balboni §7.7)."""
    model = _mlp(3)
    x, y = _data(4, 9, 4, 3, kind)
    h, outputs, theta = _flat_problem(model, kind, x, y)
    g = torch.func.grad(h)(theta)
    J = jacrev(outputs)(theta).reshape(-1, theta.numel())
    out = outputs(theta)
    loss = _torch_loss(kind)
    HL = hessian(lambda o: loss(o.reshape(out.shape), y))(out.reshape(-1))
    den = g @ J.T @ HL @ J @ g
    eta_dense = (g @ g) / den
    eta = adler_step_size(model, kind, x, y, eps=0.0)
    assert torch.allclose(eta, eta_dense, rtol=1e-10, atol=0)
    # with the default ε the regulariser enters as ε·GᵀG in the denominator
    eta_eps = adler_step_size(model, kind, x, y, eps=1e-3)
    assert torch.allclose(eta_eps, (g @ g) / (den + 1e-3 * (g @ g)), rtol=1e-10, atol=0)
    # and the full Hessian differs from Q by the perturbation term of eq. 7.3
    H = hessian(h)(theta)
    assert not torch.allclose(g @ H @ g, den, rtol=1e-6)


@pytest.mark.parametrize("kind", ["mse", "cross_entropy"])
def test_closed_form_matches_autograd_path(kind):
    model = _mlp(5, nn.ReLU)
    x, y = _data(6, 13, 4, 3, kind)
    closed = adler_step_size(model, kind, x, y)
    auto = adler_step_size(model, _torch_loss(kind), x, y)
    assert torch.allclose(closed, auto, rtol=1e-12, atol=0)
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    o1, o2 = ADLER(m1, kind), ADLER(m2, _torch_loss(kind))
    for _ in range(3):
        l1, l2 = o1.step(x, y), o2.step(x, y)
        assert torch.allclose(l1, l2, rtol=1e-12, atol=0)
    assert torch.allclose(_flat(m1.parameters()), _flat(m2.parameters()), rtol=0, atol=1e-12)


def test_functional_step_size_leaves_model_untouched():
    model = _mlp(7)
    x, y = _data(8, 6, 4, 3, "mse")
    before = _flat(model.parameters())
    adler_step_size(model, "mse", x, y)
    assert torch.equal(before, _flat(model.parameters()))
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------- averaging


def test_log_average_matches_formula():
    """η̂_k = exp(Σβ^{k−i} log η_i / Σβ^{k−i}) (Balboni §7.7, Algorithm 1)."""
    model = _mlp(9)
    beta = 0.7
    opt = ADLER(model, "cross_entropy", beta=beta)
    etas, lrs = [], []
    for k in range(6):
        x, y = _data(100 + k, 8, 4, 3, "cross_entropy")
        eta_k = adler_step_size(model, "cross_entropy", x, y)
        opt.step(x, y)
        st = opt.state[opt.param_groups[0]["params"][0]]
        assert torch.allclose(st["eta"], eta_k, rtol=1e-12, atol=0)
        etas.append(float(eta_k))
        lrs.append(float(opt.param_groups[0]["lr"]))
    for k in range(6):
        w = [beta ** (k - i) for i in range(k + 1)]
        expected = math.exp(sum(wi * math.log(e) for wi, e in zip(w, etas)) / sum(w))
        assert lrs[k] == pytest.approx(expected, rel=1e-12)
    assert float(st["step"]) == 6


def test_outer_product_average_and_closed_forms():
    """Plain averaging (footnote 12); whole-batch outer product gives η = 1/(GᵀG + ε)."""
    model = _mlp(11)
    x, y = _data(12, 10, 4, 3, "mse")
    h, outputs, theta = _flat_problem(model, "mse", x, y)
    g = torch.func.grad(h)(theta)
    eta_batch = outer_product_step_size(model, "mse", x, y, eps=1e-3, per_example=False)
    assert torch.allclose(eta_batch, 1.0 / (g @ g + 1e-3), rtol=1e-10, atol=0)
    # per example: GᵀQG = (1/n) Σ_k (∇ℓ_kᵀ J_k G)², ℓ_k the per-example losses
    J = jacrev(outputs)(theta)  # (n, c, p)
    out = outputs(theta)
    n, c = out.shape
    grad_l = 2.0 * (out - y) / c  # ∇ℓ_k of ℓ_k = mean_j (o_kj − y_kj)²
    proj = torch.einsum("nc,ncp,p->n", grad_l, J, g)
    den = (proj ** 2).sum() / n
    eta_ex = outer_product_step_size(model, "mse", x, y, eps=0.0)
    assert torch.allclose(eta_ex, (g @ g) / den, rtol=1e-10, atol=0)

    beta = 0.5
    opt = OuterProductLR(model, "mse", beta=beta)
    etas, lrs = [], []
    for k in range(4):
        xb, yb = _data(200 + k, 10, 4, 3, "mse")
        etas.append(float(outer_product_step_size(model, "mse", xb, yb)))
        opt.step(xb, yb)
        lrs.append(float(opt.param_groups[0]["lr"]))
    for k in range(4):
        w = [beta ** (k - i) for i in range(k + 1)]
        assert lrs[k] == pytest.approx(sum(a * b for a, b in zip(w, etas)) / sum(w), rel=1e-12)


def test_state_dict_round_trip():
    model = _mlp(13)
    opt = ADLER(model, "mse", beta=0.9)
    batches = [_data(300 + k, 8, 4, 3, "mse") for k in range(5)]
    for b in batches[:3]:
        opt.step(*b)
    sd = copy.deepcopy(opt.state_dict())
    twin = copy.deepcopy(model)
    opt2 = ADLER(twin, "mse", beta=0.9)
    opt2.load_state_dict(sd)
    st1 = opt.state[opt.param_groups[0]["params"][0]]
    st2 = opt2.state[opt2.param_groups[0]["params"][0]]
    for key in ("avg_num", "avg_den", "eta", "step"):
        assert torch.equal(st1[key], st2[key])
    for b in batches[3:]:
        opt.step(*b)
        opt2.step(*b)
    assert torch.equal(opt.param_groups[0]["lr"], opt2.param_groups[0]["lr"])
    assert torch.equal(_flat(model.parameters()), _flat(twin.parameters()))
    # a fresh optimizer without the state gives a different learning rate
    fresh_model = copy.deepcopy(model)
    fresh = ADLER(fresh_model, "mse", beta=0.9)
    fresh.step(*batches[0])
    assert not torch.equal(fresh.param_groups[0]["lr"], opt.param_groups[0]["lr"])


def test_float32_training_decreases_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, :3] > 0).long().sum(1) % 3
    opt = ADLER(model, "cross_entropy")
    first = float(opt.step(x, y))
    for _ in range(30):
        last = float(opt.step(x, y))
    assert last < 0.8 * first
    assert opt.param_groups[0]["lr"].dtype == torch.float32


# --------------------------------------------------------------------------- bad inputs


def test_constructor_rejects_bad_arguments():
    model = _mlp(0)
    with pytest.raises(TypeError, match="model"):
        ADLER([p for p in model.parameters()])
    with pytest.raises(ValueError, match="loss"):
        ADLER(model, "hinge")
    with pytest.raises(TypeError, match="loss"):
        ADLER(model, 3)
    with pytest.raises(ValueError, match="beta"):
        ADLER(model, beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        ADLER(model, beta=-0.1)
    with pytest.raises(ValueError, match="eps"):
        ADLER(model, eps=-1e-3)
    with pytest.raises(ValueError, match="on_invalid"):
        ADLER(model, on_invalid="ignore")
    with pytest.raises(TypeError, match="per_example"):
        OuterProductLR(model, per_example="yes")
    frozen = _mlp(0).requires_grad_(False)
    with pytest.raises(ValueError, match="model"):
        ADLER(frozen)


def test_targets_that_do_not_match_outputs():
    model = _mlp(1)
    x, y = _data(2, 5, 4, 3, "mse")
    opt = ADLER(model, "mse")
    before = _flat(model.parameters())
    with pytest.raises(ValueError, match="y must have the shape"):
        opt.step(x, y[:, :2])
    with pytest.raises(ValueError, match="y must have one target per example"):
        opt.step(x, y[:4])
    with pytest.raises(TypeError, match="y must have the outputs' dtype"):
        opt.step(x, y.float())
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        opt.step(x, y.tolist())
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        opt.step(x.numpy(), y)
    ce = ADLER(model, "cross_entropy")
    with pytest.raises(ValueError, match="y must be int64 class indices"):
        ce.step(x, torch.zeros(5))
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\)"):
        ce.step(x, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="y must hold class indices"):
        adler_step_size(model, "cross_entropy", x, torch.tensor([0, -1, 2, 1, 0]))
    assert torch.equal(before, _flat(model.parameters()))


def _state_snapshot(opt):
    st = opt.state[opt.param_groups[0]["params"][0]]
    return {k: v.clone() for k, v in st.items()}


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_raises_or_skips_without_corrupting_state(bad):
    model = _mlp(3)
    x, y = _data(4, 6, 4, 3, "mse")
    opt = ADLER(model, "mse")
    opt.step(x, y)
    snap, theta, lr = _state_snapshot(opt), _flat(model.parameters()), opt.param_groups[0]["lr"]
    xb = x.clone()
    xb[0, 0] = bad
    with pytest.raises(ValueError, match="loss is not finite"):
        opt.step(xb, y)
    assert torch.equal(theta, _flat(model.parameters()))
    assert all(torch.equal(v, _state_snapshot(opt)[k]) for k, v in snap.items())
    assert torch.equal(opt.param_groups[0]["lr"], lr)

    skip = ADLER(model, "mse", on_invalid="skip")
    skip.load_state_dict(opt.state_dict())
    skip.step(xb, y)
    assert torch.equal(theta, _flat(model.parameters()))
    st = _state_snapshot(skip)
    assert float(st["n_skipped"]) == 1
    for k in ("avg_num", "avg_den", "eta", "step"):
        assert torch.equal(st[k], snap[k])
    assert float(skip.param_groups[0]["lr"]) == 0.0  # no step was applied
    skip.step(x, y)  # and the next good batch proceeds from the saved average
    assert float(_state_snapshot(skip)["step"]) == float(snap["step"]) + 1


def test_loss_not_convex_in_outputs_is_detected():
    model = _mlp(5)
    x, y = _data(6, 6, 4, 3, "mse")

    def concave(o, t):
        return -F.mse_loss(o, t)

    opt = ADLER(model, concave)
    theta = _flat(model.parameters())
    with pytest.raises(ValueError, match="convex in the model outputs"):
        opt.step(x, y)
    with pytest.raises(ValueError, match="convex in the model outputs"):
        adler_step_size(model, concave, x, y)
    assert torch.equal(theta, _flat(model.parameters()))
    skip = ADLER(model, concave, on_invalid="skip")
    skip.step(x, y)
    assert torch.equal(theta, _flat(model.parameters()))
    assert float(_state_snapshot(skip)["n_skipped"]) == 1


def test_loss_returning_non_scalar():
    model = _mlp(5)
    x, y = _data(6, 6, 4, 3, "mse")
    with pytest.raises(ValueError, match="loss must return a scalar"):
        ADLER(model, lambda o, t: (o - t) ** 2).step(x, y)


def test_zero_curvature_with_eps_zero_and_zero_gradient():
    model = _linear(0, 4, 2)
    x, y = _data(1, 5, 4, 2, "mse")
    # a loss linear in the outputs has ∇²𝓛 = 0: with ε = 0 the step size is infinite
    with pytest.raises(ValueError, match="eps"):
        ADLER(model, lambda o, t: o.mean(), eps=0.0).step(x, y)
    # with ε > 0 it is 1/ε
    eta = adler_step_size(model, lambda o, t: o.mean(), x, y, eps=1e-2)
    assert float(eta) == pytest.approx(100.0, rel=1e-12)
    # a zero gradient is a no-op that leaves the average alone, and η is reported as NaN
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    zeros = torch.zeros(5, 2, dtype=DT)
    opt = ADLER(model, "mse")
    opt.step(x, zeros)
    assert all(float(p.abs().max()) == 0.0 for p in model.parameters())
    assert torch.isnan(adler_step_size(model, "mse", x, zeros))
    assert float(_state_snapshot(opt)["step"]) == 0


def test_inputs_on_a_different_device_are_refused():
    model = _mlp(0)
    x, y = _data(1, 4, 4, 3, "mse")
    with pytest.raises(ValueError, match="x must be on the model's device"):
        ADLER(model).step(x.to("meta"), y)


# --------------------------------------------------------------------------- host synchronisation

_ATEN = torch.ops.aten
# ops whose result the host must wait for: scalar reads (.item(), float(), bool(), int()),
# boolean tests of tensor equality, and ops whose output shape depends on the data
_SYNCING = (_ATEN._local_scalar_dense, _ATEN.is_nonzero, _ATEN.equal, _ATEN.nonzero,
            _ATEN.masked_select, _ATEN.unique_dim, _ATEN._unique2)


class _SyncDetector(TorchDispatchMode):
    """Records every dispatched op that would make the host wait for the device.

    Besides the ops above: indexing with a boolean mask (it runs ``nonzero`` inside the
    kernel, out of the mode's sight) and copies from a non-CPU device to the CPU. Reads done
    inside a backend kernel are invisible here; the CUDA test below covers those.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in _SYNCING:
            self.calls.append(str(func))
        elif packet in (_ATEN.index, _ATEN.index_put_, _ATEN.index_put):
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
                   for i in indices):
                self.calls.append(f"{func} with a boolean mask")
        elif packet in (_ATEN._to_copy, _ATEN.copy_):
            src = args[1] if packet is _ATEN.copy_ else args[0]
            dst_cpu = (args[0].device.type == "cpu" if packet is _ATEN.copy_
                       else kwargs.get("device", src.device) == torch.device("cpu"))
            if src.device.type != "cpu" and dst_cpu:
                self.calls.append(f"{func} to the CPU")
        return func(*args, **kwargs)


@pytest.fixture
def device_path(monkeypatch):
    """Run the accelerator's code path (no host reads, deferred errors) on the CPU."""
    monkeypatch.setattr(optim_module, "_sync_free", lambda device: True)


_SYNC_CASES = [(ADLER, "mse"), (ADLER, "cross_entropy"), (OuterProductLR, "mse"),
               (OuterProductLR, "cross_entropy")]


@pytest.mark.parametrize("cls,kind", _SYNC_CASES)
def test_default_step_reads_nothing_on_the_host_on_the_device_path(device_path, cls, kind):
    model = _mlp(21)
    opt = cls(model, kind)
    batches = [_data(400 + k, 8, 4, 3, kind) for k in range(2)]
    # first step: nothing is pending, so the whole call is monitored, poll included
    with _SyncDetector() as det:
        opt.step(*batches[0])
    assert det.calls == []
    assert len(opt._pending) == 1  # its check is deferred, not done
    # on the forced path the pending flags are plain CPU tensors and the next step's poll
    # reads them; drain them outside the monitored region, then monitor a second step
    opt.check_invalid()
    assert len(opt._pending) == 0
    with _SyncDetector() as det:
        opt.step(*batches[1])
    assert det.calls == []
    opt.check_invalid()


@pytest.mark.parametrize("kind", ["mse", "cross_entropy"])
def test_sync_detector_sees_the_host_reads_of_the_cpu_path(kind):
    """The detector can fail: the CPU path reads ok (and, for labels, y.min()/y.max())."""
    model = _mlp(21)
    opt = ADLER(model, kind)
    with _SyncDetector() as det:
        opt.step(*_data(400, 8, 4, 3, kind))
    assert any("_local_scalar_dense" in c for c in det.calls)
    ok = torch.tensor(True)
    with _SyncDetector() as det:
        bool(ok)
    assert det.calls == ["aten._local_scalar_dense.default"]
    with _SyncDetector() as det:
        torch.zeros(3)[torch.tensor([True, False, True])]
    assert det.calls


def test_device_path_steps_match_the_cpu_path(device_path, monkeypatch):
    """Masking instead of branching changes nothing but the rounding of θ − η̂G."""
    model = _mlp(23)
    twin = copy.deepcopy(model)
    batches = [_data(500 + k, 8, 4, 3, "cross_entropy") for k in range(3)]
    opt = ADLER(model, "cross_entropy")
    for b in batches:
        opt.step(*b)
    opt.check_invalid()
    monkeypatch.undo()  # back to the CPU path
    assert not optim_module._sync_free(torch.device("cpu"))
    ref = ADLER(twin, "cross_entropy")
    for b in batches:
        ref.step(*b)
    assert torch.allclose(_flat(model.parameters()), _flat(twin.parameters()), rtol=0,
                          atol=1e-14)
    assert torch.allclose(opt.param_groups[0]["lr"], ref.param_groups[0]["lr"], rtol=1e-12,
                          atol=0)


def test_invalid_step_is_skipped_and_reported_later_on_the_device_path(device_path):
    model = _mlp(3)
    x, y = _data(4, 6, 4, 3, "mse")
    opt = ADLER(model, "mse")
    opt.step(x, y)  # step 0
    opt.check_invalid()
    snap, theta, lr = _state_snapshot(opt), _flat(model.parameters()), opt.param_groups[0]["lr"]
    xb = x.clone()
    xb[0, 0] = math.nan
    loss = opt.step(xb, y)  # step 1: returns without raising
    assert torch.isnan(loss)
    assert torch.equal(theta, _flat(model.parameters()))
    st = _state_snapshot(opt)
    for k in ("avg_num", "avg_den", "eta", "step"):
        assert torch.equal(st[k], snap[k])
    assert float(st["n_skipped"]) == float(snap["n_skipped"]) + 1
    assert float(opt.param_groups[0]["lr"]) == 0.0
    assert not torch.equal(opt.param_groups[0]["lr"], lr)
    # the next step raises before doing anything
    with pytest.raises(ValueError, match=r"loss is not finite.*\(at step 1\)"):
        opt.step(x, y)
    assert torch.equal(theta, _flat(model.parameters()))
    # reported once; training goes on with good data
    opt.step(x, y)  # step 2
    opt.check_invalid()
    assert float(_state_snapshot(opt)["step"]) == float(snap["step"]) + 1
    assert not torch.equal(theta, _flat(model.parameters()))

    # check_invalid() reports too, and names the first of several invalid steps
    opt.step(xb, y)  # step 3
    with pytest.raises(ValueError, match=r"\(at step 3\)"):
        opt.check_invalid()
    opt.check_invalid()  # nothing left


class _FakeEvent:
    """Stands for a device event on the CPU: incomplete until waited for."""

    def __init__(self) -> None:
        self.done = False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.done = True


def test_deferred_errors_for_labels_convexity_and_eps(device_path, monkeypatch):
    model = _mlp(5)
    x, y = _data(6, 6, 4, 3, "cross_entropy")
    opt = ADLER(model, "cross_entropy")
    theta = _flat(model.parameters())
    opt.step(x, torch.tensor([0, 1, 2, 3, 0, 1]))  # step 0: no read of y, no index error
    assert torch.equal(theta, _flat(model.parameters()))
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\) \(at step 0\)"):
        opt.step(x, y)
    assert float(_state_snapshot(opt)["n_skipped"]) == 1

    # while the copies are in flight a step neither waits nor raises; check_invalid waits,
    # names the first invalid step and counts the others
    monkeypatch.setattr(optim_module, "_to_host_async", lambda t: (t, _FakeEvent()))
    opt.step(x, torch.tensor([0, -1, 2, 1, 0, 1]))  # step 1
    opt.step(x, y)  # step 2: fine
    opt.step(x, torch.tensor([0, 1, 2, 1, 0, 7]))  # step 3
    assert len(opt._pending) == 3
    with pytest.raises(ValueError, match=r"\[0, 3\) \(at step 1\); 1 later step\(s\) were "
                                         r"invalid too"):
        opt.check_invalid()
    assert len(opt._pending) == 0
    assert float(_state_snapshot(opt)["n_skipped"]) == 3
    assert float(_state_snapshot(opt)["step"]) == 1

    xm, ym = _data(6, 6, 4, 3, "mse")
    concave = ADLER(model, lambda o, t: -F.mse_loss(o, t))
    concave.step(xm, ym)
    with pytest.raises(ValueError, match=r"convex in the model outputs.*\(at step 0\)"):
        concave.check_invalid()
    linear = ADLER(_linear(0, 4, 2), lambda o, t: o.mean(), eps=0.0)
    linear.step(*_data(1, 5, 4, 2, "mse"))
    with pytest.raises(ValueError, match=r"eps.*\(at step 0\)"):
        linear.check_invalid()


def test_zero_gradient_is_a_silent_no_op_on_the_device_path(device_path):
    model = _linear(0, 4, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x, _ = _data(1, 5, 4, 2, "mse")
    opt = ADLER(model, "mse")
    opt.step(x, torch.zeros(5, 2, dtype=DT))
    opt.check_invalid()
    assert all(float(p.detach().abs().max()) == 0.0 for p in model.parameters())
    st = _state_snapshot(opt)
    assert float(st["step"]) == 0 and float(st["n_skipped"]) == 0


def test_cpu_path_raises_at_once_with_the_step_index():
    model = _mlp(3)
    x, y = _data(4, 6, 4, 3, "mse")
    opt = ADLER(model, "mse")
    opt.step(x, y)
    xb = x.clone()
    xb[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"loss is not finite.*\(at step 1\)"):
        opt.step(xb, y)
    assert len(opt._pending) == 0
    opt.check_invalid()  # nothing deferred on the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_default_steps_do_not_synchronise():
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).to(dev)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(32, 4, generator=g).to(dev),
                torch.randint(0, 3, (32,), generator=g).to(dev)) for _ in range(4)]
    opt = ADLER(model, "cross_entropy")
    opt.step(*batches[0])  # warm-up: CUDA context, library handles, pinned-memory pool
    torch.cuda.synchronize()
    try:
        torch.cuda.set_sync_debug_mode("error")
        for b in batches[1:]:
            opt.step(*b)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    opt.check_invalid()
    assert float(_state_snapshot(opt)["step"]) == 4
    theta = _flat(model.parameters())
    xb = batches[0][0].clone()
    xb[0, 0] = math.nan
    opt.step(xb, batches[0][1])  # step 4: skipped on the device, no error yet
    with pytest.raises(ValueError, match=r"loss is not finite.*\(at step 4\)"):
        opt.check_invalid()
    assert torch.equal(theta, _flat(model.parameters()))
    assert float(_state_snapshot(opt)["n_skipped"]) == 1
    opt.step(*batches[1])
    opt.check_invalid()
    assert float(_state_snapshot(opt)["step"]) == 5
