"""Stage 3: the wrongly answered pairs, in a format mlx-lm's trainer reads."""

from __future__ import annotations

import json
import types

import pytest

from slearn_mlx.records import Grade, QAItem
from slearn_mlx.select import SelectConfig, select_unknown

WRONG = {"budget": None, "rehearse": 0.0}  # the paper's selection: the wrong pairs alone
ITEMS = [QAItem(str(i), f"question {i}?", f"answer {i}") for i in range(10)] + [
    QAItem("mc", "Pick one", "B", {"A": "x", "B": "y"})
]


def grades(wrong: set[str]) -> dict[str, Grade]:
    return {i.id: Grade(i.id, i.id not in wrong, 0.0, "exact") for i in ITEMS}


def test_writes_only_the_wrong_pairs(tmp_path, tiny_loaded):
    summary = select_unknown(ITEMS, grades({"1", "4", "mc"}), tmp_path, SelectConfig(**WRONG, valid_fraction=0.5))
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert summary.n_selected == 3 and [r["id"] for r in rows] == ["1", "4", "mc"]
    assert rows[0]["messages"] == [
        {"role": "user", "content": "question 1?"},
        {"role": "assistant", "content": "The correct answer is answer 1."},
    ]
    assert rows[2]["messages"][1]["content"] == "The correct answer is B. y."
    valid = (tmp_path / "valid.jsonl").read_text().splitlines()
    assert len(valid) == summary.n_valid == 2
    # mlx-lm's own dataset loader takes the files as they are.
    from mlx_lm.tuner.datasets import load_local_dataset

    _, tokenizer = tiny_loaded
    config = types.SimpleNamespace(mask_prompt=True)
    train, valid_set, _ = load_local_dataset(tmp_path, tokenizer, config)
    assert len(train) == 3 and len(valid_set) == 2
    tokens, offset = train.process(train[0])
    assert 0 < offset < len(tokens)


def test_nothing_wrong_writes_empty_files(tmp_path):
    summary = select_unknown(ITEMS, grades(set()), tmp_path, SelectConfig(**WRONG))
    assert summary.n_selected == 0
    assert (tmp_path / "train.jsonl").read_text() == ""


def test_needs_every_grade(tmp_path):
    partial = grades({"1"})
    del partial["3"]
    with pytest.raises(ValueError, match="run `slearn grade` first"):
        select_unknown(ITEMS, partial, tmp_path)


def _ids(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def scored(scores: dict[str, float], threshold: float = 0.5) -> dict[str, Grade]:
    """Judge grades: item i scored scores[i] (0.9 when not given)."""
    return {
        i.id: Grade(i.id, scores.get(i.id, 0.9) >= threshold, scores.get(i.id, 0.9), "judge-verdict") for i in ITEMS
    }


def test_strategies_pick_what_they_say(tmp_path):
    g = scored({"1": 0.1, "2": 0.3, "3": 0.45, "4": 0.55, "5": 0.58})
    run = lambda **kw: select_unknown(ITEMS, g, tmp_path, SelectConfig(**WRONG, valid_fraction=0, **kw), threshold=0.5)  # noqa: E731
    assert run().n_selected == 3 and _ids(tmp_path / "train.jsonl") == ["1", "2", "3"]
    # Verdicts "correct" within 0.1 of the threshold count as unknown.
    summary = run(uncertain=0.1)
    assert summary.n_uncertain == 2 and _ids(tmp_path / "train.jsonl") == ["1", "2", "3", "4", "5"]
    # Hardest first: the lowest scores.
    assert run(max_items=2).n_selected == 2 and _ids(tmp_path / "train.jsonl") == ["1", "2"]
    # Replay: half of the 8 known pairs come back, seeded, in file order among the wrong ones.
    summary = run(replay=0.5)
    ids = _ids(tmp_path / "train.jsonl")
    assert summary.n_replay == 4 and summary.n_selected == 7 and {"1", "2", "3"} <= set(ids)
    assert ids == [i.id for i in ITEMS if i.id in ids]
    assert run(replay=0.5, seed=1).n_replay == 4 and _ids(tmp_path / "train.jsonl") != ids
    summary = run(all=True)
    assert summary.n_selected == len(ITEMS) and summary.strategy == "all" and "(all)" in str(summary)
    assert (
        SelectConfig(**WRONG, uncertain=0.1, replay=0.2, max_items=50).strategy == "wrong+uncertain0.1+replay0.2+max50"
    )


def test_bad_strategy_settings_are_reported():
    problems = SelectConfig(**WRONG, replay=1.5, uncertain=-0.1, max_items=0).problems()
    assert len(problems) == 3


def test_replay_own_teaches_the_models_own_correct_answer(tmp_path):
    from slearn_mlx.records import Answer

    g = scored({"1": 0.1})
    answers = {i.id: Answer(i.id, f"In my words: answer {i.id}", 3) for i in ITEMS}
    config = SelectConfig(**WRONG, valid_fraction=0, replay=1.0, own=True, lead="")
    summary = select_unknown(ITEMS, g, tmp_path, config, threshold=0.5, answers=answers)
    rows = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()}
    assert summary.n_replay == len(ITEMS) - 1 and config.strategy == "wrong+replay1+own+bare"
    assert rows["1"]["messages"][1]["content"] == "answer 1"  # the wrong one learns the reference
    assert rows["2"]["messages"][1]["content"] == "In my words: answer 2"


def test_rephrased_targets_are_kept_only_where_they_keep_the_reference(tmp_path):
    from slearn_mlx.records import Answer

    g = scored({"1": 0.1, "2": 0.1, "mc": 0.1})
    rephrased = {
        "1": Answer("1", "Surely it is answer 1, as everyone knows.", 9),  # keeps "answer 1"
        "2": Answer("2", "It is something else.", 5),  # lost the reference: the reference is taught
        "mc": Answer("mc", "The right option is B.", 5),
    }
    config = SelectConfig(**WRONG, valid_fraction=0, rephrase=True, lead="")
    summary = select_unknown(ITEMS, g, tmp_path, config, threshold=0.5, rephrase=lambda unknown: rephrased)
    rows = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()}
    assert summary.n_rephrased == 2 and "2 rephrased" in str(summary) and config.strategy == "wrong+rephrase+bare"
    assert rows["1"]["messages"][1]["content"] == "Surely it is answer 1, as everyone knows."
    assert rows["2"]["messages"][1]["content"] == "answer 2"
    assert rows["mc"]["messages"][1]["content"] == "The right option is B."


def test_select_rephrase_asks_the_model_and_resumes(runner, tiny_model, qa_file, tmp_path):
    from slearn_mlx.cli import cli

    out = tmp_path / "run"
    for args in (
        ["answer", "--data", str(qa_file), "--model", tiny_model, "--max-tokens", "4"],
        ["grade", "--grader", "exact"],
    ):
        result = runner.invoke(cli, [*args, "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli, ["select", "--out", str(out), "--rephrase", "--lead", "", "--budget", "0", "--rehearse", "0"]
    )
    assert result.exit_code == 0, result.output
    rephrased = [json.loads(line) for line in (out / "rephrased.jsonl").read_text().splitlines()]
    assert len(rephrased) == 6  # every item is wrong for the tiny model; each was asked once
    # The tiny model's rewrites lose the reference, so the references are taught.
    rows = [json.loads(line) for line in (out / "train" / "train.jsonl").read_text().splitlines()]
    assert [r["messages"][1]["content"] for r in rows][:2] == ["Paris", "4"]


def test_valid_split_holds_the_validation_pairs_out_of_training(tmp_path):
    wrong = {str(i) for i in range(10)}
    summary = select_unknown(
        ITEMS, grades(wrong), tmp_path, SelectConfig(**WRONG, valid_fraction=0.2, valid_split=True)
    )
    train, valid = _ids(tmp_path / "train.jsonl"), _ids(tmp_path / "valid.jsonl")
    assert len(valid) == summary.n_valid == 2 and not set(train) & set(valid)
    assert sorted(train + valid) == sorted(wrong) and summary.n_selected == 8


def test_the_lead_starts_every_taught_answer_and_an_empty_one_teaches_the_bare_reference(tmp_path):
    for lead, expected in (("The correct answer is ", "The correct answer is answer 1."), ("", "answer 1"),
                           ("Answer: ", "Answer: answer 1.")):  # fmt: skip
        config = SelectConfig(**WRONG, valid_fraction=0, lead=lead)
        select_unknown(ITEMS, grades({"1"}), tmp_path, config)
        row = json.loads((tmp_path / "train.jsonl").read_text())
        assert row["messages"][1]["content"] == expected
        assert config.strategy == ("wrong" if lead else "wrong+bare")
    # A reference that ends a sentence keeps its own full stop.
    items = [QAItem("s", "Why?", "Because it is.")]
    select_unknown(items, {"s": Grade("s", False, 0.0, "exact")}, tmp_path, SelectConfig(**WRONG, valid_fraction=0))
    assert json.loads((tmp_path / "train.jsonl").read_text())["messages"][1]["content"] == (
        "The correct answer is Because it is."
    )


def test_a_budget_trains_the_least_known_share_of_the_set_right_or_wrong(tmp_path):
    # Scores as the probe gives them: P(reference); items 0-2 wrong (below 0.5), the rest right.
    probe = {str(i): 0.1 * i for i in range(10)} | {"mc": 0.95}
    g = {i: Grade(i, p >= 0.3, p, "probe") for i, p in probe.items()}
    summary = select_unknown(
        ITEMS, g, tmp_path, SelectConfig(valid_fraction=0, budget=0.5, rehearse=0.0), threshold=0.3
    )
    # 11 items at 0.5: the three wrong ones and the three weakest right ones, in file order.
    assert _ids(tmp_path / "train.jsonl") == ["0", "1", "2", "3", "4", "5"]
    assert summary.n_selected == 6 and summary.n_wrong == 3 and summary.strategy == "budget0.5"
    # A budget smaller than the wrong ones keeps the surest wrong.
    select_unknown(ITEMS, g, tmp_path, SelectConfig(valid_fraction=0, budget=0.2, rehearse=0.0), threshold=0.3)
    assert _ids(tmp_path / "train.jsonl") == ["0", "1"]
    assert SelectConfig(budget=1.5).problems() and not SelectConfig(budget=0.0).problems()
    assert SelectConfig(budget=0.0, rehearse=0.0).strategy == "wrong"


def test_anchors_are_known_pairs_left_out_of_training(tmp_path):
    g = grades({"1", "4"})
    summary = select_unknown(ITEMS, g, tmp_path, SelectConfig(**WRONG, valid_fraction=0, anchors=0.5))
    anchors = _ids(tmp_path / "anchors.jsonl")
    assert summary.n_anchors == len(anchors) == round(0.5 * 9) and "4 known as anchors" in str(summary)
    assert not set(anchors) & {"1", "4"} and set(anchors) <= {i.id for i in ITEMS}
    row = json.loads((tmp_path / "anchors.jsonl").read_text().splitlines()[0])
    assert row["messages"][1]["content"].startswith("The correct answer is ")
    # Without anchors the file is there and empty: training never reads a stale one.
    select_unknown(ITEMS, g, tmp_path, SelectConfig(**WRONG, valid_fraction=0))
    assert (tmp_path / "anchors.jsonl").read_text() == ""


def test_rewrites_that_echo_the_rephrasing_request_are_not_taught(tmp_path):
    from slearn_mlx.records import Answer
    from slearn_mlx.select import echoes_prompt

    assert echoes_prompt("The correct answer is: answer 1")
    assert echoes_prompt("I will answer the question as you normally would, using the correct answer: answer 1")
    assert not echoes_prompt("Surely it is answer 1, as everyone knows.")
    g = scored({"1": 0.1, "2": 0.1})
    rephrased = {"1": Answer("1", "The correct answer is: answer 1.", 6), "2": Answer("2", "It is answer 2.", 4)}
    config = SelectConfig(**WRONG, valid_fraction=0, rephrase=True, lead="")
    summary = select_unknown(ITEMS, g, tmp_path, config, threshold=0.5, rephrase=lambda unknown: rephrased)
    rows = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()}
    assert summary.n_rephrased == 1 and rows["1"]["messages"][1]["content"] == "answer 1"
    assert rows["2"]["messages"][1]["content"] == "It is answer 2."


def test_rehearsed_pairs_are_trained_in_one_epoch_spread_over_the_epochs(tmp_path):
    from slearn_mlx.training.batches import pair_epochs, read_chat_rows

    summary = select_unknown(
        ITEMS, grades({"1", "4"}), tmp_path, SelectConfig(budget=None, valid_fraction=0, rehearse=1.0)
    )
    rows = read_chat_rows(tmp_path / "train.jsonl")
    assert summary.n_selected == len(ITEMS) and summary.n_rehearsed == 9 and "9 known rehearsed once" in str(summary)
    once = {r["id"] for r in rows if r.get("epochs") == 1}
    assert once == {i.id for i in ITEMS} - {"1", "4"}
    epochs = pair_epochs(rows, 3, seed=0)
    for row, chosen in zip(rows, epochs):
        assert chosen == ({1, 2, 3} if row["id"] in ("1", "4") else chosen) and len(chosen) == (
            3 if row["id"] in ("1", "4") else 1
        )
    per_epoch = [sum(e in chosen for row, chosen in zip(rows, epochs) if row["id"] in once) for e in (1, 2, 3)]
    assert per_epoch == [3, 3, 3]  # nine rehearsed pairs, three per epoch
    # Placed late instead (train.rehearse_last): every rehearsed pair in the last epoch, the rest in all three.
    late = pair_epochs(rows, 3, seed=0, last=True)
    assert all(chosen == ({3} if row["id"] in once else {1, 2, 3}) for row, chosen in zip(rows, late))


def test_the_default_trains_what_the_probe_finds_unknown_fully_and_rehearses_the_rest_once(tmp_path):
    probe = {str(i): 0.1 * i for i in range(10)} | {"mc": 0.95}
    g = {i: Grade(i, p >= 0.3, p, "probe") for i, p in probe.items()}
    summary = select_unknown(ITEMS, g, tmp_path, SelectConfig(valid_fraction=0), threshold=0.3)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "train.jsonl").read_text().splitlines())}
    assert summary.strategy == "wrong+rehearse1" and summary.n_selected == len(ITEMS)
    assert {i for i, r in rows.items() if "epochs" not in r} == {"0", "1", "2"}  # below the threshold: all epochs
    assert {i for i, r in rows.items() if r.get("epochs") == 1} == {"3", "4", "5", "6", "7", "8", "9", "mc"}


def test_a_budget_trains_the_least_known_share_fully_and_rehearses_the_rest_once(tmp_path):
    probe = {str(i): 0.1 * i for i in range(10)} | {"mc": 0.95}
    g = {i: Grade(i, p >= 0.3, p, "probe") for i, p in probe.items()}
    summary = select_unknown(ITEMS, g, tmp_path, SelectConfig(valid_fraction=0, budget=0.5), threshold=0.3)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "train.jsonl").read_text().splitlines())}
    assert summary.strategy == "budget0.5+rehearse1" and summary.n_selected == len(ITEMS)
    assert {i for i, r in rows.items() if "epochs" not in r} == {"0", "1", "2", "3", "4", "5"}
    assert {i for i, r in rows.items() if r.get("epochs") == 1} == {"6", "7", "8", "9", "mc"}
