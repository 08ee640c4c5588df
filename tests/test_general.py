"""General skills kept: the shipped general multiple-choice slice, scored by each option's text, base and adapted."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from slearn_mlx.cli import cli
from slearn_mlx.general import (
    CHANCE,
    GENERAL_SETS,
    SCORING,
    GeneralScores,
    cloze_rows,
    load_general,
    option_scores,
    right_options,
)

from conftest import write_jsonl


def test_the_shipped_sets_are_whole_multiple_choice_items():
    sets = load_general()
    assert list(sets) == list(GENERAL_SETS) and all(len(items) == 100 for items in sets.values())
    for name, items in sets.items():
        assert len({item.id for item in items}) == 100
        n_options = {len(item.options) for item in items}
        assert n_options == {round(1 / CHANCE[name])}, name
        assert all(item.reference in item.options and all(item.options.values()) for item in items)


def test_option_scores_are_each_options_mean_log_probability_read_whole(tiny_loaded):
    """Reusing the question's keys and values changes nothing: each option's score is the mean log-probability of
    its tokens when question and option go through the model together, one option at a time."""
    model, tokenizer = tiny_loaded
    items = load_general()["mmlu"][:4] + load_general()["commonsenseqa"][:4]
    for item in items:
        got = option_scores(model, tokenizer, item)
        expected = []
        for row in cloze_rows(tokenizer, item):
            logits = model(mx.array([row.context + row.target]))[0].astype(mx.float32)
            logprobs = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
            start = len(row.context) - 1
            expected.append(np.mean([logprobs[start + i, t] for i, t in enumerate(row.target)]))
        assert np.allclose(got, expected, atol=1e-4), item.id
        assert np.allclose(got, option_scores(model, tokenizer, item, share_prefix=False), atol=1e-4)


def test_the_cloze_frame_asks_the_question_and_reads_each_option_after_a_space(tiny_loaded):
    _, tokenizer = tiny_loaded
    item = load_general()["openbookqa"][0]
    rows = cloze_rows(tokenizer, item)
    assert tokenizer.decode(rows[0].context) == f"Question: {item.question.strip()}\nAnswer:"
    assert [tokenizer.decode(row.target) for row in rows] == [" " + text.strip() for text in item.options.values()]


def test_right_options_follow_the_scores(tiny_loaded):
    model, tokenizer = tiny_loaded
    items = load_general()["openbookqa"][:10]
    expected = [list(i.options)[int(option_scores(model, tokenizer, i).argmax())] == i.reference for i in items]
    assert right_options(model, tokenizer, items) == expected


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
    assert 0 < saved["seconds"] and saved["scoring"] == SCORING
    # Scores read another way (an older file, by letters) are read again, not reused.
    (out / "eval" / "general.json").write_text(json.dumps(saved | {"scoring": "letters", "seconds": -1.0}))
    assert runner.invoke(cli, ["evaluate", "--out", str(out), "--general", "--quiet"]).exit_code == 0
    again = json.loads((out / "eval" / "general.json").read_text())
    assert again["scoring"] == SCORING and again["seconds"] > 0 and again["base"] == saved["base"]
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
