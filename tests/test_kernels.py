"""The CPU's fast SwiGLU: the same function as mlx-lm's, swapped into a model without renaming anything."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm.models.activations import swiglu
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import load as mlx_lm_load

from slearn_mlx.models import kernels
from slearn_mlx.models.load import load_model

pytestmark = pytest.mark.skipif(not kernels.wanted(), reason="the fast kernels apply on the CPU backend only")


def test_fast_swiglu_matches_mlx_lm_over_the_float32_range():
    gate = mx.concatenate([mx.linspace(-100, 100, 400_001), mx.array([0.0, -1e7, 1e7, -15.8, 15.8, 1e-20, -1e-20])])
    x = mx.ones_like(gate)
    expected, got = swiglu(gate, x), kernels.fast_swiglu(gate, x)
    error = mx.abs(expected - got)
    assert (error <= 1e-6 * mx.abs(expected) + 2.5e-7 * mx.abs(gate)).all().item()
    assert mx.where(gate > 0, error / mx.maximum(mx.abs(expected), 1e-30), 0).max().item() < 1e-6
    # tanh itself: Eigen's approximation, clipped to +-1
    assert mx.abs(kernels._tanh(gate) - mx.tanh(gate)).max().item() < 1e-6


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16])
def test_fast_swiglu_in_half_precision(dtype):
    gate = (mx.random.normal((4096,), key=mx.random.key(2)) * 6).astype(dtype)
    x = mx.random.normal((4096,), key=mx.random.key(3)).astype(dtype)
    got = kernels.fast_swiglu(gate, x)
    assert got.dtype == dtype
    exact = swiglu(gate.astype(mx.float32), x.astype(mx.float32))
    # as close to the exact value as mlx-lm's own half-precision kernel
    own_error = mx.abs(swiglu(gate, x).astype(mx.float32) - exact).max().item()
    assert mx.abs(got.astype(mx.float32) - exact).max().item() <= own_error * 1.01 + 1e-6


def test_fast_swiglu_gradient_matches():
    gate = mx.random.normal((64, 96), key=mx.random.key(0)) * 4
    x = mx.random.normal((64, 96), key=mx.random.key(1))

    def loss(fn):
        return lambda g, v: (fn(g, v) ** 2).sum()

    expected = mx.grad(loss(swiglu), argnums=(0, 1))(gate, x)
    got = mx.grad(loss(kernels.fast_swiglu), argnums=(0, 1))(gate, x)
    for e, g in zip(expected, got):
        assert mx.abs(e - g).max().item() < 1e-4 * max(1.0, mx.abs(e).max().item())


def test_loaded_model_uses_it_with_the_same_outputs_and_parameter_names(tiny_model):
    model, _ = load_model(tiny_model)
    plain, _ = mlx_lm_load(tiny_model)
    mlps = [layer.mlp for layer in model.model.layers]
    assert all(type(m).__call__.__globals__["swiglu"] is kernels.fast_swiglu for m in mlps)
    assert all(isinstance(m, type(plain.model.layers[0].mlp)) for m in mlps)
    assert type(plain.model.layers[0].mlp).__call__.__globals__["swiglu"] is swiglu  # the class itself untouched
    tokens = mx.array([[1, 5, 9, 13, 17, 21, 25, 29]])
    assert mx.allclose(model(tokens), plain(tokens), atol=1e-4).item()
    assert sorted(k for k, _ in nn.utils.tree_flatten(model.parameters())) == sorted(
        k for k, _ in nn.utils.tree_flatten(plain.parameters())
    )
    # LoRA layers go in as on an unchanged model
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 10.0, "dropout": 0.0})
    assert mx.isfinite(model(tokens)).all().item()


def test_switched_off_by_environment(tiny_model, monkeypatch):
    monkeypatch.setenv("SLEARN_KERNELS", "mlx")
    model, _ = load_model(tiny_model)
    assert type(model.model.layers[0].mlp).__call__.__globals__["swiglu"] is swiglu
    assert kernels.use_fast_kernels(model) == 0
