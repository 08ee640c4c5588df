"""Stages on 2 ranks of mlx's ring backend against one process, on this machine; and a model of more machines.

Each configuration runs the same `slearn` stage commands on a fresh run directory: one process with every core
for BLAS, and `mlx.launch -n 2` ranks over loopback with one BLAS thread each (mlx's CPU backend runs its
non-matmul kernels on one thread, so a second rank can use the second core where BLAS threads cannot). Stage
times are those report.json records (rank 0's, model loading excluded). Printed side by side with their ratio.

Then, from the one-process training figures: the bytes a data-parallel step all-reduces (the trainable
parameters' gradients, float32) for LoRA rank 8 on 16 layers and on every layer, and the predicted training
speed-up for 2, 4 and 8 machines at 1, 10 and 40 Gb/s, with a ring all-reduce (each rank sends and receives
2 (N-1)/N of the bytes) and the measured step time split N ways. Answering and grading exchange only results.

    python bench/distributed.py [--model smollm2-135m] [--items 64] [--max-tokens 24] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)

from common import MEDMCQA, run_slearn

STAGES = ("answer", "grade", "select", "train", "evaluate")


def stage_commands(model: str, data: Path, out: Path, max_tokens: int, epochs: int) -> dict[str, list[str]]:
    common = ["--out", str(out), "--quiet"]
    return {
        "answer": ["answer", "--data", str(data), "--model", model, "--max-tokens", str(max_tokens), *common],
        "grade": ["grade", "--grader", "judge", *common],
        "select": ["select", "--out", str(out), "--all"],
        "train": ["train", "--epochs", str(epochs), *common],
        "evaluate": ["evaluate", "--test", str(data), *common],
    }


def run_stages(commands: dict[str, list[str]], out: Path, ranks: int) -> dict[str, float]:
    """Every stage command in turn: the seconds report.json gives each, and each command's wall time."""
    launcher = None if ranks == 1 else ["mlx.launch", "-n", str(ranks), "--backend", "ring", "--"]
    env = None if ranks == 1 else os.environ | {"OPENBLAS_NUM_THREADS": "1"}
    walls = {stage: run_slearn(args, launcher=launcher, env=env)[0] for stage, args in commands.items()}
    report = json.loads((out / "report.json").read_text())
    return {stage: float(report["seconds"][stage]) for stage in STAGES} | {
        f"{stage} wall": walls[stage] for stage in STAGES
    }


def lora_gradient_bytes(model_name: str, num_layers: int) -> tuple[int, int]:
    """(trainable parameters, bytes of their float32 gradients) for LoRA rank 8 on `num_layers` blocks (-1: all)."""
    from mlx.utils import tree_flatten

    from slearn_mlx.models.load import load_model
    from slearn_mlx.training.config import TrainConfig
    from slearn_mlx.training.layers import add_trainable_layers

    model, _ = load_model(model_name)
    layers = len(model.layers) if num_layers < 0 else num_layers
    add_trainable_layers(model, TrainConfig(num_layers=layers))
    n = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    return n, 4 * n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "qa.jsonl"
        data.write_text("".join(MEDMCQA.read_text().splitlines(keepends=True)[: args.items]))
        results = {}
        for ranks in (1, 2):
            out = Path(tmp) / f"ranks{ranks}"
            results[ranks] = run_stages(stage_commands(args.model, data, out, args.max_tokens, args.epochs), out, ranks)
        train = json.loads((Path(tmp) / "ranks1" / "report.json").read_text())["stages"]["train"]

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"  # fmt: skip
    print(f"{args.model}, {args.items} MedMCQA items, {os.cpu_count()} cores ({cpu})")
    print(f"{'stage':18} {'1 process (s)':>14} {'2 ranks (s)':>12} {'speed-up':>9}")
    for key in results[1]:
        one, two = results[1][key], results[2][key]
        print(f"{key:18} {one:14.1f} {two:12.1f} {one / two:8.2f}x")

    step_seconds = train["seconds"] / max(train["steps"], 1)
    print(f"\none-process training step: {step_seconds:.3f} s ({train['steps']} steps of batch 4)")
    print("predicted data-parallel speed-up (ring all-reduce of float32 gradients, step time split N ways):")
    print(f"{'LoRA':22} {'params':>10} {'MB/step':>8} " + " ".join(f"{f'N={n} @{g}Gb/s':>13}" for n in (2, 4, 8)
                                                                   for g in (1, 10, 40)))  # fmt: skip
    for label, layers in (("rank 8, 16 layers", 16), ("rank 8, all layers", -1)):
        n_params, n_bytes = lora_gradient_bytes(args.model, layers)
        cells = []
        for n in (2, 4, 8):
            for gbps in (1, 10, 40):
                comm = 2 * (n - 1) / n * n_bytes * 8 / (gbps * 1e9)
                cells.append(f"{step_seconds / (step_seconds / n + comm):12.2f}x")
        print(f"{label:22} {n_params:10,} {n_bytes / 1e6:8.1f} " + " ".join(cells))


if __name__ == "__main__":
    main()
