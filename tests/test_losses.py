"""nnopt.losses: values and closed-form output Hessians against autograd (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from nnopt.losses import cross_entropy, half_mse

D = torch.float64


@pytest.mark.parametrize("shape", [(7, 3), (9,), (4, 2, 3)])
def test_half_mse_value_and_output_hessian_match_autograd(shape):
    g = torch.Generator().manual_seed(0)
    out = torch.randn(shape, generator=g, dtype=D)
    target = torch.randn(shape, generator=g, dtype=D)
    n = shape[0]
    assert float(half_mse(out, target)) == pytest.approx(
        0.5 * float(((out - target) ** 2).sum()) / n, rel=1e-14)
    H = torch.func.hessian(lambda f: half_mse(f, target))(out)  # shape + shape
    H = H.reshape(out.numel(), out.numel())
    torch.testing.assert_close(H, torch.eye(out.numel(), dtype=D) / n, rtol=0, atol=1e-15)
    u = torch.randn(shape, generator=g, dtype=D)
    got = half_mse.output_hvp(out, target, u)
    torch.testing.assert_close(got, (H @ u.reshape(-1)).reshape(shape), rtol=1e-14, atol=0)


def test_half_mse_is_not_finite_rather_than_raising_for_non_finite_outputs():
    # gradient descent detects divergence by a non-finite loss
    out = torch.tensor([[1.0, float("nan")]], dtype=D)
    assert math.isnan(float(half_mse(out, torch.zeros_like(out))))


def test_half_mse_bad_inputs():
    out = torch.zeros(4, 2, dtype=D)
    with pytest.raises(ValueError, match="targets must have shape"):
        half_mse(out, torch.zeros(4, dtype=D))
    with pytest.raises(TypeError, match="targets must have dtype"):
        half_mse(out, torch.zeros(4, 2, dtype=torch.float32))
    with pytest.raises(TypeError, match="outputs must be a torch.Tensor"):
        half_mse([[0.0]], torch.zeros(1, 1))
    with pytest.raises(ValueError, match="outputs must have"):
        half_mse(torch.tensor(1.0, dtype=D), torch.tensor(1.0, dtype=D))
    with pytest.raises(ValueError, match="at least one example"):
        half_mse(torch.zeros(0, 2, dtype=D), torch.zeros(0, 2, dtype=D))


def test_cross_entropy_value_and_output_hessian_match_autograd():
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(6, 4, generator=g, dtype=D)
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    assert float(cross_entropy(logits, labels)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-14)
    H = torch.func.hessian(lambda f: cross_entropy(f, labels))(logits).reshape(24, 24)
    u = torch.randn(6, 4, generator=g, dtype=D)
    got = cross_entropy.output_hvp(logits, labels, u)
    torch.testing.assert_close(got, (H @ u.reshape(-1)).reshape(6, 4), rtol=1e-12, atol=1e-15)
    # the Hessian is block diagonal: examples do not couple
    blocks = H.reshape(6, 4, 6, 4)
    off = blocks.clone()
    for i in range(6):
        off[i, :, i, :] = 0
    assert float(off.abs().max()) == 0.0


def test_cross_entropy_bad_inputs():
    logits = torch.zeros(3, 4, dtype=D)
    with pytest.raises(ValueError, match="labels must be int64 class indices of shape"):
        cross_entropy(logits, torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="labels must be int64 class indices of shape"):
        cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must hold class indices in \[0, 4\)"):
        cross_entropy(logits, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match=r"labels must hold class indices in \[0, 4\)"):
        cross_entropy(logits, torch.tensor([0, -1, 1]))
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        cross_entropy(logits, [0, 1, 2])
    with pytest.raises(ValueError, match="logits must have 2 dimension"):
        cross_entropy(torch.zeros(4, dtype=D), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one example"):
        cross_entropy(torch.zeros(0, 4, dtype=D), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="same device, got logits on cpu, labels on meta"):
        cross_entropy(logits, torch.zeros(3, dtype=torch.long, device="meta"))
