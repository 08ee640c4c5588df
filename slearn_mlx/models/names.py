"""The names a tensor has in a llama.cpp GGUF file and in an mlx-lm model, per architecture: what the importer reads
and the exporter writes.

Neither side is written here. The mlx-lm names are the parameters of mlx-lm's own model class for the config, and
each is mapped to its GGUF name by llama.cpp's own table (`gguf.get_tensor_name_map`), so an architecture both know
needs only its config read from the file.
"""

from __future__ import annotations

from slearn_mlx.errors import ModelError

# GGUF architectures -> (mlx-lm model type, the architecture config.json names).
ARCHITECTURES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
    "phi3": ("phi3", "Phi3ForCausalLM"),
}
# GGUF architecture of each mlx-lm model type.
GGUF_ARCHITECTURE = {model_type: arch for arch, (model_type, _) in ARCHITECTURES.items()}


def mlx_parameter_names(config: dict) -> list[str]:
    """The parameter names of mlx-lm's model for `config` ("model.layers.0.self_attn.q_proj.weight", ...). The model
    is built lazily: no weight is ever computed."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    return [name for name, _ in tree_flatten(model.parameters())]


def gguf_names(config: dict) -> dict[str, str]:
    """mlx-lm parameter name -> GGUF tensor name, for every parameter of the model `config` describes."""
    import gguf

    model_type = config["model_type"]
    if model_type not in GGUF_ARCHITECTURE:
        raise ModelError(f"model type {model_type!r} has no GGUF names here; these do: {', '.join(GGUF_ARCHITECTURE)}")
    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == GGUF_ARCHITECTURE[model_type])
    table = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    out = {}
    for name in mlx_parameter_names(config):
        mapped = table.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ModelError(f"llama.cpp has no GGUF name for {model_type} tensor {name!r}")
        out[name] = mapped
    return out
