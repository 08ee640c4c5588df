"""What training leaves on disk: the checkpoint a killed training resumes from, and the finished adapters.

A checkpoint holds the adapters, the optimizer's state and `TrainState` (where training stands) in one
safetensors file, replaced atomically every few steps. The adapters are written last, in mlx-lm's format, with
the `training_key` of what they were trained on: a changed selection or setting retrains, an unchanged one is
done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from slearn_mlx.common import file_hash
from slearn_mlx.runs import ADAPTER_CONFIG, ADAPTER_FILE, ANCHORS_FILE, TRAIN_FILE, VALID_FILE, atomic_file
from slearn_mlx.training.config import TrainConfig


def training_key(config: TrainConfig, train_dir: Path) -> str:
    """A hash of what training computes from: the train and valid files and every setting but how often to
    checkpoint. Adapters and checkpoints carry it, so a changed selection or config retrains."""
    names = (TRAIN_FILE, VALID_FILE) + ((ANCHORS_FILE,) if config.kl > 0 else ())
    files = [file_hash(train_dir / name, "sha1") if (train_dir / name).exists() else None for name in names]
    settings = asdict(config)
    del settings["checkpoint_every"]
    return hashlib.sha1(json.dumps([files, settings], sort_keys=True).encode()).hexdigest()


def already_trained(adapter_dir: Path, train_dir: Path, config: TrainConfig) -> bool:
    """The adapters in `adapter_dir` were trained on exactly this selection with these settings."""
    if not (adapter_dir / ADAPTER_FILE).exists():
        return False
    trained_on = json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("training_key")
    return trained_on == training_key(config, train_dir)


def adapter_config(
    config: TrainConfig, num_layers: int, model_name: str | None, key: str, lora: dict | None, schedule: dict | None
) -> dict:
    """adapter_config.json as mlx-lm writes it (the keys its load_adapters and fuse read),
    plus the `training_key` of what the adapters were trained on."""
    return {
        "model": model_name,
        "training_key": key,
        "fine_tune_type": config.fine_tune_type,
        "num_layers": num_layers,
        "lora_parameters": lora,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "lr_schedule": schedule,
        "optimizer": config.optimizer,
        "lora_plus": config.lora_plus,
        "optimizer_config": {"adamw": {"weight_decay": config.weight_decay}} if config.optimizer == "adamw" else {},
        "grad_accumulation_steps": config.grad_accumulation,
        "grad_checkpoint": config.grad_checkpoint,
        "epochs": config.epochs,
        "max_seq_length": config.max_seq_length,
        "mask_prompt": True,
        "seed": config.seed,
    }


@dataclass
class TrainState:
    """Where training stands. Saved with the weights in every checkpoint, so a killed
    run continues at the same batch of the same epoch with the same optimizer state."""

    key: str  # what is trained on and how; a checkpoint resumes only the training it came from
    epoch: int = 1  # the epoch in progress (epochs + 1 once all are done)
    batch: int = 0  # batches of that epoch done
    step: int = 0  # optimizer steps done
    epoch_loss: float = 0.0  # sum over this epoch's batches of loss x answer tokens
    epoch_tokens: int = 0
    epoch_kl: float = 0.0  # sum over this epoch's steps of the KL term on the anchors
    n_tokens: int = 0  # answer tokens trained on, every epoch
    n_seq_tokens: int = 0  # every token through the model
    seconds: float = 0.0  # training time spent before this process
    best_val: float | None = None
    best_epoch: int | None = None
    stale_epochs: int = 0  # epochs since the validation loss last improved
    stopped_early: bool = False
    pool: list | None = None  # the pairs this epoch trains on (all, unless skip_learned left some out)
    learned: list = field(default_factory=list)  # pairs whose answer the model wrote word for word when last seen
    step_losses: list = field(default_factory=list)  # this epoch's per-step losses
    history: list = field(default_factory=list)  # one row per finished epoch, as losses.jsonl has them


def save_checkpoint(path: Path, model, optimizer, state: TrainState, best: dict | None) -> None:
    """Adapters, optimizer state and TrainState in one file, replaced atomically."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    arrays = {f"adapter/{k}": v for k, v in tree_flatten(model.trainable_parameters())}
    arrays |= {f"optimizer/{k}": v for k, v in tree_flatten(optimizer.state)}
    arrays |= {f"best/{k}": v for k, v in (best or {}).items()}
    with atomic_file(path, "wb") as handle:
        mx.save_safetensors(handle, arrays, metadata={"state": json.dumps(asdict(state))})


def load_checkpoint(path: Path, key: str, model, optimizer) -> tuple[TrainState, dict | None] | None:
    """Restore a checkpoint of the same training into model and optimizer; None if there is none to resume."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    if not path.exists():
        return None
    try:
        arrays, metadata = mx.load(str(path), return_metadata=True)
        state = TrainState(**json.loads(metadata["state"]))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError):  # unreadable, or another version's: start over
        return None
    if state.key != key:
        return None
    group = lambda prefix: [(k[len(prefix) :], v) for k, v in arrays.items() if k.startswith(prefix)]  # noqa: E731
    model.load_weights(group("adapter/"), strict=False)
    optimizer.state = tree_unflatten(group("optimizer/"))
    optimizer.init(model.trainable_parameters())
    best = dict(group("best/")) or None
    return state, best


def write_adapters(adapter_dir: Path, weights: dict) -> None:
    """Written last and atomically: an adapters file present means training finished."""
    import mlx.core as mx

    with atomic_file(adapter_dir / ADAPTER_FILE, "wb") as handle:
        mx.save_safetensors(handle, weights)
