"""Arguments on different devices are refused with a ValueError that names them.

Without a GPU the second device is ``meta`` (tensors with a shape and a dtype but no data):
each case puts one argument on ``meta`` and the others on the CPU. The check must come before
any computation, so the error is the library's ValueError and not torch's RuntimeError from
inside a kernel (or no error at all, since some operations mix meta and CPU tensors silently).
``tests/test_cuda.py`` checks the same on a real GPU for the sharpness and the NTK.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from nnopt import autodiff, curvature, dkm, hardness, losses, pl, propagation
from nnopt.losses import half_mse
from nnopt.validation import check_same_device_if_tensors

D = torch.float64


def meta(t: torch.Tensor) -> torch.Tensor:
    return t.to("meta")


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def tanh_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def x_y() -> tuple[torch.Tensor, torch.Tensor]:
    return randn(6, 3, seed=1), randn(6, 2, seed=2)


def meta_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: meta(v) for k, v in autodiff.params_of(model).items()}


def flat_size(model: nn.Module) -> int:
    return autodiff.num_params(autodiff.params_of(model))


def fc_layer() -> dkm.KernelLayer:
    return dkm.KernelLayer("fc", randn(4, 3), out_dim=2)


def hessian_operator() -> curvature.HessianOperator:
    return curvature.HessianOperator(tanh_net(), half_mse, *x_y())


def two_layer_relu() -> hardness.TwoLayerReLU:
    return hardness.parity_network(torch.tensor([1.0, 0.0, 1.0], dtype=D))


def gradient_variance_case() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    h, J = hardness.per_example_gradients(net, hardness.hypercube(3))
    hardness.gradient_variance(h, J, hardness.parity_class(3),
                               meta(torch.full((8,), 1 / 8, dtype=D)))


def one(value: float) -> torch.Tensor:
    return torch.tensor([value], dtype=D)


# (function, the argument put on meta, what the message must contain, the call)
CASES: list[tuple[str, str, str, Callable[[], object]]] = [
    # autodiff: the data against the parameters (the model's own, or the params given)
    ("autodiff.functional_call", "x", "x on meta",
     lambda: autodiff.functional_call(tanh_net(), autodiff.params_of(tanh_net()),
                                      meta(x_y()[0]))),
    ("autodiff.loss_value", "params", "params on meta",
     lambda: autodiff.loss_value(tanh_net(), half_mse, *x_y(), meta_params(tanh_net()))),
    ("autodiff.gradient", "params", "params on meta",
     lambda: autodiff.gradient(tanh_net(), half_mse, *x_y(), meta_params(tanh_net()))),
    ("autodiff.jvp", "x", "x on meta",
     lambda: autodiff.jvp(tanh_net(), meta(x_y()[0]), randn(flat_size(tanh_net())))),
    ("autodiff.jvp", "v", "v on meta",
     lambda: autodiff.jvp(tanh_net(), x_y()[0], meta(randn(flat_size(tanh_net()))))),
    ("autodiff.vjp", "x", "x on meta",
     lambda: autodiff.vjp(tanh_net(), meta(x_y()[0]), x_y()[1])),
    ("autodiff.vjp", "u", "u on meta",
     lambda: autodiff.vjp(tanh_net(), x_y()[0], meta(x_y()[1]))),
    # curvature
    ("curvature.HessianOperator.matvec", "v", "v on meta",
     lambda: hessian_operator().matvec(meta(randn(flat_size(tanh_net()))))),
    ("curvature.gd_with_sharpness", "params", "params on meta",
     lambda: curvature.gd_with_sharpness(tanh_net(), half_mse, *x_y(), lr=0.1, steps=2,
                                         every=None, params=meta_params(tanh_net()))),
    # dkm
    ("dkm.fc_kernel", "x2", "x2 on meta", lambda: dkm.fc_kernel(randn(4, 3), meta(randn(5, 3)))),
    ("dkm.conv_kernel", "x2", "x2 on meta",
     lambda: dkm.conv_kernel(randn(2, 1, 3, 3), meta(randn(3, 1, 3, 3)))),
    ("dkm.recurrent_features", "u", "u on meta",
     lambda: dkm.recurrent_features(randn(2, 4, 3), meta(randn(3, 3)))),
    ("dkm.recurrent_kernel", "z2", "z2 on meta",
     lambda: dkm.recurrent_kernel(randn(2, 4, 3), meta(randn(3, 4, 3)), randn(3, 3))),
    ("dkm.KernelLayer", "u", "u on meta",
     lambda: dkm.KernelLayer("recurrent", randn(2, 4, 3), u=meta(randn(3, 3)))),
    ("dkm.KernelLayer.values", "z", "z on meta", lambda: fc_layer().values(meta(randn(5, 3)))),
    ("dkm.KernelLayer.matrix", "z", "z on meta", lambda: fc_layer().matrix(meta(randn(5, 3)))),
    ("dkm.KernelLayer.__call__", "alpha", "alpha on meta",
     lambda: fc_layer()(meta(randn(4, 2)), randn(5, 3))),
    ("dkm.KernelLayer.solve", "target", "target on meta",
     lambda: fc_layer().solve(randn(5, 3), meta(randn(5, 2)))),
    ("dkm.dkm_outputs", "x", "x on meta",
     lambda: dkm.dkm_outputs([fc_layer()], [randn(4, 2)], meta(randn(5, 3)))),
    ("dkm.dkm_outputs", "alphas", "alphas[0] on meta",
     lambda: dkm.dkm_outputs([fc_layer()], [meta(randn(4, 2))], randn(5, 3))),
    ("dkm.recurrent_independent_points", "u", "u on meta",
     lambda: dkm.recurrent_independent_points(randn(3, 3), meta(randn(3, 3)), 4)),
    ("dkm.last_layer_solution", "target", "target on meta",
     lambda: dkm.last_layer_solution(randn(8, 10), meta(randn(5, 2)))),
    ("dkm.descending_path", "alpha", "alpha on meta",
     lambda: dkm.descending_path(randn(8, 10), meta(randn(4, 2)), randn(5, 2))),
    # hardness
    ("hardness.gradient_variance", "weights", "weights on meta", gradient_variance_case),
    ("hardness.TwoLayerReLU", "b", "b on meta",
     lambda: hardness.TwoLayerReLU(randn(6, 3), meta(randn(6)), randn(6))),
    ("hardness.TwoLayerReLU.__call__", "x", "x on meta",
     lambda: two_layer_relu()(meta(hardness.hypercube(3)))),
    # losses
    ("losses.half_mse", "targets", "targets on meta",
     lambda: losses.half_mse(randn(4, 2), meta(randn(4, 2)))),
    # pl
    ("pl.gd_local_pl", "model", "params on meta",
     lambda: pl.gd_local_pl(tanh_net().to("meta"), half_mse, *x_y(), lr=0.1, steps=2)),
    ("pl.mlp_feature_shift_bound", "weights", "weights[0] on meta",
     lambda: pl.mlp_feature_shift_bound([randn(4, 3)], [meta(randn(4, 3))], randn(6, 3))),
    ("pl.mlp_feature_shift_bound", "x", "x on meta",
     lambda: pl.mlp_feature_shift_bound([randn(4, 3)], [randn(4, 3)], meta(randn(6, 3)))),
    # propagation
    ("propagation.q_map", "sigma_w2", "sigma_w2 on meta",
     lambda: propagation.q_map(one(1.0), meta(one(1.5)), one(0.1))),
    ("propagation.q_fixed_point", "sigma_b2", "sigma_b2 on meta",
     lambda: propagation.q_fixed_point(one(1.5), meta(one(0.1)), "relu")),
    ("propagation.pair_moment", "q", "q on meta",
     lambda: propagation.pair_moment(torch.tanh, one(0.5), meta(one(1.0)))),
    ("propagation.arccos_kernel", "q", "q on meta",
     lambda: propagation.arccos_kernel(one(0.5), meta(one(1.0)))),
    ("propagation.c_map", "q", "q on meta",
     lambda: propagation.c_map(one(0.5), one(1.5), one(0.1), q=meta(one(1.0)))),
    ("propagation.chi1", "q", "q on meta",
     lambda: propagation.chi1(one(1.5), one(0.1), q=meta(one(1.0)))),
    ("propagation.input_output_jacobian", "x", "x on meta",
     lambda: propagation.input_output_jacobian(
         propagation.random_deep_net(4, 2, 1.5, 0.05, generator=torch.Generator().manual_seed(0)),
         meta(randn(4)))),
    ("propagation.input_output_jacobian(jacrev)", "x", "x on meta",
     lambda: propagation.input_output_jacobian(
         nn.Sequential(nn.Linear(4, 4), nn.Softplus()).double(), meta(randn(4)))),
    ("propagation.input_output_jacobian_singular_values", "model", "model on meta",
     lambda: propagation.input_output_jacobian_singular_values(
         propagation.random_deep_net(4, 2, 1.5, 0.05).to("meta"), randn(4))),
]


@pytest.mark.parametrize("function, argument, message, call", CASES,
                         ids=[f"{f}-{a}" for f, a, _, _ in CASES])
def test_an_argument_on_another_device_is_refused(function, argument, message, call):
    with pytest.raises(ValueError, match="device") as err:
        call()
    assert message in str(err.value)


def test_same_device_if_tensors_skips_numbers():
    check_same_device_if_tensors(a=1.0, b=torch.ones(2), c=None)  # one tensor: nothing to compare
    check_same_device_if_tensors(a=torch.ones(2), b=torch.zeros(()), c=0.5)
    with pytest.raises(ValueError, match="same device, got a on cpu, b on meta"):
        check_same_device_if_tensors(a=torch.ones(2), b=torch.ones(2, device="meta"), c=0.5)
