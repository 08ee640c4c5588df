"""GGUF files mlx cannot read itself: K-quants and Q5_0 through llama.cpp's `gguf` reader, and the qwen2 layout.

A tiny qwen2 model is written with `gguf`'s own writer, its matrices as Q5_0, Q8_0 and Q4_K (the K-quant block
filled with random codes, since `gguf` only dequantizes K-quants), and imported. The reference is an mlx-lm
qwen2 model built straight from `gguf`'s dequantization of the same file: the imported model must compute the
same logits, and its tokenizer must split text as Qwen2's pre-tokenizer does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from slearn_mlx.models.gguf import import_gguf
from slearn_mlx.models.load import load_model

from bpe_reference import QWEN2_PATTERN
from bpe_reference import encode as reference_encode
from tiny import CHAT_TEMPLATE, MERGES, quantized, tokenizer_metadata, vocabulary, write_gguf

gguf = pytest.importorskip("gguf")
import mlx.core as mx  # noqa: E402

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 256
TYPES = {"attn_q": "Q5_0", "attn_k": "Q5_0", "attn_v": "Q8_0", "attn_output": "Q5_0", "ffn_gate": "Q5_0",
         "ffn_up": "Q8_0", "ffn_down": "Q4_K"}  # fmt: skip


# Only K-quants and F32 (per layer where a list): mlx's own reader accepts such a file, and reads Q4_K wrong.
# K-quant blocks hold 256 weights of a row, so only ffn_down (256 inputs) can be one here.
K_ONLY = {"attn_q": "F32", "attn_k": "F32", "attn_v": "F32", "attn_output": "F32", "ffn_gate": "F32",
          "ffn_up": "F32", "ffn_down": ["Q4_K", "Q6_K"]}  # fmt: skip


def k_quant_bytes(qtype: str, rows: int, cols: int, rng) -> np.ndarray:
    """Random K-quant blocks of 256 weights with small fp16 scales, since `gguf` only dequantizes K-quants.
    Q4_K: 144 bytes (fp16 scale and min, 12 bytes of sub-scales, 128 of codes); Q6_K: 210 bytes (128 low bits,
    64 high bits, 16 int8 sub-scales, fp16 scale last)."""
    size = {"Q4_K": 144, "Q6_K": 210}[qtype]
    blocks = rng.integers(0, 256, size=(rows, cols // 256, size), dtype=np.uint8)
    half = lambda x: np.frombuffer(np.float16(x).tobytes(), np.uint8)  # noqa: E731
    if qtype == "Q4_K":
        blocks[..., 0:2], blocks[..., 2:4] = half(0.002), half(0.001)
    else:
        blocks[..., 208:210] = half(0.0005)
    return blocks.reshape(rows, -1)


QWEN3_HEAD = 32  # Qwen3's heads are wider than hidden / heads (here 64 / 4 = 16)


def write_tiny_qwen2(path, seed: int = 0, types: dict[str, str | list[str]] = TYPES, arch: str = "qwen2") -> None:
    """A tiny qwen2 model, or with `arch="qwen3"` a qwen3 one: wider heads, RMSNorm of queries and keys, no biases."""
    rng = np.random.default_rng(seed)
    tokens = vocabulary()
    head = QWEN3_HEAD if arch == "qwen3" else HIDDEN // HEADS
    metadata = {
        "general.name": f"tiny-{arch}",
        f"{arch}.block_count": LAYERS,
        f"{arch}.embedding_length": HIDDEN,
        f"{arch}.feed_forward_length": FFN,
        f"{arch}.attention.head_count": HEADS,
        f"{arch}.attention.head_count_kv": KV_HEADS,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-6,
        f"{arch}.rope.freq_base": 1e6,
        f"{arch}.context_length": 512,
        **tokenizer_metadata(tokens, "qwen2"),
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }
    if arch == "qwen3":
        metadata |= {f"{arch}.attention.key_length": head, f"{arch}.attention.value_length": head}

    def w(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    tensors = {"token_embd.weight": w(len(tokens), HIDDEN), "output_norm.weight": 1 + w(HIDDEN) * 0.1}
    shapes = {"attn_q": (HEADS * head, HIDDEN), "attn_k": (KV_HEADS * head, HIDDEN), "attn_v": (KV_HEADS * head, HIDDEN),
              "attn_output": (HIDDEN, HEADS * head), "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN),
              "ffn_down": (HIDDEN, FFN)}  # fmt: skip
    for layer in range(LAYERS):
        for kind, shape in shapes.items():
            name = types[kind] if isinstance(types[kind], str) else types[kind][layer]
            if name == "F32":
                data = w(*shape)
            elif name.endswith("_K"):
                data = (k_quant_bytes(name, *shape, rng), name)
            else:
                data = quantized(w(*shape), name)
            tensors[f"blk.{layer}.{kind}.weight"] = data
        if arch == "qwen2":  # qwen2's attention has biases
            for kind in ("attn_q", "attn_k", "attn_v"):
                tensors[f"blk.{layer}.{kind}.bias"] = w(shapes[kind][0])
        else:
            for kind in ("attn_q_norm", "attn_k_norm"):
                tensors[f"blk.{layer}.{kind}.weight"] = 1 + w(head) * 0.1
        tensors[f"blk.{layer}.attn_norm.weight"] = 1 + w(HIDDEN) * 0.1
        tensors[f"blk.{layer}.ffn_norm.weight"] = 1 + w(HIDDEN) * 0.1
    write_gguf(path, arch, metadata, tensors)


MLX_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
             "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}  # fmt: skip


def reference_model(path, arch: str = "qwen2"):
    """An mlx-lm qwen2 (or qwen3) model whose weights are `gguf`'s own dequantization of the file, no importer
    involved."""
    import importlib

    module = importlib.import_module(f"mlx_lm.models.{arch}")
    Model, ModelArgs = module.Model, module.ModelArgs

    weights = {}
    for tensor in gguf.GGUFReader(str(path)).tensors:
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(tuple(reversed(tensor.shape.tolist())))
        name = tensor.name
        if name.startswith("blk."):
            _, layer, kind, suffix = name.split(".")
            name = f"model.layers.{layer}.{MLX_NAMES[kind]}.{suffix}"
        else:
            name = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}[name]
        weights[name] = mx.array(array.astype(np.float32))
    extra = {"head_dim": QWEN3_HEAD, "max_position_embeddings": 512} if arch == "qwen3" else {}
    args = ModelArgs(model_type=arch, hidden_size=HIDDEN, num_hidden_layers=LAYERS, intermediate_size=FFN,
                     num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, rms_norm_eps=1e-6,
                     vocab_size=len(vocabulary()), rope_theta=1e6, tie_word_embeddings=True, **extra)  # fmt: skip
    model = Model(args)
    model.load_weights(list(weights.items()))
    return model


@pytest.fixture(scope="module")
def qwen2_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2") / "tiny-qwen2.Q4_K_M.gguf"
    write_tiny_qwen2(path)
    return path


@pytest.fixture(scope="module")
def k_only_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("k_only") / "tiny-qwen2.K.gguf"
    write_tiny_qwen2(path, types=K_ONLY)
    return path


def test_a_file_mlx_reads_wrong_without_complaint_imports_right(k_only_gguf, tmp_path):
    weights = mx.load(str(k_only_gguf))  # no error, and a Q4_K matrix that is not the file's
    reference = reference_model(k_only_gguf)
    read_by_mlx = np.array(weights["blk.0.ffn_down.weight"])
    assert np.abs(read_by_mlx - np.array(reference.model.layers[0].mlp.down_proj.weight)).max() > 1e-2
    imported = import_gguf(k_only_gguf, tmp_path / "m", dtype="float32")
    model, _ = load_model(str(imported.path))
    tokens = mx.array([[5, 80, 120, 33, 200, 7, 9, 250]])
    got, expected = np.array(model(tokens)), np.array(reference(tokens))
    assert np.abs(got - expected).max() < 1e-4


def test_mlx_cannot_read_these_types_itself(qwen2_gguf):
    with pytest.raises((RuntimeError, ValueError)):
        mx.load(str(qwen2_gguf), return_metadata=True)


def test_a_k_quant_qwen2_file_imports_to_the_model_its_dequantized_weights_make(qwen2_gguf, tmp_path):
    imported = import_gguf(qwen2_gguf, tmp_path / "m", dtype="float32")
    config = json.loads((imported.path / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["tie_word_embeddings"] is True
    model, _ = load_model(str(imported.path))
    tokens = mx.array([[5, 80, 120, 33, 200, 7, 9, 250]])
    got, expected = np.array(model(tokens)), np.array(reference_model(qwen2_gguf)(tokens))
    assert np.abs(got - expected).max() < 1e-4
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_q4_of_a_dequantized_file_is_mlx_4_bit_of_its_weights(qwen2_gguf, tmp_path):
    import mlx.nn as nn

    imported = import_gguf(qwen2_gguf, tmp_path / "q", dtype="q4")
    assert json.loads((imported.path / "config.json").read_text())["quantization"] == {"group_size": 64, "bits": 4}
    model, _ = load_model(str(imported.path))
    reference = reference_model(qwen2_gguf)
    for name in ("self_attn.q_proj", "mlp.down_proj"):
        layer = model.model.layers[1]
        got = layer.self_attn.q_proj if name.startswith("self_attn") else layer.mlp.down_proj
        want = (
            reference.model.layers[1].self_attn.q_proj
            if name.startswith("self_attn")
            else reference.model.layers[1].mlp.down_proj
        )
        assert isinstance(got, nn.QuantizedLinear) and got.group_size == 64 and got.bits == 4
        weight = mx.dequantize(got.weight, got.scales, got.biases, group_size=64, bits=4)
        expected = mx.dequantize(*mx.quantize(want.weight, group_size=64, bits=4), group_size=64, bits=4)
        assert mx.allclose(weight, expected, atol=1e-6).item(), name  # mlx's 4-bit of gguf's dequantization


STRINGS = ["Hello world", "the theory of 1234 things", "  spaced\tout\n\n", "naïve café 🙂", "It's 3.14!", "a\r\nb"]


def test_the_qwen2_tokenizer_splits_as_qwen2_does(qwen2_gguf, tmp_path):
    imported = import_gguf(qwen2_gguf, tmp_path / "t", dtype="float32")
    _, tokenizer = load_model(str(imported.path))
    for text in STRINGS:
        expected = reference_encode(text, vocabulary(), MERGES, split_digits=False, pattern=QWEN2_PATTERN)
        assert tokenizer.encode(text, add_special_tokens=False) == expected, text
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_imports_agree_with_a_numpy_forward_pass_of_the_file(architecture, tiny_gguf, qwen2_gguf, runner, tmp_path):
    """The numpy reference applies the rope as llama.cpp does on the file's own tensors (permuted Q/K rows for
    llama): agreement means the importer undid and mapped everything right."""
    from slearn_mlx.cli import cli
    from slearn_mlx.models.check import check_import

    source = tiny_gguf if architecture == "llama" else qwen2_gguf
    model, _ = load_model(str(import_gguf(source, tmp_path / "m", dtype="float32").path))
    check = check_import(source, model, [[5, 80, 120, 33, 200, 7, 9], [1, 2, 3]])
    assert check.positions == 10 and check.top1_agreement == 1.0 and check.max_logit_difference < 1e-4
    result = runner.invoke(cli, ["models", "import-gguf", str(source), "--out", str(tmp_path / "c"), "--check"])
    assert result.exit_code == 0 and "top-1 agreement 100.0%" in result.output, result.output


def test_a_qwen3_file_imports_with_its_wider_heads_and_query_key_norms(tmp_path):
    path = tmp_path / "tiny-qwen3.gguf"
    write_tiny_qwen2(path, arch="qwen3")
    imported = import_gguf(path, tmp_path / "m", dtype="float32")
    config = json.loads((imported.path / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["head_dim"] == QWEN3_HEAD
    model, _ = load_model(str(imported.path))
    tokens = mx.array([[5, 80, 120, 33, 200, 7, 9, 250]])
    got, expected = np.array(model(tokens)), np.array(reference_model(path, "qwen3")(tokens))
    assert np.abs(got - expected).max() < 1e-4
    assert (got.argmax(-1) == expected.argmax(-1)).all()
