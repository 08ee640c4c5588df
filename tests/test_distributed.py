"""Two ranks of mlx's ring backend on this machine (loopback), launched by `mlx.launch` as a user would: the run
directory they write is the one a single process writes. Real processes, real sockets, real kills."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from killing import compare_runs, finish, reference_workspace, run_args

RANKS = 2
TOLERANCE = 1e-5  # largest |difference| allowed between the adapters of 2 ranks and of one process


def launch_args(args: list[str], ranks: int = RANKS) -> list[str]:
    port = random.Random(os.getpid() + time.time_ns()).randrange(20000, 60000, 16)
    launcher = str(Path(sys.executable).with_name("mlx.launch"))
    if not Path(launcher).exists():
        launcher = "mlx.launch"
    return [launcher, "-n", str(ranks), "--backend", "ring", "--starting-port", str(port), "--",
            sys.executable, "-m", "slearn_mlx", *args]  # fmt: skip


def rank_env(tag: str = "") -> dict:
    """One BLAS thread per rank, and a tag that finds the ranks' processes (`_rank_pid`)."""
    return os.environ | {"OPENBLAS_NUM_THREADS": "1", "SLEARN_TEST_TAG": tag}


def launch(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(launch_args(args), capture_output=True, text=True, timeout=timeout, env=rank_env())


def start_until(args: list[str], tag: str, ready: Path) -> subprocess.Popen:
    """2 ranks started on `args`, returned once `ready` exists (or they ended, or 300 s passed)."""
    process = subprocess.Popen(
        launch_args(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=rank_env(tag)
    )
    deadline = time.monotonic() + 300
    while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    return process


def assert_same_run(expected: Path, got: Path) -> None:
    """Every file byte for byte but the adapters, which are within TOLERANCE, and what comes from them alone: the
    losses, and the probe's reading of the adapted model (the knowledge map), within a relative 1e-3."""
    problems = compare_runs(expected, got)
    derived = {
        "differs adapters/adapters.safetensors",
        "differs train/losses.jsonl",
        "differs eval/adapted_chat_probe.jsonl",
    }
    assert set(problems) <= derived, problems
    if (expected / "adapters").exists():
        assert adapter_difference(expected / "adapters", got / "adapters") < TOLERANCE
    if "differs eval/adapted_chat_probe.jsonl" in problems:
        one, two = (probe_reading(run / "eval" / "adapted_chat_probe.jsonl") for run in (expected, got))
        assert one.keys() == two.keys()
        assert all(abs(one[k] - two[k]) <= 1e-3 * max(one[k], two[k]) + 1e-12 for k in one)


def probe_reading(path: Path) -> dict[str, float]:
    return {row["id"]: row["p_reference"] for row in map(json.loads, path.read_text().splitlines())}


def adapter_difference(a: Path, b: Path) -> float:
    import mlx.core as mx

    wa, wb = mx.load(str(a / "adapters.safetensors")), mx.load(str(b / "adapters.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float(np.abs(np.array(wa[k]) - np.array(wb[k])).max()) for k in wa)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    model, data = reference_workspace(root, n_items=40)
    return root, model, data


def test_two_ranks_write_what_one_process_writes(workspace):
    root, model, data = workspace
    result = launch(run_args(model, data, root / "two"))
    assert result.returncode == 0 and "rank" not in result.stderr.lower().replace("ring", ""), result.stderr
    # Answers, grades, selection and evaluation byte for byte; the adapters within float tolerance.
    assert_same_run(root / "reference", root / "two")
    report = (root / "two" / "report.json").read_text()
    assert '"distributed": "ring, rank 0 of 2' in report


def _rank_pid(tag: str, rank: int) -> int | None:
    """The pid of the slearn process of `rank` launched with SLEARN_TEST_TAG=tag."""
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"SLEARN_TEST_TAG={tag}".encode() in environ and f"MLX_RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the rank's process through /proc (Linux)")
def test_a_killed_rank_stops_the_other_with_one_line_and_the_rerun_is_exact(workspace):
    root, model, data = workspace
    out = root / "killed"
    args = run_args(model, data, out)
    # Rank 1 dies while the judge grades: answers are complete, grades partly written.
    process = start_until(args, "kill", out / "grades.jsonl")
    pid = _rank_pid("kill", 1)
    assert pid is not None and process.poll() is None
    os.kill(pid, signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "another rank of the group" in lines[0], stderr
    assert "Traceback" not in stderr
    assert not (out / "adapters").exists()
    # The same command again, on 2 ranks, ends where the uninterrupted one-process run ended.
    result = launch(args)
    assert result.returncode == 0, result.stderr
    assert_same_run(root / "reference", out)


def test_training_resumed_with_another_number_of_ranks(workspace, tmp_path):
    """Killed in training on 2 ranks, finished by one process: the adapters are those of one process."""
    root, model, data = workspace
    out = tmp_path / "resized"
    args = run_args(model, data, out)
    checkpoint = out / "train" / "checkpoint.safetensors"
    process = start_until(args, "resize", checkpoint)
    assert checkpoint.exists(), process.communicate()[1]
    process.send_signal(signal.SIGKILL)  # the launcher; its ranks lose their peer and stop
    for rank in range(RANKS):
        pid = _rank_pid("resize", rank)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
    process.communicate(timeout=60)
    finish(args)
    assert_same_run(root / "reference", out)


def test_compare_with_the_probe_and_the_kl_term_on_two_ranks(workspace, tmp_path):
    """compare's strategies (the probe, rehearsal, anchors held by a KL term, rank 0's) on 2 ranks: the same
    selections, evaluations and report figures as one process; adapters within tolerance."""
    root, model, data = workspace
    args = lambda out: ["compare", "--data", str(data), "--test", str(data), "--model", str(model),  # noqa: E731
                        "--out", str(out), "--grader", "contains", "--max-tokens", "6", "--epochs", "1",
                        "--num-layers", "2", "--batch-size", "4", "--quiet", "--strategy", "all",
                        "--strategy", "budget0.5+probe+rehearse1+anchors1+kl1"]  # fmt: skip
    finish(args(tmp_path / "one"))
    result = launch(args(tmp_path / "two"))
    assert result.returncode == 0, result.stderr
    for run in ("base", "base-probe", "all", "budget0.5+probe+rehearse1+anchors1+kl1"):
        assert_same_run(tmp_path / "one" / run, tmp_path / "two" / run)
    one, two = (json.loads((tmp_path / name / "report.json").read_text()) for name in ("one", "two"))
    assert [s["accuracy"] for s in one["strategies"]] == [s["accuracy"] for s in two["strategies"]]


def test_info_shows_each_rank_of_the_group():
    result = launch(["info"])
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("distributed")]
    assert sorted(line.split("ring, ")[1].split(" on ")[0] for line in lines) == ["rank 0 of 2", "rank 1 of 2"]
    assert "mlx " in result.stdout  # rank 0 prints the rest
