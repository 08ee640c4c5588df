"""Which weight dtype and which BLAS are fast on this machine, measured in one run.

For each dtype (float32, bfloat16, 4-bit) of the default model, measures
  - answering: batched greedy generation (mlx-lm batch_generate), generated tokens/s;
  - grading: one batched forward pass over judge-length prompts, prompts/s;
  - training: LoRA steps (our train loop), processed tokens/s;
each as the median of several repeats, then prints ratios against float32.
With --blas both, the same runs go once with OpenBLAS loaded and once with mlx's
bundled BLAS (SLEARN_BLAS=bundled), each in its own process, and the BLAS
ratios are printed too.

    python bench/dtype_blas.py --blas both --bundled-dtypes float32 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUESTIONS = [
    "What is the capital of France?",
    "Which vitamin is required for glycogen phosphorylase?",
    "Name the largest organ of the human body.",
    "What does the mitral valve separate?",
    "Which drug class does atorvastatin belong to?",
    "What is the normal range of adult resting heart rate?",
    "Which nerve supplies the diaphragm?",
    "What is the antidote for paracetamol poisoning?",
]


def measure(dtype: str, repeats: int) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.generate import batch_generate

    import slearn_mlx  # noqa: F401  (BLAS preload before mlx)
    from slearn_mlx.answer import encode_chat
    from slearn_mlx.judge import yes_probabilities
    from slearn_mlx.models.load import load_model
    from slearn_mlx.models.store import default_model_path
    from slearn_mlx.records import QAItem
    from slearn_mlx.select import chat_example
    from slearn_mlx.training.config import TrainConfig
    from slearn_mlx.training.loop import train_adapters

    path = default_model_path() if dtype != "q4" else Path(os.environ["BENCH_Q4_MODEL"])
    model, tokenizer = load_model(str(path))
    if dtype == "bfloat16":
        model.update(tree_map(lambda p: p.astype(mx.bfloat16), model.parameters()))
    prompts = [encode_chat(tokenizer, q) for q in QUESTIONS]

    def timed(fn):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times), out

    batch_generate(model, tokenizer, prompts[:2], max_tokens=2)  # warm-up
    gen_s, response = timed(lambda: batch_generate(model, tokenizer, prompts, max_tokens=16))
    gen_tokens = response.stats.generation_tokens
    judge_prompts = [p * 3 for p in prompts]  # judge prompts are ~3x a question's length
    yes_probabilities(model, tokenizer, judge_prompts[:2])
    grade_s, _ = timed(lambda: yes_probabilities(model, tokenizer, judge_prompts))

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        train_dir = Path(tmp) / "train"
        train_dir.mkdir()
        rows = [chat_example(QAItem(str(i), q, "A short reference answer.")) for i, q in enumerate(QUESTIONS[:4])]
        (train_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        config = TrainConfig(epochs=1, batch_size=4, num_layers=16)
        train_adapters(model, tokenizer, train_dir, Path(tmp) / "warm", config, progress=False)
        from mlx_lm.tuner.utils import remove_lora_layers

        def one_epoch():
            remove_lora_layers(model)
            return train_adapters(model, tokenizer, train_dir, Path(tmp) / "a", config, progress=False)

        train_s, summary = timed(one_epoch)
        seq_tokens = summary.n_seq_tokens
    return {
        "dtype": dtype,
        "generate_tok_s": gen_tokens / gen_s,
        "grade_prompts_s": len(judge_prompts) / grade_s,
        "train_tok_s": seq_tokens / train_s,
    }


def run_child(dtype: str, blas: str, repeats: int) -> dict:
    env = dict(os.environ)
    if blas == "bundled":
        env["SLEARN_BLAS"] = "bundled"
    out = subprocess.run(
        [sys.executable, __file__, "--child", dtype, "--repeats", str(repeats)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blas", choices=["openblas", "bundled", "both"], default="openblas")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--bundled-dtypes", default="float32,bfloat16,q4",
        help="dtypes to measure with the bundled BLAS (bf16 and 4-bit take tens of minutes there)",
    )  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeats)))
        return

    import tempfile

    from slearn_mlx.models.fetch import download_default_gguf
    from slearn_mlx.models.gguf import import_gguf

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BENCH_Q4_MODEL"] = str(import_gguf(download_default_gguf(tmp), Path(tmp) / "q4", dtype="q4").path)
        blases = ["openblas", "bundled"] if args.blas == "both" else [args.blas]
        rows = {}
        for blas in blases:
            dtypes = args.bundled_dtypes.split(",") if blas == "bundled" else ["float32", "bfloat16", "q4"]
            for dtype in dtypes:
                rows[(blas, dtype)] = run_child(dtype, blas, args.repeats)
                print(f"measured {blas} {dtype}: {json.dumps(rows[(blas, dtype)])}", file=sys.stderr, flush=True)

    metrics = ("generate_tok_s", "grade_prompts_s", "train_tok_s")
    print(
        f"{'blas':9} {'dtype':9} " + " ".join(f"{m:>16}" for m in metrics) + "   ratios vs float32 (same BLAS)",
        flush=True,
    )
    for (blas, dtype), row in rows.items():
        base = rows[(blas, "float32")]
        ratios = " ".join(f"{row[m] / base[m]:5.2f}x" for m in metrics)
        print(f"{blas:9} {dtype:9} " + " ".join(f"{row[m]:16.1f}" for m in metrics) + f"   {ratios}")
    if args.blas == "both":
        print("\nOpenBLAS / bundled BLAS, same dtype:")
        for dtype in args.bundled_dtypes.split(","):
            a, b = rows[("openblas", dtype)], rows[("bundled", dtype)]
            print(f"  {dtype:9} " + "  ".join(f"{m} {a[m] / b[m]:5.2f}x" for m in metrics))


if __name__ == "__main__":
    main()
