"""A run's adapted model taken back where models run: its adapters (LoRA, DoRA or full) fused into the base weights,
written as an mlx-lm model directory or as a GGUF file for llama.cpp, Ollama and LM Studio.

The GGUF file is the importer run backwards (models/gguf.py): mlx-lm names back to llama.cpp's, llama's query and
key rows permuted back to llama.cpp's rope layout, gemma3's norms stored as 1 + weight again, and the source file's
metadata (tokenizer, special tokens, chat template, hyperparameters), kept at import, written back. Weights are
quantized by `gguf`'s own numpy quantizers (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) or, for the K-quants
Ollama serves (Q4_K_M, ...), by llama.cpp's own quantizer when llama-cpp-python is installed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from slearn_mlx.errors import ModelError
from slearn_mlx.models.metadata import SOURCE_METADATA, copy_fields, rebuild_metadata
from slearn_mlx.models.names import GGUF_ARCHITECTURE, gguf_names

EXPORT_TARGETS = ("mlx", "gguf", "ollama", "lmstudio")
NUMPY_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")  # gguf.quants writes these
LLAMA_CPP_TYPES = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")


@dataclass(frozen=True)
class Exported:
    path: Path
    target: str
    qtype: str | None
    size: int  # bytes written
    seconds: float
    next_step: str | None = None  # what to run to use it (Ollama)

    def __str__(self) -> str:
        what = f"{self.target} ({self.qtype})" if self.qtype else self.target
        line = f"exported {what}: {self.path} ({self.size / 2**20:.1f} MiB) in {self.seconds:.1f} s"
        return line + (f"; then: {self.next_step}" if self.next_step else "")


def fuse_adapters(model) -> None:
    """Fold every LoRA or DoRA layer of `model` into the linear layer under it, as `mlx_lm.fuse` does (full fine-tuning
    already changed the weights themselves)."""
    from mlx.utils import tree_unflatten

    fused = [(name, module.fuse(dequantize=True)) for name, module in model.named_modules() if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))


def gguf_tensors(weights: dict, config: dict) -> dict[str, np.ndarray]:
    """mlx-lm weights (float arrays by name) as the tensors of a llama.cpp GGUF file, by GGUF name."""
    model_type = config["model_type"]
    if model_type not in GGUF_ARCHITECTURE:
        raise ModelError(
            f"cannot write model type {model_type!r} as GGUF; the exporter writes {', '.join(GGUF_ARCHITECTURE)}"
        )
    names = gguf_names(config)
    out = {}
    for name, value in weights.items():
        if name not in names:
            raise ModelError(f"cannot write tensor {name!r} as GGUF")
        array = np.array(value.astype(_float32()), copy=False)
        target = names[name]
        if model_type == "llama" and target.endswith(("attn_q.weight", "attn_k.weight")):
            heads = config["num_attention_heads" if ".attn_q." in target else "num_key_value_heads"]
            array = permute_rope_rows(array, heads)
        if model_type == "gemma3_text" and target.endswith("norm.weight"):  # llama.cpp stores Gemma's 1 + weight
            array = array + 1.0
        out[target] = array
    return out


def _float32():
    import mlx.core as mx

    return mx.float32


def permute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert-time reordering of a llama model's query and key rows (what the importer undoes)."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, tensors: dict[str, np.ndarray], source: Path, arch: str, qtype: str) -> None:
    """The GGUF file: `source`'s metadata, then every tensor, matrices in `qtype` (float32 where a row does not fit
    its blocks, as llama.cpp falls back), vectors in float32."""
    import gguf

    kind = getattr(gguf.GGMLQuantizationType, qtype)
    file_type = getattr(gguf.LlamaFileType, "ALL_F32" if qtype == "F32" else f"MOSTLY_{qtype}")
    writer = gguf.GGUFWriter(str(path), arch)
    replaced = {"general.file_type": (int(file_type), gguf.GGUFValueType.UINT32)}
    if qtype not in ("F32", "F16", "BF16"):
        replaced["general.quantization_version"] = (gguf.GGML_QUANT_VERSION, gguf.GGUFValueType.UINT32)
    copy_fields(gguf.GGUFReader(source), writer, replaced)
    block = gguf.GGML_QUANT_SIZES[kind][0]
    for name, array in tensors.items():
        if qtype == "F32" or array.ndim < 2 or array.shape[-1] % block:
            writer.add_tensor(name, array.astype(np.float32))
        elif qtype == "F16":
            writer.add_tensor(name, array.astype(np.float16))
        else:
            data = gguf.quants.quantize(array, kind)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_cpp_quantize(source: Path, out: Path, qtype: str) -> None:
    """`source` (a float GGUF file) quantized to a K-quant by llama.cpp's own quantizer (llama-cpp-python)."""
    try:
        import llama_cpp
    except ImportError:
        raise ModelError(
            f"--quantize {qtype.lower()} needs llama.cpp's quantizer: pip install llama-cpp-python; or choose one of "
            f"{', '.join(t.lower() for t in NUMPY_TYPES)}"
        ) from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    with _stderr_lines() as said:  # llama.cpp writes a line per tensor it cannot make in the type asked
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params) != 0
    if failed:
        raise ModelError(f"llama.cpp could not quantize {source.name} to {qtype}: {' '.join(said[-1:])}")
    summary = next((line for line in said if "required fallback quantization" in line), None)
    if summary is not None:  # e.g. "145 of 291 tensor(s) required fallback quantization"
        detail = summary.split("WARNING:")[-1].strip()
        print(f"llama.cpp: {detail} (rows not a multiple of 256 take another type, as llama-quantize does)",
              file=sys.stderr)  # fmt: skip


@contextmanager
def _stderr_lines() -> Iterator[list[str]]:
    """What the process writes to standard error inside the block, as lines, instead of the terminal: C code's writes
    to file descriptor 2 and Python's to sys.stderr (where llama-cpp-python's log callback sends llama.cpp's)."""
    sys.stderr.flush()
    saved = os.dup(2)
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as capture, io.StringIO() as python:
        os.dup2(capture.fileno(), 2)
        try:
            with redirect_stderr(python):
                yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines += capture.read().decode("utf-8", "replace").splitlines() + python.getvalue().splitlines()


def export_gguf(model, config: dict, model_dir: Path, out: Path, qtype: str) -> None:
    """The fused `model` (loaded from `model_dir`) as the GGUF file `out`, written beside it and renamed when whole."""
    from mlx.utils import tree_flatten

    if "quantization" in config:  # GGUF types are written from float weights
        from mlx_lm.utils import dequantize_model

        model = dequantize_model(model)
    tensors = gguf_tensors(dict(tree_flatten(model.parameters())), config)
    arch = GGUF_ARCHITECTURE[config["model_type"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        partial = Path(tmp) / out.name
        source = model_dir / SOURCE_METADATA  # what an import kept of its GGUF file, else rebuilt from the tokenizer
        if not source.exists():
            source = Path(tmp) / SOURCE_METADATA
            rebuild_metadata(model_dir, config, arch, source)
        if qtype in LLAMA_CPP_TYPES:
            write_gguf(Path(tmp) / "f32.gguf", tensors, source, arch, "F32")
            llama_cpp_quantize(Path(tmp) / "f32.gguf", partial, qtype)
        else:
            write_gguf(partial, tensors, source, arch, qtype)
        partial.replace(out)


def export_mlx(model, tokenizer, config: dict, model_dir: Path, out: Path) -> None:
    """The fused model as an mlx-lm model directory (what `mlx_lm.fuse` writes), written beside `out` and renamed."""
    from mlx_lm.utils import save

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save(partial, model_dir, model, tokenizer, config, donate_model=False)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)


def ollama_modelfile(gguf_name: str, tokenizer, model_dir: Path) -> str:
    """A Modelfile for the GGUF file beside it: its prompt exactly as the chat template writes one user turn (the
    frame slearn trained in, the default system prompt included), and the end-of-turn token as the stop."""
    marker = "\x00PROMPT\x00"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": marker}], add_generation_prompt=True, tokenize=False
    )
    before, after = text.split(marker)
    bos = tokenizer.bos_token or ""
    adds_bos = json.loads((model_dir / "tokenizer_config.json").read_text()).get("add_bos_token", False)
    if adds_bos and bos and before.startswith(bos):  # llama.cpp adds it itself, as the file says
        before = before[len(bos) :]
    template = (before + "{{ .Prompt }}" + after).replace('"""', '\\"\\"\\"')
    stops = [f'PARAMETER stop "{tokenizer.eos_token}"'] if tokenizer.eos_token else []
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""'] + stops
    return "\n".join(lines) + "\n"


def model_config(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())
