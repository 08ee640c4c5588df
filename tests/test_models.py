"""The GGUF importer, model loading and the environment report."""

from __future__ import annotations

import ctypes.util
import json
import os
import sys

import mlx.core as mx
import numpy as np
import pytest

from slearn_mlx.cli import cli
from slearn_mlx.models.gguf import import_gguf
from slearn_mlx.models.load import load_model

from bpe_reference import encode as reference_encode
from tiny import MERGES, vocabulary

STRINGS = ["Hello world", "the theory of 1234 things", "  spaced\tout\n", "naïve café 🙂", "Yes No yes"]


def test_import_undoes_llama_cpp_permutation(tiny_gguf, tiny_model):
    """The imported model computes what a model built from the original HF-layout weights computes."""
    from mlx_lm.models.llama import Model, ModelArgs

    from tiny import hf_weights

    config = json.loads(open(f"{tiny_model}/config.json").read())
    reference = Model(ModelArgs.from_dict(config))
    reference.load_weights([(k, mx.array(v)) for k, v in hf_weights().items()])
    imported, _ = load_model(tiny_model)
    tokens = mx.array([[5, 80, 120, 33, 200, 7, 9]])
    np.testing.assert_allclose(np.array(imported(tokens)), np.array(reference(tokens)), atol=1e-4)


def test_an_import_that_skips_the_unpermutation_computes_something_else(tiny_gguf, tmp_path, monkeypatch):
    """The test above can fail: imported without undoing llama.cpp's Q/K row order, the model's logits differ."""
    from slearn_mlx.models import gguf

    right, _ = load_model(str(import_gguf(tiny_gguf, tmp_path / "right", dtype="float32").path))
    monkeypatch.setattr(gguf, "_unpermute_rope_rows", lambda w, n_heads: w)
    wrong, _ = load_model(str(import_gguf(tiny_gguf, tmp_path / "wrong", dtype="float32").path))
    tokens = mx.array([[5, 80, 120, 33, 200, 7, 9]])
    assert np.abs(np.array(right(tokens)) - np.array(wrong(tokens))).max() > 1e-2


def test_tokenizer_matches_gguf_vocabulary(tiny_loaded):
    _, tokenizer = tiny_loaded
    for text in STRINGS:
        assert tokenizer.encode(text, add_special_tokens=False) == reference_encode(text, vocabulary(), MERGES)
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template_and_special_tokens(tiny_loaded):
    _, tokenizer = tiny_loaded
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert ids[0] == 1 and 2 in ids  # <|im_start|> ... <|im_end|> as single special tokens
    assert tokenizer.eos_token_id == 2


def test_import_rejects_missing_and_non_gguf(tmp_path, runner):
    result = runner.invoke(cli, ["models", "import-gguf", str(tmp_path / "nope.gguf")])
    assert result.exit_code != 0 and "GGUF file not found" in result.output
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    result = runner.invoke(cli, ["models", "import-gguf", str(bogus)])
    assert result.exit_code != 0 and "bogus.gguf" in result.output
    assert "Traceback" not in result.output


def test_import_gguf_command(tiny_gguf, tmp_path, runner):
    out = tmp_path / "m"
    result = runner.invoke(cli, ["models", "import-gguf", str(tiny_gguf), "--out", str(out), "--dtype", "float16"])
    assert result.exit_code == 0, result.output
    assert "imported" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    weights = mx.load(str(out / "model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.float16


def test_q4_needs_quantized_tensors(tiny_gguf, tmp_path):
    with pytest.raises(ValueError, match="--dtype q4 keeps 4-bit GGUF tensors as they are, but this file has none"):
        import_gguf(tiny_gguf, tmp_path / "q", dtype="q4")


def test_info_reports_blas_and_versions(runner):
    result = runner.invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    for key in ("mlx ", "mlx_lm", "backend", "device", "blas"):
        assert key in result.output


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a local directory"):
        load_model(str(tmp_path / "no-such-model"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OpenBLAS preload is Linux-only")
def test_openblas_is_loaded_before_mlx_when_installed():
    """slearn_mlx must be imported before mlx everywhere (the tests too), or matmuls run ~20x slower."""
    from slearn_mlx import _blas

    installed = any(os.path.exists(p) for p in _blas._CANDIDATES) or ctypes.util.find_library("openblas")
    if not installed:
        pytest.skip("no OpenBLAS on this machine")
    assert _blas.loaded_path is not None, _blas.skipped_reason
    assert any("openblas" in name for name in _blas.blas_libraries_mapped())
