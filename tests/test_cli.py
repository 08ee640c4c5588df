"""The `slearn` command end to end on the tiny model: stages, run, resume, report."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from slearn_mlx.cli import cli

from conftest import accuracy_of

FAST = ["--max-tokens", "4", "--epochs", "1", "--num-layers", "1", "--quiet"]


def invoke(runner, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_run_writes_every_stage_and_the_report(runner, tiny_model, qa_file, tmp_path):
    out = tmp_path / "run"
    output = invoke(runner, ["run", "--data", str(qa_file), "--test", str(qa_file), "--model", tiny_model,
                             "--out", str(out), "--grader", "exact", *FAST])  # fmt: skip
    lines = output.splitlines()
    assert [line.split()[0] for line in lines] == ["answered", "graded", "selected", "trained", "evaluated", "run"]
    for name in ("config.json", "items.jsonl", "answers.jsonl", "grades.jsonl", "train/train.jsonl",
                 "train/valid.jsonl", "adapters/adapters.safetensors", "adapters/adapter_config.json",
                 "eval/base_answers.jsonl", "eval/adapted_grades.jsonl"):  # fmt: skip
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == tiny_model and report["n_items"] == 6
    assert report["n_selected"] == report["n_wrong"] > 0
    assert report["base_accuracy"] == accuracy_of(out / "eval" / "base_grades.jsonl")
    assert report["adapted_accuracy"] == accuracy_of(out / "eval" / "adapted_grades.jsonl")
    seconds = report["seconds"]
    stages = ("answer", "grade", "select", "train", "evaluate", "load")
    assert all(seconds[stage] > 0.0 for stage in ("answer", "train", "evaluate", "load"))
    assert sum(seconds[s] for s in stages) <= seconds["total"] + 0.001 * len(stages)  # each rounded to the ms
    config = json.loads((out / "config.json").read_text())
    assert config["grade"]["grader"] == "exact" and config["train"]["epochs"] == 1

    # Everything is done: a second run recomputes nothing.
    again = invoke(runner, ["run", "--data", str(qa_file), "--test", str(qa_file), "--out", str(out), "--quiet"])
    assert "0 new" in again.splitlines()[0] and "already trained" in again


def test_stages_one_by_one_and_resume_after_truncation(runner, tiny_model, qa_file, tmp_path):
    out = str(tmp_path / "run")
    assert "6 new" in invoke(
        runner, ["answer", "--data", str(qa_file), "--model", tiny_model, "--out", out, "--max-tokens", "4", "--quiet"]
    )
    answers = tmp_path / "run" / "answers.jsonl"
    lines = answers.read_text().splitlines(keepends=True)
    answers.write_text("".join(lines[:3]) + lines[3][:10])  # three whole lines and a torn one
    output = invoke(runner, ["answer", "--data", str(qa_file), "--out", out, "--quiet"])
    assert "3 new, 3 already done" in output
    assert len(answers.read_text().splitlines()) == 6

    assert "with judge" in invoke(
        runner, ["grade", "--out", out, "--grader", "judge", "--quiet"]
    )  # the model from the run's config
    grades = [json.loads(l) for l in (tmp_path / "run" / "grades.jsonl").read_text().splitlines()]
    assert all(g["grader"] == "judge-verdict" and g["correct"] == (g["score"] >= 0.5) for g in grades)
    assert "with exact" in invoke(runner, ["grade", "--out", out, "--grader", "exact", "--force", "--quiet"])
    assert invoke(runner, ["select", "--out", out]).startswith("selected")
    assert invoke(runner, ["train", "--out", out, "--epochs", "1", "--num-layers", "1", "--quiet"]).startswith(
        "trained"
    )
    output = invoke(runner, ["evaluate", "--out", out, "--test", str(qa_file), "--quiet"])
    assert "base" in output and "adapted" in output


def test_stage_out_of_order_says_what_to_run(runner, tmp_path):
    result = runner.invoke(cli, ["grade", "--out", str(tmp_path / "empty"), "--grader", "judge"])
    assert result.exit_code == 1 and "run `slearn answer` first" in result.output
    # The probe (the default grader) needs no answers, only the data.
    result = runner.invoke(cli, ["grade", "--out", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "pass --data FILE.jsonl" in result.output


def test_invalid_options_are_all_reported(runner, qa_file, tmp_path):
    result = runner.invoke(
        cli, ["run", "--data", str(qa_file), "--out", str(tmp_path / "r"), "--epochs", "0", "--threshold", "2"]
    )
    assert result.exit_code == 1
    assert "train.epochs" in result.output and "grade.threshold" in result.output


def test_yaml_config_is_applied_and_command_line_wins(runner, tiny_model, qa_file, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {tiny_model}\nanswer:\n  max_tokens: 3\n  batch_size: 2\n")
    out = tmp_path / "r"
    invoke(
        runner,
        ["answer", "--data", str(qa_file), "--out", str(out), "--config", str(config), "--batch-size", "5", "--quiet"],
    )
    saved = json.loads((out / "config.json").read_text())
    assert {k: saved["answer"][k] for k in ("max_tokens", "batch_size", "temperature")} == {
        "max_tokens": 3, "batch_size": 5, "temperature": 0.0,
    }  # fmt: skip
    bad = tmp_path / "bad.yaml"
    bad.write_text("answer:\n  max_tokenz: 3\n")
    result = runner.invoke(cli, ["answer", "--data", str(qa_file), "--out", str(out), "--config", str(bad)])
    assert result.exit_code == 1 and "unknown option 'answer.max_tokenz'" in result.output


def test_nothing_wrong_means_nothing_to_train(runner, tiny_model, tmp_path):
    from conftest import write_jsonl

    out = tmp_path / "r"
    data = write_jsonl(tmp_path / "d.jsonl", [{"question": "say anything", "answer": "x"}])
    invoke(
        runner,
        ["answer", "--data", str(data), "--model", tiny_model, "--out", str(out), "--max-tokens", "2", "--quiet"],
    )
    # Threshold 0: the judge accepts every answer, so nothing is selected.
    invoke(runner, ["grade", "--out", str(out), "--grader", "judge", "--threshold", "0", "--quiet"])
    assert "selected 0 of 1" in invoke(runner, ["select", "--out", str(out)])
    assert "nothing to train" in invoke(runner, ["train", "--out", str(out), "--quiet"])


def test_bad_model_is_one_line_and_writes_nothing(runner, qa_file, tmp_path):
    not_a_model = tmp_path / "empty-dir"
    not_a_model.mkdir()
    for model in (str(not_a_model), str(tmp_path / "missing" / "model")):
        out = tmp_path / "run"
        result = runner.invoke(cli, ["run", "--data", str(qa_file), "--out", str(out), "--model", model])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert model in result.output and not out.exists()


def test_a_changed_selection_retrains_and_re_evaluates(runner, tiny_model, qa_file, tmp_path):
    out = str(tmp_path / "run")
    common = ["--data", str(qa_file), "--test", str(qa_file), "--out", out, "--quiet"]
    invoke(runner, ["run", *common, "--model", tiny_model, "--grader", "exact", *FAST])
    adapted = tmp_path / "run" / "eval" / "adapted_answers.jsonl"
    before = adapted.stat().st_mtime_ns
    # Flip one verdict, as a regrade would: the selection changes, so the adapters are stale.
    grades = tmp_path / "run" / "grades.jsonl"
    rows = [json.loads(l) for l in grades.read_text().splitlines()]
    rows[0]["correct"] = not rows[0]["correct"]
    grades.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = invoke(runner, ["run", *common])
    assert "trained on" in output and "already trained" not in output
    assert adapted.stat().st_mtime_ns > before and len(adapted.read_text().splitlines()) == 6


def test_grade_calibrate_show_and_templates(runner, tiny_model, qa_file, tmp_path):
    out = str(tmp_path / "run")
    template = tmp_path / "ask.txt"
    template.write_text("Answer briefly: {question}\n")
    invoke(runner, ["answer", "--data", str(qa_file), "--model", tiny_model, "--out", out, "--max-tokens", "3",
                    "--template", str(template), "--quiet"])  # fmt: skip
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["answer"]["template"] == "Answer briefly: {question}"

    labels = tmp_path / "labels.jsonl"
    items = [json.loads(l) for l in (tmp_path / "run" / "items.jsonl").read_text().splitlines()]
    labels.write_text("".join(json.dumps({"id": it["id"], "correct": i % 2 == 0}) + "\n" for i, it in enumerate(items)))
    output = invoke(runner, ["grade", "--out", out, "--grader", "judge", "--judge-mode", "score", "--calibrate", "--labels", str(labels),
                             "--show", "2", "--quiet"])  # fmt: skip
    assert "calibrated on 6 answers" in output and "agreement" in output
    assert output.count("by judge-score") == 2
    calibration = json.loads((tmp_path / "run" / "calibration.json").read_text())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["grade"]["threshold"] == pytest.approx(calibration["after"]["threshold"], abs=1e-6)
    assert calibration["after"]["agreement"] >= calibration["before"]["agreement"]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["calibration"]["label_source"] == str(labels)


def test_separate_judge_model_and_run_with_calibration(runner, tiny_model, qa_file, tmp_path):
    out = tmp_path / "run"
    output = invoke(runner, ["run", "--data", str(qa_file), "--test", str(qa_file), "--model", tiny_model,
                             "--judge-model", tiny_model, "--grader", "hybrid", "--calibrate", "--labels", "exact",
                             "--out", str(out), *FAST])  # fmt: skip
    assert "calibrated on" in output
    assert [line.split()[0] for line in output.splitlines()][:3] == ["answered", "graded", "calibrated"]
    config = json.loads((out / "config.json").read_text())
    assert config["grade"]["judge_model"] == tiny_model and config["grade"]["grader"] == "hybrid"


def test_bad_templates_and_labels_are_one_line(runner, tiny_model, qa_file, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("{answer} alone")
    result = runner.invoke(cli, ["grade", "--out", str(tmp_path / "r"), "--judge-template", str(bad)])
    assert result.exit_code == 1 and "must use {reference}" in result.output and result.output.count("\n") == 1
    out = str(tmp_path / "run")
    invoke(
        runner, ["answer", "--data", str(qa_file), "--model", tiny_model, "--out", out, "--max-tokens", "2", "--quiet"]
    )
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": "x", "correct": "yes"}\n')
    result = runner.invoke(
        cli, ["grade", "--out", out, "--grader", "judge", "--calibrate", "--labels", str(labels), "--quiet"]
    )
    assert result.exit_code == 1 and "labels.jsonl:1: field 'correct'" in result.output


def test_all_trains_every_pair_and_evaluate_reports_retention(runner, tiny_model, qa_file, tmp_path):
    out = tmp_path / "run"
    # Threshold 0: the judge accepts every answer, so every training item is known; --all still trains on them.
    output = invoke(runner, ["run", "--data", str(qa_file), "--test", str(qa_file), "--model", tiny_model,
                             "--out", str(out), "--threshold", "0", "--all", *FAST])  # fmt: skip
    assert "selected 6 of 6 (100.0%) pairs (all)" in output
    assert "retention" in output and "of 6 known" in output
    report = json.loads((out / "report.json").read_text())
    assert report["stages"]["select"]["strategy"] == "all"
    retention = [json.loads(line) for line in (out / "eval" / "retention_grades.jsonl").read_text().splitlines()]
    assert len(retention) == 6 and report["retention"] == sum(g["correct"] for g in retention) / 6


@pytest.mark.parametrize("content", ["[1]\n", "{\n", "\xff"])
def test_a_damaged_saved_config_is_one_line(runner, tmp_path, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(content, encoding="latin-1")
    result = runner.invoke(cli, ["select", "--out", str(run)])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "config.json" in result.output and "delete it" in result.output


def test_max_seq_length_cuts_pairs_and_one_that_leaves_no_answer_is_one_line(runner, tiny_model, qa_file, tmp_path):
    out = str(tmp_path / "r")
    invoke(runner, ["answer", "--data", str(qa_file), "--model", tiny_model, "--out", out, "--max-tokens", "4",
                    "--quiet"])  # fmt: skip
    invoke(runner, ["grade", "--out", out, "--grader", "exact", "--quiet"])
    invoke(runner, ["select", "--out", out])
    result = runner.invoke(cli, ["train", "--out", out, "--max-seq-length", "3", "--num-layers", "1", "--quiet"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "train.max_seq_length 3 cuts off every answer" in result.output
    assert not (tmp_path / "r" / "adapters").exists()
    invoke(runner, ["train", "--out", out, "--max-seq-length", "48", "--epochs", "1", "--num-layers", "1", "--quiet"])
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["max_seq_length"] == 48
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["stages"]["train"]["longest"] <= 48


def test_try_answers_with_the_base_and_the_adapted_model_side_by_side(runner, tiny_model, qa_file, tmp_path):
    out = tmp_path / "run"
    args = ["--data", str(qa_file), "--model", tiny_model, "--out", str(out), "--grader", "exact", *FAST]
    invoke(runner, ["answer", "--data", str(qa_file), "--model", tiny_model, "--out", str(out), *FAST[:2], "--quiet"])
    result = runner.invoke(cli, ["try", "--out", str(out), "What is the capital of France?"])
    assert result.exit_code == 1 and "no adapters yet; train first" in result.output
    invoke(runner, ["run", *args, "--epochs", "3", "--learning-rate", "1e-2"])  # enough to change answers

    output = invoke(runner, ["try", "--out", str(out), "What is the capital of France?", "2 + 2?"])
    blocks = output.strip().split("\n\n")
    assert len(blocks) == 2 and blocks[0].startswith("question : What is the capital of France?")
    assert [line.split(":")[0].strip() for line in blocks[1].splitlines()[:3]] == ["question", "base", "adapted"]
    session = runner.invoke(cli, ["try", "--out", str(out), "-i", "--max-tokens", "4"], input="Largest planet?\n\n")
    assert session.exit_code == 0 and session.output.count("adapted:") == 1, session.output

    missing = runner.invoke(cli, ["try", "--out", str(tmp_path / "nowhere"), "q"])
    assert missing.exit_code == 1 and "not a run directory" in missing.output


def test_adapters_on_gives_the_base_model_back(tiny_loaded, tiny_model, qa_file, tmp_path, runner):
    import mlx.core as mx

    from slearn_mlx.training.layers import adapters_on

    model, tokenizer = tiny_loaded
    out = tmp_path / "run"
    invoke(runner, ["run", "--data", str(qa_file), "--model", tiny_model, "--out", str(out), "--grader", "exact",
                    *FAST, "--learning-rate", "1e-2"])  # fmt: skip
    tokens = mx.array([tokenizer.encode("What is the capital of France?")])
    before = model(tokens)
    with adapters_on(model, out / "adapters"):
        during = model(tokens)
    after = model(tokens)
    assert not mx.allclose(before, during).item() and mx.array_equal(before, after).item()


def test_a_bug_keeps_its_traceback_while_a_users_mistake_is_one_line(runner, tmp_path, monkeypatch):
    """mlx reports shape mistakes as ValueError: one escaping our code is a bug, not a line blaming the user."""
    from slearn_mlx import pipeline

    def broken(*args, **kwargs):
        raise ValueError("[matmul] Last dimension of first input with shape (4,8) must match second input (7,8)")

    monkeypatch.setattr(pipeline, "stage_select", broken)
    result = runner.invoke(cli, ["select", "--out", str(tmp_path / "run")])
    assert isinstance(result.exception, ValueError) and "matmul" in str(result.exception)
    assert not result.output.startswith("Error:")
    mistake = runner.invoke(cli, ["select", "--out", str(tmp_path / "run"), "--budget", "2"])
    assert (
        mistake.exit_code == 1
        and mistake.output.startswith("Error: invalid configuration")
        and (mistake.output.count("\n") == 1)
    )


def _reads_as(shown: str, default) -> bool:
    """Whether the text in --help's brackets says `default` (written independently of how cli.py writes it)."""
    if isinstance(default, bool):
        return shown == ("on" if default else "off")
    if isinstance(default, (int, float)):
        try:
            return float(shown) == default
        except ValueError:
            return False
    if isinstance(default, str):
        return shown in (default, repr(default))
    return False


def test_every_help_default_is_the_one_the_config_uses():
    """Each option that sets a config field shows that field's help and its default in brackets: read from the
    dataclass, so they cannot drift apart. A default in words (`shown`) stands for None or for a template's text."""
    import re
    from dataclasses import MISSING, fields

    import click

    from slearn_mlx.config import SECTIONS, RunConfig

    checked = 0
    for name, command in cli.commands.items():
        for sub in command.commands.values() if isinstance(command, click.Group) else [command]:
            for param in sub.params:
                section, _, field = param.name.rpartition("__")
                config_class = SECTIONS.get(section) if section else RunConfig
                spec = {f.name: f for f in fields(config_class)}.get(field) if config_class else None
                if spec is None or "help" not in spec.metadata:
                    continue
                default = spec.default_factory() if spec.default is MISSING else spec.default
                shown = re.fullmatch(r"(.*) \[(.*)\]", param.help, re.S)
                assert shown and shown.group(1) == spec.metadata["help"], (name, param.opts, param.help)
                if spec.metadata.get("shown"):
                    assert default is None or isinstance(default, str), (name, param.opts)
                else:
                    assert _reads_as(shown.group(2), default), (name, param.opts, shown.group(2), default)
                checked += 1
    assert checked > 100
    # The rehearsal's default, which a hand-written help text once said was 0.
    result = CliRunner().invoke(cli, ["select", "--help"])
    assert re.search(r"--rehearse FLOAT[^\[]*\[1\]", result.output)
