"""`slearn compare`: full fine-tuning against self-learning selections, one report."""

from __future__ import annotations

import json

import pytest

from slearn_mlx.cli import cli
from slearn_mlx.compare import parse_strategy


def test_strategy_names_round_trip():
    for name in (
        "all",
        "wrong",
        "wrong+replay0.2",
        "wrong+replay0.2+own",
        "wrong+rephrase",
        "wrong+uncertain0.1+replay0.3+max100",
    ):
        assert parse_strategy(name).strategy == name
    assert parse_strategy("wrong+max50").max_items == 50
    for bad in ("some", "wrong+replay", "wrong+replay2", "wrong+colour0.1"):
        with pytest.raises(ValueError, match="strateg"):
            parse_strategy(bad)


def test_compare_trains_each_strategy_and_writes_the_reports(runner, tiny_model, qa_file, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(qa_file), "--test", str(qa_file), "--model", tiny_model, "--out", str(out),
            "--grader", "judge", "--threshold", "0.75", "--max-tokens", "4", "--epochs", "1", "--num-layers", "1",
            "--quiet", "--strategy", "all", "--strategy", "wrong", "--strategy", "wrong+replay0.5"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    by_name = {s["strategy"]: s for s in report["strategies"]}
    assert list(by_name) == ["all", "wrong", "wrong+replay0.5"]
    n_wrong = report["n_wrong"]
    assert by_name["all"]["n_trained"] == 6 and by_name["wrong"]["n_trained"] == n_wrong
    assert by_name["wrong+replay0.5"]["n_trained"] == n_wrong + round(0.5 * (6 - n_wrong))
    # The full set pays for training only; self-learning for answering and grading too.
    assert set(by_name["all"]["seconds"]) == {"select", "train"}
    assert set(by_name["wrong"]["seconds"]) == {"answer", "grade", "select", "train"}
    base = json.loads((out / "base" / "report.json").read_text())
    assert by_name["wrong"]["seconds"]["answer"] == base["seconds"]["answer"]
    for s in report["strategies"]:
        assert 0.0 <= s["accuracy"] <= 1.0 and s["losses"] and s["losses"][0]["step_losses"]
        assert (s["retention"] is None) == (n_wrong == 6)
        assert (out / s["strategy"] / "adapters" / "adapters.safetensors").exists()
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 3 and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "src=" not in page and "<script" not in page  # self-contained: opens offline
    assert "| wrong |" in (out / "report.md").read_text()
    # Run again: everything is resumed, nothing retrained, the same numbers.
    again = runner.invoke(cli, args)
    assert again.exit_code == 0 and "already trained" in again.output
    rerun = json.loads((out / "report.json").read_text())["strategies"][1]
    assert rerun["accuracy"] == by_name["wrong"]["accuracy"]
    for stage in ("answer", "grade", "train"):  # kept from the calls that did the work (select always reruns)
        assert rerun["seconds"][stage] == by_name["wrong"]["seconds"][stage]


def test_compare_without_a_test_file_says_so(runner, qa_file, tmp_path):
    result = runner.invoke(cli, ["compare", "--data", str(qa_file), "--out", str(tmp_path / "c")])
    assert result.exit_code == 1 and "--test" in result.output
