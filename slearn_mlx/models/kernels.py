"""A faster SwiGLU for mlx's CPU backend.

On the CPU, mlx computes exp and sigmoid one element at a time (no SIMD on x86): in a prefill
forward pass of SmolLM2-135M the SwiGLU activation took more time than all the matmuls of its MLP
(bench/profile_forward.py). `fast_swiglu` computes the same function from a rational approximation
of tanh (Eigen's; max error 4e-7) written with adds, multiplies, `abs` and one divide only, which
mx.compile fuses into loops the C++ compiler vectorizes: 2-4x faster than mlx-lm's `swiglu` on
this project's 2-core CPU (BENCHMARKS.md) and within 1e-6 relative of it. On a GPU mlx's kernel
is already fast and nothing is changed.

`use_fast_kernels(model)` swaps it into the model's MLP blocks in place; parameter names stay the
same, so adapters trained with it load anywhere. SLEARN_KERNELS=mlx keeps mlx-lm's kernel.
"""

from __future__ import annotations

import functools
import os
import types

import mlx.core as mx

# Eigen's generic_fast_tanh_float: tanh(x) = x * P(x^2) / Q(x^2) for |x| <= TANH_CLAMP.
_TANH_P = (
    4.89352455891786e-03,
    6.37261928875436e-04,
    1.48572235717979e-05,
    5.12229709037114e-08,
    -8.60467152213735e-11,
    2.00018790482477e-13,
    -2.76076847742355e-16,
)
_TANH_Q = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
TANH_CLAMP = 7.90531110763549805  # beyond it tanh is +-1 in float32


def _tanh(x: mx.array) -> mx.array:
    # clip(x, -c, c) without max/min, whose NaN checks are branches that stop vectorization; exact
    # while |x| < 2**26, far beyond any activation of a working model.
    x = 0.5 * (mx.abs(x + TANH_CLAMP) - mx.abs(x - TANH_CLAMP))
    x2 = x * x
    p = _TANH_P[-1]
    for c in reversed(_TANH_P[:-1]):
        p = p * x2 + c
    q = _TANH_Q[-1]
    for c in reversed(_TANH_Q[:-1]):
        q = q * x2 + c
    return x * p / q


def _sigmoid(g: mx.array) -> mx.array:
    return 0.5 + 0.5 * _tanh(0.5 * g)


# Computed in float32 whatever the inputs' dtype: the approximation's coefficients need it.
@functools.partial(mx.compile, shapeless=True)
def _swiglu(gate: mx.array, x: mx.array) -> mx.array:
    g = gate.astype(mx.float32)
    return (g * _sigmoid(g) * x.astype(mx.float32)).astype(x.dtype)


@functools.partial(mx.compile, shapeless=True)
def _swiglu_vjp(gate: mx.array, x: mx.array, cotangent: mx.array) -> tuple[mx.array, mx.array]:
    g, v, c = gate.astype(mx.float32), x.astype(mx.float32), cotangent.astype(mx.float32)
    s = _sigmoid(g)
    return (c * v * s * (1.0 + g * (1.0 - s))).astype(gate.dtype), (c * g * s).astype(x.dtype)


@mx.custom_function
def fast_swiglu(gate: mx.array, x: mx.array) -> mx.array:
    """silu(gate) * x, with sigmoid(g) = (1 + tanh(g / 2)) / 2. For |gate| < 1e7 the error is below
    1e-6 * |silu(gate)| + 2.5e-7 * |gate| (the second term, float32 rounding of 1 + tanh near -1, matters
    only where sigmoid(gate) is below 0.1). Its gradient is written out and keeps only the inputs
    for the backward pass, as mlx-lm's does: differentiating the approximation would keep its
    intermediates and cost more memory in training."""
    return _swiglu(gate, x)


@fast_swiglu.vjp
def _fast_swiglu_vjp(primals, cotangent, output):
    return _swiglu_vjp(*primals, cotangent)


def wanted() -> bool:
    """Whether the fast kernels apply: on the CPU backend, unless SLEARN_KERNELS=mlx."""
    return mx.default_device() == mx.cpu and os.environ.get("SLEARN_KERNELS", "").lower() != "mlx"


@functools.cache
def _fast_class(cls: type) -> type:
    """`cls` with its __call__ reading `swiglu` as fast_swiglu (same parameters, same all else)."""
    call = cls.__call__
    fast_call = types.FunctionType(
        call.__code__, {**call.__globals__, "swiglu": fast_swiglu}, call.__name__, call.__defaults__, call.__closure__
    )
    return type(cls.__name__, (cls,), {"__call__": fast_call, "__module__": cls.__module__})


def use_fast_kernels(model) -> int:
    """Swap fast_swiglu into every module of `model` whose __call__ calls mlx-lm's swiglu, in place
    (when `wanted()`); the number of modules changed."""
    if not wanted():
        return 0
    from mlx_lm.models.activations import swiglu

    changed = 0
    for _, module in model.named_modules():
        call = getattr(type(module), "__call__", None)
        code = getattr(call, "__code__", None)
        if code is not None and "swiglu" in code.co_names and call.__globals__.get("swiglu") is swiglu:
            module.__class__ = _fast_class(type(module))
            changed += 1
    return changed
