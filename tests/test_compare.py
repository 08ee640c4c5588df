"""`slearn compare`: full fine-tuning against self-learning selections, one report."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

from slearn_mlx.cli import cli
from slearn_mlx.compare import parse_strategy

from conftest import accuracy_of


def test_strategy_names_round_trip():
    for name in (
        "all",
        "all+bare",
        "wrong",
        "wrong+replay0.2",
        "wrong+replay0.2+own",
        "wrong+rephrase",
        "wrong+uncertain0.1+replay0.3+max100",
        "budget0.6+probe+anchors1+kl1",
        "wrong+probe+bare+epochs2+lr0.0005",
        "all+rank16+layers8",
        "budget0.5+probe+kl1+skip",
    ):
        assert parse_strategy(name).name == name
    assert parse_strategy("wrong+max50").select.max_items == 50
    strategy = parse_strategy("budget0.6+probe+anchors0.5+kl2+epochs2")
    assert strategy.probe and strategy.select.budget == 0.6 and strategy.select.anchors == 0.5
    assert strategy.train == {"kl": 2.0, "epochs": 2} and isinstance(strategy.train["epochs"], int)
    assert parse_strategy("wrong+bare").select.lead == "" and parse_strategy("wrong").select.lead
    for bad in ("some", "wrong+replay", "wrong+replay2", "wrong+colour0.1", "all+probe", "budget2", "wrong+epochs0"):
        with pytest.raises(ValueError, match="strateg"):
            parse_strategy(bad)


def test_the_paired_difference_has_a_t_interval_over_seeds():
    from slearn_mlx.compare import paired

    result = paired([0.80, 0.84, 0.82], [0.81, 0.83, 0.85])
    diffs = [-0.01, 0.01, -0.03]
    mean = sum(diffs) / 3
    sd = (sum((d - mean) ** 2 for d in diffs) / 2) ** 0.5
    assert result["mean"] == pytest.approx(mean) and result["n"] == 3
    assert result["high"] - result["mean"] == pytest.approx(4.303 * sd / 3**0.5, rel=1e-3)
    assert paired([0.5], [0.4]) == {"mean": pytest.approx(0.1), "low": None, "high": None, "n": 1}


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
        assert s["accuracy"] == accuracy_of(out / s["strategy"] / "eval" / "adapted_grades.jsonl")
        assert s["losses"] and s["losses"][0]["step_losses"]
        assert (s["retention"] is None) == (n_wrong == 6)
        assert (out / s["strategy"] / "adapters" / "adapters.safetensors").exists()
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 4 and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
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


def test_compare_over_seeds_reports_spread_and_the_probe_pays_no_answering(runner, tiny_model, qa_file, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(qa_file), "--test", str(qa_file), "--model", tiny_model, "--out", str(out),
            "--grader", "contains", "--max-tokens", "4", "--epochs", "1", "--num-layers", "1", "--quiet",
            "--seeds", "2", "--strategy", "all", "--strategy", "budget0.5+probe+anchors1+kl1"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    full, probe = report["strategies"]
    assert report["seeds"] == 2 and probe["strategy"] == "budget0.5+probe+anchors1+kl1"
    for s in (full, probe):
        assert [r["seed"] for r in s["seeds"]] == [0, 1] and s["spread"]["accuracy"] is not None
        for k in (0, 1):
            assert (out / s["strategy"] / f"seed{k}" / "adapters" / "adapters.safetensors").exists()
    # Different seeds train differently.
    a0, a1 = (mx.load(str(out / "all" / f"seed{k}" / "adapters" / "adapters.safetensors")) for k in (0, 1))
    assert any(not mx.array_equal(a0[key], a1[key]).item() for key in a0)
    # The probe strategy pays its probe, not the base model's answering.
    assert set(probe["seeds"][0]["seconds"]) == {"grade", "select", "train"}
    base_probe = json.loads((out / "base-probe" / "report.json").read_text())
    assert probe["seeds"][0]["seconds"]["grade"] == base_probe["seconds"]["grade"]
    assert probe["n_trained"] == 3 and (out / "base-probe" / "probe.jsonl").exists()
    # Paired with `all` seed by seed; retention on the items the base model answered right, the same for both.
    assert probe["vs_full"]["n"] == 2 and probe["vs_full"]["low"] is not None
    assert full["vs_full"]["mean"] == 0.0
    table = (out / "report.md").read_text()
    assert "± " in table and "budget0.5+probe+anchors1+kl1" in table
    assert "end-to-end" in (out / "report.html").read_text()


def test_the_loss_chart_smooths_and_takes_a_log_scale_when_the_first_steps_dwarf_the_rest():
    from slearn_mlx.report import loss_plot, loss_scale, smoothed

    assert smoothed([4.0, 4.0, 4.0]) == pytest.approx([4.0, 4.0, 4.0])  # debiased: no pull toward 0
    noisy = [1.0, 3.0] * 50
    assert max(smoothed(noisy)[20:]) - min(smoothed(noisy)[20:]) < 1.0  # the raw series swings by 2
    assert loss_scale(0.03, 7.85) == (True, [0.1, 1.0])
    assert loss_scale(0.5, 2.0) == (False, [0.5, 2.0])
    losses = [{"step": 50, "val_loss": 0.05, "step_losses": [7.85] + [0.04] * 49}]
    svg = loss_plot({"strategies": [{"strategy": "all", "losses": losses}]})
    assert "log scale" in svg and svg.count("<polyline") == 2 and 'stroke-opacity="0.25"' in svg
