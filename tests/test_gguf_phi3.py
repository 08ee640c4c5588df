"""phi3 in and out: a tiny phi3 GGUF file (queries, keys and values in one matrix, the gate and up projections in
another, no rope permutation) imported against the numpy reference, trained, exported and imported back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_export import TOKENS, fused_logits, trained_run

from slearn_mlx.cli import cli
from slearn_mlx.models.check import check_import
from slearn_mlx.models.gguf import import_gguf
from slearn_mlx.models.load import load_model

from tiny import CHAT_TEMPLATE, tokenizer_metadata, vocabulary, write_gguf

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128


def write_tiny_phi3(path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    tokens = vocabulary()
    head = HIDDEN // HEADS

    def w(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    metadata = {
        "general.name": "tiny-phi3",
        "phi3.block_count": LAYERS,
        "phi3.embedding_length": HIDDEN,
        "phi3.feed_forward_length": FFN,
        "phi3.attention.head_count": HEADS,
        "phi3.attention.head_count_kv": KV_HEADS,
        "phi3.attention.layer_norm_rms_epsilon": 1e-5,
        "phi3.rope.dimension_count": head,
        "phi3.rope.freq_base": 10000.0,
        "phi3.context_length": 512,
        "phi3.rope.scaling.original_context_length": 512,
        **tokenizer_metadata(tokens, "default"),
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }
    tensors = {"token_embd.weight": w(len(tokens), HIDDEN), "output_norm.weight": 1 + w(HIDDEN) * 0.1,
               "output.weight": w(len(tokens), HIDDEN)}  # fmt: skip
    for layer in range(LAYERS):
        p = f"blk.{layer}."
        tensors |= {
            p + "attn_qkv.weight": w((HEADS + 2 * KV_HEADS) * head, HIDDEN),
            p + "attn_output.weight": w(HIDDEN, HEADS * head),
            p + "ffn_up.weight": w(2 * FFN, HIDDEN),
            p + "ffn_down.weight": w(HIDDEN, FFN),
            p + "attn_norm.weight": 1 + w(HIDDEN) * 0.1,
            p + "ffn_norm.weight": 1 + w(HIDDEN) * 0.1,
        }
    write_gguf(path, "phi3", metadata, tensors)


@pytest.fixture(scope="module")
def phi3_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("phi3") / "tiny-phi3.gguf"
    write_tiny_phi3(path)
    return path


def test_a_phi3_file_imports_to_the_model_the_numpy_reference_computes(phi3_gguf, tmp_path):
    imported = import_gguf(phi3_gguf, tmp_path / "m", dtype="float32")
    config = json.loads((imported.path / "config.json").read_text())
    assert config["model_type"] == "phi3" and config["partial_rotary_factor"] == 1.0
    model, _ = load_model(str(imported.path))
    check = check_import(phi3_gguf, model, [[5, 80, 120, 33, 200, 7, 9, 250], [1, 2, 3]])
    assert check.top1_agreement == 1.0 and check.max_logit_difference < 1e-4, check


def test_a_phi3_run_exports_to_gguf_and_imports_back_to_the_fused_model(phi3_gguf, runner, qa_file, tmp_path):
    import gguf

    model_dir = import_gguf(phi3_gguf, tmp_path / "model", dtype="float32").path
    run = trained_run(runner, model_dir, qa_file, tmp_path / "run")
    expected = fused_logits(model_dir, run)
    result = runner.invoke(cli, ["export", str(run), "--quantize", "f32"])
    assert result.exit_code == 0, result.output
    exported = run / "export" / "gguf" / "run-f32.gguf"
    names = {t.name for t in gguf.GGUFReader(exported).tensors}
    assert names == {t.name for t in gguf.GGUFReader(phi3_gguf).tensors}  # fused matrices stay fused
    back, _ = load_model(str(import_gguf(exported, tmp_path / "back").path))
    assert np.abs(np.array(back(TOKENS)) - expected).max() < 1e-4
