"""Stage 2: deterministic graders and the logit judge."""

from __future__ import annotations

import pytest

from slearn_mlx.answer import encode_chat
from slearn_mlx.grade import (
    GradeConfig,
    answer_letter,
    grade_answers,
    grade_deterministic,
    judge_probabilities,
    normalize,
    token_f1,
)
from slearn_mlx.records import Answer, Grade, QAItem
from slearn_mlx.runs import read_records

ITEM = QAItem("1", "Capital of France?", "Paris")
MC = QAItem("2", "Largest planet?", "B", {"A": "Mars", "B": "Jupiter", "C": "Venus"})


def test_normalize_and_f1():
    assert normalize("The  Paris!") == "paris"
    assert token_f1("the city of Paris", "Paris") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert token_f1("Rome", "Paris") == 0.0


@pytest.mark.parametrize(
    "grader, answer, correct",
    [
        ("exact", "paris.", True),
        ("exact", "It is Paris", False),
        ("contains", "It is Paris.", True),
        ("contains", "Lyon", False),
        ("f1", "Paris", True),
        ("f1", "the capital is Rome", False),
    ],
)
def test_deterministic_graders(grader, answer, correct):
    assert grade_deterministic(grader, ITEM, answer, 0.5)[0] is correct


@pytest.mark.parametrize(
    "answer, letter",
    [("B", "B"), ("B. Jupiter", "B"), ("(B)", "B"), ("The answer is C", "C"), ("Jupiter", "B"), ("A. Jupiter", "B"), ("no idea", None)],
)
def test_option_letter(answer, letter):
    assert answer_letter(answer, MC.options) == letter


def test_option_grader_needs_options(tmp_path):
    answers = {"1": Answer("1", "Paris", 1)}
    with pytest.raises(ValueError, match="option grader needs multiple-choice"):
        grade_answers([ITEM], answers, tmp_path / "g.jsonl", GradeConfig(grader="option"), progress=False)
    assert not (tmp_path / "g.jsonl").exists() or (tmp_path / "g.jsonl").read_text() == ""


def test_judge_probabilities_ignore_padding(tiny_loaded):
    """A prompt scored alone or in a batch with longer prompts gets the same P(correct)."""
    model, tokenizer = tiny_loaded
    prompts = [encode_chat(tokenizer, text) for text in ("short", "a much longer prompt " * 5, "mid length one")]
    together = judge_probabilities(model, tokenizer, prompts)
    alone = [judge_probabilities(model, tokenizer, [p])[0] for p in prompts]
    assert together == pytest.approx(alone, abs=1e-5)
    assert all(0.0 < p < 1.0 for p in together)


def test_judge_stage_stores_probability_and_resumes(tiny_loaded, tmp_path):
    items = [ITEM, MC, QAItem("3", "2+2?", "4")]
    answers = {"1": Answer("1", "Paris", 1), "2": Answer("2", "B", 1), "3": Answer("3", "5", 1)}
    out = tmp_path / "grades.jsonl"
    config = GradeConfig(grader="judge", threshold=0.5, batch_size=2)
    summary = grade_answers(items, answers, out, config, judge=tiny_loaded, progress=False)
    grades = read_records(out, Grade)
    assert summary.n_new == 3 and set(grades) == {"1", "2", "3"}
    for g in grades.values():
        assert g.grader == "judge" and 0.0 <= g.score <= 1.0 and g.correct == (g.score >= 0.5)
    assert grade_answers(items, answers, out, config, judge=tiny_loaded, progress=False).n_new == 0


def test_threshold_moves_the_verdict(tiny_loaded, tmp_path):
    items, answers = [ITEM], {"1": Answer("1", "Paris", 1)}
    low = grade_answers(items, answers, tmp_path / "a.jsonl", GradeConfig(threshold=0.0), judge=tiny_loaded, progress=False)
    high = grade_answers(items, answers, tmp_path / "b.jsonl", GradeConfig(threshold=1.0), judge=tiny_loaded, progress=False)
    assert (low.n_wrong, high.n_wrong) == (0, 1)


def test_grading_needs_every_answer(tmp_path):
    with pytest.raises(ValueError, match="run `slearn answer` first"):
        grade_answers([ITEM], {}, tmp_path / "g.jsonl", GradeConfig(grader="exact"), progress=False)
