"""What this process runs on: versions, backend, device, the BLAS in use and the distributed group, for `slearn info`
and run reports."""

from __future__ import annotations

import os
import platform
import sys

import mlx.core as mx

from slearn_mlx import _blas, distributed
from slearn_mlx.models.load import auto_dtype
from slearn_mlx.models.store import default_model_path


def _group_line() -> str | None:
    """The distributed group this process runs in, in words; None for one process."""
    group = distributed.describe()
    if group is None:
        return None
    return f"{group['backend']}, rank {group['rank']} of {group['size']} on {platform.node()}"


def environment_info() -> dict:
    """Versions, backend, device and the BLAS in use, for `slearn info` and run reports."""
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    device = mx.default_device()
    info = {
        "slearn_mlx": pkg("slearn-mlx"),
        "mlx": pkg("mlx"),
        "mlx_lm": pkg("mlx-lm"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "device": str(device),
        "backend": "metal" if mx.metal.is_available() else ("cuda" if device == mx.gpu else "cpu"),
        "dtype_default": auto_dtype(),
        "blas": _blas.openblas_config() or ("bundled with mlx" if sys.platform.startswith("linux") else "Accelerate"),
        "blas_path": _blas.loaded_path,
        "blas_note": _blas.skipped_reason,
        "blas_libraries": ", ".join(os.path.basename(p) for p in _blas.blas_libraries_mapped()) or None,
        "default_model": str(default_model_path()),
        "default_model_installed": (default_model_path() / "config.json").exists(),
        "distributed": _group_line(),
    }
    return info
