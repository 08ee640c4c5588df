"""`slearn export`: a run's adapted model, its adapters fused into the base, where the user runs models.

- `mlx`: an mlx-lm model directory (`mlx_lm.generate --model DIR` loads it);
- `gguf`: one GGUF file, for llama.cpp;
- `ollama`: the GGUF file and a Modelfile beside it, and the `ollama create` line that installs them;
- `lmstudio`: the GGUF file where LM Studio finds models (~/.lmstudio/models/slearn/NAME/).
Nothing half-written is left behind: each is written beside its place and renamed into it.
"""

from __future__ import annotations

import time
from pathlib import Path

from slearn_mlx.errors import ConfigError, MissingInput
from slearn_mlx.models import export
from slearn_mlx.models.load import load_model, resolve_model
from slearn_mlx.runs import ADAPTER_FILE, RunDir


def quantization(target: str, quantize: str | None) -> str | None:
    """The GGUF type `--quantize` names (F16 when not given), checked before any model is loaded; None for mlx."""
    if target == "mlx":
        if quantize is not None:
            raise ConfigError("--quantize applies to GGUF files; --to mlx writes the model's own weights")
        return None
    qtype = (quantize or "f16").upper()
    if qtype not in export.NUMPY_TYPES + export.LLAMA_CPP_TYPES:
        known = ", ".join(t.lower() for t in export.NUMPY_TYPES + export.LLAMA_CPP_TYPES)
        raise ConfigError(f"--quantize {quantize}: not a GGUF type the exporter writes; choose one of {known}")
    return qtype


def default_path(run: RunDir, target: str, qtype: str | None) -> Path:
    name = run.root.resolve().name
    if target == "mlx":
        return run.root / "export" / "mlx"
    if target == "lmstudio":
        return Path.home() / ".lmstudio" / "models" / "slearn" / name / f"{name}-{qtype.lower()}.gguf"
    folder = run.root / "export" / ("ollama" if target == "ollama" else "gguf")
    return folder / f"{name}-{qtype.lower()}.gguf"


def export_run(
    run: RunDir, model_name: str | None, target: str, quantize: str | None = None, out: str | Path | None = None,
    trust_remote_code: bool = False,
) -> export.Exported:  # fmt: skip
    """Fuse the run's adapters into its model and write it as `target` to `out` (by default under RUN/export, or
    LM Studio's models folder)."""
    start = time.perf_counter()
    if not run.config.exists():
        raise MissingInput(f"{run.root}: not a run directory (no config.json); give the --out of a run")
    if not (run.adapters / ADAPTER_FILE).exists():
        raise MissingInput(f"{run.root}: no adapters to export; train first (slearn train --out {run.root})")
    qtype = quantization(target, quantize)
    path = Path(out).expanduser() if out else default_path(run, target, qtype)
    if target != "mlx" and path.suffix != ".gguf":
        path = path / default_path(run, target, qtype).name  # a folder: the file goes in it
    model_dir = Path(resolve_model(model_name))
    if not model_dir.exists():
        raise MissingInput(f"{model_dir}: the run's model is not a local directory; export needs its files")
    config = export.model_config(model_dir)
    model, tokenizer = load_model(str(model_dir), adapter_path=run.adapters, trust_remote_code=trust_remote_code)
    export.fuse_adapters(model)
    next_step = None
    if target == "mlx":
        export.export_mlx(model, tokenizer, config, model_dir, path)
        size = sum(f.stat().st_size for f in path.iterdir())
    else:
        export.export_gguf(model, config, model_dir, path, qtype)
        size = path.stat().st_size
    if target == "ollama":
        modelfile = path.parent / "Modelfile"
        modelfile.write_text(export.ollama_modelfile(path.name, tokenizer, model_dir), encoding="utf-8")
        next_step = f"ollama create {run.root.resolve().name} -f {modelfile}"
    return export.Exported(path, target, qtype, size, time.perf_counter() - start, next_step)
