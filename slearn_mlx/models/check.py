"""An imported GGUF checked against the file itself: a transformer forward pass written from scratch in numpy.

The reference reads the file with llama.cpp's `gguf` package, dequantizes every tensor in numpy and runs the
model on the tensors exactly as the file stores them, with the rope as llama.cpp applies it per architecture
(interleaved pairs for llama, whose Q/K rows llama.cpp permuted at conversion; rotate-half for qwen2, qwen3, phi3
and gemma3), phi3's fused query-key-value and gate-up matrices split as llama.cpp splits them, and gemma3's graph
as llama.cpp builds it (scaled embeddings, four norms per block stored as 1 + weight, local layers with their own
rope base and window). It shares nothing with mlx-lm or the importer, so agreement means the import is the
model the file holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, theta, interleaved):
    """x: (heads, positions, head_dim)."""
    d = x.shape[-1]
    freqs = theta ** (-np.arange(0, d, 2) / d)
    angles = np.arange(x.shape[1])[:, None] * freqs[None, :]
    cos, sin = np.cos(angles), np.sin(angles)
    if interleaved:  # llama.cpp's LLAMA rope: pairs (0,1), (2,3), ...
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out
    a, b = x[..., : d // 2], x[..., d // 2 :]  # NEOX: first half with second half
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], -1)


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


class Reference:
    def __init__(self, gguf_path: Path, bf16_embedding_scale: bool = False):
        import gguf

        reader = gguf.GGUFReader(gguf_path)
        self.arch = str(reader.fields["general.architecture"].contents())
        meta = lambda key: reader.fields[f"{self.arch}.{key}"].contents()  # noqa: E731
        self.n_layers, self.n_heads = meta("block_count"), meta("attention.head_count")
        self.n_kv = meta("attention.head_count_kv")
        self.eps, self.theta = meta("attention.layer_norm_rms_epsilon"), meta("rope.freq_base")
        self.gemma = self.arch == "gemma3"
        # mlx-lm (as Hugging Face) scales Gemma's embeddings by sqrt(width) rounded to bfloat16; llama.cpp does not.
        self.bf16_embedding_scale = bf16_embedding_scale
        self.window = int(meta("attention.sliding_window")) if self.gemma else None
        self.w = {
            t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
            .astype(np.float32)
            for t in reader.tensors
        }  # fmt: skip

    def logits(self, tokens: list[int]) -> np.ndarray:
        w, n = self.w, len(tokens)
        x = w["token_embd.weight"][tokens]
        if self.gemma:
            scale = np.float32(np.sqrt(x.shape[-1]))
            if self.bf16_embedding_scale:  # round to nearest even in the top 16 bits, as a bfloat16 cast does
                bits = scale.view(np.uint32)
                scale = np.uint32((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).view(np.float32)
            x = x * scale
        causal = np.triu(np.full((n, n), -np.inf), 1)
        for i in range(self.n_layers):
            p = f"blk.{i}."
            local = self.gemma and i % 6 != 5  # gemma3: five local layers to one global
            mask, theta = causal, self.theta
            if local:
                mask = causal + np.tril(np.full((n, n), -np.inf), -self.window)
                theta = 10000.0
            h = rms_norm(x, w[p + "attn_norm.weight"], self.eps)
            if p + "attn_qkv.weight" in w:  # phi3: one matrix for queries, keys and values
                qkv = h @ w[p + "attn_qkv.weight"].T
                d = qkv.shape[-1] // (self.n_heads + 2 * self.n_kv)
                q, k, v = np.split(qkv, [self.n_heads * d, (self.n_heads + self.n_kv) * d], axis=-1)
            else:
                q, k, v = (h @ w[p + f"attn_{s}.weight"].T + w.get(p + f"attn_{s}.bias", 0) for s in "qkv")
            d = q.shape[-1] // self.n_heads
            q = q.reshape(n, self.n_heads, d).transpose(1, 0, 2)
            k = k.reshape(n, self.n_kv, d).transpose(1, 0, 2)
            v = v.reshape(n, self.n_kv, d).transpose(1, 0, 2)
            if p + "attn_q_norm.weight" in w:  # qwen3, gemma3
                q, k = (
                    rms_norm(q, w[p + "attn_q_norm.weight"], self.eps),
                    rms_norm(k, w[p + "attn_k_norm.weight"], self.eps),
                )
            q, k = rope(q, theta, self.arch == "llama"), rope(k, theta, self.arch == "llama")
            k, v = np.repeat(k, self.n_heads // self.n_kv, 0), np.repeat(v, self.n_heads // self.n_kv, 0)
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(d) + mask
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = (scores / scores.sum(-1, keepdims=True)) @ v
            out = attn.transpose(1, 0, 2).reshape(n, -1) @ w[p + "attn_output.weight"].T
            if self.gemma:
                out = rms_norm(out, w[p + "post_attention_norm.weight"], self.eps)
            x = x + out
            h = rms_norm(x, w[p + "ffn_norm.weight"], self.eps)
            if p + "ffn_gate.weight" in w:
                gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
            else:  # phi3: the gate's rows, then the up projection's, in one matrix
                gate, up = np.split(h @ w[p + "ffn_up.weight"].T, 2, axis=-1)
            act = gelu_tanh(gate) if self.gemma else gate / (1 + np.exp(-gate))
            out = (act * up) @ w[p + "ffn_down.weight"].T
            if self.gemma:
                out = rms_norm(out, w[p + "post_ffw_norm.weight"], self.eps)
            x = x + out
        x = rms_norm(x, w["output_norm.weight"], self.eps)
        return x @ w.get("output.weight", w["token_embd.weight"]).T


@dataclass(frozen=True)
class ImportCheck:
    positions: int
    top1_agreement: float  # share of positions whose most likely next token is the same
    max_logit_difference: float

    def __str__(self) -> str:
        return (
            f"checked against the file on {self.positions} positions: top-1 agreement {self.top1_agreement:.1%}, "
            f"largest logit difference {self.max_logit_difference:.4f}"
        )


def check_import(
    gguf_path: Path, model, token_lists: list[list[int]], bf16_embedding_scale: bool = False
) -> ImportCheck:
    """The imported `model`'s logits against the numpy reference's on each token list."""
    import mlx.core as mx

    reference = Reference(gguf_path, bf16_embedding_scale)
    agree = total = 0
    worst = 0.0
    for tokens in token_lists:
        got = np.array(model(mx.array([tokens]))[0].astype(mx.float32))
        want = reference.logits(tokens)
        agree += int((got.argmax(-1) == want.argmax(-1)).sum())
        total += len(tokens)
        worst = max(worst, float(np.abs(got - want).max()))
    return ImportCheck(total, agree / total, worst)
