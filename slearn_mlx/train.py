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

import json
import math
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from slearn_mlx import distributed
from slearn_mlx.adapters import (
    ADAPTER_CONFIG,
    FINE_TUNE_TYPES,
    OPTIMIZERS,
    SCHEDULES,
    BaseWeights,
    add_trainable_layers,
    build_optimizer,
    schedule_config,
)
from slearn_mlx.checkpoint import (
    TrainState,
    adapter_config,
    load_checkpoint,
    save_checkpoint,
    training_key,
    write_adapters,
)
from slearn_mlx.errors import ConfigError, MissingInput
from slearn_mlx.frozen import FrozenStart
from slearn_mlx.progress import progress_bar
from slearn_mlx.retention import AnchorTargets, anchor_indices, lead_tokens, mixed_batch, mixed_loss
from slearn_mlx.runs import (
    ANCHORS_FILE,
    CHECKPOINT_FILE,
    LOSSES_FILE,
    TRAIN_FILE,
    VALID_FILE,
    write_json_atomic,
    write_jsonl_atomic,
)


@dataclass
class TrainConfig:
    epochs: int = 3  # passes over the selected pairs
    batch_size: int = 4  # pairs per optimizer step (fewer pairs than this train as one smaller batch)
    learning_rate: float | None = None  # Adam step size; None: by the model's width (auto_learning_rate)
    fine_tune_type: str = "lora"  # lora | dora | full: adapters on the linear layers, or every weight of the blocks
    rank: int = 8  # LoRA rank
    num_layers: int = 16  # transformer blocks that train, counted from the top
    lora_modules: str | None = None  # linear modules that get LoRA, e.g. "q_proj,v_proj"; None: all of them
    scale: float = 20.0  # LoRA scale (mlx-lm's name for alpha / rank)
    dropout: float = 0.0  # LoRA dropout
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    lr_schedule: str = "constant"  # constant | cosine | linear (decay to 0 after the warm-up)
    warmup: int = 0  # optimizer updates over which the learning rate rises from 0
    grad_accumulation: int = 1  # batches whose gradients are summed into one optimizer update
    grad_checkpoint: bool = False  # recompute each block's activations in the backward pass: less memory, slower
    skip_learned: bool = False  # after the first epoch, leave out pairs the model already writes word for word
    max_seq_length: int = 1024  # longer examples are truncated
    seed: int = 0  # batch order
    patience: int = 0  # stop after this many epochs without a lower validation loss; 0 never stops early
    kl: float = 0.0  # weight of KL(base || adapted) on the anchor pairs (train/anchors.jsonl); 0 leaves them out
    kl_batch: int = 1  # anchor pairs read per optimizer step for the KL term
    checkpoint_every: int = 10  # steps between checkpoints (one is also written at every epoch's end)

    def problems(self) -> list[str]:
        out = []
        names = ("epochs", "batch_size", "rank", "num_layers", "max_seq_length", "checkpoint_every", "kl_batch",
                 "grad_accumulation")  # fmt: skip
        for name in names:
            if getattr(self, name) < 1:
                out.append(f"train.{name} must be at least 1")
        if self.patience < 0:
            out.append("train.patience must not be negative")
        if self.kl < 0:
            out.append("train.kl must not be negative")
        for name, choices in (
            ("fine_tune_type", FINE_TUNE_TYPES),
            ("optimizer", OPTIMIZERS),
            ("lr_schedule", SCHEDULES),
        ):
            if getattr(self, name) not in choices:
                out.append(f"train.{name} must be one of {', '.join(choices)}, not {getattr(self, name)!r}")
        if self.warmup < 0:
            out.append("train.warmup must not be negative")
        if self.weight_decay < 0:
            out.append("train.weight_decay must not be negative")
        if self.learning_rate is not None and self.learning_rate <= 0:
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
    val_loss: float | None  # of the adapters kept: the best epoch's when there is a validation set
    best_epoch: int | None = None
    resumed_at_step: int = 0  # 0 when training started from scratch
    skipped: str | None = None
    longest: int = 0  # tokens in the longest pair, after max_seq_length: what peak memory grows with

    @classmethod
    def skip(cls, reason: str) -> "TrainSummary":
        """A stage that trained nothing, and why."""
        return cls(
            n_examples=0, epochs=0, steps=0, n_tokens=0, n_seq_tokens=0, seconds=0.0, train_loss=None,
            val_loss=None, skipped=reason,
        )  # fmt: skip

    def __str__(self) -> str:
        if self.skipped:
            return self.skipped
        rate = self.n_seq_tokens / self.seconds if self.seconds else 0.0
        val = f", valid loss {self.val_loss:.3f} (epoch {self.best_epoch} kept)" if self.val_loss is not None else ""
        resumed = f", resumed at step {self.resumed_at_step}" if self.resumed_at_step else ""
        return (
            f"trained on {self.n_examples} pairs: {self.epochs} epochs, {self.steps} steps{resumed}, "
            f"train loss {self.train_loss:.3f}{val}, in {self.seconds:.1f} s ({rate:.0f} tok/s)"
        )


# The widest model the rate stays at its most, and the floor (mlx-lm's own default rate).
_LR_MAX, _LR_WIDTH, _LR_MIN = 2e-4, 576, 1e-5


def auto_learning_rate(model) -> float:
    """The default Adam rate for LoRA at scale 20 on `model`: 2e-4 up to SmolLM2-135M's width (576), then falling
    with the cube of the width, down to 1e-5. Measured (BENCHMARKS.md, "Learning rate by model width"): 2e-4
    trains SmolLM2 well and makes Qwen2.5-0.5B (896) diverge, where 5e-5 trains it well; the rule gives 5.3e-5."""
    args = getattr(model, "args", None)
    width = getattr(args, "hidden_size", None) or _LR_WIDTH
    return float(min(_LR_MAX, max(_LR_MIN, _LR_MAX * (_LR_WIDTH / width) ** 3)))


def pair_epochs(rows: list[dict], epochs: int, seed: int) -> list[set[int]]:
    """The epochs each pair trains in: all of them, or, for a row that says `"epochs": k` (select --rehearse),
    k consecutive ones, the rows spread evenly over the epochs in a seeded order."""
    every = set(range(1, epochs + 1))
    fewer = [i for i, row in enumerate(rows) if _epochs_field(row, epochs) < epochs]
    out = [every for _ in rows]
    for rank, i in enumerate(np.random.default_rng([seed, 104729]).permutation(fewer) if fewer else []):
        k = _epochs_field(rows[i], epochs)
        out[i] = {(rank + j) % epochs + 1 for j in range(k)}
    return out


def _epochs_field(row: dict, epochs: int) -> int:
    k = row.get("epochs", epochs)
    return k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else epochs


def read_chat_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def batch_order(
    dataset, batch_size: int, rng: np.random.Generator | None = None, pool: list[int] | None = None
) -> list[list[int]]:
    """Every example (of `pool`, when given) once, in batches of at most `batch_size`, as lists of indices.

    Shuffled when `rng` is given; examples of similar length share a batch so
    padding stays small.
    """
    pool = np.arange(len(dataset)) if pool is None else np.array(pool, dtype=np.int64)
    order = pool[rng.permutation(len(pool))] if rng is not None else pool
    window = batch_size * 8
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: len(dataset[i][0]))
        batches += [[int(i) for i in chunk[j : j + batch_size]] for j in range(0, len(chunk), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


# Batches are zero-padded to a multiple of this many tokens: each new width costs a compilation of the step,
# each padding token the work of a real one: 8 measured fastest (BENCHMARKS.md, "Training: padding and the
# frozen blocks").
PAD_MULTIPLE = 8


class Batch(NamedTuple):
    tokens: Any  # (rows, width) token ids, zero-padded to a multiple of PAD_MULTIPLE
    bounds: Any  # (rows, 2): [offset, length], the prompt's length and the example's, as mlx-lm's loss takes them
    positions: Any  # (rows, window): the positions whose next token is scored, i.e. the answer's
    scored: Any  # (rows, window): False where a row's window is only padding


def make_batch(dataset, indices: list[int], max_seq_length: int) -> Batch:
    """The examples at `indices` as one padded batch."""
    import mlx.core as mx

    examples = [dataset[i] for i in indices]
    lengths = [min(len(tokens), max_seq_length) for tokens, _ in examples]
    width = min(PAD_MULTIPLE * math.ceil((max(lengths) + 1) / PAD_MULTIPLE), max_seq_length)
    array = np.zeros((len(indices), width), np.int32)
    for row, ((tokens, _), n) in enumerate(zip(examples, lengths)):
        array[row, :n] = tokens[:n]
    bounds = [(offset, n) for (_, offset), n in zip(examples, lengths)]
    # The logits for target t come from position t - 1. The window is padded to a multiple of 8,
    # again for few shapes.
    spans = [scored_span(offset, n, width) for offset, n in bounds]
    counts = [max(last - first + 1, 0) for first, last in spans]
    window = 8 * max(1, math.ceil(max(counts) / 8))
    positions = np.zeros((len(indices), window), np.int32)
    scored = np.zeros((len(indices), window), bool)
    for row, ((first, _), count) in enumerate(zip(spans, counts)):
        positions[row, :count] = np.arange(first - 1, first - 1 + count)
        scored[row, :count] = True
    return Batch(mx.array(array), mx.array(bounds), mx.array(positions), mx.array(scored))


def scored_span(offset: int, length: int, width: int) -> tuple[int, int]:
    """First and last target scored in a row of `length` tokens whose answer starts at `offset`,
    in a batch `width` wide: mlx-lm's loss scores targets t with offset <= t <= length, t < width.
    Empty (first > last) when a prompt cut to max_seq_length leaves nothing to score."""
    return max(offset, 1), min(length, width - 1)


def scores_any_answer(dataset, max_seq_length: int) -> bool:
    """Whether some example, cut to max_seq_length, keeps an answer token to score.
    A batch is at most max_seq_length wide, so that is the widest row a cut example gets."""
    for i in range(len(dataset)):
        tokens, offset = dataset[i]
        first, last = scored_span(offset, min(len(tokens), max_seq_length), max_seq_length)
        if first <= last:
            return True
    return False


def _token_share(batch, has_rows: bool):
    """This rank's share of its batch's answer tokens (all ranks together: 1), as an array for the compiled step."""
    import mlx.core as mx

    if distributed.size() == 1:
        return mx.array(1.0)
    scored = batch.scored if isinstance(batch, Batch) else batch.ce_scored
    n_local = scored.sum() if has_rows else mx.array(0)
    with distributed.collective():
        n_total = distributed.all_sum(n_local)
        share = n_local.astype(mx.float32) / mx.maximum(n_total, 1).astype(mx.float32)
        mx.eval(share)
    return share


def _mastery(indices: list[int], mine: list[int], mastered: list[bool]) -> list[tuple[int, bool]]:
    """(pair, learned word for word) for every pair of the batch; in a distributed group the ranks tell each other
    theirs."""
    if distributed.size() == 1:
        return list(zip(indices, mastered))
    own = list(zip(mine, mastered)) if distributed.rank() < len(indices) else []
    return [(i, ok) for shard in distributed.exchange(own) for i, ok in shard]


def answer_logits(model, tokens, positions):
    """The logits that predict the answer tokens: the vocabulary projection is computed only at `positions`
    where the model's head allows it (most positions are prompt, and the projection is a large share of a
    small model's work per position)."""
    import mlx.core as mx

    from slearn_mlx.models import output_projection

    rows = mx.arange(tokens.shape[0])[:, None]
    project = output_projection(model)
    if project is None:
        return model(tokens[:, :-1])[rows, positions]
    return project(model.model(tokens[:, :-1])[rows, positions])


def answer_loss(model, tokens, bounds, positions, scored, *, mastery: bool = False):
    """mlx-lm's `default_loss`: mean cross-entropy over the answer tokens, prompt masked (`bounds` is what
    default_loss takes; `positions` and `scored` say the same per token). With `mastery`, also whether each
    row's every answer token is already the model's most likely one: the pair is learned word for word."""
    import mlx.core as mx
    import mlx.nn as nn

    logits = answer_logits(model, tokens, positions)
    targets = mx.take_along_axis(tokens, positions + 1, axis=1)
    ce = nn.losses.cross_entropy(logits, targets) * scored
    n_tokens = scored.sum()
    # A batch whose answers max_seq_length cut off entirely has loss and gradient 0, not 0/0.
    loss = ce.astype(mx.float32).sum() / mx.maximum(n_tokens, 1)
    if not mastery:
        return loss, n_tokens
    hit = (mx.argmax(logits, axis=-1) == targets) | ~scored
    return loss, n_tokens, mx.stop_gradient(hit.all(axis=1))


def mean_loss(model, dataset, batch_size: int, max_seq_length: int) -> float:
    """Mean loss per answer token over a dataset, without training; in a distributed group, batch i is read by
    rank i % N and the sums are added up."""
    import mlx.core as mx

    total, count = mx.array(0.0), mx.array(0)
    for i, indices in enumerate(batch_order(dataset, batch_size)):
        if i % distributed.size() != distributed.rank():
            continue
        loss, n = answer_loss(model, *make_batch(dataset, indices, max_seq_length))
        total, count = total + loss * n, count + n
        mx.eval(total, count)
    if distributed.size() > 1:
        with distributed.collective():
            total, count = distributed.all_sum(total), distributed.all_sum(count)
            mx.eval(total, count)
    return (total / count).item()


def _checkpoint_blocks(model):
    """Recompute each transformer block's activations in the backward pass instead of keeping them (as
    `mlx_lm.lora --grad-checkpoint`); returns what puts the blocks back as they were."""
    import mlx.core as mx

    block = type(model.layers[0])
    plain = block.__call__

    def checkpointed(layer, *args, **kwargs):
        def inner(params, *args, **kwargs):
            layer.update(params)
            return plain(layer, *args, **kwargs)

        return mx.checkpoint(inner)(layer.trainable_parameters(), *args, **kwargs)

    block.__call__ = checkpointed

    def restore() -> None:
        block.__call__ = plain

    return restore


def _restore(*restores: Callable[[], None] | None) -> None:
    """Take off what was put on the block class, the last first."""
    for restore in restores:
        if restore is not None:
            restore()


def train_adapters(
    model,
    tokenizer,
    train_dir: Path,
    adapter_dir: Path,
    config: TrainConfig = TrainConfig(),
    *,
    model_name: str | None = None,
    progress: bool = True,
    before_step: Callable[[int], bool] | None = None,
) -> TrainSummary:
    """Train LoRA adapters on train_dir/train.jsonl and save them to adapter_dir.

    Each epoch visits every pair once in a seeded order. With a validation file
    the adapters kept are those of the epoch with the lowest validation loss, and
    `patience` stops training once it stops improving. Every `checkpoint_every`
    steps and at each epoch's end, train_dir/checkpoint.safetensors is replaced;
    a later call with the same data and config continues from it and ends with
    the adapters an uninterrupted run would have. Losses go to
    train_dir/losses.jsonl, one line per epoch. An empty selection returns a
    summary saying so and writes no adapters. `before_step(n)` is called before
    each step with the steps this call has taken; True ends the call there, as a kill would.
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset

    train_path = train_dir / TRAIN_FILE
    if not train_path.exists():
        raise MissingInput(f"train.jsonl not found in {train_dir}; run `slearn select` first")
    rows = read_chat_rows(train_path)
    schedule = pair_epochs(rows, config.epochs, config.seed)
    if not rows:
        return TrainSummary.skip("nothing to train: no wrongly answered pairs")
    valid_rows = read_chat_rows(train_dir / VALID_FILE)
    train_set = CacheDataset(ChatDataset(rows, tokenizer, mask_prompt=True))
    valid_set = CacheDataset(ChatDataset(valid_rows, tokenizer, mask_prompt=True)) if valid_rows else None
    if not scores_any_answer(train_set, config.max_seq_length):
        shortest = min(train_set[i][1] for i in range(len(train_set)))
        raise ConfigError(
            f"{train_path}: train.max_seq_length {config.max_seq_length} cuts off every answer "
            f"(the shortest prompt has {shortest} tokens); raise it"
        )
    if valid_set is not None and not scores_any_answer(valid_set, config.max_seq_length):
        valid_set = None  # nothing left to validate on

    mx.random.seed(config.seed)  # LoRA's initial weights
    num_layers, lora = add_trainable_layers(model, config)
    key = training_key(config, train_dir)  # of the settings as given: "auto" stays auto for a resumed run
    if config.learning_rate is None:
        config = replace(config, learning_rate=auto_learning_rate(model))
    settings = adapter_config(config, num_layers, model_name, key, lora, None)
    anchor_rows = read_chat_rows(train_dir / ANCHORS_FILE) if config.kl > 0 else []
    anchor_set = CacheDataset(ChatDataset(anchor_rows, tokenizer, mask_prompt=True)) if anchor_rows else None
    targets = None
    if anchor_set is not None:  # read before any checkpoint is loaded: with LoRA at zero, the model is the base
        skips = [lead_tokens(tokenizer, row.get("lead", "")) for row in anchor_rows]
        targets = AnchorTargets.read(model, anchor_set, config.max_seq_length, skips)

    batch_size = min(config.batch_size, len(rows))
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    group = config.grad_accumulation
    n_updates = config.epochs * math.ceil(steps_per_epoch / group)
    optimizer = build_optimizer(config, n_updates)
    optimizer.init(model.trainable_parameters())
    settings["lr_schedule"] = schedule_config(config, n_updates)
    base_weights = BaseWeights.of(model, num_layers) if config.fine_tune_type == "full" else None
    checkpoint = train_dir / CHECKPOINT_FILE
    resumed = load_checkpoint(checkpoint, key, model, optimizer)
    state, best = resumed if resumed else (TrainState(key), None)
    resumed_at = state.step

    ranks = distributed.size()

    def loss_with_kl(model, share, *batch):
        if start is not None:  # the batch ends with the frozen blocks' output: the model starts from it
            *batch, hidden = batch
            with start.feeding(hidden):
                loss, n_tokens, mastered = answer_loss(model, *batch, mastery=True)
            kl = mx.array(0.0)
        elif targets is None:
            loss, n_tokens, mastered = answer_loss(model, *batch, mastery=True)
            kl = mx.array(0.0)
        else:
            loss, n_tokens, kl, mastered = mixed_loss(model, *batch)
        if ranks > 1:  # this rank's share of the batch's answer tokens: the summed gradients are one process's
            loss = loss * share
        return loss + config.kl * kl, n_tokens, loss, kl, mastered

    loss_and_grad = nn.value_and_grad(model, loss_with_kl)
    compiled_state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=compiled_state, outputs=compiled_state)
    def step(batch, pending, n_summed, update, share):
        """One batch's gradient, added to those `pending` from earlier batches of the same update; with
        `update`, their mean over the `n_summed` batches is applied. In a distributed group each rank reads its
        share of the batch and the gradients are summed over the ranks (the KL term's anchors are rank 0's)."""
        (_, n_tokens, loss, kl, mastered), grad = loss_and_grad(model, share, *batch)
        if ranks > 1:
            grad = tree_map(distributed.all_sum, grad)
            loss, kl = distributed.all_sum(loss), distributed.all_sum(kl)  # the batch's mean loss, rank 0's KL
            n_tokens = distributed.all_sum(n_tokens * (share > 0))
        if pending is not None:
            grad = tree_map(lambda a, b: a + b, grad, pending)
        if update:
            optimizer.update(model, grad if n_summed == 1 else tree_map(lambda g: g / n_summed, grad))
            grad = None
        return loss, n_tokens, kl, grad, mastered

    def reseed() -> None:
        # mlx's random key cannot be saved and restored, so dropout's key is re-derived
        # from (seed, step) at every checkpoint, resumed or not.
        mx.random.seed(config.seed * 1_000_003 + state.step)

    def save() -> None:
        state.seconds += time.perf_counter() - clock[0]
        clock[0] = time.perf_counter()
        save_checkpoint(checkpoint, model, optimizer, state, best)
        saved_at[0] = state.step
        reseed()

    clock = [time.perf_counter()]
    # The blocks below the trained ones compute the same for a pair in every epoch: once, here (with the KL
    # term's anchors in the batch, every block runs every time).
    first = len(model.layers) - num_layers
    start = FrozenStart.compute(model, train_set, first, config.max_seq_length) if targets is None else None
    reseed()
    model.train()
    pending, saved_at = None, [state.step]
    restore_blocks = _checkpoint_blocks(model) if config.grad_checkpoint else None
    restore_frozen = start.install() if start is not None else None
    # Steps planned: a pair rehearsed once is in one epoch's batches only (skipping learned pairs may take fewer).
    planned = sum(math.ceil(sum(e in epochs for epochs in schedule) / batch_size) for e in range(1, config.epochs + 1))
    with progress_bar(planned, "train", progress, unit="step") as bar:
        bar.update(state.step)
        while state.epoch <= config.epochs and not state.stopped_early:
            if state.pool is None:  # a new epoch: which pairs it trains on is decided once, and saved
                learned = set(state.learned) if config.skip_learned else set()
                state.pool = [i for i in range(len(train_set)) if i not in learned and state.epoch in schedule[i]]
            if not state.pool:  # every pair learned word for word: nothing left to train
                state.stopped_early = True
                break
            # The order depends on (seed, epoch, pool) only, so a resumed epoch sees the same batches.
            rng = np.random.default_rng([config.seed, state.epoch])
            batches = batch_order(train_set, batch_size, rng, state.pool)
            for indices in batches[state.batch :]:
                if before_step is not None and before_step(state.step - resumed_at):
                    _restore(restore_frozen, restore_blocks)
                    return TrainSummary.skip(f"stopped after {state.step - resumed_at} steps")
                # This rank's rows: all of them in one process, every N-th of N ranks (a rank left without
                # one reads a stand-in row with no weight).
                mine = indices[distributed.rank() :: ranks] or indices[:1]
                if targets is None:
                    batch = make_batch(train_set, mine, config.max_seq_length)
                else:  # the step's anchors ride in the same batch as its training pairs (rank 0's)
                    chosen = anchor_indices(len(anchor_set), config.kl_batch, state.step, config.seed)
                    chosen = chosen if distributed.is_writer() else []
                    batch = mixed_batch(train_set, mine, anchor_set, targets, chosen, config.max_seq_length)
                share = _token_share(batch, has_rows=distributed.rank() < len(indices))
                inputs = tuple(batch)
                if start is not None:  # the frozen blocks' output for these pairs, as wide as the model's input
                    inputs += (start.batch_states(mine, batch.tokens.shape[1] - 1),)
                done = state.batch + 1  # batches of this epoch done after this one
                update = done % group == 0 or done == len(batches)
                with distributed.collective():
                    loss, n_tokens, kl, pending, mastered = step(inputs, pending, (done - 1) % group + 1, update, share)
                    mx.eval(compiled_state, loss, n_tokens, kl, pending, mastered)
                learned = set(state.learned)
                for i, ok in _mastery(indices, mine, mastered.tolist()):
                    (learned.add if ok else learned.discard)(i)
                state.learned = sorted(learned)
                state.epoch_loss += loss.item() * n_tokens.item()
                state.epoch_tokens += n_tokens.item()
                state.epoch_kl += kl.item()
                state.n_seq_tokens += sum(min(len(train_set[i][0]), config.max_seq_length) for i in indices)
                state.step_losses.append(round(loss.item(), 6))
                state.batch += 1
                state.step += 1
                bar.update(1)
                # Checkpoints fall between optimizer updates: a gradient half summed is not saved.
                due = state.step // config.checkpoint_every > saved_at[0] // config.checkpoint_every
                if due and pending is None and state.batch < len(batches):
                    save()
            train_loss = state.epoch_loss / state.epoch_tokens
            val_loss = None
            if valid_set is not None:
                model.eval()
                val_loss = mean_loss(model, valid_set, batch_size, config.max_seq_length)
                model.train()
                if state.best_val is None or val_loss < state.best_val:
                    state.best_val, state.best_epoch, state.stale_epochs = val_loss, state.epoch, 0
                    best = dict(tree_flatten(model.trainable_parameters()))
                else:
                    state.stale_epochs += 1
                    state.stopped_early = config.patience > 0 and state.stale_epochs >= config.patience
            bar.set_postfix(loss=f"{train_loss:.3f}")
            row = {"epoch": state.epoch, "step": state.step, "train_loss": train_loss, "val_loss": val_loss,
                   "pairs": len(state.pool), "learned": len(state.learned)}  # fmt: skip
            if targets is not None:
                row["kl"] = state.epoch_kl / max(len(batches), 1)
            state.history.append(row | {"step_losses": state.step_losses})
            state.n_tokens += state.epoch_tokens
            state.epoch, state.batch, state.epoch_loss, state.epoch_tokens, state.epoch_kl, state.step_losses = (
                state.epoch + 1, 0, 0.0, 0, 0.0, []
            )  # fmt: skip
            state.pool = None
            save()
            write_jsonl_atomic(train_dir / LOSSES_FILE, state.history)
    model.eval()
    _restore(restore_frozen, restore_blocks)

    write_json_atomic(adapter_dir / ADAPTER_CONFIG, settings | {"best_epoch": state.best_epoch})
    write_adapters(adapter_dir, best if best is not None else dict(tree_flatten(model.trainable_parameters())))
    if base_weights is not None:  # full fine-tuning changed the weights themselves: the model leaves as it came
        base_weights.restore(model)
    elif best is not None:  # the model leaves with the adapters it saved
        model.load_weights(list(best.items()), strict=False)
    if distributed.is_writer():
        checkpoint.unlink(missing_ok=True)
    last = state.history[-1]
    return TrainSummary(
        n_examples=len(rows),
        epochs=len(state.history),
        steps=state.step,
        n_tokens=state.n_tokens,
        n_seq_tokens=state.n_seq_tokens,
        seconds=state.seconds + time.perf_counter() - clock[0],
        train_loss=last["train_loss"],
        val_loss=state.best_val,
        best_epoch=state.best_epoch,
        resumed_at_step=resumed_at,
        longest=min(max(len(train_set[i][0]) for i in range(len(train_set))), config.max_seq_length),
    )
