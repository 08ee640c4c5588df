"""A tiny randomly initialised llama, written as a GGUF file the way llama.cpp lays it out.

Tests import it with slearn's own importer, so every fast test runs on a real
mlx-lm model directory (config, safetensors, tokenizer with a chat template)
that takes milliseconds to run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import slearn_mlx  # noqa: F401  (before mlx: loads OpenBLAS, as the command does)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "e r", "Ġ a", "o n", "Y e", "Ye s", "N o"]
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 32, 2, 4, 2, 64


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def vocabulary() -> list[str]:
    tokens = SPECIALS + [bytes_to_unicode()[b] for b in range(256)]
    for merge in MERGES:
        tokens.append(merge.replace(" ", ""))
    return tokens


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert-time reordering of Q/K rows (what the importer must undo)."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_weights(seed: int = 0, vocab: int | None = None) -> dict[str, np.ndarray]:
    """Random weights in Hugging Face / mlx-lm llama layout."""
    rng = np.random.default_rng(seed)
    vocab = vocab or len(vocabulary())
    head_dim = HIDDEN // HEADS

    def w(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    weights = {"model.embed_tokens.weight": w(vocab, HIDDEN), "model.norm.weight": 1 + w(HIDDEN) * 0.1}
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        weights |= {
            f"{p}.self_attn.q_proj.weight": w(HEADS * head_dim, HIDDEN),
            f"{p}.self_attn.k_proj.weight": w(KV_HEADS * head_dim, HIDDEN),
            f"{p}.self_attn.v_proj.weight": w(KV_HEADS * head_dim, HIDDEN),
            f"{p}.self_attn.o_proj.weight": w(HIDDEN, HEADS * head_dim),
            f"{p}.mlp.gate_proj.weight": w(FFN, HIDDEN),
            f"{p}.mlp.up_proj.weight": w(FFN, HIDDEN),
            f"{p}.mlp.down_proj.weight": w(HIDDEN, FFN),
            f"{p}.input_layernorm.weight": 1 + w(HIDDEN) * 0.1,
            f"{p}.post_attention_layernorm.weight": 1 + w(HIDDEN) * 0.1,
        }
    return weights


_TO_GGUF = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}  # fmt: skip


def write_gguf(path: Path, arch: str, metadata: dict, tensors: dict) -> None:
    """A GGUF file as llama.cpp lays it out, through llama.cpp's own writer (the `gguf` package): `metadata` by full
    key (an int is written as uint32, a float as float32, a list as an array of its items' type) and each tensor as
    float32, or as `(blocks, type)`: bytes already in a GGML type ("Q8_0", "Q4_K", ...)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in metadata.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, list(value))
    for name, value in tensors.items():
        if isinstance(value, tuple):
            blocks, qtype = value
            writer.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=getattr(gguf.GGMLQuantizationType, qtype))
        else:
            writer.add_tensor(name, np.asarray(value, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantized(weights: np.ndarray, qtype: str) -> tuple[np.ndarray, str]:
    """`weights` in GGML type `qtype`, quantized by llama.cpp's own numpy quantizers, as `write_gguf` takes it."""
    import gguf

    return gguf.quants.quantize(weights, getattr(gguf.GGMLQuantizationType, qtype)), qtype


def write_tiny_gguf(path: Path, seed: int = 0, tokenizer: dict | None = None) -> dict[str, np.ndarray]:
    """Write the tiny model as a llama GGUF file; returns its HF-layout weights. `tokenizer`: other tokenizer keys
    (with their own `tokenizer.ggml.tokens`) in place of the byte-level vocabulary's."""
    tokenizer = tokenizer or {**tokenizer_metadata(vocabulary(), "smollm"), "tokenizer.ggml.bos_token_id": 1,
                              "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.padding_token_id": 2,
                              "tokenizer.ggml.unknown_token_id": 0}  # fmt: skip
    tokens = tokenizer["tokenizer.ggml.tokens"]
    weights = hf_weights(seed, len(tokens))
    tensors = {}
    for name, value in weights.items():
        if name == "model.embed_tokens.weight":
            tensors["token_embd.weight"] = value
        elif name == "model.norm.weight":
            tensors["output_norm.weight"] = value
        else:
            _, _, layer, rest = name.split(".", 3)
            module = rest.rsplit(".", 1)[0]
            if module.endswith("q_proj"):
                value = llama_cpp_permute(value, HEADS)
            elif module.endswith("k_proj"):
                value = llama_cpp_permute(value, KV_HEADS)
            tensors[f"blk.{layer}.{_TO_GGUF[module]}.weight"] = value
    metadata = {
        "general.name": "tiny-llama",
        "llama.embedding_length": HIDDEN,
        "llama.block_count": LAYERS,
        "llama.feed_forward_length": FFN,
        "llama.attention.head_count": HEADS,
        "llama.attention.head_count_kv": KV_HEADS,
        "llama.rope.dimension_count": HIDDEN // HEADS,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "llama.rope.freq_base": 10000.0,
        "llama.context_length": 512,
        "llama.vocab_size": len(tokens),
        **tokenizer,
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }
    write_gguf(path, "llama", metadata, tensors)
    return weights


def tokenizer_metadata(tokens: list[str], pre: str) -> dict:
    """The byte-level BPE vocabulary's keys: the tokens, the merges, and the special tokens marked as control."""
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": MERGES,
        "tokenizer.ggml.token_type": [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)),
    }
