"""Stage 4: fine-tuning on the selected pairs, through mlx_lm.tuner.

The LoRA layers, the chat dataset (prompt masked: the loss is on the answer
only) and the loss are mlx-lm's own; the loop is ours so that it runs whole
epochs (every pair once per epoch, a last batch smaller than the rest
included), resumes exactly from a checkpoint, reports progress on stderr and
logs losses to the run directory. Adapters are saved in mlx-lm's format:
`adapter_config.json` + `adapters.safetensors`, which `mlx_lm.generate
--adapter-path` and `mlx_lm.fuse` load unchanged. Quantized models train as
QLoRA.

`train_adapters` reads the pairs, then a `Training` prepares the model, the
optimizer and the compiled step, runs epoch after epoch and finishes by
writing the adapters. What a caller may change without patching anything comes
in as `TrainHooks` (as mlx-lm's `trainer.train` takes `loss=` and
`iterate_batches=`).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from slearn_mlx import distributed
from slearn_mlx.errors import ConfigError, MissingInput
from slearn_mlx.progress import progress_bar
from slearn_mlx.runs import (
    ADAPTER_CONFIG,
    ANCHORS_FILE,
    CHECKPOINT_FILE,
    LOSSES_FILE,
    TRAIN_FILE,
    VALID_FILE,
    write_json_atomic,
    write_jsonl_atomic,
)
from slearn_mlx.training.anchors import AnchorTargets, anchor_indices, lead_tokens, mixed_batch, mixed_loss
from slearn_mlx.training.batches import (
    batch_order,
    chat_dataset,
    make_batch,
    pair_epochs,
    planned_steps,
    read_chat_rows,
    scores_any_answer,
)
from slearn_mlx.training.blocks import MAX_BYTES, FrozenStart, checkpointed
from slearn_mlx.training.checkpoint import (
    TrainState,
    adapter_config,
    load_checkpoint,
    save_checkpoint,
    training_key,
    write_adapters,
)
from slearn_mlx.training.config import TrainConfig, TrainSummary
from slearn_mlx.training.layers import BaseWeights, add_trainable_layers
from slearn_mlx.training.loss import answer_loss, mean_loss, token_share
from slearn_mlx.training.optim import auto_learning_rate, build_optimizer, schedule_config


@dataclass(frozen=True)
class TrainHooks:
    """What a caller can change about the loop without patching it."""

    make_batch: Callable = make_batch  # (dataset, indices, max_seq_length) -> Batch: how a batch is cut and padded
    before_step: Callable[[int], bool] | None = None  # called with the steps this call took; True stops there
    frozen_bytes: int = MAX_BYTES  # the frozen blocks' kept states stay under this; 0 runs every block every step


@dataclass(frozen=True)
class TrainData:
    """The pairs of a training directory, tokenized: what trains, what validates, what the KL term holds."""

    rows: list[dict]
    train_set: Any
    valid_set: Any | None  # None without valid.jsonl, or when max_seq_length leaves it nothing to score
    held_out: bool  # no validation pair is also a training pair: its loss can choose the epoch kept
    anchor_set: Any | None  # read only with a KL weight
    anchor_leads: list[int]  # answer tokens of each anchor's lead, which the KL term leaves free

    @classmethod
    def read(cls, train_dir: Path, tokenizer, config: TrainConfig) -> "TrainData | None":
        """The pairs of `train_dir`; None when the selection is empty."""
        train_path = train_dir / TRAIN_FILE
        if not train_path.exists():
            raise MissingInput(f"train.jsonl not found in {train_dir}; run `slearn select` first")
        rows = read_chat_rows(train_path)
        if not rows:
            return None
        train_set = chat_dataset(rows, tokenizer)
        if not scores_any_answer(train_set, config.max_seq_length):
            shortest = min(train_set[i][1] for i in range(len(train_set)))
            raise ConfigError(
                f"{train_path}: train.max_seq_length {config.max_seq_length} cuts off every answer "
                f"(the shortest prompt has {shortest} tokens); raise it"
            )
        valid_rows = read_chat_rows(train_dir / VALID_FILE)
        valid_set = chat_dataset(valid_rows, tokenizer) if valid_rows else None
        if valid_set is not None and not scores_any_answer(valid_set, config.max_seq_length):
            valid_set = None  # nothing left to validate on
        anchor_rows = read_chat_rows(train_dir / ANCHORS_FILE) if config.kl > 0 else []
        anchor_set = chat_dataset(anchor_rows, tokenizer) if anchor_rows else None
        leads = [lead_tokens(tokenizer, row.get("lead", "")) for row in anchor_rows]
        trained = {json.dumps(row.get("messages"), sort_keys=True) for row in rows}
        held_out = not any(json.dumps(row.get("messages"), sort_keys=True) in trained for row in valid_rows)
        return cls(rows, train_set, valid_set, held_out, anchor_set, leads)

    def longest(self, max_seq_length: int) -> int:
        return min(max(len(self.train_set[i][0]) for i in range(len(self.train_set))), max_seq_length)


def train_adapters(
    model,
    tokenizer,
    train_dir: Path,
    adapter_dir: Path,
    config: TrainConfig = TrainConfig(),
    *,
    model_name: str | None = None,
    progress: bool = True,
    hooks: TrainHooks = TrainHooks(),
) -> TrainSummary:
    """Train adapters on train_dir/train.jsonl and save them to adapter_dir.

    Each epoch visits every pair once in a seeded order. With a validation file
    the adapters kept are those of the epoch with the lowest validation loss, and
    `patience` stops training once it stops improving. Every `checkpoint_every`
    steps and at each epoch's end, train_dir/checkpoint.safetensors is replaced;
    a later call with the same data and config continues from it and ends with
    the adapters an uninterrupted run would have. Losses go to
    train_dir/losses.jsonl, one line per epoch. An empty selection returns a
    summary saying so and writes no adapters. `hooks.before_step` ending the call
    early returns a summary that says so, also without adapters.
    """
    data = TrainData.read(train_dir, tokenizer, config)
    if data is None:
        return TrainSummary.skip("nothing to train: no wrongly answered pairs")
    training = Training(model, data, config, train_dir, model_name, hooks)
    with training.running(), progress_bar(training.planned, "train", progress, unit="step") as bar:
        bar.update(training.state.step)
        while not training.done:
            if not training.run_epoch(bar):
                taken = training.state.step - training.resumed_at
                return TrainSummary.skip(f"stopped after {taken} steps", steps=taken, stopped=True)
    return training.finish(adapter_dir)


class Training:
    """One training run: the model with its trainable layers, the optimizer, where training stands (`state`, what a
    checkpoint saves) and the compiled step. Made ready on construction, resuming a checkpoint of the same training
    when there is one."""

    def __init__(self, model, data: TrainData, config: TrainConfig, train_dir: Path, model_name: str | None,
                 hooks: TrainHooks):  # fmt: skip
        import mlx.core as mx

        self.model, self.data, self.hooks = model, data, hooks
        self.clock = time.perf_counter()
        self.schedule = pair_epochs(data.rows, config.epochs, config.seed, config.rehearse_last)
        mx.random.seed(config.seed)  # LoRA's initial weights
        self.num_layers, lora = add_trainable_layers(model, config)
        self.key = training_key(config, train_dir)  # of the settings as given: "auto" stays auto for a resumed run
        if config.learning_rate is None:
            config = replace(config, learning_rate=auto_learning_rate(model))
        self.config = config
        self.targets = None
        if (
            data.anchor_set is not None
        ):  # read before any checkpoint is loaded: with LoRA at zero, the model is the base
            self.targets = AnchorTargets.read(model, data.anchor_set, config.max_seq_length, data.anchor_leads)

        self.batch_size = min(config.batch_size, len(data.rows))
        steps_per_epoch = math.ceil(len(data.rows) / self.batch_size)
        n_updates = config.epochs * math.ceil(steps_per_epoch / config.grad_accumulation)
        self.optimizer = build_optimizer(config, n_updates)
        self.optimizer.init(model.trainable_parameters())
        self.settings = adapter_config(config, self.num_layers, model_name, self.key, lora, None)
        self.settings["lr_schedule"] = schedule_config(config, n_updates)
        self.base_weights = BaseWeights.of(model, self.num_layers) if config.fine_tune_type == "full" else None
        self.checkpoint = train_dir / CHECKPOINT_FILE
        self.losses_path = train_dir / LOSSES_FILE
        resumed = load_checkpoint(self.checkpoint, self.key, model, self.optimizer)
        self.state, self.best = resumed if resumed else (TrainState(self.key), None)
        self.resumed_at = self.saved_at = self.state.step
        self.pending = None  # gradients summed over the batches of an optimizer update not yet applied
        # The blocks below the trained ones compute the same for a pair in every epoch: once, here (with the KL
        # term's anchors in the batch, every block runs every time).
        first = len(model.layers) - self.num_layers
        self.start = (
            FrozenStart.compute(model, data.train_set, first, config.max_seq_length, hooks.frozen_bytes)
            if self.targets is None else None
        )  # fmt: skip
        self._step = self._compiled_step()
        self._reseed()
        # Steps planned: a pair rehearsed once is in one epoch's batches only (skipping learned pairs may take fewer).
        self.planned = planned_steps(self.schedule, config.epochs, self.batch_size)

    @property
    def done(self) -> bool:
        return self.state.epoch > self.config.epochs or self.state.stopped_early

    @contextmanager
    def running(self) -> Iterator[None]:
        """The model in train mode, with gradient checkpointing and the frozen blocks' switch on its block class as
        the config asks; after, in eval mode with its block class as it was, and, unless `finish` ran, with full
        fine-tuning's base weights back."""
        with ExitStack() as patches:
            if self.config.grad_checkpoint:
                patches.enter_context(checkpointed(self.model))
            if self.start is not None:
                patches.enter_context(self.start.installed())
            self.model.train()
            try:
                yield
            finally:
                self.model.eval()
                if self.base_weights is not None and not self.done:
                    self.base_weights.restore(self.model)

    def _compiled_step(self) -> Callable:
        import mlx.core as mx
        import mlx.nn as nn
        from mlx.utils import tree_map

        model, optimizer, config, start, targets = self.model, self.optimizer, self.config, self.start, self.targets
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
        self.compiled_state = [model.state, optimizer.state, mx.random.state]

        @partial(mx.compile, inputs=self.compiled_state, outputs=self.compiled_state)
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

        return step

    def _reseed(self) -> None:
        import mlx.core as mx

        # mlx's random key cannot be saved and restored, so dropout's key is re-derived
        # from (seed, step) at every checkpoint, resumed or not.
        mx.random.seed(self.config.seed * 1_000_003 + self.state.step)

    def _save(self) -> None:
        now = time.perf_counter()
        self.state.seconds += now - self.clock
        self.clock = now
        save_checkpoint(self.checkpoint, self.model, self.optimizer, self.state, self.best)
        self.saved_at = self.state.step
        self._reseed()

    def run_epoch(self, bar) -> bool:
        """Train the epoch in progress to its end (from where a checkpoint left it); False when `before_step`
        stopped it."""
        state = self.state
        if state.pool is None:  # a new epoch: which pairs it trains on is decided once, and saved
            learned = set(state.learned) if self.config.skip_learned else set()
            state.pool = [i for i in range(len(self.data.train_set))
                          if i not in learned and state.epoch in self.schedule[i]]  # fmt: skip
        if not state.pool:  # every pair learned word for word: nothing left to train
            state.stopped_early = True
            return True
        # The order depends on (seed, epoch, pool) only, so a resumed epoch sees the same batches.
        rng = np.random.default_rng([self.config.seed, state.epoch])
        batches = batch_order(self.data.train_set, self.batch_size, rng, state.pool)
        for indices in batches[state.batch :]:
            if self.hooks.before_step is not None and self.hooks.before_step(state.step - self.resumed_at):
                return False
            self._train_batch(indices, len(batches))
            bar.update(1)
            # Checkpoints fall between optimizer updates: a gradient half summed is not saved.
            every = self.config.checkpoint_every
            if state.step // every > self.saved_at // every and self.pending is None and state.batch < len(batches):
                self._save()
        bar.set_postfix(loss=f"{state.epoch_loss / state.epoch_tokens:.3f}")
        self._end_epoch(len(batches))
        return True

    def _batch_inputs(self, indices: list[int]) -> tuple:
        """The compiled step's batch for this rank: all rows in one process, every N-th of N ranks (a rank left
        without one reads a stand-in row with no weight); the share of the answer tokens it holds."""
        config, data, state = self.config, self.data, self.state
        mine = indices[distributed.rank() :: distributed.size()] or indices[:1]
        if self.targets is None:
            batch = self.hooks.make_batch(data.train_set, mine, config.max_seq_length)
            scored = batch.scored
        else:  # the step's anchors ride in the same batch as its training pairs (rank 0's)
            chosen = anchor_indices(len(data.anchor_set), config.kl_batch, state.step, config.seed)
            chosen = chosen if distributed.is_writer() else []
            batch = mixed_batch(data.train_set, mine, data.anchor_set, self.targets, chosen, config.max_seq_length)
            scored = batch.ce_scored
        share = token_share(scored, has_rows=distributed.rank() < len(indices))
        inputs = tuple(batch)
        if self.start is not None:  # the frozen blocks' output for these pairs, as wide as the model's input
            inputs += (self.start.batch_states(mine, batch.tokens.shape[1] - 1),)
        return inputs, mine, share

    def _train_batch(self, indices: list[int], n_batches: int) -> None:
        import mlx.core as mx

        state, group = self.state, self.config.grad_accumulation
        inputs, mine, share = self._batch_inputs(indices)
        done = state.batch + 1  # batches of this epoch done after this one
        update = done % group == 0 or done == n_batches
        with distributed.collective():
            loss, n_tokens, kl, self.pending, mastered = self._step(
                inputs, self.pending, (done - 1) % group + 1, update, share
            )
            mx.eval(self.compiled_state, loss, n_tokens, kl, self.pending, mastered)
        learned = set(state.learned)
        for i, ok in _mastery(indices, mine, mastered.tolist()):
            (learned.add if ok else learned.discard)(i)
        state.learned = sorted(learned)
        state.epoch_loss += loss.item() * n_tokens.item()
        state.epoch_tokens += n_tokens.item()
        state.epoch_kl += kl.item()
        state.n_seq_tokens += sum(min(len(self.data.train_set[i][0]), self.config.max_seq_length) for i in indices)
        state.step_losses.append(round(loss.item(), 6))
        state.batch += 1
        state.step += 1

    def _end_epoch(self, n_batches: int) -> None:
        """Validate, log the epoch, and checkpoint. Only a held-out validation set (select --valid-split) chooses
        the epoch kept and stops early (`patience`): the loss on pairs that also train falls with the training loss
        and says nothing of what the model learned, so with copied pairs the last epoch is kept."""
        from mlx.utils import tree_flatten

        state, config = self.state, self.config
        train_loss = state.epoch_loss / state.epoch_tokens
        val_loss = None
        if self.data.valid_set is not None:
            self.model.eval()
            val_loss = mean_loss(self.model, self.data.valid_set, self.batch_size, config.max_seq_length)
            self.model.train()
        if val_loss is not None and self.data.held_out:
            if state.best_val is None or val_loss < state.best_val:
                state.best_val, state.best_epoch, state.stale_epochs = val_loss, state.epoch, 0
                self.best = dict(tree_flatten(self.model.trainable_parameters()))
            else:
                state.stale_epochs += 1
                state.stopped_early = config.patience > 0 and state.stale_epochs >= config.patience
        row = {"epoch": state.epoch, "step": state.step, "train_loss": train_loss, "val_loss": val_loss,
               "pairs": len(state.pool), "learned": len(state.learned)}  # fmt: skip
        if self.targets is not None:
            row["kl"] = state.epoch_kl / max(n_batches, 1)
        state.history.append(row | {"step_losses": state.step_losses})
        state.n_tokens += state.epoch_tokens
        state.epoch, state.batch, state.epoch_loss, state.epoch_tokens, state.epoch_kl, state.step_losses = (
            state.epoch + 1, 0, 0.0, 0, 0.0, []
        )  # fmt: skip
        state.pool = None
        self._save()
        write_jsonl_atomic(self.losses_path, state.history)

    def finish(self, adapter_dir: Path) -> TrainSummary:
        """Write the adapters kept (the best epoch's, else the last), leave the model as the caller expects it (the
        base for full fine-tuning, with the kept adapters otherwise) and drop the checkpoint."""
        from mlx.utils import tree_flatten

        state, model = self.state, self.model
        write_json_atomic(adapter_dir / ADAPTER_CONFIG, self.settings | {"best_epoch": state.best_epoch})
        kept = self.best if self.best is not None else dict(tree_flatten(model.trainable_parameters()))
        write_adapters(adapter_dir, kept)
        if (
            self.base_weights is not None
        ):  # full fine-tuning changed the weights themselves: the model leaves as it came
            self.base_weights.restore(model)
        elif self.best is not None:  # the model leaves with the adapters it saved
            model.load_weights(list(self.best.items()), strict=False)
        if distributed.is_writer():
            self.checkpoint.unlink(missing_ok=True)
        return TrainSummary(
            n_examples=len(self.data.rows),
            epochs=len(state.history),
            steps=state.step,
            n_tokens=state.n_tokens,
            n_seq_tokens=state.n_seq_tokens,
            seconds=state.seconds + time.perf_counter() - self.clock,
            train_loss=state.history[-1]["train_loss"],
            val_loss=state.best_val if self.data.held_out else state.history[-1]["val_loss"],
            best_epoch=state.best_epoch,
            resumed_at_step=self.resumed_at,
            longest=self.data.longest(self.config.max_seq_length),
        )


def _mastery(indices: list[int], mine: list[int], mastered: list[bool]) -> list[tuple[int, bool]]:
    """(pair, learned word for word) for every pair of the batch; in a distributed group the ranks tell each other
    theirs."""
    if distributed.size() == 1:
        return list(zip(indices, mastered))
    own = list(zip(mine, mastered)) if distributed.rank() < len(indices) else []
    return [(i, ok) for shard in distributed.exchange(own) for i, ok in shard]
