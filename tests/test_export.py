"""`slearn export`: the adapted model fused and written back as mlx-lm, GGUF, Ollama and LM Studio files, checked by
importing the GGUF file again and comparing logits with the fused model."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from slearn_mlx.cli import cli
from slearn_mlx.models.export import fuse_adapters
from slearn_mlx.models.gguf import import_gguf
from slearn_mlx.models.load import load_model

from tiny import write_tiny_gguf

FAST = ["--max-tokens", "4", "--epochs", "2", "--num-layers", "2", "--learning-rate", "1e-2", "--all", "--quiet"]
TOKENS = mx.array([[5, 80, 120, 33, 200, 7, 9, 250, 14]])


def trained_run(runner, model_dir, qa_file, out, fine_tune_type="lora"):
    result = runner.invoke(cli, ["run", "--data", str(qa_file), "--model", str(model_dir), "--out", str(out),
                                 "--grader", "exact", "--fine-tune-type", fine_tune_type, *FAST])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def fused_logits(model_dir, run):
    model, _ = load_model(str(model_dir), adapter_path=run / "adapters")
    base, _ = load_model(str(model_dir))
    fuse_adapters(model)
    adapted = np.array(model(TOKENS))
    assert np.abs(adapted - np.array(base(TOKENS))).max() > 1e-3  # the adapters change the model: the check can fail
    return adapted


@pytest.mark.parametrize("fine_tune_type", ["lora", "dora", "full"])
def test_a_gguf_export_imports_back_to_the_fused_model(runner, tiny_gguf, qa_file, tmp_path, fine_tune_type):
    model_dir = import_gguf(tiny_gguf, tmp_path / "model", dtype="float32").path
    run = trained_run(runner, model_dir, qa_file, tmp_path / "run", fine_tune_type)
    expected = fused_logits(model_dir, run)
    for qtype, tolerance in (("f32", 1e-4), ("f16", 2e-2)):
        result = runner.invoke(cli, ["export", str(run), "--to", "gguf", "--quantize", qtype])
        assert result.exit_code == 0 and f"exported gguf ({qtype.upper()})" in result.output, result.output
        path = run / "export" / "gguf" / f"run-{qtype}.gguf"
        back, _ = load_model(str(import_gguf(path, tmp_path / f"back-{qtype}", dtype="float32").path))
        got = np.array(back(TOKENS))
        assert np.abs(got - expected).max() < tolerance, (qtype, np.abs(got - expected).max())
    # Q8_0: every matrix within a step of its block (absmax / 127, stored in float16) of the float32 file's.
    assert runner.invoke(cli, ["export", str(run), "--quantize", "q8_0"]).exit_code == 0
    exact, q8 = (tensors(run / "export" / "gguf" / f"run-{q}.gguf") for q in ("f32", "q8_0"))
    for name, (kind, values) in q8.items():
        reference = exact[name][1]
        if kind == "Q8_0":
            blocks = reference.reshape(-1, 32)
            step = np.abs(blocks).max(axis=1, keepdims=True) / 127
            assert (np.abs(values.reshape(-1, 32) - blocks) <= step).all(), name
        else:
            assert np.array_equal(values, reference), name
    assert not list((run / "export" / "gguf").glob(".export-*"))  # nothing half-written left


def tensors(path) -> dict:
    """(GGML type, dequantized values) of every tensor of a GGUF file, by name."""
    import gguf

    return {
        t.name: (t.tensor_type.name, gguf.quants.dequantize(t.data, t.tensor_type))
        for t in gguf.GGUFReader(path).tensors
    }


def test_an_mlx_export_loads_in_mlx_lm_as_the_fused_model(runner, tiny_gguf, qa_file, tmp_path):
    from mlx_lm import load

    model_dir = import_gguf(tiny_gguf, tmp_path / "model", dtype="float32").path
    run = trained_run(runner, model_dir, qa_file, tmp_path / "run")
    expected = fused_logits(model_dir, run)
    result = runner.invoke(cli, ["export", str(run), "--to", "mlx", "--out", str(tmp_path / "fused")])
    assert result.exit_code == 0, result.output
    model, _ = load(str(tmp_path / "fused"))
    assert np.abs(np.array(model(TOKENS)) - expected).max() < 1e-4


def test_ollama_gets_a_modelfile_with_the_training_frame_and_lm_studio_its_folder(
    runner, tiny_gguf, qa_file, tmp_path, monkeypatch
):
    model_dir = import_gguf(tiny_gguf, tmp_path / "model", dtype="float32").path
    run = trained_run(runner, model_dir, qa_file, tmp_path / "world")
    result = runner.invoke(cli, ["export", str(run), "--to", "ollama"])
    assert result.exit_code == 0, result.output
    modelfile = (run / "export" / "ollama" / "Modelfile").read_text()
    assert f"ollama create world -f {run / 'export' / 'ollama' / 'Modelfile'}" in result.output
    assert "FROM ./world-f16.gguf" in modelfile and (run / "export" / "ollama" / "world-f16.gguf").exists()
    # The tiny model's ChatML template, one user turn: what slearn trained and answered in.
    assert 'TEMPLATE """<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"""' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    result = runner.invoke(cli, ["export", str(run), "--to", "lmstudio", "--quantize", "q8_0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / ".lmstudio" / "models" / "slearn" / "world" / "world-q8_0.gguf").exists()


def test_what_cannot_be_exported_is_one_line_and_writes_nothing(runner, tiny_gguf, tiny_model, qa_file, tmp_path):
    model_dir = import_gguf(tiny_gguf, tmp_path / "model", dtype="float32").path
    untrained = tmp_path / "untrained"
    result = runner.invoke(cli, ["grade", "--out", str(untrained), "--data", str(qa_file), "--model", str(model_dir),
                                 "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["export", str(untrained), "--to", "gguf"])
    assert result.exit_code == 1 and "no adapters to export; train first" in result.output
    run = trained_run(runner, model_dir, qa_file, tmp_path / "run")
    result = runner.invoke(cli, ["export", str(run), "--quantize", "q3_q"])
    assert result.exit_code == 1 and "not a GGUF type the exporter writes" in result.output
    result = runner.invoke(cli, ["export", str(run), "--to", "mlx", "--quantize", "q8_0"])
    assert result.exit_code == 1 and "--quantize applies to GGUF files" in result.output
    # Not imported from GGUF, with a tokenizer whose vocabulary the exporter cannot rebuild (SentencePiece's).
    (model_dir / "source_metadata.gguf").unlink()
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text())
    tokenizer_json["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    (model_dir / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    result = runner.invoke(cli, ["export", str(run), "--to", "gguf"])
    assert result.exit_code == 1 and "no byte-level BPE tokenizer.json" in result.output
    assert "Traceback" not in result.output
    assert not (run / "export" / "gguf").exists() or not list((run / "export" / "gguf").iterdir())


def test_the_metadata_written_back_is_the_source_files(runner, tiny_gguf, qa_file, tmp_path):
    import gguf

    model_dir = import_gguf(tiny_gguf, tmp_path / "model", dtype="float32").path
    run = trained_run(runner, model_dir, qa_file, tmp_path / "run")
    assert runner.invoke(cli, ["export", str(run), "--quantize", "q8_0"]).exit_code == 0
    source = gguf.GGUFReader(tiny_gguf)
    written = gguf.GGUFReader(run / "export" / "gguf" / "run-q8_0.gguf")
    for name in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template", "llama.block_count",
                 "tokenizer.ggml.eos_token_id"):  # fmt: skip
        assert written.fields[name].contents() == source.fields[name].contents(), name
    assert written.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    types = {t.name: t.tensor_type.name for t in written.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"


def test_export_to_every_architecture_the_importer_reads(runner, qa_file, tmp_path):
    """qwen2 (biases, its own tokenizer split) and qwen3 (query and key norms, wider heads) round-trip as llama does."""
    from test_gguf_types import K_ONLY, write_tiny_qwen2

    for arch in ("qwen2", "qwen3"):
        source = tmp_path / f"{arch}.gguf"
        write_tiny_qwen2(source, arch=arch, types=K_ONLY)
        model_dir = import_gguf(source, tmp_path / f"{arch}-model", dtype="float32").path
        run = trained_run(runner, model_dir, qa_file, tmp_path / arch)
        expected = fused_logits(model_dir, run)
        assert runner.invoke(cli, ["export", str(run), "--quantize", "f32"]).exit_code == 0
        back, _ = load_model(
            str(import_gguf(run / "export" / "gguf" / f"{arch}-f32.gguf", tmp_path / f"{arch}-back").path)
        )
        assert np.abs(np.array(back(TOKENS)) - expected).max() < 1e-4, arch
        config = json.loads((tmp_path / f"{arch}-back" / "config.json").read_text())
        assert config["model_type"] == arch


STRINGS = ["Hello world", "the theory of 1234567 things", "  spaced\tout\n\n", "naïve café 🙂", "It's 3.14!",
           "<|im_start|>user\nHi<|im_end|>"]  # fmt: skip


@pytest.mark.parametrize("pre", ["smollm", "qwen2", "llama-bpe"])
def test_a_model_not_imported_from_gguf_exports_with_metadata_rebuilt_from_its_tokenizer(pre, runner, qa_file,
                                                                                         tmp_path):  # fmt: skip
    """No source file's metadata to carry over: hyperparameters, vocabulary, merges, token types, special tokens and
    chat template are rebuilt from config.json and the tokenizer files; the file imports back to the fused model with
    the same tokenizer, and llama.cpp (where installed) encodes as the model did."""
    import gguf

    from tiny import tokenizer_metadata, vocabulary

    source = tmp_path / "m.gguf"
    write_tiny_gguf(source, tokenizer=tokenizer_metadata(vocabulary(), pre) | {"tokenizer.ggml.bos_token_id": 1,
                                                                                "tokenizer.ggml.eos_token_id": 2})  # fmt: skip
    model_dir = import_gguf(source, tmp_path / "model", dtype="float32").path
    (model_dir / "source_metadata.gguf").unlink()  # as a model from anywhere else, in mlx-lm's format
    run = trained_run(runner, model_dir, qa_file, tmp_path / "run")
    expected = fused_logits(model_dir, run)
    result = runner.invoke(cli, ["export", str(run), "--quantize", "f32"])
    assert result.exit_code == 0, result.output
    exported = run / "export" / "gguf" / "run-f32.gguf"
    fields = gguf.GGUFReader(exported).fields
    named = {"llama-bpe": "llama3"}.get(pre, pre)  # two of llama.cpp's names for the same split
    assert fields["tokenizer.ggml.pre"].contents() == named and fields["llama.block_count"].contents() == 2
    assert (
        fields["tokenizer.chat_template"].contents()
        == gguf.GGUFReader(source).fields["tokenizer.chat_template"].contents()
    )
    back_dir = import_gguf(exported, tmp_path / "back").path
    back, back_tokenizer = load_model(str(back_dir))
    assert np.abs(np.array(back(TOKENS)) - expected).max() < 1e-4
    _, tokenizer = load_model(str(model_dir))
    for text in STRINGS:
        assert back_tokenizer.encode(text) == tokenizer.encode(text), text
    try:
        import llama_cpp
    except ImportError:
        return
    llama = llama_cpp.Llama(str(exported), n_ctx=64, vocab_only=True, verbose=False)
    for text in STRINGS:
        assert llama.tokenize(text.encode(), add_bos=False, special=True) == tokenizer.encode(
            text, add_special_tokens=False
        ), text


def test_the_writer_round_trips_a_file_written_by_the_test_helper(tmp_path):
    """Import then export with no training: the same tensors as the file, to float32 precision."""
    import gguf

    from slearn_mlx.models.export import export_gguf, model_config

    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source)
    model_dir = import_gguf(source, tmp_path / "m", dtype="float32").path
    model, _ = load_model(str(model_dir))
    export_gguf(model, model_config(model_dir), model_dir, tmp_path / "again.gguf", "F32")
    original = {t.name: np.array(t.data) for t in gguf.GGUFReader(source).tensors}
    again = {t.name: np.array(t.data) for t in gguf.GGUFReader(tmp_path / "again.gguf").tensors}
    assert original.keys() == again.keys()
    assert all(np.allclose(original[k], again[k], atol=1e-6) for k in original)


def test_llama_cpp_computes_what_the_fused_model_computes(runner, tiny_gguf, qa_file, tmp_path):
    """llama.cpp itself, where llama-cpp-python is installed: the exported file's logits are the fused model's."""
    llama_cpp = pytest.importorskip("llama_cpp")
    model_dir = import_gguf(tiny_gguf, tmp_path / "model", dtype="float32").path
    run = trained_run(runner, model_dir, qa_file, tmp_path / "run")
    expected = fused_logits(model_dir, run)[0]
    assert runner.invoke(cli, ["export", str(run), "--quantize", "f32"]).exit_code == 0
    # llama.cpp keeps its KV cache in F16 unless told otherwise: F32 here, so that the graph alone is compared.
    llama = llama_cpp.Llama(str(run / "export" / "gguf" / "run-f32.gguf"), n_ctx=64, logits_all=True, verbose=False,
                            type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)  # fmt: skip
    llama.eval(TOKENS[0].tolist())
    got = np.array(llama.scores[: TOKENS.shape[1]])
    assert np.abs(got - expected).max() < 1e-3


def test_llama_cpp_k_quants_say_their_fallbacks_in_one_line(runner, tiny_gguf, qa_file, tmp_path, capfd):
    """llama.cpp writes a line per tensor it cannot make as a K-quant (rows not a multiple of 256, all of the tiny
    llama's): the export says it once."""
    pytest.importorskip("llama_cpp")
    model_dir = import_gguf(tiny_gguf, tmp_path / "model", dtype="float32").path
    run = trained_run(runner, model_dir, qa_file, tmp_path / "run")
    capfd.readouterr()
    result = runner.invoke(cli, ["export", str(run), "--quantize", "q4_k_m"])
    assert result.exit_code == 0, result.output
    assert (run / "export" / "gguf" / "run-q4_k_m.gguf").stat().st_size > 0
    said = capfd.readouterr().err + result.output
    assert "falling back" not in said
    assert said.count("required fallback quantization") == 1 and "llama.cpp: " in said
