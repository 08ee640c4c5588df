"""Stage 4: LoRA fine-tuning on the selected pairs, through mlx_lm.tuner.

The LoRA layers, the chat dataset (prompt masked: the loss is on the answer
only) and the loss are mlx-lm's own; the loop is ours so that it runs whole
epochs (every pair once per epoch, a last batch smaller than the rest
included), reports progress on stderr and logs losses to the run directory.
Adapters are saved in mlx-lm's format: `adapter_config.json` +
`adapters.safetensors`, which `mlx_lm.generate --adapter-path` and
`mlx_lm.fuse` load unchanged. Quantized models train as QLoRA.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from slearn_mlx.progress import progress_bar
from slearn_mlx.runs import write_json_atomic

ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class TrainConfig:
    epochs: int = 3  # passes over the selected pairs
    batch_size: int = 4  # pairs per optimizer step (fewer pairs than this train as one smaller batch)
    learning_rate: float = 2e-4  # Adam step size
    rank: int = 8  # LoRA rank
    num_layers: int = 16  # transformer blocks that get LoRA, counted from the top
    scale: float = 20.0  # LoRA scale (mlx-lm's name for alpha / rank)
    dropout: float = 0.0  # LoRA dropout
    max_seq_length: int = 1024  # longer examples are truncated
    seed: int = 0  # batch order

    def problems(self) -> list[str]:
        out = []
        for name in ("epochs", "batch_size", "rank", "num_layers", "max_seq_length"):
            if getattr(self, name) < 1:
                out.append(f"train.{name} must be at least 1")
        if self.learning_rate <= 0:
            out.append("train.learning_rate must be positive")
        if not 0.0 <= self.dropout < 1.0:
            out.append("train.dropout must be in [0, 1)")
        return out


@dataclass(frozen=True)
class TrainSummary:
    n_examples: int
    epochs: int
    steps: int
    n_tokens: int  # answer tokens the loss was computed on
    n_seq_tokens: int  # every token that went through the model (prompts and answers)
    seconds: float
    train_loss: float | None
    val_loss: float | None
    skipped: str | None = None

    @classmethod
    def skip(cls, reason: str) -> "TrainSummary":
        """A stage that trained nothing, and why."""
        return cls(0, 0, 0, 0, 0, 0.0, None, None, skipped=reason)

    def __str__(self) -> str:
        if self.skipped:
            return self.skipped
        rate = self.n_seq_tokens / self.seconds if self.seconds else 0.0
        val = f", valid loss {self.val_loss:.3f}" if self.val_loss is not None else ""
        return (
            f"trained on {self.n_examples} pairs: {self.epochs} epochs, {self.steps} steps, "
            f"train loss {self.train_loss:.3f}{val}, in {self.seconds:.1f} s ({rate:.0f} tok/s)"
        )


def read_chat_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def iterate_batches(dataset, batch_size: int, max_seq_length: int, rng: np.random.Generator | None = None):
    """Every example once, in batches of at most `batch_size`, as (tokens, [offset, length]) pairs.

    Shuffled when `rng` is given; examples of similar length share a batch so
    padding stays small. Sequences are padded to a multiple of 32 so the
    compiled step sees few distinct shapes.
    """
    import mlx.core as mx

    order = rng.permutation(len(dataset)) if rng is not None else np.arange(len(dataset))
    window = batch_size * 8
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: len(dataset[i][0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    for batch in batches:
        examples = [dataset[i] for i in batch]
        lengths = [min(len(tokens), max_seq_length) for tokens, _ in examples]
        width = min(32 * math.ceil((max(lengths) + 1) / 32), max_seq_length)
        array = np.zeros((len(batch), width), np.int32)
        for row, ((tokens, _), n) in enumerate(zip(examples, lengths)):
            array[row, :n] = tokens[:n]
        bounds = [(offset, n) for (_, offset), n in zip(examples, lengths)]
        yield mx.array(array), mx.array(bounds)


def add_lora_layers(model, config: TrainConfig) -> int:
    """Freeze the model and put LoRA on its top `num_layers` blocks; returns the block count used."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    num_layers = min(config.num_layers, len(model.layers))
    model.freeze()
    linear_to_lora_layers(model, num_layers, {"rank": config.rank, "scale": config.scale, "dropout": config.dropout})
    return num_layers


def file_sha1(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha1(handle.read()).hexdigest()


def adapter_config(config: TrainConfig, num_layers: int, model_name: str | None, data_sha1: str) -> dict:
    """adapter_config.json as mlx-lm writes it (the keys its load_adapters and fuse read),
    plus the hash of the training file the adapters were trained on."""
    return {
        "model": model_name,
        "data_sha1": data_sha1,
        "fine_tune_type": "lora",
        "num_layers": num_layers,
        "lora_parameters": {"rank": config.rank, "scale": config.scale, "dropout": config.dropout},
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "epochs": config.epochs,
        "max_seq_length": config.max_seq_length,
        "mask_prompt": True,
        "seed": config.seed,
    }


def _mean_loss(model, dataset, batch_size: int, max_seq_length: int) -> float:
    import mlx.core as mx
    from mlx_lm.tuner.trainer import default_loss

    total, count = mx.array(0.0), mx.array(0)
    for tokens, bounds in iterate_batches(dataset, batch_size, max_seq_length):
        loss, n = default_loss(model, tokens, bounds)
        total, count = total + loss * n, count + n
        mx.eval(total, count)
    return (total / count).item()


def train_adapters(
    model,
    tokenizer,
    train_dir: Path,
    adapter_dir: Path,
    config: TrainConfig = TrainConfig(),
    *,
    model_name: str | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Train LoRA adapters on train_dir/train.jsonl and save them to adapter_dir.

    Losses go to train_dir/losses.jsonl, one line per epoch. An empty selection
    returns a summary saying so and writes no adapters.
    """
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.trainer import default_loss

    start = time.perf_counter()
    train_path = train_dir / "train.jsonl"
    if not train_path.exists():
        raise FileNotFoundError(f"train.jsonl not found in {train_dir}; run `slearn select` first")
    rows = read_chat_rows(train_path)
    if not rows:
        return TrainSummary.skip("nothing to train: no wrongly answered pairs")
    valid_rows = read_chat_rows(train_dir / "valid.jsonl")
    train_set = CacheDataset(ChatDataset(rows, tokenizer, mask_prompt=True))
    valid_set = CacheDataset(ChatDataset(valid_rows, tokenizer, mask_prompt=True)) if valid_rows else None

    mx.random.seed(config.seed)
    num_layers = add_lora_layers(model, config)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    settings = adapter_config(config, num_layers, model_name, file_sha1(train_path))
    write_json_atomic(adapter_dir / ADAPTER_CONFIG, settings)

    optimizer = optim.Adam(learning_rate=config.learning_rate)
    loss_and_grad = nn.value_and_grad(model, default_loss)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens, bounds):
        (loss, n_tokens), grad = loss_and_grad(model, tokens, bounds)
        optimizer.update(model, grad)
        return loss, n_tokens

    batch_size = min(config.batch_size, len(rows))
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    rng = np.random.default_rng(config.seed)
    loss_log = train_dir / "losses.jsonl"
    loss_log.unlink(missing_ok=True)
    steps, total_tokens, seq_tokens, train_loss, val_loss = 0, 0, 0, None, None
    model.train()
    with progress_bar(config.epochs * steps_per_epoch, "train", progress) as bar, open(loss_log, "a") as log:
        for epoch in range(1, config.epochs + 1):
            epoch_loss, epoch_tokens = mx.array(0.0), mx.array(0)
            for tokens, bounds in iterate_batches(train_set, batch_size, config.max_seq_length, rng):
                loss, n_tokens = step(tokens, bounds)
                epoch_loss, epoch_tokens = epoch_loss + loss * n_tokens, epoch_tokens + n_tokens
                mx.eval(state, epoch_loss, epoch_tokens)
                seq_tokens += int(bounds[:, 1].sum().item())
                steps += 1
                bar.update(1)
            total_tokens += epoch_tokens.item()
            train_loss = (epoch_loss / epoch_tokens).item()
            if valid_set is not None:
                model.eval()
                val_loss = _mean_loss(model, valid_set, batch_size, config.max_seq_length)
                model.train()
            bar.set_postfix(loss=f"{train_loss:.3f}")
            log.write(
                json.dumps({"epoch": epoch, "step": steps, "train_loss": train_loss, "val_loss": val_loss}) + "\n"
            )
            log.flush()
    model.eval()

    # Written last and atomically: an adapters file present means training finished.
    weights = dict(tree_flatten(model.trainable_parameters()))
    tmp = adapter_dir / f".partial.{ADAPTER_FILE}"
    mx.save_safetensors(str(tmp), weights)
    os.replace(tmp, adapter_dir / ADAPTER_FILE)
    return TrainSummary(
        len(rows), config.epochs, steps, int(total_tokens), seq_tokens, time.perf_counter() - start,
        train_loss, val_loss,
    )  # fmt: skip
