"""The judge's modes on the tiny model: probabilities, scores, reasoning, templates."""

from __future__ import annotations

import pytest

from slearn_mlx.answer import encode_chat
from slearn_mlx.judge import Judge, expected_scores, judge_prompt, yes_probabilities
from slearn_mlx.prompts import JUDGE_FIELDS, JUDGE_REQUIRED, VERDICT_TEMPLATE, read_template
from slearn_mlx.records import QAItem

ITEM = QAItem("1", "Capital of France?", "Paris")
MC = QAItem("2", "Largest planet?", "B", {"A": "Mars", "B": "Jupiter"})


def test_probabilities_ignore_padding(tiny_loaded):
    """A prompt scored alone or in a batch with longer prompts gets the same probability."""
    model, tokenizer = tiny_loaded
    prompts = [encode_chat(tokenizer, text) for text in ("short", "a much longer prompt " * 5, "mid length one")]
    for score in (yes_probabilities, expected_scores):
        together = score(model, tokenizer, prompts)
        alone = [score(model, tokenizer, [p])[0] for p in prompts]
        assert together == pytest.approx(alone, abs=1e-5)
        assert all(0.0 < p < 1.0 for p in together)


@pytest.mark.parametrize("mode", ["verdict", "cot", "score"])
def test_every_mode_scores_a_batch(tiny_loaded, mode):
    judge = Judge(*tiny_loaded, mode=mode, cot_max_tokens=6)
    prompts = [judge.prompt_tokens(ITEM, "Paris"), judge.prompt_tokens(MC, "A. Mars")]
    judgements = judge.judge(prompts)
    assert len(judgements) == 2 and all(0.0 <= j.score <= 1.0 for j in judgements)
    assert all((j.justification is not None) == (mode == "cot") for j in judgements)


@pytest.mark.parametrize("mode", ["verdict", "cot", "score"])
def test_shared_prefix_is_computed_once_and_changes_nothing(tiny_loaded, mode):
    items = [ITEM, MC, QAItem("3", "Who wrote Hamlet?", "Shakespeare")]
    answers = ["Paris", "A. Mars", "the author of Macbeth and many other plays"]
    plain = Judge(*tiny_loaded, mode=mode, cot_max_tokens=6, reuse_prefix=False)
    reusing = Judge(*tiny_loaded, mode=mode, cot_max_tokens=6)
    prompts = [reusing.prompt_tokens(item, answer) for item, answer in zip(items, answers)]
    expected = plain.judge(prompts)
    assert plain._prefix is None
    got = reusing.judge(prompts)
    prefix = reusing._prefix
    assert prefix is not None and len(prefix) >= 8 and all(p[: len(prefix)] == prefix.tokens for p in prompts)
    assert [j.score for j in got] == pytest.approx([j.score for j in expected], abs=1e-5)
    assert [j.justification for j in got] == [j.justification for j in expected]
    reusing.judge(prompts[1:])  # the same prefix: not recomputed
    assert reusing._prefix is prefix


def test_cot_reads_the_verdict_after_the_justification(tiny_loaded):
    judge = Judge(*tiny_loaded, mode="cot", cot_max_tokens=6)
    prompt = judge.prompt_tokens(ITEM, "Paris")
    (judgement,) = judge.judge([prompt])
    tokenizer = tiny_loaded[1]
    continued = prompt + tokenizer.encode(judgement.justification + "\nVerdict:", add_special_tokens=False)
    assert judgement.score == pytest.approx(yes_probabilities(*tiny_loaded, [continued])[0], abs=1e-5)


def test_prompt_shows_options_and_the_right_one():
    text = judge_prompt(VERDICT_TEMPLATE, MC, "A. Mars")
    assert "A. Mars\nB. Jupiter" in text and "Reference answer: B. Jupiter" in text


def test_templates_from_files_are_checked(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Reference: {reference}\nAnswer: {answer}\nSame? Yes or No.\n")
    assert read_template(good, JUDGE_FIELDS, JUDGE_REQUIRED).startswith("Reference:")
    for content, problem in (("{answer} only", "must use {reference}"), ("{reference} {answer} {student}", "unknown field {student}"),
                             ("{reference} {answer} {", "not a valid template")):  # fmt: skip
        bad = tmp_path / "bad.txt"
        bad.write_text(content)
        with pytest.raises(ValueError, match=problem.replace("{", r"\{").replace("}", r"\}")):
            read_template(bad, JUDGE_FIELDS, JUDGE_REQUIRED)
