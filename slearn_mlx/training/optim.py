"""The optimizer and its learning-rate schedule, with the names `mlx_lm.lora` uses, and the default rate."""

from __future__ import annotations

from dataclasses import replace

from slearn_mlx.training.config import TrainConfig

# The widest model the rate stays at its most, and the floor (mlx-lm's own default rate).
_LR_MAX, _LR_WIDTH, _LR_MIN = 2e-4, 576, 1e-5


def auto_learning_rate(model) -> float:
    """The default Adam rate for LoRA at scale 20 on `model`: 2e-4 up to SmolLM2-135M's width (576), then falling
    with the cube of the width, down to 1e-5. Measured (BENCHMARKS.md, "Learning rate by model width"): 2e-4
    trains SmolLM2 well and makes Qwen2.5-0.5B (896) diverge, where 5e-5 trains it well; the rule gives 5.3e-5."""
    args = getattr(model, "args", None)
    width = getattr(args, "hidden_size", None) or _LR_WIDTH
    return float(min(_LR_MAX, max(_LR_MIN, _LR_MAX * (_LR_WIDTH / width) ** 3)))


def schedule_config(config: TrainConfig, n_updates: int) -> dict | None:
    """The learning-rate schedule as mlx-lm's `lr_schedule` config (what `mlx_lm.lora` reads and its
    `build_schedule` builds): `warmup` updates rising from 0, then constant, or cosine or linear decay to 0 over
    the remaining updates. None for a constant rate without warm-up."""
    if config.lr_schedule == "constant" and not config.warmup:
        return None
    # mlx-lm switches from the warm-up to the decay after update `warmup`, so the decay has the rest but one.
    rate, steps = config.learning_rate, max(n_updates - config.warmup - 1, 1)
    name, arguments = {
        "constant": ("linear_schedule", [rate, rate, 1]),
        "cosine": ("cosine_decay", [rate, steps, 0.0]),
        "linear": ("linear_schedule", [rate, 0.0, steps]),
    }[config.lr_schedule]
    return {"name": name, "arguments": arguments, "warmup": config.warmup, "warmup_init": 0.0}


def build_optimizer(config: TrainConfig, n_updates: int):
    """The optimizer `config` names, with its learning-rate schedule over `n_updates` optimizer updates. With LoRA+
    (`lora_plus` other than 1) LoRA's B matrices get their own, at `lora_plus` times the rate of the rest."""
    import mlx.optimizers as optim

    if config.lora_plus == 1 or config.fine_tune_type == "full":
        return _one_optimizer(config, n_updates, 1.0)
    b_matrices = lambda path, _: path.endswith("lora_b")  # noqa: E731
    return optim.MultiOptimizer(
        [_one_optimizer(config, n_updates, config.lora_plus), _one_optimizer(config, n_updates, 1.0)], [b_matrices]
    )


def _one_optimizer(config: TrainConfig, n_updates: int, factor: float):
    import mlx.optimizers as optim
    from mlx_lm.tuner.utils import build_schedule

    scaled = replace(config, learning_rate=config.learning_rate * factor)
    schedule = schedule_config(scaled, n_updates)
    rate = build_schedule(schedule) if schedule else scaled.learning_rate
    if config.optimizer == "adamw":
        return optim.AdamW(learning_rate=rate, weight_decay=config.weight_decay)
    return optim.Adam(learning_rate=rate)
