"""Stage 3: the wrongly answered pairs, in a format mlx-lm's trainer reads."""

from __future__ import annotations

import json
import types

import pytest

from slearn_mlx.records import Grade, QAItem
from slearn_mlx.select import SelectConfig, select_unknown

ITEMS = [QAItem(str(i), f"question {i}?", f"answer {i}") for i in range(10)] + [
    QAItem("mc", "Pick one", "B", {"A": "x", "B": "y"})
]


def grades(wrong: set[str]) -> dict[str, Grade]:
    return {i.id: Grade(i.id, i.id not in wrong, 0.0, "exact") for i in ITEMS}


def test_writes_only_the_wrong_pairs(tmp_path, tiny_loaded):
    summary = select_unknown(ITEMS, grades({"1", "4", "mc"}), tmp_path, SelectConfig(valid_fraction=0.5))
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert summary.n_selected == 3 and [r["id"] for r in rows] == ["1", "4", "mc"]
    assert rows[0]["messages"] == [
        {"role": "user", "content": "question 1?"},
        {"role": "assistant", "content": "answer 1"},
    ]
    assert rows[2]["messages"][1]["content"] == "B. y"
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
    summary = select_unknown(ITEMS, grades(set()), tmp_path)
    assert summary.n_selected == 0
    assert (tmp_path / "train.jsonl").read_text() == ""


def test_needs_every_grade(tmp_path):
    partial = grades({"1"})
    del partial["3"]
    with pytest.raises(ValueError, match="run `slearn grade` first"):
        select_unknown(ITEMS, partial, tmp_path)
