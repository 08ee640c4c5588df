"""What training changes: LoRA, DoRA or full fine-tuning, put on a model and taken off again.

- `lora` and `dora` put mlx-lm's LoRALinear / DoRALinear on the chosen linear
  modules (`lora_modules`; every linear layer by default, as `mlx_lm.lora`) of
  the top `num_layers` blocks; only their small matrices train.
- `full` unfreezes every weight of the top `num_layers` blocks; `BaseWeights` keeps what it changes, to put back.

Whatever trained is saved as mlx-lm saves it (checkpoint.py), so `adapters_on` applies it with mlx-lm's own
`load_adapters`.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from slearn_mlx.errors import ConfigError
from slearn_mlx.runs import ADAPTER_CONFIG, ADAPTER_FILE
from slearn_mlx.training.config import TrainConfig


def block_linear_names(model) -> list[str]:
    """The names of the linear modules inside a transformer block ("self_attn.q_proj", ...)."""
    import mlx.nn as nn

    names = []
    for name, module in model.layers[0].named_modules():
        if isinstance(module, (nn.Linear, nn.QuantizedLinear)) and name:
            names.append(name)
    return sorted(names)


def resolve_modules(model, modules: str | None) -> list[str] | None:
    """`lora_modules` as mlx-lm's `keys`: None (every linear layer) or full names, where each given name may be
    written whole ("self_attn.q_proj") or by its last part ("q_proj")."""
    if modules is None or modules.strip() in ("", "all"):
        return None
    available = block_linear_names(model)
    keys = []
    for wanted in (m.strip() for m in modules.split(",") if m.strip()):
        matches = [name for name in available if name == wanted or name.rsplit(".", 1)[-1] == wanted]
        if not matches:
            raise ConfigError(
                f"train.lora_modules: the model's blocks have no linear module {wanted!r}; they have "
                + ", ".join(available)
            )
        keys += [m for m in matches if m not in keys]
    return keys


def add_trainable_layers(model, config: TrainConfig) -> tuple[int, dict | None]:
    """Freeze the model and make its top `config.num_layers` blocks trainable as `config.fine_tune_type` says.

    Returns the block count used and adapter_config.json's `lora_parameters`, as mlx-lm writes them (None for
    full fine-tuning)."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    num_layers = min(config.num_layers, len(model.layers))
    if config.fine_tune_type == "full":
        model.freeze()
        for layer in model.layers[-num_layers:]:
            layer.unfreeze()
        return num_layers, None
    parameters = {"rank": config.rank, "scale": config.scale, "dropout": config.dropout}
    keys = resolve_modules(model, config.lora_modules)  # read before the modules are wrapped
    if keys is not None:
        parameters["keys"] = keys
    model.freeze()
    linear_to_lora_layers(model, num_layers, parameters, use_dora=config.fine_tune_type == "dora")
    return num_layers, parameters


def remove_adapters(model) -> None:
    """Put back the plain linear layers under every LoRA and DoRA layer (mlx-lm's remove_lora_layers knows
    LoRA only). Full fine-tuning changed the weights themselves: see `BaseWeights`."""
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.dora import DoRALinear
    from mlx_lm.tuner.lora import LoRALinear

    plain = [
        (name, module.linear) for name, module in model.named_modules() if isinstance(module, (LoRALinear, DoRALinear))
    ]
    if plain:
        model.update_modules(tree_unflatten(plain))


@dataclass
class BaseWeights:
    """A copy of the weights full fine-tuning changes, to put the base model back after training or evaluation."""

    weights: list

    @classmethod
    def of(cls, model, num_layers: int) -> "BaseWeights":
        import mlx.core as mx
        from mlx.utils import tree_flatten

        first = len(model.layers) - min(num_layers, len(model.layers))
        kept = [
            (f"layers.{i}.{name}", mx.array(value))
            for i in range(first, len(model.layers))
            for name, value in tree_flatten(model.layers[i].parameters())
        ]
        prefix = "model." if hasattr(model, "model") and model.layers is model.model.layers else ""
        weights = [(prefix + name, value) for name, value in kept]
        mx.eval([v for _, v in weights])
        return cls(weights)

    def restore(self, model) -> None:
        model.load_weights(self.weights, strict=False)


def has_adapters(adapter_dir: Path | None) -> bool:
    return adapter_dir is not None and (adapter_dir / ADAPTER_FILE).exists()


@contextmanager
def adapters_on(model, adapter_dir: Path) -> Iterator[None]:
    """The model with the adapters of `adapter_dir` applied (in eval mode) inside the block, the base model after."""
    from mlx_lm.tuner.utils import load_adapters

    trained = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    # Full fine-tuning's weights replace the base's: keep those to put back.
    base = BaseWeights.of(model, trained["num_layers"]) if trained.get("fine_tune_type") == "full" else None
    load_adapters(model, str(adapter_dir))
    model.eval()
    try:
        yield
    finally:
        remove_adapters(model)
        if base is not None:
            base.restore(model)
