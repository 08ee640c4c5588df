"""Killing `slearn` with SIGKILL mid-run and checking that a rerun ends where an uninterrupted run does.

Shared by tests/test_kill.py (a handful of kills) and bench/kill_resume.py (50 and more).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from slearn_mlx.models.gguf import import_gguf

from tiny import write_tiny_gguf

STAGES = ("answer", "grade", "select", "train", "evaluate")
IGNORED = {"report.json", ".lock"}  # timings, and the lock's holder pid


def make_workspace(root: Path, n_items: int = 200) -> tuple[Path, Path]:
    """The tiny model, an arithmetic QA file of n_items and run.yaml under root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.yaml").write_text("train:\n  checkpoint_every: 2\n")
    write_tiny_gguf(root / "tiny.gguf")
    model = import_gguf(root / "tiny.gguf", root / "model", dtype="float32").path
    rng = random.Random(0)
    data = root / "qa.jsonl"
    with open(data, "w") as handle:
        for i in range(n_items):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            handle.write(json.dumps({"question": f"What is {a} plus {b}? Item {i}.", "answer": str(a + b)}) + "\n")
    return model, data


def reference_workspace(root: Path, n_items: int) -> tuple[Path, Path]:
    """`make_workspace`, and an uninterrupted run of `run_args` in root/reference to hold others against."""
    model, data = make_workspace(root, n_items)
    finish(run_args(model, data, root / "reference"))
    return model, data


def run_args(model: Path, data: Path, out: Path) -> list[str]:
    """`slearn run` with the judge grading (threshold near the tiny model's median score, so about half
    the items are wrong and training has work), checkpoints every 2 steps and an evaluation."""
    return [
        "run", "--data", str(data), "--test", str(data), "--model", str(model), "--out", str(out),
        "--grader", "judge", "--threshold", "0.75", "--max-tokens", "12", "--epochs", "2", "--num-layers", "2",
        "--batch-size", "2", "--config", str(data.parent / "run.yaml"), "--quiet",
    ]  # fmt: skip


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "slearn_mlx", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run to the end; fail loudly if it does not succeed."""
    result = subprocess.run(
        [sys.executable, "-m", "slearn_mlx", *args], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"slearn {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def kill_when(args: list[str], ready: Callable[[], bool], delay: float = 0.0, timeout: float = 600) -> bool:
    """Start slearn, SIGKILL it `delay` seconds after `ready()` turns true; False if it ended first."""
    process = start(args)
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.communicate()
            return False
        time.sleep(0.002)
    time.sleep(delay)
    if process.poll() is not None:
        process.communicate()
        return False
    process.send_signal(signal.SIGKILL)
    process.communicate()
    return True


def stage_reached(out: Path) -> str:
    """The stage an interrupted run was in, from what its report says was finished."""
    report = out / "report.json"
    if not report.exists():
        return "answer" if (out / "answers.jsonl").exists() else "start"
    try:
        done = json.loads(report.read_text()).get("stages", {})
    except ValueError:
        return "start"
    return next((stage for stage in STAGES if stage not in done), "done")


def compare_runs(expected: Path, got: Path) -> list[str]:
    """Files that differ between two run directories (bytes; report.json and .lock aside)."""

    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in IGNORED}

    names_expected, names_got = files(expected), files(got)
    problems = [f"missing {n}" for n in sorted(names_expected - names_got)]
    problems += [f"unexpected {n}" for n in sorted(names_got - names_expected)]
    for name in sorted(names_expected & names_got):
        if (expected / name).read_bytes() != (got / name).read_bytes():
            problems.append(f"differs {name}")
    for name in ("answers.jsonl", "grades.jsonl", "eval/base_answers.jsonl", "eval/adapted_grades.jsonl"):
        path = got / name
        if path.exists():
            ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
            if len(ids) != len(set(ids)):
                problems.append(f"duplicate ids in {name}")
    return problems


def exists(path: Path) -> Callable[[], bool]:
    return lambda: path.exists() and path.stat().st_size > 0
