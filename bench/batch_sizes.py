"""Batch size of the answer stage and of the judge's verdict pass: speed and peak memory.

The default model answers N shipped MedMCQA questions (max 24 tokens) and judges
its answers (verdict mode) at each batch size; the results do not depend on the
batch size (greedy decoding, one forward pass per prompt), only the time does.
Each (stage, batch size) runs in its own process, interleaved over the repeats.
Prints items/s (median), peak resident memory, and the speed relative to batch
16 (the defaults: answer 32, judge 16).

    python bench/batch_sizes.py [--items 64] [--sizes 8,16,32,64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import MEDMCQA, peak_rss_mb
from variants import report, run_interleaved

DATA = MEDMCQA


def run(stage: str, batch: int, n: int, answers: Path) -> dict:
    from slearn_mlx.answer import AnswerConfig, answer_items
    from slearn_mlx.data import load_items
    from slearn_mlx.grade import GradeConfig, grade_answers
    from slearn_mlx.judge import Judge
    from slearn_mlx.models.load import load_model
    from slearn_mlx.records import Answer
    from slearn_mlx.runs import read_records

    model, tokenizer = load_model(None)
    items = load_items(DATA)[:n]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if stage == "answer":
            out = answers if not answers.exists() else Path(tmp) / "a.jsonl"
            answer_items(model, tokenizer, items, out, AnswerConfig(max_tokens=24, batch_size=batch), progress=False)
        else:
            grade_answers(
                items, read_records(answers, Answer), Path(tmp) / "g.jsonl",
                GradeConfig(grader="judge", batch_size=batch), judge=Judge(model, tokenizer), progress=False,
            )  # fmt: skip
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": peak_rss_mb()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--sizes", default="8,16,32,64")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--answers", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.variant:
        import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)

        stage, batch = opts.variant.split(":")
        report(run(stage, int(batch), opts.items, opts.answers))
        return 0

    sizes = [int(s) for s in opts.sizes.split(",")]
    names = [f"{stage}:{size}" for stage in ("answer", "judge") for size in sizes]
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--items", str(opts.items), "--answers", str(Path(tmp) / "answers.jsonl")]
        results = run_interleaved(
            __file__, names, args, opts.repeats, lambda r: f"{r['seconds']:6.1f} s, peak {r['peak_mb']:.0f} MB"
        )

    print(f"\n{opts.items} MedMCQA items, {opts.repeats} repeats (median)")
    print(f"{'stage':8s} {'batch':>6s} {'items/s':>8s} {'peak MB':>8s} {'vs 16':>6s}")
    for stage in ("answer", "judge"):
        rate = {s: statistics.median(opts.items / r["seconds"] for r in results[f"{stage}:{s}"]) for s in sizes}
        for size in sizes:
            peak = statistics.median(r["peak_mb"] for r in results[f"{stage}:{size}"])
            base = rate.get(16)
            versus = f"{rate[size] / base:5.2f}x" if base else "-"
            print(f"{stage:8s} {size:6d} {rate[size]:8.2f} {peak:8.0f} {versus:>6s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
