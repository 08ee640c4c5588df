"""A model's vocabulary projection, computed only at the positions that need logits."""

from __future__ import annotations

# Architectures whose logits are exactly the vocabulary projection of `model.model`'s output (no
# scaling or soft-capping after it): for them only the positions that need logits are projected.
PLAIN_HEADS = {"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2"}


def output_projection(model):
    """`model`'s final vocabulary projection when its logits are that projection of `model.model(tokens)`;
    None for other layouts, which then go through `model(tokens)` whole."""
    if getattr(model, "model_type", None) not in PLAIN_HEADS or not hasattr(model, "model"):
        return None
    if getattr(model, "lm_head", None) is not None:
        return model.lm_head
    embed = getattr(model.model, "embed_tokens", None)
    return embed.as_linear if embed is not None else None


def logits_at(model, tokens, positions, cache=None):
    """`model`'s logits over `tokens` at `positions`: one index per row (rows,) or several (rows, k). Where the head
    allows it the vocabulary projection runs at those positions only: most positions are prompt, and the projection
    is a large share of a small model's work per position."""
    import mlx.core as mx

    rows = mx.arange(tokens.shape[0])
    picked = (rows[:, None] if positions.ndim == 2 else rows), positions
    project = output_projection(model)
    if project is None:
        return model(tokens, cache=cache)[picked]
    return project(model.model(tokens, cache=cache)[picked])
