"""The KL term that holds anchor pairs where the base model had them, while the model learns the new.

Anchors are training items the model already knows and that are not trained on
(`train/anchors.jsonl`, written by `select --anchors`). Before the first step,
the base model reads each anchor (prompt and taught answer) once and its
next-token distribution at every answer position is kept, as its `TOP_K` most
likely tokens plus the mass of the rest. During training, every batch carries a
few anchors beside its training pairs (one forward pass for both), and

    kl x KL(base || adapted)

averaged over the anchors' answer positions is added to the loss: where the
model already knew the answer, its distribution is held where it was. The lead
that starts every taught answer ("The correct answer is") is left out of the
term: it is the one thing training is meant to change on every prompt, and
holding it would fight the training pairs. LoRA's B matrices start at zero, so
the model read before the first step is the base model.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from slearn_mlx.training.batches import make_batch
from slearn_mlx.training.loss import answer_logits

TOP_K = 32  # tokens of the base distribution kept per position; the rest is one bucket


class AnchorTargets:
    """The base model's distribution at every answer position of each anchor (top-k ids and log-probs), and how
    many of those positions, from the first, are the lead and left free."""

    def __init__(self, ids: list[np.ndarray], logprobs: list[np.ndarray], skips: list[int]):
        self.ids, self.logprobs, self.skips = ids, logprobs, skips

    @classmethod
    def read(cls, model, dataset, max_seq_length: int, skips: list[int] | None = None, batch_size: int = 8):
        """Run `model` (the base: LoRA still at zero) over every anchor once."""
        import mlx.core as mx

        ids: list = [None] * len(dataset)
        logprobs: list = [None] * len(dataset)
        for start in range(0, len(dataset), batch_size):
            rows = list(range(start, min(start + batch_size, len(dataset))))
            batch = make_batch(dataset, rows, max_seq_length)
            logits = answer_logits(model, batch.tokens, batch.positions).astype(mx.float32)
            logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            top = mx.argpartition(-logp, TOP_K - 1, axis=-1)[..., :TOP_K]
            top_logp = mx.take_along_axis(logp, top, axis=-1)
            mx.eval(top, top_logp)
            scored = np.array(batch.scored)
            top, top_logp = np.array(top), np.array(top_logp)
            for r, i in enumerate(rows):
                n = int(scored[r].sum())
                ids[i], logprobs[i] = top[r, :n], top_logp[r, :n]
        return cls(ids, logprobs, list(skips) if skips is not None else [0] * len(dataset))


class MixedBatch(NamedTuple):
    """Training pairs and anchors in one padded batch: cross-entropy where `ce_scored`, KL where `kl_scored`."""

    tokens: object  # (rows, width)
    bounds: object  # (rows, 2)
    positions: object  # (rows, window): answer positions, as make_batch gives them
    ce_scored: object  # (rows, window): the training pairs' answer positions
    kl_scored: object  # (rows, window): the anchors' answer positions after their lead
    ids: object  # (rows, window, TOP_K): the base's most likely tokens at each anchor position
    logprobs: object  # (rows, window, TOP_K): their log-probabilities under the base


class _Joined:
    """Training pairs then anchors, indexed as one dataset."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def __getitem__(self, i: int):
        return self.first[i] if i < len(self.first) else self.second[i - len(self.first)]


def mixed_batch(train_set, indices: list[int], anchor_set, targets: AnchorTargets, anchors: list[int],
                max_seq_length: int) -> MixedBatch:  # fmt: skip
    import mlx.core as mx

    n = len(train_set)
    batch = make_batch(_Joined(train_set, anchor_set), indices + [n + a for a in anchors], max_seq_length)
    rows, window = batch.positions.shape
    scored = np.array(batch.scored)
    ce_scored, kl_scored = scored.copy(), np.zeros_like(scored)
    ids = np.zeros((rows, window, TOP_K), np.int32)
    logprobs = np.full((rows, window, TOP_K), -1e4, np.float32)
    for r, a in enumerate(anchors, start=len(indices)):
        ce_scored[r] = False
        k = min(len(targets.ids[a]), window)
        ids[r, :k], logprobs[r, :k] = targets.ids[a][:k], targets.logprobs[a][:k]
        kl_scored[r, targets.skips[a] : k] = scored[r, targets.skips[a] : k]
    return MixedBatch(batch.tokens, batch.bounds, batch.positions, mx.array(ce_scored), mx.array(kl_scored),
                      mx.array(ids), mx.array(logprobs))  # fmt: skip


def anchor_indices(n_anchors: int, per_step: int, step: int, seed: int) -> list[int]:
    """The anchors step `step` reads: consecutive slices of a seeded order, a new order each pass through them,
    so a resumed training reads the same ones."""
    per_step = min(per_step, n_anchors)
    out = []
    for k in range(step * per_step, (step + 1) * per_step):
        lap, at = divmod(k, n_anchors)
        out.append(int(np.random.default_rng([seed, 7919, lap]).permutation(n_anchors)[at]))
    return out


def bucket_kl(logq, ids, base_logprobs):
    """KL(base || adapted) per position, with the base's distribution as its top-k tokens plus one bucket for
    the rest; `logq` are the adapted model's log-probabilities over the vocabulary."""
    import mlx.core as mx

    q_top = mx.take_along_axis(logq, ids, axis=-1)
    p_top = mx.exp(base_logprobs)
    p_rest = mx.maximum(1.0 - p_top.sum(-1), 1e-6)
    q_rest = mx.maximum(1.0 - mx.exp(q_top).sum(-1), 1e-6)
    return (p_top * (base_logprobs - q_top)).sum(-1) + p_rest * (mx.log(p_rest) - mx.log(q_rest))


def mixed_loss(model, tokens, bounds, positions, ce_scored, kl_scored, ids, base_logprobs):
    """(cross-entropy on the training pairs, its token count, KL on the anchors, which pairs are learned word for
    word) from one forward pass over the mixed batch."""
    import mlx.core as mx
    import mlx.nn as nn

    logits = answer_logits(model, tokens, positions).astype(mx.float32)
    targets = mx.take_along_axis(tokens, positions + 1, axis=1)
    n_tokens = ce_scored.sum()
    ce = (nn.losses.cross_entropy(logits, targets) * ce_scored).sum() / mx.maximum(n_tokens, 1)
    logq = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    kl = (bucket_kl(logq, ids, base_logprobs) * kl_scored).sum() / mx.maximum(kl_scored.sum(), 1)
    mastered = ((mx.argmax(logits, axis=-1) == targets) | ~ce_scored).all(axis=1)
    return ce, n_tokens, kl, mx.stop_gradient(mastered)


def lead_tokens(tokenizer, lead: str) -> int:
    """How many answer tokens a taught answer's lead takes ("The correct answer is" -> 4)."""
    return len(tokenizer.encode(lead.rstrip(), add_special_tokens=False)) if lead.strip() else 0
