"""What training is asked to do (`TrainConfig`, each field an option of `slearn train`) and what it did
(`TrainSummary`)."""

from __future__ import annotations

from dataclasses import dataclass

from slearn_mlx.options import option

FINE_TUNE_TYPES = ("lora", "dora", "full")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class TrainConfig:
    epochs: int = option(3, "Passes over the selected pairs.")
    batch_size: int = option(4, "Training pairs per optimizer step (fewer pairs than this train as one batch).")
    learning_rate: float | None = option(
        None, "Adam learning rate.", shown="by the model's width: 2e-4 for SmolLM2-135M, 5.3e-5 for Qwen2.5-0.5B"
    )
    fine_tune_type: str = option(
        "lora", "lora, dora (weight-decomposed LoRA) or full (every weight of the trained blocks).",
        choices=FINE_TUNE_TYPES,
    )  # fmt: skip
    rank: int = option(8, "LoRA rank.")
    num_layers: int = option(16, "Transformer blocks that train, counted from the top.")
    lora_modules: str | None = option(
        None, "Linear modules that get LoRA, comma-separated, e.g. q_proj,v_proj.", shown="all of them"
    )
    scale: float = option(20.0, "LoRA scale (mlx-lm's name for alpha / rank).")
    dropout: float = option(0.0, "LoRA dropout.")
    lora_plus: float = option(
        1.0, "LoRA+: the learning rate of LoRA's B matrices as a multiple of A's (arXiv 2402.12354); 1: plain LoRA."
    )
    optimizer: str = option("adam", "adam or adamw.", choices=OPTIMIZERS)
    weight_decay: float = option(0.01, "AdamW's decoupled weight decay.")
    lr_schedule: str = option(
        "constant", "Learning rate after the warm-up: constant, or cosine or linear decay to 0.", choices=SCHEDULES
    )
    warmup: int = option(0, "Optimizer updates over which the learning rate rises from 0.")
    grad_accumulation: int = option(1, "Batches whose gradients are summed into one optimizer update.")
    grad_checkpoint: bool = option(False, "Recompute activations in the backward pass: less memory, slower.")
    rehearse_last: bool = option(
        False, "Pairs trained in fewer epochs than the rest (select --rehearse) train in the last ones, not spread."
    )
    skip_learned: bool = option(
        False, "After the first epoch, leave out the pairs the model already writes word for word."
    )
    max_seq_length: int = option(
        1024, "Tokens per training pair; longer pairs are cut. Training's peak memory grows with the longest pair."
    )
    seed: int = option(0, "Batch order, LoRA's initial weights and dropout.", flag=False)
    patience: int = option(
        0, "Stop after this many epochs without a lower loss on held-out validation pairs (select --valid-split); "
        "0: never.",
    )  # fmt: skip
    kl: float = option(
        0.0, "Weight of KL(base || adapted) on the anchor pairs (select --anchors): keeps what the model knew."
    )
    kl_batch: int = option(1, "Anchor pairs read per optimizer step for the KL term.")
    checkpoint_every: int = option(10, "Steps between checkpoints (one is also written at every epoch's end).")

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
        if self.lora_plus <= 0:
            out.append("train.lora_plus must be positive")
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
    val_loss: float | None  # of the adapters kept: the best epoch's on held-out pairs, else the last epoch's
    best_epoch: int | None = None
    resumed_at_step: int = 0  # 0 when training started from scratch
    skipped: str | None = None  # why nothing was trained, or why training stopped before its end
    longest: int = 0  # tokens in the longest pair, after max_seq_length: what peak memory grows with
    stopped: bool = False  # ended by the caller (`before_step`) before training was done: no adapters written

    @classmethod
    def skip(cls, reason: str, *, steps: int = 0, stopped: bool = False) -> "TrainSummary":
        """A call that trained nothing (or stopped part-way, with `steps` taken), and why."""
        return cls(
            n_examples=0, epochs=0, steps=steps, n_tokens=0, n_seq_tokens=0, seconds=0.0, train_loss=None,
            val_loss=None, skipped=reason, stopped=stopped,
        )  # fmt: skip

    def __str__(self) -> str:
        if self.skipped:
            return self.skipped
        rate = self.n_seq_tokens / self.seconds if self.seconds else 0.0
        val = f", valid loss {self.val_loss:.3f}" if self.val_loss is not None else ""
        val += f" (epoch {self.best_epoch} kept)" if self.best_epoch is not None else ""
        resumed = f", resumed at step {self.resumed_at_step}" if self.resumed_at_step else ""
        return (
            f"trained on {self.n_examples} pairs: {self.epochs} epochs, {self.steps} steps{resumed}, "
            f"train loss {self.train_loss:.3f}{val}, in {self.seconds:.1f} s ({rate:.0f} tok/s)"
        )
