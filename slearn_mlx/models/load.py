"""Resolving a model argument and loading it with mlx-lm, with the weight dtype that is fast on this backend."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from slearn_mlx.errors import ModelError, ModelNotFound
from slearn_mlx.models import kernels
from slearn_mlx.models.store import RELEASES, default_model_path, models_dir

DTYPES = ("auto", "float32", "float16", "bfloat16", "q4")


def is_gpu_backend() -> bool:
    """True when mlx runs on Metal or CUDA, where 4-bit matmuls are the fast ones."""
    return mx.default_device() == mx.gpu


def auto_dtype() -> str:
    """The fastest weight dtype for this backend, by measurement (BENCHMARKS.md):
    float32 on CPU (4-bit is ~10x slower there, bf16 gains nothing), 4-bit on GPU."""
    return "q4" if is_gpu_backend() else "float32"


def resolve_model(model: str | None) -> str:
    """A model argument as mlx_lm.load takes it; None means the embedded default."""
    if model in (None, "", "default"):
        path = default_model_path()
        if not (path / "config.json").exists():
            raise ModelNotFound(
                f"the default model is not installed in {path}; run `slearn models fetch-default` first"
            )
        return str(path)
    if model in RELEASES and not Path(model).exists():
        path = models_dir() / RELEASES[model].directory
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{model} is not installed; run `slearn models fetch {model}` first")
        return str(path)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} is not an mlx-lm model directory (no config.json)")
        return str(path)
    if model.count("/") != 1:
        raise ModelNotFound(f"model {model!r} is neither a local directory nor a Hugging Face id (owner/name)")
    return model


def load_model(model: str | None, adapter_path: str | Path | None = None, trust_remote_code: bool = False):
    """Load (model, tokenizer) with mlx_lm.load; the model is in eval mode, with the CPU's fast
    kernels (models/kernels.py) in place when mlx runs on the CPU.

    Weights are read from safetensors only (mlx-lm never unpickles), and code
    shipped with a model or tokenizer runs only with `trust_remote_code`.
    """
    from mlx_lm import load

    resolved = resolve_model(model)
    try:
        model_obj, tokenizer = load(
            resolved,
            adapter_path=str(adapter_path) if adapter_path else None,
            tokenizer_config={"trust_remote_code": trust_remote_code},
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        # Hub look-ups and unsupported architectures explain themselves over several lines.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if "trust_remote_code" in reason:
            raise ModelError(
                f"model {resolved!r} ships Python code that would run on loading; pass --trust-remote-code "
                "if you trust it"
            ) from None
        raise ModelNotFound(f"cannot load model {resolved!r}: {reason}") from None
    model_obj.eval()
    kernels.use_fast_kernels(model_obj)
    return model_obj, tokenizer
