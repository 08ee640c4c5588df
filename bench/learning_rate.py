"""Which Adam learning rates train a model: LoRA (rank 8, scale 20, 16 layers) on the first 64 pairs of a fact set.

Each rate trains 3 epochs of batch 4 (a seeded order, the same for every rate) on the pairs as `slearn select`
writes them (the lead "The correct answer is" before the reference), from the same initial LoRA weights.
Printed per rate: the mean training loss of the last epoch, the largest step loss, and the loss on the 64 pairs
after training. A rate that diverges ends with a loss far above where it started.

    python bench/learning_rate.py --model qwen2.5-coder-0.5b --data /tmp/facts/capitals/train.jsonl \
        [--rates 2e-4,1e-4,5e-5] [--clip 1.0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)


def main() -> None:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset

    from slearn_mlx.data import load_items
    from slearn_mlx.models.load import load_model
    from slearn_mlx.prompts import PROBE_LEAD
    from slearn_mlx.select import chat_example
    from slearn_mlx.training.batches import make_batch
    from slearn_mlx.training.config import TrainConfig
    from slearn_mlx.training.layers import add_trainable_layers, remove_adapters
    from slearn_mlx.training.loss import answer_loss, mean_loss
    from slearn_mlx.training.optim import build_optimizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rates", default="2e-4,1e-4,5e-5")
    parser.add_argument("--clip", type=float, default=None, help="also each rate with gradients clipped to this norm")
    parser.add_argument("--pairs", type=int, default=64)
    args = parser.parse_args()

    model, tokenizer = load_model(args.model)
    rows = [chat_example(item, lead=PROBE_LEAD) for item in load_items(args.data)[: args.pairs]]
    dataset = CacheDataset(ChatDataset(rows, tokenizer, mask_prompt=True))
    n = len(rows)
    configs = [(float(r), None) for r in args.rates.split(",")]
    configs += [(float(r), args.clip) for r in args.rates.split(",")] if args.clip else []
    print(f"{args.model}, {n} pairs of {args.data}, width {model.args.hidden_size}")
    print("| rate | clip | start loss | last epoch mean | largest step | end loss | seconds |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for rate, clip in configs:
        remove_adapters(model)
        config = TrainConfig(learning_rate=rate)
        mx.random.seed(0)
        add_trainable_layers(model, config)
        optimizer = build_optimizer(config, 3 * n // 4)
        optimizer.init(model.trainable_parameters())
        loss_and_grad = nn.value_and_grad(model, lambda m, *batch: answer_loss(m, *batch)[0])
        model.eval()
        start_loss = mean_loss(model, dataset, 4, 1024)
        model.train()
        rng, losses, start = np.random.default_rng(0), [], time.perf_counter()
        for _ in range(3):
            order = rng.permutation(n)
            for s in range(0, n, 4):
                loss, grad = loss_and_grad(model, *make_batch(dataset, [int(i) for i in order[s : s + 4]], 1024))
                if clip:
                    grad, _ = optim.clip_grad_norm(grad, clip)
                optimizer.update(model, grad)
                mx.eval(model.parameters(), optimizer.state)
                losses.append(loss.item())
        model.eval()
        end_loss = mean_loss(model, dataset, 4, 1024)
        last = np.mean(losses[-(n // 4) :])
        print(f"| {rate:g} | {clip or '-'} | {start_loss:.3f} | {last:.3f} | {max(losses):.2f} | {end_loss:.3f} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
