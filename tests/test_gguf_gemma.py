"""gemma3 GGUF files: a SentencePiece vocabulary, norms stored as 1 + weight, local and global attention layers.

A tiny SentencePiece BPE tokenizer is trained here with `sentencepiece` itself, and a tiny gemma3 model written
with `gguf`'s writer as llama.cpp lays one out. The tokenizer the importer rebuilds from the file must encode as
SentencePiece does once control and user-defined tokens are taken whole from the raw text (llama.cpp's order);
the imported model must compute the logits of the numpy reference (`gguf_check`), which runs llama.cpp's gemma3
graph on the file's own tensors; and a base model with no chat template must go through every stage.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from slearn_mlx.models.check import check_import
from slearn_mlx.models.gguf import import_gguf
from slearn_mlx.models.load import load_model

from tiny import quantized, write_gguf

spm = pytest.importorskip("sentencepiece")

# 64 wide: mlx-lm's gemma3 rounds the embeddings' scale, sqrt(64) = 8, to bfloat16, where 8 is exact.
HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN, WINDOW = 64, 6, 2, 1, 32, 128, 4
CONTROL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
USER_DEFINED = ["\n", "\n\n", "  ", "<td>"]
CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "What is the capital of Japan? The capital of Japan is Tokyo.",
    "Which country is Ouagadougou the capital of? Burkina Faso.",
    "Induction of inhalational agent is faster when combined with nitrous oxide.",
    "Arterial supply to floor of mouth and suprahyoid muscle is the lingual artery.",
    "The answer is 42, and 3.14159 is pi; naïve café über.",
] * 20
STRINGS = [
    "What is the capital of France?",
    "The capital of Burkina Faso is Ouagadougou.",
    "Hello  world\n\nnew line\tand tab",
    "  leading spaces and trailing   ",
    "naïve café — 東京 🤖 Ωmega",
    "<start_of_turn>user\nHi<end_of_turn>",
    "<td>1</td> x = f(3.14) + 2**10;",
]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    """A SentencePiece BPE model with byte fallback, trained on CORPUS, and its processor."""
    folder = tmp_path_factory.mktemp("spm")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_prefix=str(folder / "tiny"), model_type="bpe", vocab_size=320,
        byte_fallback=True, split_by_whitespace=False, allow_whitespace_only_pieces=True, add_dummy_prefix=False,
        remove_extra_whitespaces=False, normalization_rule_name="identity", character_coverage=1.0,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, control_symbols=CONTROL[4:], user_defined_symbols=USER_DEFINED,
        minloglevel=2,
    )  # fmt: skip
    return spm.SentencePieceProcessor(model_file=str(folder / "tiny.model"))


def pieces(processor) -> tuple[list[str], list[float], list[int]]:
    n = processor.get_piece_size()
    types = []
    for i in range(n):
        kind = 3 if processor.is_control(i) else 2 if processor.is_unknown(i) else 6 if processor.is_byte(i) else 1
        types.append(4 if processor.id_to_piece(i) in USER_DEFINED else kind)
    tokens = [processor.id_to_piece(i) for i in range(n)]  # user-defined pieces raw, as llama.cpp's files hold them
    return tokens, [processor.get_score(i) for i in range(n)], types


def write_tiny_gemma3(path, processor, seed: int = 0) -> None:
    """A tiny gemma3 as llama.cpp writes one: norms stored as 1 + weight, tied embeddings, no chat template."""
    rng = np.random.default_rng(seed)
    tokens, scores, types = pieces(processor)
    metadata = {
        "general.name": "tiny-gemma3",
        "gemma3.block_count": LAYERS,
        "gemma3.embedding_length": HIDDEN,
        "gemma3.feed_forward_length": FFN,
        "gemma3.attention.head_count": HEADS,
        "gemma3.attention.head_count_kv": KV_HEADS,
        "gemma3.attention.key_length": HEAD_DIM,
        "gemma3.attention.value_length": HEAD_DIM,
        "gemma3.attention.layer_norm_rms_epsilon": 1e-6,
        "gemma3.rope.freq_base": 1e6,
        "gemma3.context_length": 512,
        "gemma3.attention.sliding_window": WINDOW,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 2,
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.unknown_token_id": 3,
        "tokenizer.ggml.padding_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_space_prefix": False,
    }

    def w(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tensors = {"token_embd.weight": w(len(tokens), HIDDEN), "output_norm.weight": 1 + w(HIDDEN, scale=0.1)}
    shapes = {"attn_q": (HEADS * HEAD_DIM, HIDDEN), "attn_k": (KV_HEADS * HEAD_DIM, HIDDEN),
              "attn_v": (KV_HEADS * HEAD_DIM, HIDDEN), "attn_output": (HIDDEN, HEADS * HEAD_DIM),
              "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN), "ffn_down": (HIDDEN, FFN)}  # fmt: skip
    for layer in range(LAYERS):
        for kind, shape in shapes.items():
            tensors[f"blk.{layer}.{kind}.weight"] = quantized(
                w(*shape), "Q8_0" if kind in ("attn_v", "ffn_up") else "Q5_0"
            )
        for kind, width in (("attn_q_norm", HEAD_DIM), ("attn_k_norm", HEAD_DIM), ("attn_norm", HIDDEN),
                            ("post_attention_norm", HIDDEN), ("ffn_norm", HIDDEN), ("post_ffw_norm", HIDDEN)):  # fmt: skip
            tensors[f"blk.{layer}.{kind}.weight"] = 1 + w(width, scale=0.1)
    write_gguf(path, "gemma3", metadata, tensors)


@pytest.fixture(scope="module")
def gemma3(spm_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gemma3")
    path = folder / "tiny-gemma3.gguf"
    write_tiny_gemma3(path, spm_model)
    return path, import_gguf(path, folder / "model", dtype="float32").path


def llama_cpp_reference(processor, text: str) -> list[int]:
    """llama.cpp's encoding: control and user-defined tokens matched whole in the raw text (longest first), the
    pieces between them encoded by SentencePiece."""
    tokens, _, types = pieces(processor)
    whole = {t: i for i, (t, k) in enumerate(zip(tokens, types)) if k in (3, 4)}
    out, at = [], 0
    for match in re.finditer("|".join(re.escape(t) for t in sorted(whole, key=len, reverse=True)), text):
        out += processor.encode(text[at : match.start()]) if match.start() > at else []
        out.append(whole[match.group()])
        at = match.end()
    return out + (processor.encode(text[at:]) if at < len(text) else [])


def test_the_sentencepiece_tokenizer_encodes_as_llama_cpp_and_decodes_back(spm_model, gemma3):
    _, model_dir = gemma3
    _, tokenizer = load_model(str(model_dir))
    for text in STRINGS + CORPUS[:6]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert ids == llama_cpp_reference(spm_model, text), text
        assert tokenizer.decode(ids) == text
    # Text the merges alone cannot reach still encodes: unseen characters fall back to their UTF-8 bytes.
    assert tokenizer.encode("ж", add_special_tokens=False) == spm_model.encode("ж")


def test_a_gemma3_file_imports_to_the_model_llama_cpp_computes(gemma3):
    """Norms back from 1 + weight, four of them per block, local layers with a window of 4 tokens and their own rope
    base: the numpy reference of the file agrees on every position."""
    path, model_dir = gemma3
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["sliding_window"] == WINDOW
    model, _ = load_model(str(model_dir))
    check = check_import(path, model, [[5, 80, 120, 33, 200, 7, 9, 41, 57, 66, 12], [2, 40, 41]])
    assert check.top1_agreement == 1.0 and check.max_logit_difference < 1e-4, check


def test_a_base_model_without_a_chat_template_runs_every_stage(gemma3, runner, tmp_path):
    """The file has no chat template: the import writes the plain question/answer frame, with the BOS token
    Gemma needs, and answering, the probe, training and evaluation all go through it."""
    from slearn_mlx.answer import encode_chat
    from slearn_mlx.cli import cli

    _, model_dir = gemma3
    _, tokenizer = load_model(str(model_dir))
    ids = encode_chat(tokenizer, "What is the capital of France?")
    assert ids[0] == 2 and tokenizer.decode(ids[1:]) == "Question: What is the capital of France?\nAnswer:\n"
    rows = [{"id": f"q{i}", "question": f"What is the capital of country {i}?", "answer": f"City{i}"} for i in range(6)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    result = runner.invoke(cli, ["run", "--model", str(model_dir), "--data", str(data), "--test", str(data),
                                 "--max-tokens", "4", "--out", str(out), "--epochs", "1", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n_items"] == 6 and (out / "adapters" / "adapters.safetensors").exists()


def test_a_gemma3_run_exports_to_gguf_and_imports_back_to_the_fused_model(gemma3, runner, tmp_path):
    """Norms written back as 1 + weight, the SentencePiece vocabulary and the plain frame's BOS carried over: the
    exported file imports to the fused model, and its Modelfile leaves the BOS to llama.cpp, which adds it."""
    import mlx.core as mx
    import numpy as np

    from slearn_mlx.cli import cli
    from slearn_mlx.models.export import fuse_adapters

    _, model_dir = gemma3
    rows = [{"id": f"q{i}", "question": f"What is the capital of country {i}?", "answer": f"City{i}"} for i in range(6)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    result = runner.invoke(cli, ["run", "--model", str(model_dir), "--data", str(data), "--all", "--max-tokens", "4",
                                 "--out", str(out), "--epochs", "2", "--learning-rate", "1e-2", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    fused, _ = load_model(str(model_dir), adapter_path=out / "adapters")
    fuse_adapters(fused)
    tokens = mx.array([[2, 5, 80, 120, 33, 200, 7, 9, 41, 57]])
    result = runner.invoke(cli, ["export", str(out), "--to", "ollama", "--quantize", "f32"])
    assert result.exit_code == 0, result.output
    back, _ = load_model(str(import_gguf(out / "export" / "ollama" / "run-f32.gguf", tmp_path / "back").path))
    assert np.abs(np.array(back(tokens)) - np.array(fused(tokens))).max() < 1e-4
    modelfile = (out / "export" / "ollama" / "Modelfile").read_text()
    assert 'TEMPLATE """Question: {{ .Prompt }}\nAnswer:\n"""' in modelfile
