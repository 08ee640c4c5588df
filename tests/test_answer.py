"""Stage 1: batched answering, records keyed by id, resume."""

from __future__ import annotations

from slearn_mlx.answer import AnswerConfig, answer_items, encode_chat, question_text
from slearn_mlx.data import load_items
from slearn_mlx.records import Answer
from slearn_mlx.runs import read_records


def test_answers_every_item_once(tiny_loaded, qa_file, tmp_path):
    model, tokenizer = tiny_loaded
    items = load_items(qa_file)
    out = tmp_path / "answers.jsonl"
    summary = answer_items(model, tokenizer, items, out, AnswerConfig(max_tokens=5, batch_size=4), progress=False)
    answers = read_records(out, Answer)
    assert summary.n_new == len(items) == len(answers)
    assert set(answers) == {item.id for item in items}
    assert all(0 < a.n_tokens <= 5 for a in answers.values())
    assert summary.n_tokens == sum(a.n_tokens for a in answers.values())


def test_resume_computes_only_missing_ids(tiny_loaded, qa_file, tmp_path):
    model, tokenizer = tiny_loaded
    items = load_items(qa_file)
    out = tmp_path / "answers.jsonl"
    config = AnswerConfig(max_tokens=4, batch_size=2)
    answer_items(model, tokenizer, items, out, config, progress=False)
    full = out.read_text()
    lines = full.splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # two whole lines and a torn one
    summary = answer_items(model, tokenizer, items, out, config, progress=False)
    assert summary.n_new == len(items) - 2
    # Greedy decoding, and the torn batch recomputed whole: the file equals the uninterrupted one.
    assert out.read_text() == full
    assert answer_items(model, tokenizer, items, out, config, progress=False).n_new == 0


def test_batch_composition_does_not_change_greedy_answers(tiny_loaded, qa_file, tmp_path):
    model, tokenizer = tiny_loaded
    items = load_items(qa_file)
    one = tmp_path / "one.jsonl"
    many = tmp_path / "many.jsonl"
    answer_items(model, tokenizer, items, one, AnswerConfig(max_tokens=6, batch_size=1), progress=False)
    answer_items(model, tokenizer, items, many, AnswerConfig(max_tokens=6, batch_size=6), progress=False)
    assert read_records(one, Answer) == read_records(many, Answer)


def test_multiple_choice_prompt_lists_options(qa_file, tiny_loaded):
    item = load_items(qa_file)[-1]
    text = question_text(item)
    assert "A. Mars" in text and "C. Venus" in text and "letter" in text
    _, tokenizer = tiny_loaded
    assert encode_chat(tokenizer, text)[-1] != tokenizer.eos_token_id


def test_the_shared_prompt_prefix_is_computed_once_without_changing_answers(
    tiny_loaded, qa_file, tmp_path, monkeypatch
):
    from slearn_mlx import answer

    model, tokenizer = tiny_loaded
    items = load_items(qa_file)
    # A common opening, as a chat template's system turn gives real models.
    config = AnswerConfig(max_tokens=6, batch_size=4, template="Answer briefly and precisely: {question}",
                          mcq_template="Answer briefly and precisely: {question}\n{options}")  # fmt: skip
    prompts = [encode_chat(tokenizer, question_text(item, config)) for item in items]
    assert answer.shared_prefix(prompts) >= answer.MIN_SHARED_PREFIX
    answer_items(model, tokenizer, items, tmp_path / "cached.jsonl", config, progress=False)
    monkeypatch.setattr(answer, "MIN_SHARED_PREFIX", 10**6)
    answer_items(model, tokenizer, items, tmp_path / "whole.jsonl", config, progress=False)
    assert (tmp_path / "cached.jsonl").read_text() == (tmp_path / "whole.jsonl").read_text()
