"""Answering speed: slearn's answer stage against what a user would otherwise run.

The same model (the default SmolLM2-135M-Instruct, float32 weights), the same N
questions (the shipped MedMCQA items, through the same chat prompt), greedy
decoding, the same `--max-tokens`, each answer stopping at the end-of-turn token:
  - slearn: the answer stage (batches of 16 sorted by length, the shared prompt
    prefix computed once);
  - slearn-mlx-kernels: the same with SLEARN_KERNELS=mlx (mlx-lm's own SwiGLU);
  - mlx_lm.generate: mlx_lm.load, then one question at a time, the usual loop;
  - torch: PyTorch + transformers `generate` on the CPU at the same batch size,
    left-padded, 2 threads, the same weights read from the same directory.
Each variant runs in its own process (OpenBLAS loaded for the mlx ones), the
variants interleaved over the repeats. Prints items/s and generated tokens/s
(medians) and slearn's ratio to each.

    python bench/answering.py [--items 48] [--max-tokens 24] [--batch-size 16] [--repeats 3]

Needs torch for its column: `pip install torch==2.13.0`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import MEDMCQA, torch_default_model
from variants import report, run_interleaved

DATA = MEDMCQA


def questions(n: int):
    import slearn_mlx  # noqa: F401
    from slearn_mlx.data import load_items

    return load_items(DATA)[:n]


def run_slearn(n: int, max_tokens: int, batch_size: int) -> dict:
    from slearn_mlx.answer import AnswerConfig, answer_items
    from slearn_mlx.models.load import load_model

    model, tokenizer = load_model(None)
    items = questions(n)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = answer_items(
            model, tokenizer, items, Path(tmp) / "a.jsonl",
            AnswerConfig(max_tokens=max_tokens, batch_size=batch_size), progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": summary.n_tokens}


def run_mlx_lm(n: int, max_tokens: int, batch_size: int) -> dict:
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    from slearn_mlx.answer import encode_chat, question_text
    from slearn_mlx.models.store import default_model_path

    model, tokenizer = load(str(default_model_path()))
    prompts = [encode_chat(tokenizer, question_text(item)) for item in questions(n)]
    sampler = make_sampler(temp=0.0)
    tokens = 0
    start = time.perf_counter()
    for prompt in prompts:
        for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens, sampler=sampler):
            pass
        tokens += response.generation_tokens - (response.finish_reason == "stop")
    return {"seconds": time.perf_counter() - start, "tokens": tokens}


def run_torch(n: int, max_tokens: int, batch_size: int) -> dict:
    from slearn_mlx.answer import question_text

    torch, tokenizer, model = torch_default_model(padding_side="left")
    model.eval()
    items = questions(n)
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": question_text(item)}], add_generation_prompt=True,
                                      tokenize=False)
        for item in items
    ]  # fmt: skip
    texts.sort(key=len)  # similar lengths together, as slearn batches them
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**batch, max_new_tokens=max_tokens, do_sample=False, eos_token_id=eos,
                                 pad_token_id=pad)  # fmt: skip
            for row in out[:, batch["input_ids"].shape[1] :].tolist():
                tokens += next((k for k, t in enumerate(row) if t == eos), len(row))
    return {"seconds": time.perf_counter() - start, "tokens": tokens}


def run_slearn_mlx_kernels(n: int, max_tokens: int, batch_size: int) -> dict:
    os.environ["SLEARN_KERNELS"] = "mlx"
    return run_slearn(n, max_tokens, batch_size)


VARIANTS = {
    "slearn": run_slearn,
    "slearn-mlx-kernels": run_slearn_mlx_kernels,
    "mlx_lm.generate": run_mlx_lm,
    "torch": run_torch,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.variant:
        import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)

        report(VARIANTS[opts.variant](opts.items, opts.max_tokens, opts.batch_size))
        return 0

    args = ["--items", str(opts.items), "--max-tokens", str(opts.max_tokens), "--batch-size", str(opts.batch_size)]
    results = run_interleaved(
        __file__, list(VARIANTS), args, opts.repeats, lambda r: f"{r['tokens']} tokens in {r['seconds']:.1f} s"
    )

    print(f"\n{opts.items} questions, max {opts.max_tokens} tokens, batch {opts.batch_size}, "
          f"{opts.repeats} repeats (median)")  # fmt: skip
    items_s = {name: statistics.median(opts.items / r["seconds"] for r in runs) for name, runs in results.items()}
    tok_s = {name: statistics.median(r["tokens"] / r["seconds"] for r in runs) for name, runs in results.items()}
    print(f"{'':18s} {'items/s':>8s} {'gen tok/s':>10s} {'slearn is (items/s)':>20s}")
    for name in VARIANTS:
        print(f"{name:18s} {items_s[name]:8.2f} {tok_s[name]:10.1f} {items_s['slearn'] / items_s[name]:19.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
