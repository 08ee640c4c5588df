"""`slearn plan`: the knowledge test and each way's forecast cost, before any training; with --out, the run reuses it."""

from __future__ import annotations

import json

import pytest

from slearn_mlx.cli import cli
from slearn_mlx.plan import known_band
from slearn_mlx.probe import Knowledge

from conftest import write_jsonl


def knowing(p: float, i: int = 0) -> Knowledge:
    return Knowledge(str(i), p, 0.0, 0.0, 1, False)


def test_the_known_band_holds_the_share_and_narrows_with_the_set():
    sure = [knowing(1.0, i) for i in range(30)] + [knowing(0.0, 30 + i) for i in range(70)]
    assert known_band(sure, 100, 0.8) == (pytest.approx(0.3), pytest.approx(0.3))  # no doubt left: no width
    half = [knowing(0.5, i) for i in range(100)]
    low, high = known_band(half, 100, 0.8)
    assert low < 0.5 < high and high - low == pytest.approx(2 * 1.96 * 0.05)
    wide = known_band([knowing(0.5, i) for i in range(25)], 25, 0.8)
    assert wide[1] - wide[0] > high - low
    # Unread items: the share known among those read is a sample (Wilson), never a band of width 0 at 0 known.
    low, high = known_band([knowing(0.0, i) for i in range(48)], 150, 0.8)
    assert low == 0.0 and 0.05 < high < 0.1


def test_plan_counts_each_ways_steps_and_writes_nothing_without_out(runner, tiny_model, tmp_path):
    rows = [{"id": str(i), "question": f"What is item {i}?", "answer": f"thing {i}"} for i in range(24)]
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    args = ["plan", "--data", str(data), "--model", tiny_model, "--epochs", "3", "--batch-size", "4", "--num-layers",
            "1", "--quiet", "--json"]  # fmt: skip
    before = set(tmp_path.iterdir())
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert set(tmp_path.iterdir()) == before
    plan = json.loads(result.output)
    ways = {way["name"]: way for way in plan["ways"]}
    assert list(ways) == ["full fine-tuning", "default", "budget 0.25", "budget 0.5"]
    full = ways["full fine-tuning"]
    assert (full["n_full"], full["n_rehearsed"], full["steps"]) == (24, 0, 3 * 6)
    assert full["vs_full"] == 1.0 and plan["cost"]["per_token"] > 0 and plan["cost"]["setup"] > 0
    # The tiny model knows none of it: the default trains everything, and costs the probe on top.
    assert plan["n_known"] == 0 and ways["default"]["n_full"] == 24
    assert plan["accuracy"].startswith("held-out accuracy: the default's is full fine-tuning's")
    assert ways["default"]["seconds"] == pytest.approx(full["seconds"] + plan["probe_seconds"], rel=1e-6)
    # A budget trains its share fully and rehearses the rest once: 3 epochs of 6 pairs, the other 18 spread.
    budget = ways["budget 0.25"]
    assert (budget["n_full"], budget["n_rehearsed"]) == (6, 18)
    assert budget["steps"] == sum(-(-(6 + 6) // 4) for _ in range(3))
    assert "slearn run --data" in plan["command"] and "runs/NAME" in plan["command"]


def test_a_run_on_the_plans_directory_reuses_its_knowledge_test(runner, tiny_model, qa_file, tmp_path):
    out = tmp_path / "run"
    common = ["--data", str(qa_file), "--model", tiny_model, "--epochs", "1", "--num-layers", "1", "--max-tokens", "4",
              "--quiet"]  # fmt: skip
    result = runner.invoke(cli, ["plan", *common, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "known:" in result.output and "recommended: slearn run" in result.output
    saved = json.loads((out / "plan.json").read_text())
    probed = (out / "probe.jsonl").read_text()
    command = result.output.split("recommended: ")[1].splitlines()[0]
    assert "--max-tokens 4" in command and "--epochs 1" in command and command.endswith(f"--out {out}")
    result = runner.invoke(cli, ["run", *common, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "0 new" in result.output  # the probe read nothing again
    assert (out / "probe.jsonl").read_text() == probed and saved["n_items"] == len(probed.splitlines())


def test_plan_refuses_a_grader_that_needs_answers(runner, tiny_model, qa_file):
    result = runner.invoke(cli, ["plan", "--data", str(qa_file), "--model", tiny_model, "--grader", "judge"])
    assert result.exit_code == 1 and "probe" in result.output and "Traceback" not in result.output


def test_the_planned_batches_are_the_ones_the_trainer_runs(tiny_model, tmp_path):
    """Every batch the forecast prices, in order and width, is one the trainer makes: rehearsed pairs in one epoch."""
    from slearn_mlx.models.load import load_model
    from slearn_mlx.plan import planned_shapes
    from slearn_mlx.training.batches import make_batch
    from slearn_mlx.training.config import TrainConfig
    from slearn_mlx.training.loop import TrainData, TrainHooks, train_adapters

    model, tokenizer = load_model(tiny_model)
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?" + " more" * (i % 5)},
                          {"role": "assistant", "content": f"Answer {i}" + " x" * (i % 7)}]}
            | ({"epochs": 1} if i % 3 == 0 else {}) for i in range(21)]  # fmt: skip
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    write_jsonl(train_dir / "train.jsonl", rows)
    config = TrainConfig(epochs=3, batch_size=4, num_layers=1, seed=3)
    seen = []

    def batch(dataset, indices, max_seq_length):
        made = make_batch(dataset, indices, max_seq_length)
        seen.append((len(indices), made.tokens.shape[1]))
        return made

    train_adapters(model, tokenizer, train_dir, tmp_path / "adapters", config, progress=False,
                   hooks=TrainHooks(make_batch=batch))  # fmt: skip
    assert planned_shapes(TrainData.read(train_dir, tokenizer, config), config) == seen
    assert len({width for _, width in seen}) > 1 and sum(rows for rows, _ in seen) == 14 * 3 + 7
