"""Stage 2 without answers: the knowledge probe reads P(reference) in one teacher-forced pass."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import numpy as np
import pytest

from slearn_mlx.answer import encode_chat
from slearn_mlx.cli import cli
from slearn_mlx.probe import Frame, Knowledge, probe_items, probe_row, read_rows
from slearn_mlx.records import QAItem
from slearn_mlx.runs import read_records

from conftest import QA, write_jsonl

ITEMS = [QAItem(str(i), row["question"], row["answer"], row.get("options")) for i, row in enumerate(QA)]
LEAD = "The correct answer is "
CHAT = Frame("chat", LEAD)


def direct_logprobs(model, context: list[int], target: list[int]) -> np.ndarray:
    """The target's token log-probabilities from a plain forward pass over the whole sequence, one row."""
    logits = model(mx.array([context + target]))[0].astype(mx.float32)
    logprobs = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    return np.array([logprobs[len(context) - 1 + k, t] for k, t in enumerate(target)])


def test_the_reference_follows_the_prompt_and_the_lead_as_the_model_would_write_them(tiny_loaded):
    _, tokenizer = tiny_loaded
    item = ITEMS[0]
    row = probe_row(tokenizer, item, CHAT)
    prompt = encode_chat(tokenizer, item.question)
    assert row.context[: len(prompt)] == prompt and row.choices is None
    assert row.context[len(prompt) :] + row.target == tokenizer.encode(LEAD + "Paris", add_special_tokens=False)
    assert tokenizer.decode(row.target).strip() == "Paris"
    # Without a lead the reference comes straight after the prompt.
    bare = probe_row(tokenizer, item, Frame("chat", ""))
    assert bare.context == prompt and bare.target == tokenizer.encode("Paris", add_special_tokens=False)


def test_batched_reading_with_the_shared_prefix_equals_one_plain_pass_per_item(tiny_loaded):
    from slearn_mlx.judge import Prefix

    model, tokenizer = tiny_loaded
    rows = [probe_row(tokenizer, item, CHAT) for item in ITEMS[:5]]
    prefix = Prefix(model, rows[0].context[:4])  # "<|im_start|>use", which every prompt starts with
    assert all(r.context[:4] == rows[0].context[:4] for r in rows)
    for with_prefix in (None, prefix):
        for row, (token_lp, is_top, share) in zip(rows, read_rows(model, rows, with_prefix)):
            expected = direct_logprobs(model, row.context, row.target)
            assert np.allclose(token_lp, expected, atol=1e-4) and share == 0.0
            logits = np.array(model(mx.array([row.context + row.target]))[0])
            tops = [int(np.argmax(logits[len(row.context) - 1 + k])) for k in range(len(row.target))]
            assert list(is_top) == [t == r for t, r in zip(tops, row.target)]


def test_multiple_choice_reads_the_letters_share_among_the_options(tiny_loaded):
    model, tokenizer = tiny_loaded
    item = ITEMS[5]  # "Largest planet?", options A/B/C, answer B
    row = probe_row(tokenizer, item, CHAT)
    assert row.target == tokenizer.encode("B", add_special_tokens=False)[:1] and len(row.choices) == 3
    ((token_lp, _, share),) = read_rows(model, [row])
    logits = np.array(model(mx.array([row.context]))[0, -1].astype(mx.float32))
    letters = logits[row.choices]
    expected = letters[1] - np.logaddexp.reduce(letters)
    assert math.isclose(share, expected, abs_tol=1e-4) and share <= 0.0


def test_probe_writes_one_record_per_item_and_resumes_a_torn_file_exactly(tiny_loaded, tmp_path):
    model, tokenizer = tiny_loaded
    path = tmp_path / "probe.jsonl"
    assert probe_items(model, tokenizer, ITEMS, path, frame=CHAT, batch_size=2, progress=False) == len(ITEMS)
    whole = path.read_bytes()
    records = read_records(path, Knowledge)
    assert sorted(records) == sorted(item.id for item in ITEMS)
    for k in records.values():
        assert 0.0 <= k.p_reference <= 1.0 and k.min_logprob <= k.logprob / k.n_tokens + 1e-4
    # A free-text item's P(reference) is the exponent of its summed log-probability.
    assert math.isclose(records["0"].p_reference, math.exp(records["0"].logprob), rel_tol=1e-3, abs_tol=1e-6)
    lines = whole.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]) + lines[3][:10])  # killed while writing the fourth line
    assert probe_items(model, tokenizer, ITEMS, path, frame=CHAT, batch_size=2, progress=False) >= 3
    assert path.read_bytes() == whole
    assert probe_items(model, tokenizer, ITEMS, path, frame=CHAT, batch_size=2, progress=False) == 0


def test_grade_with_the_probe_needs_no_answers_and_calibrates_on_a_sample(runner, tiny_model, qa_file, tmp_path):
    out = tmp_path / "run"
    args = ["grade", "--out", str(out), "--data", str(qa_file), "--model", tiny_model, "--grader", "probe",
            "--quiet"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "probed 6:" in result.output and not (out / "answers.jsonl").exists()
    grades = [json.loads(line) for line in (out / "grades.jsonl").read_text().splitlines()]
    probe = {r["id"]: r for r in map(json.loads, (out / "probe.jsonl").read_text().splitlines())}
    assert len(grades) == 6 and {g["grader"] for g in grades} == {"probe"}
    for g in grades:
        assert g["score"] == probe[g["id"]]["p_reference"] and g["correct"] == (g["score"] >= 0.8)
    result = runner.invoke(cli, ["grade", "--out", str(out), "--calibrate", "--labels", "contains",
                                 "--calibrate-sample", "4", "--show", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "calibrated on 4 answers labelled by contains" in result.output and "P(reference)" in result.output
    assert len((out / "calibration_answers.jsonl").read_text().splitlines()) == 4
    config = json.loads((out / "config.json").read_text())
    fitted = json.loads((out / "calibration.json").read_text())["after"]["threshold"]
    assert config["grade"]["threshold"] == pytest.approx(fitted, abs=1e-6)
    grades = [json.loads(line) for line in (out / "grades.jsonl").read_text().splitlines()]
    assert all(g["correct"] == (g["score"] >= config["grade"]["threshold"]) for g in grades)


def test_run_with_the_probe_skips_answering_and_evaluates_generated_answers(runner, tiny_model, qa_file, tmp_path):
    out = tmp_path / "run"
    test = write_jsonl(tmp_path / "test.jsonl", QA[:3])
    result = runner.invoke(cli, [
        "run", "--data", str(qa_file), "--test", str(test), "--model", tiny_model, "--out", str(out),
        "--grader", "probe", "--threshold", "0.0", "--budget", "0.5", "--rehearse", "0", "--max-tokens", "4", "--epochs", "1",
        "--num-layers", "1", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not (out / "answers.jsonl").exists() and (out / "probe.jsonl").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["n_selected"] == 3 and report["stages"]["select"]["strategy"] == "budget0.5"
    grades = [json.loads(line) for line in (out / "eval" / "adapted_grades.jsonl").read_text().splitlines()]
    assert {g["grader"] for g in grades} == {"contains"}  # generated answers: the answer grader, not the probe


def test_an_item_with_aliases_is_as_well_known_as_its_best_known_answer(tiny_loaded, tmp_path):
    model, tokenizer = tiny_loaded
    item = ITEMS[0]
    with_aliases = QAItem(item.id, item.question, "Lyon", aliases=["Paris", "Nice"])
    probe_items(model, tokenizer, [with_aliases], tmp_path / "all.jsonl", frame=CHAT, progress=False)
    readings = {}
    for reference in ("Lyon", "Paris", "Nice"):
        path = tmp_path / f"{reference}.jsonl"
        probe_items(model, tokenizer, [QAItem(item.id, item.question, reference)], path, frame=CHAT, progress=False)
        readings[reference] = read_records(path, Knowledge)[item.id]
    best = max(readings.values(), key=lambda k: k.logprob)
    assert len({k.logprob for k in readings.values()}) == 3  # three different readings, the best one kept
    assert read_records(tmp_path / "all.jsonl", Knowledge)[item.id] == best


def test_the_few_shot_frame_shows_other_items_then_the_question_and_reads_the_reference(tiny_loaded):
    _, tokenizer = tiny_loaded
    frame = Frame.for_items("fewshot", ITEMS)
    free = [item for item in ITEMS if item.reference_letter is None]
    assert len(frame.shots) == 3 and frame.spare is not None and set(frame.shots) | {frame.spare} <= set(free)
    outsider = next(item for item in free if item not in frame.shots and item != frame.spare)
    row = probe_row(tokenizer, outsider, frame)
    shots = "".join(f"Q: {s.question}\nA: {s.reference_text}\n\n" for s in frame.shots)
    assert tokenizer.decode(row.context) == shots + f"Q: {outsider.question}\nA:"
    assert row.context + row.target == tokenizer.encode(shots + f"Q: {outsider.question}\nA: {outsider.reference_text}")
    # A shot is never its own example: the spare stands in for it.
    shot = frame.shots[0]
    text = tokenizer.decode(probe_row(tokenizer, shot, frame).context)
    assert text.count("Q: ") == 4 and f"Q: {frame.spare.question}" in text and text.endswith(f"Q: {shot.question}\nA:")
    # Multiple choice is read in the chat frame, by the letter's share.
    assert probe_row(tokenizer, ITEMS[5], frame).choices is not None


def test_few_shot_probing_equals_one_plain_pass_per_item_whether_its_prefix_is_shared_or_not(tiny_loaded, tmp_path):
    """The shots' keys and values are computed once for the items they precede; the shot items (another set of
    shots) and the multiple-choice item (the chat frame) are read whole; every reading is a plain pass's."""
    model, tokenizer = tiny_loaded
    frame = Frame.for_items("fewshot", ITEMS)
    probe_items(model, tokenizer, ITEMS, tmp_path / "probe.jsonl", frame=frame, batch_size=3, progress=False)
    records = read_records(tmp_path / "probe.jsonl", Knowledge)
    for item in ITEMS:
        row = probe_row(tokenizer, item, frame)
        expected = direct_logprobs(model, row.context, row.target)
        if row.choices is None:
            assert math.isclose(records[item.id].logprob, float(expected.sum()), abs_tol=1e-3), item.id


@pytest.mark.parametrize("threshold,n_read", [("0.8", 2), ("0", 6)])
def test_the_probe_reads_the_rest_only_when_an_item_read_first_is_known(runner, tiny_model, qa_file, tmp_path,
                                                                         threshold, n_read):  # fmt: skip
    """The tiny model knows nothing (P(reference) < 0.8): after the 2 items read first, the other 4 are unknown
    unread; at threshold 0 every item is known, and all are read."""
    out = tmp_path / "run"
    args = ["grade", "--out", str(out), "--data", str(qa_file), "--model", tiny_model, "--probe-sample", "2",
            "--threshold", threshold, "--quiet"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    probe = {r["id"]: r for r in map(json.loads, (out / "probe.jsonl").read_text().splitlines())}
    grades = {g["id"]: g for g in map(json.loads, (out / "grades.jsonl").read_text().splitlines())}
    assert len(probe) == n_read and len(grades) == 6
    assert all(g["correct"] is False and g["score"] == 0.0 for i, g in grades.items() if i not in probe)
    assert ("4 unread: none of the 2 read first was known" in result.output) == (n_read == 2)
    again = runner.invoke(cli, args)  # resumed: nothing left to read
    assert again.exit_code == 0 and "0 new" in again.output
