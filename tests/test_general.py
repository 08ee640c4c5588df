"""General skills kept: the shipped general multiple-choice slice, scored by the likeliest letter, base and adapted."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from slearn_mlx.answer import encode_chat, question_text
from slearn_mlx.cli import cli
from slearn_mlx.general import CHANCE, GENERAL_SETS, GeneralScores, load_general, right_letters

from conftest import write_jsonl


def test_the_shipped_sets_are_whole_multiple_choice_items():
    sets = load_general()
    assert list(sets) == list(GENERAL_SETS) and all(len(items) == 100 for items in sets.values())
    for name, items in sets.items():
        assert len({item.id for item in items}) == 100
        n_options = {len(item.options) for item in items}
        assert n_options == {round(1 / CHANCE[name])}, name
        assert all(item.reference in item.options and all(item.options.values()) for item in items)


def test_batched_scoring_is_the_one_by_one_argmax(tiny_loaded):
    """Padding and batching change nothing: each item's verdict is the argmax of its letters' logits, one at a time."""
    model, tokenizer = tiny_loaded
    items = load_general()["openbookqa"][:12] + load_general()["commonsenseqa"][:12]
    batched = right_letters(model, tokenizer, items, batch_size=5)
    one_by_one = []
    for item in items:
        logits = np.array(model(mx.array([encode_chat(tokenizer, question_text(item))]))[0, -1])
        letters = list(item.options)
        scores = [logits[tokenizer.encode(x, add_special_tokens=False)[0]] for x in letters]
        one_by_one.append(letters[int(np.argmax(scores))] == item.reference)
    assert batched == one_by_one


def test_scores_pool_the_items_of_every_set():
    sets = {"a": [None] * 4, "b": [None] * 2}
    scores = GeneralScores.of(sets, {"a": [True, False, False, False], "b": [True, True]})
    assert scores.per_set == {"a": 0.25, "b": 1.0} and scores.overall == pytest.approx(0.5) and scores.n_items == 6


def test_evaluate_general_scores_base_and_adapted_and_forgets_them_with_new_adapters(runner, tiny_model, qa_file,
                                                                                      tmp_path):  # fmt: skip
    out = tmp_path / "run"
    args = ["run", "--data", str(qa_file), "--model", tiny_model, "--out", str(out), "--grader", "exact", "--all",
            "--epochs", "1", "--num-layers", "2", "--learning-rate", "1e-2", "--max-tokens", "4", "--quiet"]  # fmt: skip
    assert runner.invoke(cli, args).exit_code == 0
    result = runner.invoke(cli, ["evaluate", "--out", str(out), "--general", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "general skills (300 items" in result.output and "-> adapted" in result.output
    saved = json.loads((out / "eval" / "general.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert report["general"] == saved and set(saved["base"]["per_set"]) == set(GENERAL_SETS)
    assert 0 < saved["seconds"]
    # Retraining replaces the adapters: their general scores go with them.
    result = runner.invoke(cli, [*args, "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert not (out / "eval" / "general.json").exists()


def test_compare_reports_general_skills_per_strategy_with_the_change_over_seeds(runner, tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"id": str(i), "question": f"Code {i}?", "answer": f"z{i}"}
                                              for i in range(6)])  # fmt: skip
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(data), "--test", str(data), "--model", tiny_model, "--out", str(out),
            "--grader", "exact", "--max-tokens", "4", "--epochs", "1", "--num-layers", "1", "--learning-rate", "1e-2",
            "--quiet", "--seeds", "2", "--strategy", "all", "--general"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    base = json.loads((out / "base" / "eval" / "general.json").read_text())["base"]
    assert report["general_base"]["overall"] == base["overall"]
    row = report["strategies"][0]
    seeds = [json.loads((out / "all" / f"seed{k}" / "eval" / "general.json").read_text()) for k in range(2)]
    assert [s["base"] for s in seeds] == [base, base]  # scored once, shared
    kept = [s["adapted"]["overall"] for s in seeds]
    assert row["general"] == pytest.approx(sum(kept) / 2)
    assert row["general_change"]["mean"] == pytest.approx(sum(kept) / 2 - base["overall"])
    assert row["general_change"]["n"] == 2 and row["general_change"]["low"] is not None
    assert "general skills" in (out / "report.md").read_text()
    assert "<th>general skills</th>" in (out / "report.html").read_text()
