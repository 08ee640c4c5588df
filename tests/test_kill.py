"""SIGKILL in the middle of every stage, then the same command again: the run ends exactly where an
uninterrupted one does, with no id missing or repeated. Real subprocesses, real kills."""

from __future__ import annotations

import pytest

from killing import compare_runs, exists, finish, kill_when, reference_workspace, run_args


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    model, data = reference_workspace(root, n_items=60)
    return root, model, data


def test_killed_in_every_stage_then_resumed_equals_uninterrupted(workspace):
    root, model, data = workspace
    out = root / "killed"
    args = run_args(model, data, out)
    # Each kill lands while the stage named is writing: answers, grades, a training checkpoint, the
    # evaluation's adapted answers.
    marks = ["answers.jsonl", "grades.jsonl", "train/checkpoint.safetensors", "eval/adapted_answers.jsonl"]
    killed = [kill_when(args, exists(out / mark)) for mark in marks]
    assert all(killed), killed
    finish(args)
    assert compare_runs(root / "reference", out) == []


def test_single_stage_commands_killed_then_resumed(workspace):
    root, model, data = workspace
    out = root / "stages"
    args = run_args(model, data, out)
    common = ["--out", str(out), "--quiet"]
    stage_args = {
        "answer": ["answer", "--data", str(data), "--model", str(model), "--max-tokens", "12", *common],
        "grade": ["grade", "--grader", "judge", "--threshold", "0.75", *common],
        "select": ["select", "--out", str(out)],
        "train": ["train", "--epochs", "2", "--num-layers", "2", "--batch-size", "2",
                  "--config", str(data.parent / "run.yaml"), *common],
        "evaluate": ["evaluate", "--test", str(data), *common],
    }  # fmt: skip
    marks = {"answer": "answers.jsonl", "grade": "grades.jsonl", "train": "train/checkpoint.safetensors"}
    for stage, command in stage_args.items():
        if stage in marks:
            assert kill_when(command, exists(out / marks[stage])), stage
        finish(command)
    finish(args)  # the whole run on top finds everything done
    assert compare_runs(root / "reference", out) == []
