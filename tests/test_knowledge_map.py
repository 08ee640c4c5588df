"""The knowledge map: P(reference) by decade with the threshold as an edge, the share known per category, the least
known items; in compare's reports for the base and the adapted model."""

from __future__ import annotations

import json
import math

from slearn_mlx.cli import cli
from slearn_mlx.data import Fields, load_items
from slearn_mlx.knowledge_map import knowledge_map
from slearn_mlx.probe import Knowledge
from slearn_mlx.records import QAItem

from conftest import write_jsonl


def item(i: int, category: str | None = None) -> QAItem:
    return QAItem(str(i), f"Question {i}?", f"answer {i}", category=category)


def reading(i: int, p: float) -> Knowledge:
    return Knowledge(str(i), p, 0.0, 0.0, 1, False)


def test_the_bins_above_the_threshold_hold_exactly_the_known_items():
    ps = [0.95, 0.81, 0.8, 0.79, 0.2, 0.05, 1e-3, 1e-7, 1e-30, 0.0]
    items = [item(i, "even" if i % 2 == 0 else "odd") for i in range(len(ps))]
    knowledge = {str(i): reading(i, p) for i, p in enumerate(ps)}
    mapped = knowledge_map(items + [item(99)], knowledge, 0.8, least=3)
    assert mapped.n_items == 11 and mapped.n_read == 10 and mapped.n_known == 3
    assert sum(b.count for b in mapped.bins) == 10  # the unread item counts nowhere
    above = [b for b in mapped.bins if b.low >= math.log10(0.8)]
    assert len(above) == 1 and above[0].count == 3 and above[0].high == 0.0
    assert mapped.bins[0].low == -12 and mapped.bins[0].count == 2  # 1e-30 and 0 fall in the lowest bin
    assert [i.id for i in mapped.least_known] == ["9", "8", "7"]
    # Least known share first: odd 1 of 5 (0.81), even 2 of 5 (0.95, 0.8).
    assert [(c.name, c.n_items, c.n_known) for c in mapped.categories] == [("odd", 5, 1), ("even", 5, 2)]


def test_a_category_field_is_read_and_kept_out_of_the_id(tmp_path):
    rows = [{"question": "Q?", "answer": "A", "subject": "Anatomy"}, {"question": "R?", "answer": "B"}]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    with_field = load_items(path, Fields(category="subject"))
    assert [i.category for i in with_field] == ["Anatomy", None]
    assert [i.id for i in with_field] == [i.id for i in load_items(path)]
    assert "category" not in with_field[1].to_json() and with_field[0].to_json()["category"] == "Anatomy"


def test_compare_maps_what_the_base_and_the_adapted_model_know(runner, tiny_model, tmp_path):
    rows = [{"id": str(i), "question": f"Code {i}?", "answer": f"z{i}", "topic": "ab"[i % 2]} for i in range(8)]
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(data), "--test", str(data), "--model", tiny_model, "--out", str(out),
            "--max-tokens", "4", "--epochs", "1", "--num-layers", "1", "--quiet", "--category-field", "topic",
            "--strategy", "all", "--strategy", "wrong+probe+rehearse1"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    maps = json.loads((out / "report.json").read_text())["knowledge_map"]
    assert maps["strategy"] == "wrong+probe+rehearse1"
    lines = lambda path: [json.loads(line) for line in path.read_text().splitlines()]  # noqa: E731
    verdict = lines(out / "base-probe" / "probe.jsonl")  # the few-shot frame, the default verdict
    base_chat = lines(out / "base-probe" / "eval" / "chat_probe.jsonl")
    adapted = lines(out / maps["strategy"] / "eval" / "adapted_chat_probe.jsonl")
    # What moved: both models read in the chat frame, where the run trained; the verdict's own count beside it.
    assert maps["frame"] == "chat" and maps["verdict"]["frame"] == "fewshot"
    assert sum(b["count"] for b in maps["verdict"]["bins"]) == len(verdict) == 8
    assert maps["verdict"]["n_known"] == sum(r["p_reference"] >= 0.8 for r in verdict)
    assert sum(b["count"] for b in maps["base"]["bins"]) == len(base_chat) == 8
    assert maps["base"]["n_known"] == sum(r["p_reference"] >= 0.8 for r in base_chat)
    assert sum(b["count"] for b in maps["adapted"]["bins"]) == len(adapted) == 8
    assert {r["id"]: r["p_reference"] for r in base_chat} != {r["id"]: r["p_reference"] for r in adapted}
    assert {r["id"]: r["p_reference"] for r in base_chat} != {r["id"]: r["p_reference"] for r in verdict}
    assert {c["name"] for c in maps["base"]["categories"]} == {"a", "b"}
    assert set(maps["moved"]) == {i["id"] for i in maps["base"]["least_known"]}
    markdown = (out / "report.md").read_text()
    assert "## What the model knows" in markdown and "| a | 4 |" in markdown
    assert "read in the chat frame" in markdown and "reads the base model in the fewshot frame" in markdown
    page = (out / "report.html").read_text()
    assert "The knowledge map" in page and "<h2>What the model knows</h2>" in page
