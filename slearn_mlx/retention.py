"""Keeping what the model knew while it learns the new: a KL term on anchor pairs.

Anchors are training items the model already knows and that are not trained on
(`train/anchors.jsonl`, written by `select --anchors`). Before the first step,
the base model reads each anchor (prompt and taught answer) once and its
next-token distribution at every answer position is kept, as its `TOP_K` most
likely tokens plus the mass of the rest. During training, every step also runs
a few anchors through the adapted model and adds

    kl x KL(base || adapted)

averaged over their answer positions, to the loss: where the model already
knew the answer, its distribution is held where it was. LoRA's B matrices
start at zero, so the model read before the first step is the base model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

TOP_K = 32  # tokens of the base distribution kept per position; the rest is one bucket


class AnchorTargets:
    """The base model's distribution at every answer position of each anchor (top-k ids and log-probs)."""

    def __init__(self, ids: list[np.ndarray], logprobs: list[np.ndarray]):
        self.ids, self.logprobs = ids, logprobs

    @classmethod
    def read(cls, model, dataset, max_seq_length: int, batch_size: int = 8) -> "AnchorTargets":
        """Run `model` (the base: LoRA still at zero) over every anchor once."""
        import mlx.core as mx

        from slearn_mlx.train import make_batch

        ids: list = [None] * len(dataset)
        logprobs: list = [None] * len(dataset)
        for start in range(0, len(dataset), batch_size):
            rows = list(range(start, min(start + batch_size, len(dataset))))
            batch = make_batch(dataset, rows, max_seq_length)
            logp = _position_logprobs(model, batch.tokens, batch.positions)
            top = mx.argpartition(-logp, TOP_K - 1, axis=-1)[..., :TOP_K]
            top_logp = mx.take_along_axis(logp, top, axis=-1)
            mx.eval(top, top_logp)
            scored = np.array(batch.scored)
            top, top_logp = np.array(top), np.array(top_logp)
            for r, i in enumerate(rows):
                n = int(scored[r].sum())
                ids[i], logprobs[i] = top[r, :n], top_logp[r, :n]
        return cls(ids, logprobs)


class AnchorBatch(NamedTuple):
    tokens: object  # (rows, width)
    positions: object  # (rows, window): answer positions, as make_batch gives them
    scored: object  # (rows, window)
    ids: object  # (rows, window, TOP_K): the base's most likely tokens at each position
    logprobs: object  # (rows, window, TOP_K): their log-probabilities under the base


def anchor_batch(dataset, targets: AnchorTargets, indices: list[int], max_seq_length: int) -> AnchorBatch:
    import mlx.core as mx

    from slearn_mlx.train import make_batch

    batch = make_batch(dataset, indices, max_seq_length)
    rows, window = batch.positions.shape
    ids = np.zeros((rows, window, TOP_K), np.int32)
    logprobs = np.full((rows, window, TOP_K), -1e4, np.float32)
    for r, i in enumerate(indices):
        n = len(targets.ids[i])
        ids[r, :n], logprobs[r, :n] = targets.ids[i], targets.logprobs[i]
    return AnchorBatch(batch.tokens, batch.positions, batch.scored, mx.array(ids), mx.array(logprobs))


def anchor_indices(n_anchors: int, per_step: int, step: int, seed: int) -> list[int]:
    """The anchors step `step` reads: consecutive slices of a seeded order, a new order each pass through them,
    so a resumed training reads the same ones."""
    per_step = min(per_step, n_anchors)
    first = step * per_step
    out = []
    for k in range(first, first + per_step):
        lap, at = divmod(k, n_anchors)
        out.append(int(np.random.default_rng([seed, 7919, lap]).permutation(n_anchors)[at]))
    return out


def _position_logprobs(model, tokens, positions):
    """Log-probabilities of the next token at `positions` (rows, window) of `tokens`."""
    import mlx.core as mx

    from slearn_mlx.models import output_projection

    project = output_projection(model)
    rows = mx.arange(tokens.shape[0])[:, None]
    if project is not None:
        logits = project(model.model(tokens[:, :-1])[rows, positions])
    else:
        logits = model(tokens[:, :-1])[rows, positions]
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def anchor_kl(model, tokens, positions, scored, ids, base_logprobs):
    """Mean over scored positions of KL(base || adapted), with the base's distribution as its top-k tokens plus
    one bucket for the rest."""
    import mlx.core as mx

    logq = _position_logprobs(model, tokens, positions)
    q_top = mx.take_along_axis(logq, ids, axis=-1)
    p_top = mx.exp(base_logprobs)
    p_rest = mx.maximum(1.0 - p_top.sum(-1), 1e-6)
    q_rest = mx.maximum(1.0 - mx.exp(q_top).sum(-1), 1e-6)
    kl = (p_top * (base_logprobs - q_top)).sum(-1) + p_rest * (mx.log(p_rest) - mx.log(q_rest))
    return (kl * scored).sum() / mx.maximum(scored.sum(), 1)


def anchors_per_step(batch_size: int) -> int:
    """Anchors read per optimizer step: one for every four training pairs, at least one."""
    return max(1, math.ceil(batch_size / 4))
