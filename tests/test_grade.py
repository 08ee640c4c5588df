"""Stage 2: deterministic graders and the logit judge."""

from __future__ import annotations

import pytest

from slearn_mlx.grade import (
    GradeConfig,
    answer_letter,
    audit_sample,
    calibrate_grades,
    decisive_grade,
    grade_answers,
    grade_deterministic,
    normalize,
    token_f1,
)
from slearn_mlx.judge import Judge
from slearn_mlx.records import Answer, Grade, QAItem
from slearn_mlx.runs import read_records, write_jsonl_atomic

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
    [
        ("B", "B"),
        ("B. Jupiter", "B"),
        ("(B)", "B"),
        ("The answer is C", "C"),
        ("Jupiter", "B"),
        ("A. Jupiter", "B"),
        ("no idea", None),
    ],
)
def test_option_letter(answer, letter):
    assert answer_letter(answer, MC.options) == letter


def test_option_grader_needs_options(tmp_path):
    answers = {"1": Answer("1", "Paris", 1)}
    with pytest.raises(ValueError, match="option grader needs multiple-choice"):
        grade_answers([ITEM], answers, tmp_path / "g.jsonl", GradeConfig(grader="option"), progress=False)
    assert not (tmp_path / "g.jsonl").exists() or (tmp_path / "g.jsonl").read_text() == ""


def test_judge_stage_stores_probability_and_resumes(tiny_loaded, tmp_path):
    items = [ITEM, MC, QAItem("3", "2+2?", "4")]
    answers = {"1": Answer("1", "Paris", 1), "2": Answer("2", "B", 1), "3": Answer("3", "5", 1)}
    out = tmp_path / "grades.jsonl"
    config = GradeConfig(grader="judge", threshold=0.5, batch_size=2)
    judge = Judge(*tiny_loaded)
    summary = grade_answers(items, answers, out, config, judge=judge, progress=False)
    grades = read_records(out, Grade)
    assert summary.n_new == 3 and set(grades) == {"1", "2", "3"}
    for g in grades.values():
        assert g.grader == "judge-verdict" and 0.0 <= g.score <= 1.0 and g.correct == (g.score >= 0.5)
    assert grade_answers(items, answers, out, config, judge=judge, progress=False).n_new == 0
    # Cut after the first record (a batch of two half written): the rerun writes the same file.
    full = out.read_text()
    out.write_text(full.splitlines(keepends=True)[0])
    assert grade_answers(items, answers, out, config, judge=judge, progress=False).n_new == 2
    assert out.read_text() == full


def test_threshold_moves_the_verdict(tiny_loaded, tmp_path):
    items, answers = [ITEM], {"1": Answer("1", "Paris", 1)}
    judge = Judge(*tiny_loaded)
    low = grade_answers(items, answers, tmp_path / "a.jsonl", GradeConfig(threshold=0.0), judge=judge, progress=False)
    high = grade_answers(items, answers, tmp_path / "b.jsonl", GradeConfig(threshold=1.0), judge=judge, progress=False)
    assert (low.n_wrong, high.n_wrong) == (0, 1)


def test_grading_needs_every_answer(tmp_path):
    with pytest.raises(ValueError, match="run `slearn answer` first"):
        grade_answers([ITEM], {}, tmp_path / "g.jsonl", GradeConfig(grader="exact"), progress=False)


def test_hybrid_uses_the_judge_only_where_no_rule_is_decisive(tiny_loaded, tmp_path):
    items = [ITEM, MC, QAItem("3", "2+2?", "4")]
    answers = {"1": Answer("1", "It is Paris.", 3), "2": Answer("2", "A. Mars", 2), "3": Answer("3", "four", 1)}
    out = tmp_path / "g.jsonl"
    summary = grade_answers(
        items, answers, out, GradeConfig(grader="hybrid"), judge=Judge(*tiny_loaded), progress=False
    )
    grades = read_records(out, Grade)
    assert (grades["1"].grader, grades["1"].correct) == ("contains", True)
    assert (grades["2"].grader, grades["2"].correct) == ("option", False)
    assert grades["3"].grader == "judge-verdict"
    assert summary.by_grader == {"contains": 1, "option": 1, "judge-verdict": 1}
    assert decisive_grade(QAItem("4", "q", "no"), "No idea") is not None  # whole-word match: decisive by rule


def test_hybrid_without_a_judge_says_so(tmp_path):
    with pytest.raises(ValueError, match="needs a judge"):
        grade_answers([QAItem("3", "2+2?", "4")], {"3": Answer("3", "four", 1)}, tmp_path / "g.jsonl",
                      GradeConfig(grader="hybrid"), progress=False)  # fmt: skip


def test_calibration_fits_the_threshold_and_rewrites_judge_verdicts(tmp_path):
    path = tmp_path / "grades.jsonl"
    scores = {"a": 0.30, "b": 0.35, "c": 0.40, "d": 0.45, "e": 0.20, "f": 0.10}
    truth = {"a": True, "b": True, "c": True, "d": True, "e": False, "f": False}
    rows = [Grade(i, s >= 0.5, s, "judge-verdict") for i, s in scores.items()] + [Grade("g", True, 1.0, "option")]
    write_jsonl_atomic(path, (g.to_json() for g in rows))
    result = calibrate_grades(path, truth | {"g": False}, threshold=0.5, label_source="test")
    assert result.before.agreement == pytest.approx(2 / 6) and result.after.agreement == 1.0
    assert 0.20 < result.threshold < 0.30
    assert result.before.recall_wrong == 1.0 and result.before.precision_wrong == pytest.approx(2 / 6)
    grades = read_records(path, Grade)
    assert {i: grades[i].correct for i in truth} == truth
    assert grades["g"].correct is True  # deterministic verdicts stand


def test_audit_sample_shows_items_side_by_side():
    items = [ITEM, MC]
    answers = {"1": Answer("1", "Paris", 1), "2": Answer("2", "B", 1)}
    grades = {"1": Grade("1", True, 0.9, "judge-cot", "It names Paris."), "2": Grade("2", True, 1.0, "option")}
    text = audit_sample(items, answers, grades, 5)
    assert text.count("[") == 2 and "reference: Paris" in text and "judge    : It names Paris." in text
    assert "correct by judge-cot (score 0.900)" in text


@pytest.mark.parametrize("grader", ["exact", "contains", "f1", "hybrid"])
def test_every_grader_accepts_any_alias_and_the_judge_sees_them_all(grader):
    from slearn_mlx.judge import judge_prompt
    from slearn_mlx.prompts import DEFAULT_TEMPLATES

    item = QAItem("b", "What is the capital of Bolivia?", "Sucre", aliases=["La Paz"])
    if grader == "hybrid":
        assert decisive_grade(item, "la paz") is not None and decisive_grade(item, "Lima") is None
    else:
        assert grade_deterministic(grader, item, "La Paz.")[0] and grade_deterministic(grader, item, "sucre")[0]
        assert not grade_deterministic(grader, item, "Lima")[0]
        assert not grade_deterministic(grader, QAItem("b", item.question, "Sucre"), "La Paz")[0]
    prompt = judge_prompt(DEFAULT_TEMPLATES["verdict"], item, "La Paz")
    assert "Sucre (also correct: La Paz)" in prompt


def test_kappa_is_zero_for_a_judge_that_calls_everything_wrong_whatever_its_agreement():
    from slearn_mlx.calibrate import agreement_at, cohen_kappa

    labels = [False] * 8 + [True] * 2
    lazy = agreement_at([0.1] * 10, labels, 0.5)
    assert lazy.agreement == 0.8 and lazy.kappa == 0.0
    assert cohen_kappa(labels, labels) == 1.0
    assert cohen_kappa([not x for x in labels], labels) < 0
