"""Training work that can be skipped: padding, and the frozen blocks' forward pass in every epoch.

- Padding: every batch is zero-padded to a multiple of `PAD_MULTIPLE` tokens (training/batches.py). A padding token costs the
  work of a real one (attention grows with the square of the width); each width not seen before costs a
  compilation of the training step. `padM` pads to multiples of M.
- The frozen blocks: the blocks below the trained ones compute the same for a pair in every epoch; `+once`
  computes them once per run (training/blocks.py), `+every` in every step (`TrainHooks(frozen_bytes=0)`).

Each variant trains the default model on the same pairs in its own process, the variants interleaved over the
repeats: the default training settings (LoRA rank 8 on 16 of 30 blocks, batch 4, float32) for `--epochs` passes
over the pairs `slearn select --all` writes for a QA file (the prompt as the model is asked, the reference after
the default lead). Timed: the whole `train_adapters` call, compilations and the frozen blocks' pass included,
model loading not. Prints per variant the median seconds, the time relative to the first variant, the tokens
the model read (padding included; the real ones in brackets), the distinct widths, and the last epoch's
training loss (the same training should end at the same loss).

    python bench/train_work.py --data /tmp/facts/capitals/train.jsonl \
        [--variants pad32+every,pad32+once,pad8+once] [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from variants import report, run_interleaved


def run(data: Path, variant: str, epochs: int) -> dict:
    import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)
    from slearn_mlx.data import load_items
    from slearn_mlx.models.load import load_model
    from slearn_mlx.prompts import PROBE_LEAD
    from slearn_mlx.select import chat_example
    from slearn_mlx.training.batches import make_batch
    from slearn_mlx.training.blocks import MAX_BYTES
    from slearn_mlx.training.config import TrainConfig
    from slearn_mlx.training.loop import TrainHooks, train_adapters

    padding, blocks = variant.split("+")
    pad_multiple = int(padding.removeprefix("pad"))
    widths, padded = set(), [0]

    def counted(*args):
        batch = make_batch(*args, pad_multiple=pad_multiple)
        widths.add(batch.tokens.shape[1])
        padded[0] += batch.tokens.shape[0] * (batch.tokens.shape[1] - 1)  # the model reads all but the last
        return batch

    hooks = TrainHooks(make_batch=counted, frozen_bytes=0 if blocks == "every" else MAX_BYTES)
    model, tokenizer = load_model(None)
    rows = [chat_example(item, lead=PROBE_LEAD) for item in load_items(data)]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "train"
        run_dir.mkdir()
        (run_dir / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        start = time.perf_counter()
        summary = train_adapters(
            model, tokenizer, run_dir, Path(tmp) / "adapters", TrainConfig(epochs=epochs), progress=False, hooks=hooks
        )
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "steps": summary.steps, "tokens": summary.n_seq_tokens, "padded": padded[0],
            "widths": sorted(widths), "loss": summary.train_loss}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a QA file (JSONL with question and answer)")
    parser.add_argument("--variants", default="pad32+every,pad32+once,pad8+once")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        report(run(args.data, args.variant, args.epochs))
        return
    names = args.variants.split(",")
    results = run_interleaved(
        __file__, names, ["--data", str(args.data), "--epochs", str(args.epochs)], args.repeats,
        lambda r: f"{r['seconds']:.1f} s, {r['steps']} steps, loss {r['loss']:.4f}, widths {r['widths']}",
    )  # fmt: skip
    first = statistics.median(r["seconds"] for r in results[names[0]])
    print(f"\n{args.data}, {args.epochs} epochs, {args.repeats} repeats (median seconds)\n")
    print(f"| variant | seconds | vs {names[0]} | tokens read (real) | widths | last epoch loss |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        runs = results[name]
        seconds = statistics.median(r["seconds"] for r in runs)
        r = runs[0]
        print(f"| {name} | {seconds:.1f} | {first / seconds:.2f}x faster | {r['padded']:,} "
              f"({r['tokens']:,}) | {len(r['widths'])} | {r['loss']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
