"""What each installed model costs on this machine, per stage: time, throughput and peak memory.

For each model, the stages run as the `slearn` commands a user runs, each in its own process, on the first N
shipped MedMCQA questions: answer (--max-tokens M), grade with the model judging itself (verdict), select --all,
train (--epochs 1, LoRA rank 8 on 16 layers, batch 4), evaluate (the same questions: base and adapted
answers, graded by the run's judge). Per stage: the seconds report.json gives (its own work, without start-up and loading), its
throughput (answer: items/s and generated tokens/s; train: tokens/s through the model; judge and
evaluate: items/s), the wall time of the
process and its peak resident memory.

    python bench/model_costs.py --model smollm2-135m --model qwen2.5-coder-0.5b --model qwen2.5-coder-1.5b \
        [--items 32] [--max-tokens 24]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from common import MEDMCQA, run_slearn


def costs(model: str, data: Path, out: Path, max_tokens: int) -> dict[str, dict]:
    common = ["--out", str(out)]
    commands = {
        "answer": ["answer", "--data", str(data), "--model", model, "--max-tokens", str(max_tokens), *common],
        "judge": ["grade", "--grader", "judge", *common],
        "select": ["select", "--all", *common],
        "train": ["train", "--epochs", "1", *common],
        "evaluate": ["evaluate", "--test", str(data), *common],
    }
    figures = {}
    for stage, args in commands.items():
        wall, peak = run_slearn(args)
        report = json.loads((out / "report.json").read_text())
        seconds = report["seconds"]["grade" if stage == "judge" else stage]
        done = report["stages"]["grade" if stage == "judge" else stage]
        rate = {
            "answer": (done.get("n_tokens", 0), "tok/s"),
            "judge": (done.get("n_items", 0), "items/s"),
            "train": (done.get("n_seq_tokens", 0), "tok/s"),
            "evaluate": (2 * done.get("n_test", 0), "items/s"),
        }.get(stage)
        figures[stage] = {"seconds": seconds, "wall": wall, "peak_mb": peak}
        if rate:
            figures[stage]["rate"] = f"{rate[0] / seconds:.1f} {rate[1]}" if seconds else "-"
        if stage == "answer" and seconds:  # short answers: prompts, not generated tokens, take the time
            figures[stage]["rate"] = f"{done['n_items'] / seconds:.2f} items/s ({figures[stage]['rate']} generated)"
        print(f"{model} {stage}: {seconds:.1f} s, wall {wall:.1f} s, peak {peak:.0f} MB", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "qa.jsonl"
        data.write_text("".join(MEDMCQA.read_text().splitlines(keepends=True)[: args.items]))
        for model in args.model:
            results[model] = costs(model, data, Path(tmp) / model, args.max_tokens)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"  # fmt: skip
    print(f"\n{args.items} MedMCQA questions, {os.cpu_count()} cores ({cpu}), float32")
    print("| model | stage | seconds | throughput | process wall (s) | peak RSS (MB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for model, figures in results.items():
        for stage, f in figures.items():
            print(
                f"| {model} | {stage} | {f['seconds']:.1f} | {f.get('rate', '-')} | {f['wall']:.1f} | {f['peak_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
