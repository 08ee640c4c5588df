"""What the benchmarks share: where things are, peak memory, and the PyTorch twin of the default model."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEDMCQA = ROOT / "slearn_mlx" / "datasets" / "medmcqa" / "train.jsonl"  # the shipped 100 questions


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def torch_default_model(padding_side: str | None = None):
    """(torch, tokenizer, model): the default model's imported weights in PyTorch + transformers, float32, on
    every core: the same weights slearn runs, read from the same directory."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from slearn_mlx.models.store import default_model_path

    torch.set_num_threads(os.cpu_count() or 1)
    path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if padding_side:
        tokenizer.padding_side = padding_side
    return torch, tokenizer, LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)


def run_slearn(args: list[str], *, launcher: list[str] | None = None, env: dict | None = None) -> tuple[float, float]:
    """Run `slearn ARGS` in a child process (under `launcher`, e.g. mlx.launch, when given): (wall seconds, peak
    RSS in MB of the child, or of the launcher's largest rank); exit with its output if it failed."""
    start = time.perf_counter()
    quiet = ["--quiet"] if args[0] not in ("select", "info") else []  # no progress bars
    child = subprocess.Popen(
        [*(launcher or []), sys.executable, "-m", "slearn_mlx", *args, *quiet],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    output = child.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0 or "Error:" in output:
        sys.exit(f"slearn {' '.join(args)} failed:\n{output[-3000:]}")
    return wall, usage.ru_maxrss / 1024
