"""nnopt on a GPU: the same computations on CUDA tensors agree with the CPU, and mixed devices fail
clearly.

Every test runs in float64, where the two devices' results differ only by the order of
floating-point operations, so agreement to ~1e-10 (relative) is a real check: a result computed
on the wrong device, a tensor silently moved to the CPU, or a random start drawn differently on
the GPU would all show. The whole module is skipped on a machine without CUDA (CI's); it ran on
an H100 in the seventh session of 2026-11-25 (the README's "Scaling up on a GPU").
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnopt import curvature, dkm, flows, linalg, ntk, optim, propagation
from nnopt.losses import half_mse

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CPU, GPU = torch.device("cpu"), torch.device("cuda")


def _tanh_net(device: torch.device, widths=(6, 16, 16, 3), seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).double().to(device)


def _data(device: torch.device, n: int = 20, d: int = 6, out: int = 3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, out, generator=g, dtype=torch.float64)
    return x.to(device), y.to(device)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-10) -> bool:
    a, b = a.detach().cpu(), b.detach().cpu()
    return bool((a - b).norm() <= rtol * b.norm())


@pytest.mark.parametrize("method", ["layerwise", "double-backward", "forward-over-reverse"])
def test_sharpness_on_cuda_matches_cpu(method):
    results = {}
    for dev in (CPU, GPU):
        x, y = _data(dev)
        r = curvature.top_hessian_eigenvalues(_tanh_net(dev), half_mse, x, y, 3, tol=1e-8,
                                              seed=3, method=method)
        assert r.converged and r.vector.device.type == dev.type
        results[dev.type] = r
    c, g = results["cpu"], results["cuda"]
    assert _close(g.values, c.values)
    # the random start is drawn on the CPU, so both devices run the same Krylov iteration
    assert g.n_hvp == c.n_hvp
    assert abs(float(g.vector.cpu() @ c.vector)) > 1 - 1e-8  # same eigenvector up to sign


def test_gd_with_sharpness_on_cuda_matches_cpu():
    traces = {}
    for dev in (CPU, GPU):
        x, y = _data(dev)
        traces[dev.type] = curvature.gd_with_sharpness(_tanh_net(dev), half_mse, x, y, lr=0.2,
                                                       steps=30, every=10, tol=1e-6)
    c, g = traces["cpu"], traces["cuda"]
    assert _close(torch.tensor(g.loss), torch.tensor(c.loss))
    assert _close(torch.tensor(g.sharpness), torch.tensor(c.sharpness), rtol=1e-8)
    assert all(p.device.type == "cuda" for p in g.params.values())


@pytest.mark.parametrize("implementation", ["structured", "generic"])
def test_empirical_ntk_on_cuda_matches_cpu(implementation):
    x, _ = _data(CPU, n=7)
    on_cpu = ntk.empirical_ntk(_tanh_net(CPU), x, implementation=implementation)
    on_gpu = ntk.empirical_ntk(_tanh_net(GPU), x.to(GPU), implementation=implementation)
    assert on_gpu.device.type == "cuda" and _close(on_gpu, on_cpu)


def test_lanczos_on_a_cuda_matrix_matches_eigvalsh():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(60, 60, generator=g, dtype=torch.float64)
    a = (a + a.T).to(GPU)
    r = linalg.lanczos(a, 3, tol=1e-10, seed=0)
    assert r.converged and r.vector.device.type == "cuda"
    assert _close(r.values, torch.linalg.eigvalsh(a.cpu()).flip(0)[:3], rtol=1e-9)


def test_adler_steps_on_cuda_match_cpu():
    thetas = {}
    for dev in (CPU, GPU):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).double().to(dev)
        g = torch.Generator().manual_seed(1)
        opt = optim.ADLER(model, "cross_entropy")
        for _ in range(5):
            xb = torch.randn(32, 4, generator=g, dtype=torch.float64).to(dev)
            yb = torch.randint(0, 3, (32,), generator=g).to(dev)
            opt.step(xb, yb)
        opt.check_invalid()
        thetas[dev.type] = torch.cat([p.detach().flatten().cpu() for p in model.parameters()])
    assert _close(thetas["cuda"], thetas["cpu"])


def test_kernels_flows_and_jacobians_on_cuda_match_cpu():
    x, y = _data(CPU, n=12, d=5, out=1)
    assert _close(dkm.fc_kernel(x.to(GPU), x.to(GPU)), dkm.fc_kernel(x, x))
    w0 = torch.zeros(5, dtype=torch.float64)
    path = flows.least_squares_gd(x.to(GPU), y[:, 0].to(GPU), w0.to(GPU), 0.01, 50)
    assert path.device.type == "cuda"
    assert _close(path, flows.least_squares_gd(x, y[:, 0], w0, 0.01, 50))
    net = propagation.random_deep_net(8, 4, 1.5, 0.05, generator=torch.Generator().manual_seed(4))
    s_cpu = propagation.input_output_jacobian_singular_values(net, x[0, :4].repeat(2))
    s_gpu = propagation.input_output_jacobian_singular_values(net.to(GPU), x[0, :4].repeat(2).to(GPU))
    assert _close(s_gpu, s_cpu)


def test_mixed_devices_raise_value_errors():
    x, y = _data(GPU)
    with pytest.raises(ValueError, match="same device"):
        curvature.top_hessian_eigenvalue(_tanh_net(GPU), half_mse, x, y.cpu())
    with pytest.raises(ValueError, match="device"):
        curvature.top_hessian_eigenvalue(_tanh_net(CPU), half_mse, x, y)
    with pytest.raises(ValueError, match="device"):
        ntk.empirical_ntk(_tanh_net(CPU), x)
