"""A run directory remembers what made it and refuses to mix in another model, data or grading config."""

from __future__ import annotations

import json
import shutil

from slearn_mlx.cli import cli

from conftest import QA, write_jsonl

FAST = ["--max-tokens", "3", "--epochs", "1", "--num-layers", "1", "--quiet"]


def invoke(runner, args, code=0):
    result = runner.invoke(cli, args)
    assert result.exit_code == code, result.output
    return result.output


def refused(runner, args, *expected):
    output = invoke(runner, args, code=1)
    assert output.count("\n") == 1 and "--force" in output and "Traceback" not in output, output
    for text in expected:
        assert text in output, output
    return output


def test_a_changed_data_file_is_refused_and_force_starts_over(runner, tiny_model, qa_file, tmp_path):
    out = str(tmp_path / "run")
    invoke(runner, ["run", "--data", str(qa_file), "--model", tiny_model, "--out", out, "--grader", "exact", *FAST])
    answers = (tmp_path / "run" / "answers.jsonl").read_text()
    write_jsonl(qa_file, QA[:4])  # the same file, other content
    refused(
        runner,
        ["run", "--data", str(qa_file), "--out", out, "--quiet"],
        f"the training data file {qa_file} changed since (sha256 ",
    )
    assert (tmp_path / "run" / "answers.jsonl").read_text() == answers  # nothing was touched
    refused(runner, ["grade", "--out", out, "--quiet"], "training data file")
    output = invoke(runner, ["run", "--data", str(qa_file), "--out", out, "--force", "--quiet"])
    assert "answered 4: 4 new" in output
    assert json.loads((tmp_path / "run" / "report.json").read_text())["n_items"] == 4


def test_another_model_is_refused_but_a_copy_of_the_same_is_not(runner, tiny_model, qa_file, tmp_path):
    out = str(tmp_path / "run")
    invoke(runner, ["answer", "--data", str(qa_file), "--model", tiny_model, "--out", out, "--max-tokens", "3"])
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    assert "0 new" in invoke(runner, ["answer", "--data", str(qa_file), "--model", str(copy), "--out", out])
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    refused(
        runner,
        ["answer", "--data", str(qa_file), "--model", str(copy), "--out", out],
        f"the model {copy} changed since (config.json differ)",  # the copy was taken for the same model
    )


def test_a_changed_grading_config_is_refused_and_force_regrades_and_retrains(runner, tiny_model, qa_file, tmp_path):
    out = str(tmp_path / "run")
    common = ["--data", str(qa_file), "--test", str(qa_file), "--out", out]
    invoke(runner, ["run", *common, "--model", tiny_model, "--grader", "exact", *FAST])
    refused(runner, ["run", *common, "--grader", "contains", "--quiet"], "grade.grader was 'exact', is 'contains' now")
    refused(runner, ["grade", "--out", out, "--grader", "f1", "--quiet"], "grade.grader")
    output = invoke(runner, ["grade", "--out", out, "--grader", "contains", "--force", "--quiet"])
    assert "with contains" in output
    run = tmp_path / "run"
    # What was computed from the old grades is gone; the answers stay.
    assert not (run / "train" / "train.jsonl").exists() and not (run / "adapters").exists()
    assert not (run / "eval").exists()
    assert (run / "answers.jsonl").exists()
    output = invoke(runner, ["run", *common, "--quiet"])
    assert "0 new" in output.splitlines()[0] and "trained on" in output


def test_changed_training_settings_retrain_without_being_refused(runner, tiny_model, qa_file, tmp_path):
    out = str(tmp_path / "run")
    common = ["--data", str(qa_file), "--out", out]
    invoke(runner, ["run", *common, "--model", tiny_model, "--grader", "exact", *FAST])
    assert "already trained" in invoke(runner, ["run", *common, "--quiet"])
    output = invoke(runner, ["run", *common, "--epochs", "2", "--quiet"])
    assert "2 epochs" in output
    adapter_config = json.loads((tmp_path / "run" / "adapters" / "adapter_config.json").read_text())
    assert adapter_config["epochs"] == 2


def test_another_test_file_is_refused_until_forced(runner, tiny_model, qa_file, tmp_path):
    out = str(tmp_path / "run")
    invoke(runner, ["run", "--data", str(qa_file), "--test", str(qa_file), "--model", tiny_model, "--out", out,
                    "--grader", "exact", *FAST])  # fmt: skip
    other = write_jsonl(tmp_path / "other.jsonl", QA[:3])
    refused(
        runner,
        ["evaluate", "--out", out, "--test", str(other), "--quiet"],
        f"the test file is another one with other contents ({qa_file} then, {other} now; sha256 ",
    )
    output = invoke(runner, ["evaluate", "--out", out, "--test", str(other), "--force", "--quiet"])
    assert "evaluated 3 test items" in output
    assert (tmp_path / "run" / "adapters" / "adapters.safetensors").exists()  # training is not redone
